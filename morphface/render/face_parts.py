"""Face-part masks (eyes, brows, lips, mouth interior) rasterised from a fit's projected 68 landmarks.

The targets of the 3D-keypoint GAN's segmentation loss and of the face parser's training: the regions
a face parser such as BiSeNet/CelebAMask-HQ labels, drawn from the fitted 3DMM of the frame. Every part
is a 2D shape on the iBUG-68 landmarks the fit projects into the image (the same landmarks
:mod:`morphface.render.regions` derives its per-vertex regions from):

* ``eyes``: the two eye polygons (36-41, 42-47);
* ``brows``: a band around each brow polyline (17-21, 22-26) of half width ``brow_width`` times the
  distance between the eye centres (0.06: about 4 mm of a 63 mm interocular distance);
* ``mouth``: the inner-lip polygon (60-67), the visible mouth interior (empty for closed lips);
* ``lips``: the outer-lip polygon (48-59) minus the mouth interior.

Masks are ``(B, 4, H, W)`` in [0, 1] in the order of :data:`FACE_PARTS`: the share of ``supersample^2``
sub-pixel samples per pixel inside the part (anti-aliased; pixel centres at integer + 0.5). Landmarks
hidden behind the head at large yaw still draw their polygons: these are approximations for a loss, not
exact visibility.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputShapeError

__all__ = ["FACE_PARTS", "UPPER_PARTS", "LOWER_PARTS", "face_part_masks"]

#: Channel order of :func:`face_part_masks` and of the face parser's outputs.
FACE_PARTS = ("eyes", "brows", "lips", "mouth")
#: Parts of the paper's ``L_upper`` and ``L_lower`` (channels of :data:`FACE_PARTS`).
UPPER_PARTS, LOWER_PARTS = (0, 1), (2, 3)

_RIGHT_EYE, _LEFT_EYE = list(range(36, 42)), list(range(42, 48))
_BROWS = (list(range(17, 22)), list(range(22, 27)))
_OUTER_LIP, _INNER_LIP = list(range(48, 60)), list(range(60, 68))


def _inside(points: Tensor, poly: Tensor) -> Tensor:
    """Even-odd rule: ``(B, N)`` bool for points ``(N, 2)`` in closed polygons ``(B, E, 2)``."""
    a, b = poly, poly.roll(-1, dims=1)  # (B, E, 2)
    px, py = points[None, :, None, 0], points[None, :, None, 1]  # (1, N, 1)
    ay, by = a[:, None, :, 1], b[:, None, :, 1]
    crosses = (ay > py) != (by > py)
    dy = torch.where(by == ay, torch.ones_like(by), by - ay)
    x_at = a[:, None, :, 0] + (py - ay) * (b[:, None, :, 0] - a[:, None, :, 0]) / dy
    return ((crosses & (px < x_at)).sum(-1) % 2) == 1


def _near_polyline(points: Tensor, line: Tensor, radius: Tensor) -> Tensor:
    """``(B, N)`` bool: points within ``radius (B,)`` of the open polylines ``(B, E + 1, 2)``."""
    a, b = line[:, :-1], line[:, 1:]  # (B, E, 2)
    ab = b - a
    ap = points[None, :, None, :] - a[:, None]  # (B, N, E, 2)
    t = ((ap * ab[:, None]).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)[:, None]).clamp(0, 1)
    d = (ap - t[..., None] * ab[:, None]).norm(dim=-1).amin(-1)  # (B, N)
    return d <= radius[:, None]


def face_part_masks(landmarks: Tensor, image_size: tuple[int, int] | int, *, brow_width: float = 0.06,
                    supersample: int = 2) -> Tensor:
    """Rasterise the face parts of the module docstring.

    Args:
        landmarks: ``(B, 68, 2)`` iBUG-68 landmark pixels (e.g. a fit's projected model landmarks).
        image_size: ``(H, W)`` or one int.
        brow_width: brow band half width over the interocular distance.
        supersample: sub-pixel samples per axis (1: pixel centres only, hard masks).

    Returns:
        ``(B, 4, H, W)`` float masks in [0, 1] (:data:`FACE_PARTS` order), the landmarks' dtype and device.
    """
    if not isinstance(landmarks, Tensor) or landmarks.dim() != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        shape = tuple(landmarks.shape) if isinstance(landmarks, Tensor) else type(landmarks).__name__
        raise InputShapeError(f"landmarks must have shape (B, 68, 2) (iBUG-68 pixels); got {shape}")
    H, W = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1; got {supersample}")
    lm = landmarks.detach().float()
    B, s = lm.shape[0], supersample
    off = (torch.arange(s, device=lm.device, dtype=lm.dtype) + 0.5) / s
    ys = (torch.arange(H, device=lm.device, dtype=lm.dtype)[:, None] + off[None]).reshape(-1)
    xs = (torch.arange(W, device=lm.device, dtype=lm.dtype)[:, None] + off[None]).reshape(-1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # (H s * W s, 2)
    eyes = _inside(pts, lm[:, _RIGHT_EYE]) | _inside(pts, lm[:, _LEFT_EYE])
    iod = (lm[:, _RIGHT_EYE].mean(1) - lm[:, _LEFT_EYE].mean(1)).norm(dim=-1)
    radius = brow_width * iod
    brows = _near_polyline(pts, lm[:, _BROWS[0]], radius) | _near_polyline(pts, lm[:, _BROWS[1]], radius)
    mouth = _inside(pts, lm[:, _INNER_LIP])
    lips = _inside(pts, lm[:, _OUTER_LIP]) & ~mouth
    brows = brows & ~eyes
    masks = torch.stack([eyes, brows, lips, mouth], dim=1).to(lm.dtype).reshape(B, 4, H, s, W, s)
    return masks.mean(dim=(3, 5)).to(landmarks.dtype)
