"""Losses of the keypoint core (face-vid2vid §3.3 / Hatakeyama et al. eq. 3.2-3.4).

* :func:`random_affine` / :func:`affine_warp` / :func:`equivariance_loss`: the equivariance loss ``L_E``. A
  random affine ``T`` (rotation, scale, shear-free translation, as face-vid2vid's random transform without
  its thin-plate part) warps the driving image, ``x' (p) = x (T p)``; the keypoints ``K'`` detected on
  ``x'`` and mapped back by ``T`` must equal the keypoints ``K`` of ``x``: ``L_E = mean |K_xy - T(K'_xy)|``
  (on the image-plane coordinates ``x, y`` as in face-vid2vid). Zero for an exact transform.
* :func:`keypoint_prior_loss` ``L_K``: ``sum_{i != j} max(0, D_t - |K_i - K_j|^2) / (k (k - 1))`` keeps
  keypoints apart (``D_t = 0.1``) plus ``|mean_i z_i - z_t|`` (``z_t = 0.33``) keeps their mean depth fixed.
  (face-vid2vid sums over the pairs; the mean over pairs keeps the weight independent of ``k``.)
* :func:`head_pose_loss` ``L_H``: mean absolute difference of predicted and target Euler angles in
  **radians**. The targets are the library's 3DMM fit of the frame (the offline substitute for HopeNet).
* :func:`deformation_prior_loss` ``L_Delta``: mean absolute deformation ``|delta|_1``.
* :func:`part_segmentation_loss` ``L_S = L_upper + lambda L_lower`` (eq. 3.3-3.4): mean absolute
  difference of part probability maps ``(B, 4, H, W)`` in the order of
  :data:`morphface.render.face_parts.FACE_PARTS` (eyes, brows: upper; lips, mouth interior: lower).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import InputShapeError

__all__ = ["random_affine", "affine_warp", "apply_affine", "equivariance_loss", "keypoint_prior_loss",
           "head_pose_loss", "deformation_prior_loss", "part_segmentation_loss"]


def random_affine(batch: int, *, max_rotation_deg: float = 10.0, max_scale: float = 0.1,
                  max_translation: float = 0.1, generator: torch.Generator | None = None, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Random 2D affine transforms of normalised image coordinates.

    Args:
        batch: number of transforms.
        max_rotation_deg: rotation uniform in +-this (degrees).
        max_scale: scale uniform in ``1 +- max_scale``.
        max_translation: translation uniform in +-this (normalised units; 2 = the image side).
        generator: for reproducible draws (drawn on the CPU, then moved).

    Returns:
        ``(B, 2, 3)`` ``[A | b]`` mapping ``p`` to ``A p + b`` (``F.affine_grid``'s ``theta``).
    """
    u = torch.rand(batch, 4, generator=generator, dtype=torch.float64) * 2 - 1
    ang = u[:, 0] * math.radians(max_rotation_deg)
    s = 1 + u[:, 1] * max_scale
    c, si = torch.cos(ang) * s, torch.sin(ang) * s
    theta = torch.stack([torch.stack([c, -si, u[:, 2] * max_translation], -1),
                         torch.stack([si, c, u[:, 3] * max_translation], -1)], dim=1)
    return theta.to(device=device, dtype=dtype)


def _check_theta(theta: Tensor, batch: int) -> None:
    if theta.shape != (batch, 2, 3):
        raise InputShapeError(f"theta must have shape ({batch}, 2, 3); got {tuple(theta.shape)}")


def affine_warp(image: Tensor, theta: Tensor) -> Tensor:
    """``x'(p) = x(A p + b)``: the image resampled by an affine of normalised coordinates.

    Args:
        image: ``(B, C, H, W)``.
        theta: ``(B, 2, 3)`` (:func:`random_affine`).

    Returns:
        ``(B, C, H, W)`` (border padding, ``align_corners=False``).
    """
    _check_theta(theta, image.shape[0])
    grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_affine(points: Tensor, theta: Tensor) -> Tensor:
    """``A p + b`` on ``(B, k, 2)`` points -> ``(B, k, 2)``."""
    _check_theta(theta, points.shape[0])
    theta = theta.to(points.dtype)
    return points @ theta[:, :, :2].transpose(-1, -2) + theta[:, None, :, 2]


def equivariance_loss(keypoints: Tensor, keypoints_transformed: Tensor, theta: Tensor) -> Tensor:
    """``L_E = mean |K_xy - T(K'_xy)|`` (module docstring).

    Args:
        keypoints: ``(B, k, 3)`` (or ``(B, k, 2)``) keypoints of the image ``x``.
        keypoints_transformed: the same of ``affine_warp(x, theta)``.
        theta: ``(B, 2, 3)`` the transform used.

    Returns:
        Scalar >= 0.
    """
    if keypoints.shape != keypoints_transformed.shape:
        raise InputShapeError(f"keypoints shapes differ: {tuple(keypoints.shape)} vs "
                              f"{tuple(keypoints_transformed.shape)}")
    return (keypoints[..., :2] - apply_affine(keypoints_transformed[..., :2], theta)).abs().mean()


def keypoint_prior_loss(keypoints: Tensor, min_distance: float = 0.1, target_depth: float = 0.33) -> Tensor:
    """``L_K`` (module docstring) of ``(B, k, 3)`` keypoints -> scalar >= 0."""
    if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise InputShapeError(f"keypoints must have shape (B, k, 3); got {tuple(keypoints.shape)}")
    k = keypoints.shape[1]
    d2 = (keypoints[:, :, None] - keypoints[:, None]).pow(2).sum(-1)  # (B, k, k)
    off = ~torch.eye(k, dtype=torch.bool, device=keypoints.device)
    spread = F.relu(min_distance - d2)[:, off].mean() if k > 1 else keypoints.new_zeros(())
    depth = (keypoints[..., 2].mean(dim=1) - target_depth).abs().mean()
    return spread + depth


def head_pose_loss(angles: Tensor, target: Tensor) -> Tensor:
    """``L_H``: mean ``|angles - target|`` over ``(B, 3)`` pitch/yaw/roll in radians."""
    if angles.shape != target.shape or angles.shape[-1] != 3:
        raise InputShapeError(f"angles and target must both be (B, 3); got {tuple(angles.shape)} and "
                              f"{tuple(target.shape)}")
    return (angles - target.to(angles)).abs().mean()


def deformation_prior_loss(*deformations: Tensor | None) -> Tensor:
    """``L_Delta``: mean absolute value of the summed ``(B, k, 3)`` deformations (``None`` skipped)."""
    parts = [d for d in deformations if d is not None]
    if not parts:
        raise ValueError("deformation_prior_loss needs at least one deformation")
    total = parts[0]
    for d in parts[1:]:
        total = total + d
    return total.abs().mean()


def part_segmentation_loss(parts_generated: Tensor, parts_target: Tensor, lower_weight: float = 1.0) -> Tensor:
    """Eq. 3.3-3.4: ``L_S = |F(x_g) - F(x_d)|_upper + lambda |F(x_g) - F(x_d)|_lower`` (means per group).

    Args:
        parts_generated: ``(B, 4, H, W)`` part probabilities of the generated image (eyes, brows, lips, mouth).
        parts_target: ``(B, 4, H, W)`` those of the driving frame (probabilities or {0, 1} masks).
        lower_weight: ``lambda`` of the lips + mouth term.

    Returns:
        Scalar >= 0.
    """
    if parts_generated.shape != parts_target.shape or parts_generated.dim() != 4 or parts_generated.shape[1] != 4:
        raise InputShapeError(f"part maps must both be (B, 4, H, W); got {tuple(parts_generated.shape)} and "
                              f"{tuple(parts_target.shape)}")
    diff = (parts_generated - parts_target.to(parts_generated)).abs()
    return diff[:, :2].mean() + lower_weight * diff[:, 2:].mean()
