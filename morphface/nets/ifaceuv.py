"""IFaceUV generator networks, after Lee et al., "IFaceUV: Intuitive Motion Facial Image Generation by
Identity Preservation via UV map" (2023), which builds on PIRenderer (Ren et al., ICCV 2021).

* :class:`MotionEncoder` (f^E): PIRenderer's mapping net. A window of 3DMM motion vectors (expression,
  3 Euler angles, 3 translations per frame, frames ``t - i .. t + i``) -> latent ``z``: a 7-tap
  Conv1d, ``num_layers`` residual LeakyReLU(0.1) + dilated (3) 3-tap Conv1d layers that each crop the
  skip path by 3 frames a side, and a temporal average.
* :class:`AdaINUNet`: the shared encoder-decoder: a 7x7 stem, ``num_down`` stride-2 conv layers with
  layer norm, ``num_res_blocks`` residual AdaIN(z) blocks at the bottleneck, and ``num_up`` decoder
  levels (nearest x2, conv, AdaIN(z), LeakyReLU, concatenation of the encoder's skip, conv, AdaIN(z),
  LeakyReLU), then a 7x7 conv. With ``num_up < num_down`` the output is at ``1 / 2**(num_down -
  num_up)`` of the input resolution.
* :class:`WarpingNet`: an :class:`AdaINUNet` on the source image predicting a pixel flow at 1/4
  resolution (PIRenderer: 5 down, 3 up), up-sampled x4 with :func:`morphface.nets.warp.upsample_flow`
  and applied to the source image.
* :class:`UVRefinementNet`: an :class:`AdaINUNet` on concat(source image resized to the UV size,
  synthetic UV map, its validity mask) -> refined UV map (tanh).
* :class:`EditingNet`: an :class:`AdaINUNet` on concat(source, warped, combined image) -> final image
  (tanh).

With ``blend_input=True`` (not in IFaceUV; off by default) the UV refinement and editing nets predict one
more channel, a soft mask that blends their colours with their main input (the synthetic UV map, the
combined image; :func:`morphface.nets.blocks.blend_output`): they start as the identity on that input
and learn corrections, which small networks trained for minutes need.

Conventions: images and UV maps in [-1, 1], masks in [0, 1], motion vectors in the 3DMM's units
(angles in radians, translations as the fitter reports them). Flows follow :mod:`morphface.nets.warp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_map, check_vector
from .blocks import AdaIN, AdaINBlock, ConvBlock, blend_output, init_blend_head, scaled_channels
from .warp import upsample_flow, warp

__all__ = [
    "MotionEncoderConfig",
    "MotionEncoder",
    "AdaINUNetConfig",
    "AdaINUNet",
    "WarpingNetConfig",
    "WarpingNet",
    "WarpingOutput",
    "UVRefinementNetConfig",
    "UVRefinementNet",
    "EditingNetConfig",
    "EditingNet",
]

_SLOPE = 0.1  # PIRenderer's LeakyReLU slope


@dataclass(frozen=True)
class MotionEncoderConfig:
    """Sizes of :class:`MotionEncoder`; defaults are PIRenderer's mapping net.

    Attributes:
        expression_dim: expression coefficients per frame (64 for the Deep3DFaceRecon BFM).
        window_radius: ``i``: the window holds frames ``t - i .. t + i`` (13 -> 27 frames).
        descriptor_dim: length of ``z``.
        hidden_channels: Conv1d channels (PIRenderer: = descriptor_dim = 256); scaled by ``width``.
        num_layers: dilated residual layers (each needs 6 more frames).
        width: channel multiplier (``z`` keeps ``descriptor_dim``).
    """

    expression_dim: int = 64
    window_radius: int = 13
    descriptor_dim: int = 256
    hidden_channels: int = 256
    num_layers: int = 3
    width: float = 1.0

    @property
    def motion_dim(self) -> int:
        """Per-frame vector length: expression + 3 angles + 3 translations."""
        return self.expression_dim + 6

    @property
    def window(self) -> int:
        """Frames in a window: ``2 * window_radius + 1``."""
        return 2 * self.window_radius + 1


class MotionEncoder(nn.Module):
    """IFaceUV's motion encoder f^E (PIRenderer's mapping net)."""

    def __init__(self, config: MotionEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MotionEncoderConfig()
        need = 7 + 6 * cfg.num_layers
        if cfg.window < need:
            raise ValueError(f"a window of {cfg.window} frames is too short for {cfg.num_layers} layers "
                             f"(needs >= {need}, i.e. window_radius >= {-(-(need - 1) // 2)})")
        hidden = scaled_channels(cfg.hidden_channels, cfg.width)
        self.first = nn.Conv1d(cfg.motion_dim, hidden, kernel_size=7)
        self.layers = nn.ModuleList([
            nn.Sequential(nn.LeakyReLU(_SLOPE), nn.Conv1d(hidden, hidden, kernel_size=3, dilation=3))
            for _ in range(cfg.num_layers)
        ])
        self.out = nn.Identity() if hidden == cfg.descriptor_dim else nn.Linear(hidden, cfg.descriptor_dim)

    def forward(self, motion: Tensor) -> Tensor:
        """Encode a motion window.

        Args:
            motion: ``(B, 2 i + 1, expression_dim + 6)``: per frame (oldest first) the expression
                coefficients, then pitch, yaw, roll (radians), then tx, ty, tz.

        Returns:
            ``(B, descriptor_dim)`` latent ``z``.
        """
        cfg = self.config
        if not isinstance(motion, Tensor) or motion.dim() != 3 or motion.shape[1:] != (cfg.window, cfg.motion_dim):
            shape = tuple(motion.shape) if isinstance(motion, Tensor) else type(motion).__name__
            raise ValueError(f"motion must have shape (B, {cfg.window}, {cfg.motion_dim}); got {shape}")
        x = self.first(motion.transpose(1, 2))
        for layer in self.layers:
            # The dilated 3-tap conv loses 3 frames a side; crop the skip path to match.
            x = layer(x) + x[:, :, 3:-3]
        return self.out(x.mean(dim=2))


@dataclass(frozen=True)
class AdaINUNetConfig:
    """Sizes of :class:`AdaINUNet`.

    Attributes:
        in_channels, out_channels: input/output channels.
        style_dim: length of the AdaIN vector ``z``.
        base_channels: stem channels; level ``k`` has ``min(base * 2**k, max_channels)``.
        max_channels: cap of the channel doubling.
        num_down: stride-2 encoder layers (``H, W`` must be multiples of ``2**num_down``).
        num_up: decoder levels (``None``: ``num_down``); the output is at ``2**(num_up - num_down)``
            of the input size.
        num_res_blocks: residual AdaIN blocks at the bottleneck.
        out_activation: ``"tanh"`` or ``"none"``.
        width: channel multiplier.
    """

    in_channels: int
    out_channels: int
    style_dim: int = 256
    base_channels: int = 64
    max_channels: int = 256
    num_down: int = 3
    num_up: int | None = None
    num_res_blocks: int = 2
    out_activation: str = "tanh"
    width: float = 1.0

    @property
    def levels(self) -> tuple[int, ...]:
        """Channels at levels ``0 .. num_down``."""
        return tuple(scaled_channels(min(self.base_channels * 2**k, self.max_channels), self.width)
                     for k in range(self.num_down + 1))

    @property
    def ups(self) -> int:
        return self.num_down if self.num_up is None else self.num_up


class _AdaINUp(nn.Module):
    """Decoder level: x2 up, conv + AdaIN, concat the skip, conv + AdaIN."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm0 = AdaIN(out_channels, style_dim)
        self.conv1 = nn.Conv2d(2 * out_channels, out_channels, 3, padding=1)
        self.norm1 = AdaIN(out_channels, style_dim)

    def forward(self, x: Tensor, skip: Tensor, z: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.leaky_relu(self.norm0(self.conv0(x), z), _SLOPE)
        x = self.conv1(torch.cat([x, skip], dim=1))
        return F.leaky_relu(self.norm1(x, z), _SLOPE)


class AdaINUNet(nn.Module):
    """Encoder-decoder with skip connections and AdaIN(z) in the decoder (see the module docstring)."""

    def __init__(self, config: AdaINUNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        if cfg.num_down < 1 or not 0 <= cfg.ups <= cfg.num_down:
            raise ValueError(f"need num_down >= 1 and 0 <= num_up <= num_down; got {cfg.num_down}, {cfg.num_up}")
        if cfg.out_activation not in ("tanh", "none"):
            raise ValueError(f"out_activation must be 'tanh' or 'none'; got {cfg.out_activation!r}")
        ch = cfg.levels
        self.stem = ConvBlock(cfg.in_channels, ch[0], 7, norm="layer", activation="lrelu", padding_mode="reflect",
                              negative_slope=_SLOPE)
        self.down = nn.ModuleList([
            ConvBlock(ch[k - 1], ch[k], 3, stride=2, norm="layer", activation="lrelu", negative_slope=_SLOPE)
            for k in range(1, cfg.num_down + 1)
        ])
        self.res = nn.ModuleList([AdaINBlock(ch[-1], cfg.style_dim, spectral=False)
                                  for _ in range(cfg.num_res_blocks)])
        self.up = nn.ModuleList([_AdaINUp(ch[k], ch[k - 1], cfg.style_dim)
                                 for k in range(cfg.num_down, cfg.num_down - cfg.ups, -1)])
        self.head = nn.Conv2d(ch[cfg.num_down - cfg.ups], cfg.out_channels, 7, padding=3, padding_mode="reflect")

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Args:
            x: ``(B, in_channels, H, W)``; ``H, W`` multiples of ``2**num_down``.
            z: ``(B, style_dim)``.

        Returns:
            ``(B, out_channels, H / 2**(num_down - num_up), W / 2**(num_down - num_up))``; in
            [-1, 1] with ``out_activation="tanh"``.
        """
        cfg = self.config
        check_map("x", x, cfg.in_channels, multiple=2**cfg.num_down)
        check_vector("z", z, cfg.style_dim, batch=x.shape[0])
        skips = [self.stem(x)]
        for layer in self.down:
            skips.append(layer(skips[-1]))
        y = skips.pop()
        for block in self.res:
            y = y + block(y, z)
        for level in self.up:
            y = level(y, skips.pop(), z)
        y = self.head(y)
        return torch.tanh(y) if cfg.out_activation == "tanh" else y


@dataclass(frozen=True)
class WarpingNetConfig:
    """Sizes of :class:`WarpingNet`; defaults are PIRenderer's warping net.

    Attributes:
        image_channels: channels of the source image.
        descriptor_dim: length of ``z``.
        base_channels, max_channels: see :class:`AdaINUNetConfig`.
        num_down: encoder depth (5); the decoder goes back up to 1/4 resolution.
        flow_downsample: resolution factor of the predicted flow (4), a power of two.
        num_res_blocks: bottleneck AdaIN blocks (PIRenderer's hourglass has none).
        padding_mode: what :func:`warp` reads outside the source.
        width: channel multiplier.
    """

    image_channels: int = 3
    descriptor_dim: int = 256
    base_channels: int = 32
    max_channels: int = 256
    num_down: int = 5
    flow_downsample: int = 4
    num_res_blocks: int = 0
    padding_mode: str = "border"
    width: float = 1.0


class WarpingOutput(NamedTuple):
    """Output of :class:`WarpingNet`.

    Attributes:
        flow: ``(B, 2, H, W)`` backward flow in pixels of the full-resolution source.
        warped_image: ``(B, image_channels, H, W)`` source warped by ``flow``.
    """

    flow: Tensor
    warped_image: Tensor


class WarpingNet(nn.Module):
    """IFaceUV/PIRenderer warping net: ``(source, z) -> (flow, warped source)``."""

    def __init__(self, config: WarpingNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or WarpingNetConfig()
        f = cfg.flow_downsample
        if f < 1 or f & (f - 1) or f.bit_length() - 1 > cfg.num_down:
            raise ValueError(f"flow_downsample must be a power of two <= 2**num_down; got {f}")
        self.unet = AdaINUNet(AdaINUNetConfig(
            in_channels=cfg.image_channels, out_channels=2, style_dim=cfg.descriptor_dim,
            base_channels=cfg.base_channels, max_channels=cfg.max_channels, num_down=cfg.num_down,
            num_up=cfg.num_down - (f.bit_length() - 1), num_res_blocks=cfg.num_res_blocks,
            out_activation="none", width=cfg.width))
        with torch.no_grad():
            # Near-identity warp at initialisation; not zero so that upstream layers get gradients.
            self.unet.head.weight.mul_(1e-2)
            self.unet.head.bias.zero_()

    def forward(self, source: Tensor, z: Tensor) -> WarpingOutput:
        """Args:
            source: ``(B, image_channels, H, W)`` in [-1, 1]; ``H, W`` multiples of ``2**num_down``.
            z: ``(B, descriptor_dim)`` from :class:`MotionEncoder`.

        Returns:
            :class:`WarpingOutput`.
        """
        low = self.unet(source, z)
        flow = upsample_flow(low, tuple(source.shape[-2:]))
        return WarpingOutput(flow, warp(source, flow, self.config.padding_mode))


@dataclass(frozen=True)
class UVRefinementNetConfig:
    """Sizes of :class:`UVRefinementNet` (PIRenderer editing-net sizes).

    Attributes:
        image_channels: channels of the source image and of the UV map.
        descriptor_dim: length of ``z``.
        base_channels, max_channels, num_down, num_res_blocks, width: see :class:`AdaINUNetConfig`.
        blend_input: predict a mask and blend the output with the input UV map (module docstring).
    """

    image_channels: int = 3
    descriptor_dim: int = 256
    base_channels: int = 64
    max_channels: int = 256
    num_down: int = 3
    num_res_blocks: int = 2
    width: float = 1.0
    blend_input: bool = False


def _image_unet(cfg: UVRefinementNetConfig | EditingNetConfig, in_channels: int) -> AdaINUNet:
    """The :class:`AdaINUNet` of the UV refinement and editing nets: ``image_channels`` outputs (tanh), or
    one more for the blend mask with ``blend_input``."""
    unet = AdaINUNet(AdaINUNetConfig(
        in_channels=in_channels, out_channels=cfg.image_channels + int(cfg.blend_input),
        style_dim=cfg.descriptor_dim, base_channels=cfg.base_channels, max_channels=cfg.max_channels,
        num_down=cfg.num_down, num_res_blocks=cfg.num_res_blocks,
        out_activation="none" if cfg.blend_input else "tanh", width=cfg.width))
    if cfg.blend_input:
        init_blend_head(unet.head)
    return unet


def _resize_image(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class UVRefinementNet(nn.Module):
    """IFaceUV's UV refinement net: ``(source, UV map, UV mask, z) -> refined UV map``."""

    def __init__(self, config: UVRefinementNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UVRefinementNetConfig()
        self.unet = _image_unet(cfg, 2 * cfg.image_channels + 1)

    def forward(self, source: Tensor, uv_map: Tensor, uv_mask: Tensor, z: Tensor) -> Tensor:
        """Args:
            source: ``(B, image_channels, H, W)`` source image in [-1, 1] (resized to the UV size
                here, antialiased when shrinking).
            uv_map: ``(B, image_channels, S, S')`` synthetic UV texture in [-1, 1]; ``S, S'``
                multiples of ``2**num_down``.
            uv_mask: ``(B, 1, S, S')`` validity of ``uv_map`` in [0, 1].
            z: ``(B, descriptor_dim)``.

        Returns:
            ``(B, image_channels, S, S')`` refined UV map in [-1, 1].
        """
        c = self.config.image_channels
        check_map("uv_map", uv_map, c, multiple=2**self.config.num_down)
        b, size = uv_map.shape[0], tuple(uv_map.shape[-2:])
        check_map("source", source, c, batch=b)
        check_map("uv_mask", uv_mask, 1, batch=b, size=size)
        x = torch.cat([_resize_image(source, size), uv_map, uv_mask.to(uv_map.dtype)], dim=1)
        y = self.unet(x, z)
        return blend_output(y, uv_map, uv_mask) if self.config.blend_input else y


@dataclass(frozen=True)
class EditingNetConfig:
    """Sizes of :class:`EditingNet` (PIRenderer's editing net: base 64, max 256, 3 levels, 2 blocks).

    Attributes:
        image_channels: channels of each input image and of the output.
        descriptor_dim: length of ``z``.
        base_channels, max_channels, num_down, num_res_blocks, width: see :class:`AdaINUNetConfig`.
        blend_input: predict a mask and blend the output with the combined image (module docstring).
    """

    image_channels: int = 3
    descriptor_dim: int = 256
    base_channels: int = 64
    max_channels: int = 256
    num_down: int = 3
    num_res_blocks: int = 2
    width: float = 1.0
    blend_input: bool = False


class EditingNet(nn.Module):
    """IFaceUV's editing net: ``(source, warped, combined, z) -> final image``."""

    def __init__(self, config: EditingNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or EditingNetConfig()
        self.unet = _image_unet(cfg, 3 * cfg.image_channels)

    def forward(self, source: Tensor, warped: Tensor, combined: Tensor, z: Tensor) -> Tensor:
        """Args:
            source: ``(B, image_channels, H, W)`` source image in [-1, 1]; ``H, W`` multiples of
                ``2**num_down``.
            warped: ``(B, image_channels, H, W)`` output of :class:`WarpingNet`.
            combined: ``(B, image_channels, H, W)`` the refined UV texture rendered in the driving
                pose, combined with the warped image (IFaceUV's "combined image").
            z: ``(B, descriptor_dim)``.

        Returns:
            ``(B, image_channels, H, W)`` final image in [-1, 1].
        """
        c = self.config.image_channels
        check_map("source", source, c)
        b, size = source.shape[0], tuple(source.shape[-2:])
        check_map("warped", warped, c, batch=b, size=size)
        check_map("combined", combined, c, batch=b, size=size)
        y = self.unet(torch.cat([source, warped, combined], dim=1), z)
        return blend_output(y, combined) if self.config.blend_input else y
