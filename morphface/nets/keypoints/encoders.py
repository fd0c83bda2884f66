"""The image encoders of the keypoint core: appearance volume, canonical keypoints, head pose.

* :class:`AppearanceFeatureExtractor` (face-vid2vid's ``F``, Hatakeyama et al.'s *identity extractor*):
  ``conv7x7 -> 2 down blocks -> conv1x1 -> reshape channels into depth -> 3D res blocks``, giving the
  identity feature volume ``I`` ``(B, C, D, S/4, S/4)`` (face-vid2vid: C = 32, D = 16 at 256 x 256).
* :class:`CanonicalKeypointDetector` (``L``): a 2D hourglass on the image at a quarter of its size,
  its output channels reshaped into depth, a 7x7x7 conv to ``k`` heatmaps, a softmax over the volume
  (temperature 0.1) and the expected coordinates: ``K_c`` ``(B, k, 3)`` in keypoint space
  (:mod:`.geometry`). ``k = 20`` (face-vid2vid's count; Hatakeyama et al. do not state theirs).
* :class:`HeadPoseEstimator` (``H``): a ResNet-style encoder, global average pooling, then 66 bins per
  Euler angle (HopeNet's 3-degree bins over [-99, 99) degrees; the angle is the softmax expectation)
  and a translation ``t`` (3). It optionally also predicts face-vid2vid's image-based expression
  deformation ``delta`` ``(B, k, 3)`` (off for kp3d, whose deformations come from AUs and audio).

All take images in [-1, 1] of a side divisible by the stated multiple.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputShapeError
from ..blocks import scaled_channels
from .blocks import DownBlock2d, Hourglass2d, ResBlock2d, ResBlock3d
from .geometry import coordinate_grid, pose_to_rotation

__all__ = [
    "AppearanceConfig",
    "AppearanceFeatureExtractor",
    "CanonicalKeypointConfig",
    "CanonicalKeypointDetector",
    "HeadPoseConfig",
    "HeadPoseEstimator",
    "HeadPose",
    "NUM_ANGLE_BINS",
    "PooledImageEncoder",
]

#: HopeNet / face-vid2vid: 66 bins of 3 degrees starting at -99 degrees.
NUM_ANGLE_BINS = 66
_BIN_DEG, _BIN_START_DEG = 3.0, -99.0


def check_image(name: str, x: Tensor, multiple: int) -> None:
    """Raise :class:`InputShapeError` unless ``x`` is ``(B, 3, H, W)`` with H, W multiples of ``multiple``."""
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError(f"{name} must be a (B, 3, H, W) image; got {shape}")
    if x.shape[-1] % multiple or x.shape[-2] % multiple:
        raise InputShapeError(f"{name} height and width must be multiples of {multiple}; got {tuple(x.shape)}")


@dataclass(frozen=True)
class AppearanceConfig:
    """Sizes of :class:`AppearanceFeatureExtractor` (defaults: face-vid2vid at 256 x 256).

    Attributes:
        base_channels: channels of the first conv (64), doubled by each of the two down blocks.
        feature_channels: ``C`` of the volume (32).
        depth: ``D`` of the volume (16).
        num_res_blocks: 3D residual blocks (6).
        width: multiplier of ``base_channels`` and ``feature_channels`` (not of ``depth``).
    """

    base_channels: int = 64
    feature_channels: int = 32
    depth: int = 16
    num_res_blocks: int = 6
    width: float = 1.0

    @property
    def channels(self) -> int:
        """``C`` of the output volume after the width multiplier."""
        return scaled_channels(self.feature_channels, self.width)


class AppearanceFeatureExtractor(nn.Module):
    """Source image -> 3D identity feature volume ``I`` (module docstring)."""

    def __init__(self, config: AppearanceConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AppearanceConfig()
        b = scaled_channels(cfg.base_channels, cfg.width)
        c = cfg.channels
        self.first = nn.Sequential(nn.Conv2d(3, b, 7, padding=3), nn.InstanceNorm2d(b, affine=True), nn.ReLU())
        self.down = nn.Sequential(DownBlock2d(b, 2 * b), DownBlock2d(2 * b, 4 * b))
        self.to_volume = nn.Conv2d(4 * b, c * cfg.depth, 1)
        self.res = nn.Sequential(*[ResBlock3d(c) for _ in range(cfg.num_res_blocks)])

    def forward(self, image: Tensor) -> Tensor:
        """Args:
            image: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of 4.

        Returns:
            ``(B, C, D, H/4, W/4)`` identity features.
        """
        check_image("image", image, 4)
        x = self.to_volume(self.down(self.first(image)))
        B, _, h, w = x.shape
        return self.res(x.reshape(B, self.config.channels, self.config.depth, h, w))


@dataclass(frozen=True)
class CanonicalKeypointConfig:
    """Sizes of :class:`CanonicalKeypointDetector` (face-vid2vid's, scaled down where noted).

    Attributes:
        num_keypoints: ``k`` (20).
        base_channels: first hourglass block (32).
        max_channels: hourglass channel cap (1024 in face-vid2vid).
        num_blocks: hourglass down/up blocks (5).
        depth: depth of the keypoint volume (16).
        volume_channels: channels per depth slice after the reshape (face-vid2vid: 16384 / 16 = 1024;
            here a small default, 32, the hourglass output being mapped by a 1x1 conv).
        scale: the image is resized by this factor before the hourglass (0.25).
        temperature: of the volume softmax (0.1).
        width: channel multiplier.
    """

    num_keypoints: int = 20
    base_channels: int = 32
    max_channels: int = 1024
    num_blocks: int = 5
    depth: int = 16
    volume_channels: int = 32
    scale: float = 0.25
    temperature: float = 0.1
    width: float = 1.0


class CanonicalKeypointDetector(nn.Module):
    """Source image -> canonical keypoints ``K_c`` ``(B, k, 3)`` (module docstring)."""

    def __init__(self, config: CanonicalKeypointConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CanonicalKeypointConfig()
        if cfg.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1; got {cfg.num_keypoints}")
        base = scaled_channels(cfg.base_channels, cfg.width)
        top = max(base, scaled_channels(cfg.max_channels, cfg.width))
        self.vc = scaled_channels(cfg.volume_channels, cfg.width)
        self.hourglass = Hourglass2d(3, base, cfg.num_blocks, top)
        self.to_volume = nn.Conv2d(self.hourglass.out_channels, self.vc * cfg.depth, 1)
        self.heatmap = nn.Conv3d(self.vc, cfg.num_keypoints, 7, padding=3)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return int(round(self.hourglass.multiple / self.config.scale))

    def forward(self, image: Tensor) -> Tensor:
        """Args:
            image: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of :attr:`multiple`.

        Returns:
            ``(B, k, 3)`` keypoints ``(x, y, z)`` in keypoint space, each in ``(-1, 1)``.
        """
        cfg = self.config
        check_image("image", image, self.multiple)
        x = image
        if cfg.scale != 1:
            x = F.interpolate(x, scale_factor=cfg.scale, mode="bilinear", align_corners=False, antialias=True)
        f = self.to_volume(self.hourglass(x))
        B, _, h, w = f.shape
        heat = self.heatmap(f.reshape(B, self.vc, cfg.depth, h, w))  # (B, k, D, h, w)
        prob = torch.softmax(heat.flatten(2).float() / cfg.temperature, dim=-1)
        grid = coordinate_grid(cfg.depth, h, w, device=image.device, dtype=prob.dtype).reshape(-1, 3)
        return (prob @ grid).to(image.dtype)


class PooledImageEncoder(nn.Module):
    """Base of the image -> vector encoders: a ResNet-style trunk (a 7x7 stride-2 conv with affine instance norm
    and ReLU, then ``num_stages`` stages of ``down block + res block``, channels doubled per stage up to
    ``max_channels``, all times ``width``) and global average pooling (:meth:`pooled`). Subclasses
    (:class:`HeadPoseEstimator`, MMFA's :class:`~.mmfa.ScaleTranslationDecoder`) add their linear heads on
    :attr:`out_channels` features."""

    def __init__(self, base_channels: int, num_stages: int, max_channels: int, width: float) -> None:
        super().__init__()
        self.num_stages = num_stages
        b = scaled_channels(base_channels, width)
        top = max(b, scaled_channels(max_channels, width))
        layers: list[nn.Module] = [nn.Conv2d(3, b, 7, stride=2, padding=3), nn.InstanceNorm2d(b, affine=True),
                                   nn.ReLU()]
        ch = b
        for _ in range(num_stages):
            nxt = min(ch * 2, top)
            layers += [DownBlock2d(ch, nxt), ResBlock2d(nxt)]
            ch = nxt
        self.trunk = nn.Sequential(*layers)
        self.out_channels = ch

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** (self.num_stages + 1)

    def pooled(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] (H and W multiples of :attr:`multiple`) -> ``(B, out_channels)``."""
        check_image("image", image, self.multiple)
        return self.trunk(image).mean(dim=(-2, -1))


class HeadPose(NamedTuple):
    """Output of :class:`HeadPoseEstimator`.

    Attributes:
        angles: ``(B, 3)`` pitch, yaw, roll in radians (:mod:`morphface.camera` convention).
        rotation: ``(B, 3, 3)`` keypoint-space rotation :func:`~.geometry.pose_to_rotation` of ``angles``.
        translation: ``(B, 3)`` keypoint-space translation ``t``.
        expression: ``(B, k, 3)`` image-based expression deformation, or ``None`` when not predicted.
    """

    angles: Tensor
    rotation: Tensor
    translation: Tensor
    expression: Tensor | None


@dataclass(frozen=True)
class HeadPoseConfig:
    """Sizes of :class:`HeadPoseEstimator` (face-vid2vid: a ResNet-50-like trunk; here a lighter one).

    Attributes:
        base_channels: channels of the first 7x7 stride-2 conv (64), doubled by each stage.
        num_stages: down-sampling stages after the first conv, each ``down block + res block`` (4).
        max_channels: channel cap (512).
        predict_expression: also output face-vid2vid's ``delta`` ``(B, k, 3)``.
        num_keypoints: ``k`` of that expression output.
        width: channel multiplier.
    """

    base_channels: int = 64
    num_stages: int = 4
    max_channels: int = 512
    predict_expression: bool = False
    num_keypoints: int = 20
    width: float = 1.0


class HeadPoseEstimator(PooledImageEncoder):
    """Image -> head pose (angles, rotation, translation) and optionally expression (module docstring)."""

    def __init__(self, config: HeadPoseConfig | None = None) -> None:
        cfg = config or HeadPoseConfig()
        super().__init__(cfg.base_channels, cfg.num_stages, cfg.max_channels, cfg.width)
        self.config = cfg
        ch = self.out_channels
        self.angle_bins = nn.Linear(ch, 3 * NUM_ANGLE_BINS)
        self.translation = nn.Linear(ch, 3)
        self.expression = nn.Linear(ch, 3 * cfg.num_keypoints) if cfg.predict_expression else None
        bins = (torch.arange(NUM_ANGLE_BINS, dtype=torch.float32) * _BIN_DEG + _BIN_START_DEG + _BIN_DEG / 2)
        self.register_buffer("bin_centres", bins * (math.pi / 180.0), persistent=False)

    def forward(self, image: Tensor) -> HeadPose:
        """Args:
            image: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of :attr:`multiple`.

        Returns:
            :class:`HeadPose`.
        """
        f = self.pooled(image)
        logits = self.angle_bins(f).reshape(-1, 3, NUM_ANGLE_BINS)
        angles = torch.softmax(logits.float(), dim=-1) @ self.bin_centres.float()
        angles = angles.to(image.dtype)
        expression = None
        if self.expression is not None:
            expression = self.expression(f).reshape(-1, self.config.num_keypoints, 3)
        return HeadPose(angles, pose_to_rotation(angles), self.translation(f), expression)
