"""Geometry of the learned 3D keypoints: the keypoint space, rotations, eq. 3.1 and Gaussian heatmaps.

**Keypoint space.** Keypoints live in the normalised coordinates of the 3D feature volume,
``(x, y, z)`` in about ``[-1, 1]``, in the order :func:`torch.nn.functional.grid_sample` reads a
``(B, C, D, H, W)`` volume: ``x`` along the width (to the image's right), ``y`` along the height
(**down** the image) and ``z`` along the depth axis ``D``. ``x`` and ``y`` are therefore the
``grid_sample(align_corners=False)`` coordinates of the image itself: ``x = 2 u / W - 1`` for a
pixel position ``u`` (:func:`morphface.camera.pixels_to_ndc`).

**Rotations.** Head poses are Euler angles ``(pitch, yaw, roll)`` in radians with the library's
meaning (:mod:`morphface.camera`: ``R = Rz(roll) Ry(yaw) Rx(pitch)`` in the model frame, x to the
subject's left, y up, z toward the camera). The model frame and the keypoint space differ by the
flip ``C = diag(1, -1, -1)`` (y down instead of up, z away from the camera instead of toward it), so
the keypoint-space rotation of a pose is ``C R C`` (:func:`pose_to_rotation`), a proper rotation.
With this choice a network's pitch/yaw/roll mean what the 3DMM fit's angles mean, which is what the
head-pose loss compares them with (the targets are the library's 3DMM fits, standing in for HopeNet).

**Eq. 3.1** of Hatakeyama et al. (2024): ``K = R (K_c + delta^AU + delta^audio) + t``
(:func:`transform_keypoints`; rows are points, so it is computed as ``(K_c + sum delta) R^T + t``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...camera import euler_to_matrix, matrix_to_euler
from ...errors import InputShapeError

__all__ = [
    "MODEL_TO_KEYPOINT",
    "pose_to_rotation",
    "rotation_to_pose",
    "transform_keypoints",
    "coordinate_grid",
    "gaussian_heatmaps",
    "keypoint_heatmaps_2d",
]

#: ``C = diag(1, -1, -1)``: model frame (y up, z toward the camera) -> keypoint space (y down, z away).
MODEL_TO_KEYPOINT = (1.0, -1.0, -1.0)


def _flip(like: Tensor) -> Tensor:
    return torch.tensor(MODEL_TO_KEYPOINT, dtype=like.dtype, device=like.device)


def _check(name: str, x: Tensor, tail: tuple[int, ...]) -> None:
    if not isinstance(x, Tensor) or x.dim() < len(tail) or tuple(x.shape[x.dim() - len(tail):]) != tail:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError(f"{name} must have shape (..., {', '.join(map(str, tail))}); got {shape}")


def pose_to_rotation(angles: Tensor) -> Tensor:
    """Keypoint-space rotation matrices of head poses.

    Args:
        angles: ``(..., 3)`` pitch, yaw, roll in radians (:mod:`morphface.camera` convention).

    Returns:
        ``(..., 3, 3)`` ``C R(angles) C`` with ``C = diag(1, -1, -1)`` (module docstring); differentiable.
    """
    _check("angles", angles, (3,))
    c = _flip(angles)
    return euler_to_matrix(angles) * c[:, None] * c[None, :]


def rotation_to_pose(rotation: Tensor) -> Tensor:
    """Inverse of :func:`pose_to_rotation`: ``(..., 3, 3)`` keypoint-space rotations -> ``(..., 3)`` radians."""
    _check("rotation", rotation, (3, 3))
    c = _flip(rotation)
    return matrix_to_euler(rotation * c[:, None] * c[None, :])


def transform_keypoints(canonical: Tensor, rotation: Tensor, translation: Tensor,
                        *deformations: Tensor | None) -> Tensor:
    """Eq. 3.1: ``K = R (K_c + sum_i delta_i) + t``.

    Args:
        canonical: ``(B, k, 3)`` canonical keypoints ``K_c``.
        rotation: ``(B, 3, 3)`` keypoint-space rotations ``R``.
        translation: ``(B, 3)`` translations ``t``.
        deformations: any number of ``(B, k, 3)`` deformations (``delta^AU``, ``delta^audio``); ``None``
            entries are skipped.

    Returns:
        ``(B, k, 3)`` posed keypoints.
    """
    _check("canonical", canonical, (3,))
    _check("rotation", rotation, (3, 3))
    _check("translation", translation, (3,))
    points = canonical
    for i, d in enumerate(deformations):
        if d is None:
            continue
        if d.shape != canonical.shape:
            raise InputShapeError(f"deformation {i} must have the canonical keypoints' shape "
                                  f"{tuple(canonical.shape)}; got {tuple(d.shape)}")
        points = points + d
    return points @ rotation.transpose(-1, -2) + translation[..., None, :]


def coordinate_grid(depth: int, height: int, width: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Keypoint-space coordinates of the voxel centres of a ``(D, H, W)`` volume.

    Returns:
        ``(D, H, W, 3)`` ``(x, y, z)`` with ``x = (2 j + 1) / W - 1`` etc. (``grid_sample``'s
        ``align_corners=False`` centres), so sampling a volume at this grid is the identity.
    """
    def axis(n: int) -> Tensor:
        return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def gaussian_heatmaps(keypoints: Tensor, grid: Tensor, variance: float = 0.01) -> Tensor:
    """Unnormalised Gaussians ``exp(-|p - kp|^2 / (2 variance))`` of keypoints on a grid (FOMM/face-vid2vid).

    Args:
        keypoints: ``(B, k, n)`` points (``n`` = 2 or 3).
        grid: ``(*spatial, n)`` coordinates, e.g. :func:`coordinate_grid`.
        variance: of the isotropic Gaussian, in keypoint-space units squared (0.01: sigma = 0.1).

    Returns:
        ``(B, k, *spatial)`` in ``(0, 1]``.
    """
    n = keypoints.shape[-1]
    if grid.shape[-1] != n:
        raise InputShapeError(f"grid must end in {n} coordinates like the keypoints; got {tuple(grid.shape)}")
    spatial = grid.shape[:-1]
    diff = grid.reshape(1, 1, -1, n).to(keypoints) - keypoints[:, :, None, :]
    heat = torch.exp(-0.5 * diff.pow(2).sum(-1) / variance)
    return heat.reshape(*keypoints.shape[:2], *spatial)


def keypoint_heatmaps_2d(keypoints: Tensor, size: tuple[int, int], variance: float = 0.01) -> Tensor:
    """Image-plane Gaussians of the keypoints' ``(x, y)`` (the discriminator's keypoint condition).

    Args:
        keypoints: ``(B, k, 3)`` (or ``(B, k, 2)``) keypoint-space points.
        size: ``(H, W)`` of the heatmaps.

    Returns:
        ``(B, k, H, W)`` in ``(0, 1]``.
    """
    h, w = size
    grid = coordinate_grid(1, h, w, device=keypoints.device, dtype=keypoints.dtype)[0, ..., :2]
    return gaussian_heatmaps(keypoints[..., :2], grid, variance)
