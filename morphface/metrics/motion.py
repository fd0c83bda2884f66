"""Motion-transfer metrics on fitted 3DMM parameters: AED, APD and ARD.

Following PIRenderer and IFaceUV, expression and pose accuracy are measured by fitting the 3DMM to the
generated frame and to the reference frame (the driving frame) with the *same* procedure, and comparing
the parameters:

* **AED** (average expression distance): mean over frames of the mean absolute difference of the
  expression coefficients (for the default ICT model: blendshape weights in [0, 1]).
* **APD** (average pose distance): mean over frames of the mean absolute difference of the 6 pose
  parameters, the Euler angles in **degrees** and the translation in **mm** (PIRenderer uses its 3DMM's
  raw pose vector; degrees and millimetres make the numbers readable).
* **ARD** (average rotation distance): mean over frames of the mean absolute difference of pitch, yaw
  and roll in degrees (differences wrapped to ``[-180, 180)``).

:func:`fit_frames` fits frames with a landmark detector and :func:`~morphface.fitting.fit_landmarks`;
frames where no face is detected get ``None`` and are left out of the averages (the evaluation reports
how many were used).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..fitting import FitResult, fit_landmarks
from ..morphable import MorphableModel

__all__ = ["expression_distance", "pose_distance", "rotation_distance", "fit_frames"]

_DEG = 180.0 / math.pi


def _check(name: str, a: Tensor, b: Tensor, width: int | None = None) -> None:
    if a.shape != b.shape or a.dim() != 2 or (width is not None and a.shape[1] != width):
        want = f"(B, {width})" if width is not None else "(B, K)"
        raise ValueError(f"{name} must both be {want} with equal shapes; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def expression_distance(exp_a: Tensor, exp_b: Tensor) -> Tensor:
    """Per-frame mean absolute expression difference, ``(B,)`` float64 (coefficient units)."""
    _check("expression coefficients", exp_a, exp_b)
    return (exp_a.double() - exp_b.double()).abs().mean(dim=1)


def _angle_diff_degrees(angles_a: Tensor, angles_b: Tensor) -> Tensor:
    d = (angles_a.double() - angles_b.double()) * _DEG
    return torch.remainder(d + 180.0, 360.0) - 180.0


def rotation_distance(angles_a: Tensor, angles_b: Tensor) -> Tensor:
    """Per-frame mean absolute Euler-angle difference in degrees, ``(B,)`` float64 (radian inputs)."""
    _check("angles", angles_a, angles_b, 3)
    return _angle_diff_degrees(angles_a, angles_b).abs().mean(dim=1)


def pose_distance(angles_a: Tensor, translation_a: Tensor, angles_b: Tensor, translation_b: Tensor) -> Tensor:
    """Per-frame mean absolute difference of ``[angles (degrees), translation (mm)]``, ``(B,)`` float64."""
    _check("angles", angles_a, angles_b, 3)
    _check("translations", translation_a, translation_b, 3)
    d = torch.cat([_angle_diff_degrees(angles_a, angles_b),
                   translation_a.double() - translation_b.double()], dim=1)
    return d.abs().mean(dim=1)


def fit_frames(model: MorphableModel, frames: Tensor, detector) -> list[FitResult | None]:
    """Fit each frame independently (largest detected face; perspective, default focal).

    Args:
        model: the morphable model (the same for generated and reference frames).
        frames: ``(T, 3, H, W)`` RGB in [0, 1].
        detector: a :class:`~morphface.fitting.LandmarkDetector`.

    Returns:
        One fit of batch 1 per frame, ``None`` where no face was detected.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W) RGB in [0, 1]; got {tuple(frames.shape)}")
    H, W = frames.shape[-2:]
    found, lms = [], []
    for i in range(frames.shape[0]):  # the detectors take one image at a time
        faces = detector.detect(frames[i].detach().cpu())
        if faces:
            best = max(faces, key=lambda f: f.area)
            lms.append(best.landmarks_2d)
            found.append(i)
    out: list[FitResult | None] = [None] * frames.shape[0]
    if found:
        fit = fit_landmarks(model, torch.stack(lms).to(model.mean.device), (H, W))  # one batched solve
        for j, i in enumerate(found):
            out[i] = fit[j]
    return out
