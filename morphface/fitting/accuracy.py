"""Accuracy measures for fits against ground truth."""

from __future__ import annotations

import torch
from torch import Tensor

from ..camera import euler_to_matrix

__all__ = ["rotation_error_degrees", "aligned_vertex_error", "similarity_align"]


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
