"""Motion field from source/driving keypoints (face-vid2vid's motion field estimator ``M``), and 3D warping.

For every driving-space voxel ``z`` and keypoint ``i`` the first-order approximation around the keypoint
gives a source position ``J_s J_d^{-1} (z - K_d,i) + K_s,i`` (:func:`sparse_motions`); with rotations as
the Jacobians (as in face-vid2vid and the 3D-keypoint GAN) ``J_s J_d^{-1} = R_s R_d^T``. A ``(k+1)``-th
motion is the identity (the background). :class:`MotionFieldEstimator` feeds

* the heatmaps ``G(z; K_d,i) - G(z; K_s,i)`` (Gaussians of variance 0.01, zeros for the background) and
* a compressed copy of the identity volume warped by each of the ``k+1`` motions

to a 3D hourglass, whose output gives a softmax mask over the ``k+1`` motions (the dense 3D flow
``w(z) = sum_i m_i(z) motion_i(z)``) and, after folding the depth into channels, a sigmoid occlusion map
``(B, 1, h, w)``. Flows are *backward* grids in keypoint space (:mod:`.geometry`): ``w(z)`` is where the
driving-space voxel ``z`` reads the source volume, ready for ``grid_sample(align_corners=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputShapeError
from ..blocks import scaled_channels
from .blocks import Hourglass3d
from .geometry import coordinate_grid, gaussian_heatmaps

__all__ = ["sparse_motions", "warp_volume", "warp_image_by_volume_flow", "MotionFieldConfig",
           "MotionFieldEstimator", "MotionField"]


def sparse_motions(grid: Tensor, kp_source: Tensor, kp_driving: Tensor, rot_source: Tensor,
                   rot_driving: Tensor) -> Tensor:
    """Per-keypoint first-order motions plus the identity.

    Args:
        grid: ``(D, H, W, 3)`` driving-space coordinates (:func:`~.geometry.coordinate_grid`).
        kp_source, kp_driving: ``(B, k, 3)`` keypoints.
        rot_source, rot_driving: ``(B, 3, 3)`` rotations used as the Jacobians.

    Returns:
        ``(B, k + 1, D, H, W, 3)``: motion 0 is the identity (background), motion ``i + 1`` maps ``z`` to
        ``R_s R_d^T (z - K_d,i) + K_s,i``.
    """
    if kp_source.shape != kp_driving.shape or kp_source.dim() != 3 or kp_source.shape[-1] != 3:
        raise InputShapeError(f"kp_source and kp_driving must both be (B, k, 3); got {tuple(kp_source.shape)} and "
                              f"{tuple(kp_driving.shape)}")
    B = kp_source.shape[0]
    for name, r in (("rot_source", rot_source), ("rot_driving", rot_driving)):
        if r.shape != (B, 3, 3):
            raise InputShapeError(f"{name} must have shape ({B}, 3, 3); got {tuple(r.shape)}")
    m = rot_source @ rot_driving.transpose(-1, -2)  # (B, 3, 3)
    g = grid.to(kp_source)
    rel = g[None, None] - kp_driving[:, :, None, None, None, :]  # (B, k, D, H, W, 3)
    moved = torch.einsum("bij,bkdhwj->bkdhwi", m, rel) + kp_source[:, :, None, None, None, :]
    ident = g[None, None].expand(B, 1, *g.shape)
    return torch.cat([ident, moved], dim=1)


def warp_volume(volume: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp a feature volume by a keypoint-space flow grid.

    Args:
        volume: ``(B, C, D, H, W)``.
        flow: ``(B, D', H', W', 3)`` source positions ``(x, y, z)`` in keypoint space (any output size).

    Returns:
        ``(B, C, D', H', W')`` trilinear samples (zeros outside the volume).
    """
    if volume.dim() != 5 or flow.dim() != 5 or flow.shape[-1] != 3 or flow.shape[0] != volume.shape[0]:
        raise InputShapeError(f"warp_volume needs volume (B, C, D, H, W) and flow (B, D, H, W, 3); got "
                              f"{tuple(volume.shape)} and {tuple(flow.shape)}")
    return F.grid_sample(volume, flow.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_image_by_volume_flow(image: Tensor, flow: Tensor) -> Tensor:
    """The warp-only picture of a 3D flow: the full-resolution image warped by the flow's mean image-plane motion.

    Args:
        image: ``(B, C, S, S')`` (any range).
        flow: ``(B, D, h, w, 3)`` keypoint-space flow.

    Returns:
        ``(B, C, S, S')``: the image resampled (bilinear, border padding) at the flow's ``(x, y)`` source
        positions averaged over the ``D`` depth slices and up-sampled bilinearly to the image size (no
        generator involved: the baseline ``output="warped"`` reports). A zero motion returns the image
        (exactly away from a half-cell border band, where the up-sampled positions are clamped).
    """
    if image.dim() != 4 or flow.dim() != 5 or flow.shape[0] != image.shape[0] or flow.shape[-1] != 3:
        raise InputShapeError(f"need image (B, C, H, W) and flow (B, D, h, w, 3) of the same B; got "
                              f"{tuple(image.shape)} and {tuple(flow.shape)}")
    xy = flow[..., :2].mean(dim=1).permute(0, 3, 1, 2)  # (B, 2, h, w) source positions
    xy = F.interpolate(xy, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return F.grid_sample(image, xy.permute(0, 2, 3, 1).to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


class MotionField(NamedTuple):
    """Output of :class:`MotionFieldEstimator`.

    Attributes:
        flow: ``(B, D, h, w, 3)`` dense backward flow in keypoint space.
        occlusion: ``(B, 1, h, w)`` in (0, 1): how much of the warped volume to keep per pixel.
        mask: ``(B, k + 1, D, h, w)`` softmax weights of the motions (0: background).
        sparse: ``(B, k + 1, D, h, w, 3)`` the motions (:func:`sparse_motions`).
    """

    flow: Tensor
    occlusion: Tensor
    mask: Tensor
    sparse: Tensor


@dataclass(frozen=True)
class MotionFieldConfig:
    """Sizes of :class:`MotionFieldEstimator` (face-vid2vid's defaults).

    Attributes:
        num_keypoints: ``k`` (20).
        feature_channels: ``C`` of the identity volume it warps (32 times the appearance width).
        depth: ``D`` of that volume (16).
        compressed_channels: channels of the warped volume copies (5 in face-vid2vid's code).
        base_channels: first hourglass block (32).
        max_channels: hourglass cap (1024).
        num_blocks: hourglass down/up blocks (5; at most log2 of the volume side).
        heatmap_variance: of the keypoint Gaussians (0.01).
        width: channel multiplier of the hourglass.
    """

    num_keypoints: int = 20
    feature_channels: int = 32
    depth: int = 16
    compressed_channels: int = 5
    base_channels: int = 32
    max_channels: int = 1024
    num_blocks: int = 5
    heatmap_variance: float = 0.01
    width: float = 1.0


class MotionFieldEstimator(nn.Module):
    """Keypoints + identity volume -> dense 3D flow and occlusion map (module docstring)."""

    def __init__(self, config: MotionFieldConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MotionFieldConfig()
        k1 = cfg.num_keypoints + 1
        c = cfg.compressed_channels
        self.compress = nn.Sequential(nn.Conv3d(cfg.feature_channels, c, 1), nn.InstanceNorm3d(c, affine=True),
                                      nn.ReLU())
        base = scaled_channels(cfg.base_channels, cfg.width)
        top = max(base, scaled_channels(cfg.max_channels, cfg.width))
        self.hourglass = Hourglass3d(k1 * (c + 1), base, cfg.num_blocks, top)
        self.mask = nn.Conv3d(self.hourglass.out_channels, k1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels * cfg.depth, 1, 7, padding=3)

    def forward(self, volume: Tensor, kp_source: Tensor, kp_driving: Tensor, rot_source: Tensor,
                rot_driving: Tensor) -> MotionField:
        """Args:
            volume: ``(B, C, D, h, w)`` identity features of the source (h, w multiples of ``2^num_blocks``).
            kp_source, kp_driving: ``(B, k, 3)`` keypoints (eq. 3.1).
            rot_source, rot_driving: ``(B, 3, 3)`` their rotations (the Jacobians).

        Returns:
            :class:`MotionField`.
        """
        cfg = self.config
        if volume.dim() != 5 or volume.shape[1:3] != (cfg.feature_channels, cfg.depth):
            raise InputShapeError(f"volume must have shape (B, {cfg.feature_channels}, {cfg.depth}, h, w); got "
                                  f"{tuple(volume.shape)}")
        if kp_driving.dim() != 3 or kp_driving.shape[1] != cfg.num_keypoints:
            raise InputShapeError(f"keypoints must have shape (B, {cfg.num_keypoints}, 3); got "
                                  f"{tuple(kp_driving.shape)}")
        B, _, D, h, w = volume.shape
        grid = coordinate_grid(D, h, w, device=volume.device, dtype=kp_driving.dtype)
        motions = sparse_motions(grid, kp_source, kp_driving, rot_source, rot_driving)  # (B, k+1, D, h, w, 3)
        k1 = motions.shape[1]
        heat = (gaussian_heatmaps(kp_driving, grid, cfg.heatmap_variance)
                - gaussian_heatmaps(kp_source, grid, cfg.heatmap_variance))
        heat = torch.cat([heat.new_zeros(B, 1, D, h, w), heat], dim=1)[:, :, None]  # (B, k+1, 1, D, h, w)
        small = self.compress(volume)
        c = small.shape[1]
        rep = small[:, None].expand(B, k1, c, D, h, w).reshape(B * k1, c, D, h, w)
        deformed = warp_volume(rep, motions.reshape(B * k1, D, h, w, 3)).reshape(B, k1, c, D, h, w)
        x = torch.cat([heat.to(deformed.dtype), deformed], dim=2).reshape(B, k1 * (c + 1), D, h, w)
        y = self.hourglass(x)
        mask = torch.softmax(self.mask(y).float(), dim=1).to(motions.dtype)  # (B, k+1, D, h, w)
        flow = (mask[..., None] * motions).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(y.reshape(B, -1, h, w)))
        return MotionField(flow, occlusion, mask, motions)
