"""Accuracy measures for fits against ground truth."""

from __future__ import annotations

import torch
from torch import Tensor

from ..camera import euler_to_matrix

__all__ = ["rotation_error_degrees", "aligned_vertex_error", "similarity_align", "angle_slope_mae",
           "landmark_nme"]


def rotation_error_degrees(angles_a: Tensor, angles_b: Tensor) -> Tensor:
    """Geodesic angle in degrees between two batches of Euler angles ``(B, 3)`` (radians) -> ``(B,)``."""
    Ra, Rb = euler_to_matrix(angles_a), euler_to_matrix(angles_b)
    cos = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def similarity_align(source: Tensor, target: Tensor) -> Tensor:
    """Umeyama similarity (scale, rotation, translation) of ``source`` onto ``target``, both ``(B, V, 3)``."""
    ms, mt = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    s0, t0 = source - ms, target - mt
    U, S, Vh = torch.linalg.svd(t0.transpose(1, 2) @ s0)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1)
    R = U @ torch.diag_embed(D) @ Vh
    scale = (S * D).sum(1) / (s0 ** 2).sum((1, 2))
    return scale[:, None, None] * s0 @ R.transpose(1, 2) + mt


def aligned_vertex_error(pred: Tensor, target: Tensor) -> Tensor:
    """Mean per-vertex distance ``(B,)`` (input units) after similarity alignment of ``pred`` onto ``target``."""
    return (similarity_align(pred, target) - target).norm(dim=-1).mean(1)


def angle_slope_mae(true: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """Per-angle least-squares slope of ``pred`` on ``true`` and mean absolute error.

    Args:
        true, pred: ``(N, 3)`` angles (any unit; degrees in reports), N >= 2.

    Returns:
        ``slope (3,)`` (1 = no compression; NaN for an angle that does not vary in ``true``) and
        ``mae (3,)`` in the input unit.
    """
    if true.shape != pred.shape or true.dim() != 2 or true.shape[0] < 2:
        raise ValueError(f"true and pred must both be (N >= 2, 3); got {tuple(true.shape)} and {tuple(pred.shape)}")
    t = true - true.mean(0)
    p = pred - pred.mean(0)
    var = (t ** 2).sum(0)
    slope = torch.where(var > 0, (t * p).sum(0) / var.clamp(min=1e-12), torch.full_like(var, float("nan")))
    return slope, (pred - true).abs().mean(0)


def landmark_nme(pred: Tensor, target: Tensor) -> Tensor:
    """AFLW2000-3D normalised mean error per image: the mean point distance over the square root of
    the target landmarks' bounding-box area.

    Args:
        pred, target: ``(B, L, 2)`` pixels.

    Returns:
        ``(B,)`` fractions (x 100 for percent).
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (B, L, 2); got {tuple(pred.shape)} and {tuple(target.shape)}")
    wh = target.amax(1) - target.amin(1)
    return (pred - target).norm(dim=-1).mean(1) / (wh[:, 0] * wh[:, 1]).clamp(min=1e-12).sqrt()
