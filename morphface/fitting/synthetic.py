"""Random faces with known parameters: the ground truth that fitting is measured against."""

from __future__ import annotations

import math

import torch

from ..morphable import MorphableModel
from .result import FitResult, default_focal

__all__ = ["sample_fit"]


def sample_fit(
    model: MorphableModel,
    batch: int,
    image_size: tuple[int, int] = (256, 256),
    max_yaw: float = 60.0,
    max_pitch: float = 30.0,
    max_roll: float = 15.0,
    id_scale: float = 1.0,
    exp_scale: float = 2.0,
    face_fraction: float = 0.6,
    generator: torch.Generator | None = None,
) -> FitResult:
    """Sample ground-truth parameters for ``batch`` faces seen by a perspective camera.

    Identity ~ N(0, id_scale^2). PCA expressions ~ U(-exp_scale, exp_scale) std units; blendshape
    expressions: each weight is active with probability 0.15 and then ~ U(0, 1) (``exp_scale`` does
    not apply). Euler angles are uniform within +-max (degrees). The face (about 160 mm tall) spans
    ``face_fraction`` of the image height, with a few mm of random lateral offset. The focal length
    is :func:`default_focal`.

    Returns:
        A :class:`FitResult` holding the ground truth (no landmarks yet).
    """
    g = generator
    B = batch
    ida = torch.randn(B, model.n_id, generator=g) * id_scale
    if model.exp_kind == "blendshape":
        active = torch.rand(B, model.n_exp, generator=g) < 0.15
        exp = torch.rand(B, model.n_exp, generator=g) * active
    else:
        exp = (torch.rand(B, model.n_exp, generator=g) * 2 - 1) * exp_scale
    lim = torch.tensor([max_pitch, max_yaw, max_roll]) * (math.pi / 180)
    angles = (torch.rand(B, 3, generator=g) * 2 - 1) * lim
    H, W = image_size
    f = default_focal(image_size)
    dist = f * 160.0 / (face_fraction * H)
    t = torch.stack([torch.randn(B, generator=g) * 5, torch.randn(B, generator=g) * 5, torch.full((B,), -dist)], -1)
    return FitResult(id_coeffs=ida, exp_coeffs=exp, angles=angles, translation=t, focal=torch.full((B,), f),
                     image_size=image_size, camera_kind="perspective")
