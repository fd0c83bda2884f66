"""HeadGAN generator networks, after Doukas et al., "HeadGAN: One-shot Neural Head Synthesis and
Editing" (ICCV 2021) and the authors' code.

* :class:`DenseFlowNet` (F) encodes the reference image together with its 3D-face (NCC) rendering at
  three scales (H, H/2, H/4; 32/128/512 channels), decodes with SPADE blocks conditioned on the driving
  3D-face images (current + ``k = 2`` previous frames stacked channel-wise) and two PixelShuffle
  up-samplings into a dense flow, and warps the reference image and the three feature maps with it.
* :class:`RenderingNet` (R) encodes the driving 3D-face images with an encoder of the same shape and
  decodes with alternating SPADE blocks (modulated by the warped feature map of the same scale) and
  AdaIN blocks (modulated by an audio feature vector, 300-D DeepSpeech features in HeadGAN), PixelShuffle
  up-samplings, a last SPADE block modulated by the warped reference image, LeakyReLU, conv and tanh.
* :class:`HeadGANGenerator` chains the two.

Conventions: images and 3D-face renderings enter in [-1, 1] (the pipelines map from the library's
[0, 1]); the generated image is tanh output in [-1, 1]. Flows follow :mod:`morphface.nets.warp`
(pixels, backward). ``H`` and ``W`` must be multiples of 4. The decoder mirrors the authors' code: two
SPADE blocks at the bottleneck, then per scale a SPADE block and a parameter-free PixelShuffle that
trades channels for resolution (512 -> 128 -> 32), which is why the channel counts grow by 4.
The blocks have no skip path (HeadGAN's description). The flow head starts near zero so that an
untrained F is close to the identity warp.

``blend_warped=True`` (not in HeadGAN; off by default) gives R a fifth output channel, a soft mask that
blends its colours with F's warped reference (:func:`morphface.nets.blocks.blend_output`, as few-shot
vid2vid does): R then only has to synthesise what the warp cannot provide, which a small generator
trained for minutes needs (see the README's training results).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_map, check_vector
from .blocks import AdaINBlock, ConvBlock, PixelShuffleUp, SPADEBlock, blend_output, init_blend_head, scaled_channels
from .warp import resize_flow, warp

__all__ = [
    "DenseFlowNetConfig",
    "DenseFlowNet",
    "DenseFlowOutput",
    "RenderingNetConfig",
    "RenderingNet",
    "HeadGANConfig",
    "HeadGANGenerator",
    "HeadGANOutput",
]


def _pyramid(base_channels: int, width: float) -> tuple[int, int, int]:
    c0 = scaled_channels(base_channels, width)
    return c0, 4 * c0, 16 * c0


class _Encoder(nn.Module):
    """Three conv layers (7x7, 3x3/2, 3x3/2) with instance norm and ReLU -> features at H, H/2, H/4."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int], spectral: bool) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.layers = nn.ModuleList([
            ConvBlock(in_channels, c0, 7, norm="instance", activation="relu", spectral=spectral,
                      padding_mode="reflect"),
            ConvBlock(c0, c1, 3, stride=2, norm="instance", activation="relu", spectral=spectral),
            ConvBlock(c1, c2, 3, stride=2, norm="instance", activation="relu", spectral=spectral),
        ])

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


@dataclass(frozen=True)
class DenseFlowNetConfig:
    """Sizes of :class:`DenseFlowNet`; defaults are HeadGAN's.

    Attributes:
        image_channels: channels of the reference image (RGB).
        face_channels: channels of one 3D-face rendering (NCC: 3).
        num_frames: driving 3D-face frames stacked channel-wise (current + k=2 previous).
        base_channels: channels of the first encoder layer; the next two have 4x and 16x.
        num_bottleneck_blocks: SPADE blocks at H/4 before the first up-sampling.
        spade_hidden: width of SPADE's embedding convs (256 in HeadGAN's code).
        spectral: spectral normalisation on the convs (``spectralspadeinstance3x3``).
        cond_interpolation: how SPADE resizes the driving images (``"nearest"`` as in SPADE/HeadGAN).
        padding_mode: what :func:`warp` reads outside the reference.
        width: multiplier of all channel counts (tests use tiny widths).
    """

    image_channels: int = 3
    face_channels: int = 3
    num_frames: int = 3
    base_channels: int = 32
    num_bottleneck_blocks: int = 2
    spade_hidden: int = 256
    spectral: bool = True
    cond_interpolation: str = "nearest"
    padding_mode: str = "border"
    width: float = 1.0

    @property
    def channels(self) -> tuple[int, int, int]:
        """Feature channels at H, H/2, H/4."""
        return _pyramid(self.base_channels, self.width)


class DenseFlowOutput(NamedTuple):
    """Output of :class:`DenseFlowNet`.

    Attributes:
        flow: ``(B, 2, H, W)`` backward flow in pixels (see :mod:`morphface.nets.warp`).
        warped_image: ``(B, image_channels, H, W)`` the reference image warped by ``flow``.
        warped_features: reference features warped by ``flow`` resized to their scale:
            ``(B, c0, H, W)``, ``(B, c1, H/2, W/2)``, ``(B, c2, H/4, W/4)``.
    """

    flow: Tensor
    warped_image: Tensor
    warped_features: tuple[Tensor, Tensor, Tensor]


class DenseFlowNet(nn.Module):
    """HeadGAN's dense flow network F (see the module docstring)."""

    def __init__(self, config: DenseFlowNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DenseFlowNetConfig()
        c0, c1, c2 = cfg.channels
        cond = cfg.face_channels * cfg.num_frames
        hidden = scaled_channels(cfg.spade_hidden, cfg.width)

        def spade(ch: int) -> SPADEBlock:
            return SPADEBlock(ch, cond, hidden, spectral=cfg.spectral, interpolation=cfg.cond_interpolation)

        self.encoder = _Encoder(cfg.image_channels + cfg.face_channels, cfg.channels, cfg.spectral)
        self.low = nn.ModuleList([spade(c2) for _ in range(cfg.num_bottleneck_blocks + 1)])
        self.up2 = PixelShuffleUp(c2, c1)
        self.mid = spade(c1)
        self.up1 = PixelShuffleUp(c1, c0)
        self.flow_head = nn.Conv2d(c0, 2, 7, padding=3, padding_mode="reflect")
        with torch.no_grad():
            # Near-identity warp at initialisation; not zero so that upstream layers get gradients.
            self.flow_head.weight.mul_(1e-2)
            self.flow_head.bias.zero_()

    def forward(self, reference_image: Tensor, reference_face: Tensor, driving_faces: Tensor) -> DenseFlowOutput:
        """Predict the flow from the reference to the driving pose and warp the reference with it.

        Args:
            reference_image: ``(B, 3, H, W)`` in [-1, 1]; ``H, W`` multiples of 4.
            reference_face: ``(B, face_channels, H, W)`` 3D-face (NCC) rendering of the reference.
            driving_faces: ``(B, face_channels * num_frames, H, W)`` driving renderings, current
                frame first, then the previous ones.

        Returns:
            :class:`DenseFlowOutput`.
        """
        cfg = self.config
        check_map("reference_image", reference_image, cfg.image_channels, multiple=4)
        b, size = reference_image.shape[0], tuple(reference_image.shape[-2:])
        check_map("reference_face", reference_face, cfg.face_channels, batch=b, size=size)
        check_map("driving_faces", driving_faces, cfg.face_channels * cfg.num_frames, batch=b, size=size)

        feats = self.encoder(torch.cat([reference_image, reference_face], dim=1))
        x = feats[2]
        for block in self.low:
            x = block(x, driving_faces)
        x = self.mid(self.up2(x), driving_faces)
        flow = self.flow_head(self.up1(x))

        warped = tuple(warp(f, resize_flow(flow, tuple(f.shape[-2:])), cfg.padding_mode) for f in feats)
        image = warp(reference_image, flow, cfg.padding_mode)
        return DenseFlowOutput(flow, image, warped)


@dataclass(frozen=True)
class RenderingNetConfig:
    """Sizes of :class:`RenderingNet`; defaults are HeadGAN's.

    Attributes:
        image_channels: channels of the warped reference image and of the output (RGB).
        face_channels, num_frames: the driving 3D-face input has ``face_channels * num_frames``
            channels.
        base_channels: first encoder layer; then 4x and 16x (must match :class:`DenseFlowNet`).
        spade_hidden: SPADE embedding width.
        audio_dim: length of the audio feature vector (300 in HeadGAN).
        use_audio: False drops the AdaIN blocks (no audio input).
        spectral: spectral normalisation on the convs.
        cond_interpolation: SPADE resize mode (only the warped image can need it; sizes match).
        width: channel multiplier.
        blend_warped: predict a mask and blend the output with the warped reference (module docstring).
    """

    image_channels: int = 3
    face_channels: int = 3
    num_frames: int = 3
    base_channels: int = 32
    spade_hidden: int = 256
    audio_dim: int = 300
    use_audio: bool = True
    spectral: bool = True
    cond_interpolation: str = "nearest"
    width: float = 1.0
    blend_warped: bool = False

    @property
    def channels(self) -> tuple[int, int, int]:
        """Feature channels at H, H/2, H/4."""
        return _pyramid(self.base_channels, self.width)


class RenderingNet(nn.Module):
    """HeadGAN's rendering network R (see the module docstring)."""

    def __init__(self, config: RenderingNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RenderingNetConfig()
        c0, c1, c2 = cfg.channels
        hidden = scaled_channels(cfg.spade_hidden, cfg.width)

        def spade(ch: int, cond: int) -> SPADEBlock:
            return SPADEBlock(ch, cond, hidden, spectral=cfg.spectral, interpolation=cfg.cond_interpolation)

        def adain(ch: int) -> AdaINBlock:
            return AdaINBlock(ch, cfg.audio_dim, spectral=cfg.spectral)

        self.encoder = _Encoder(cfg.face_channels * cfg.num_frames, cfg.channels, cfg.spectral)
        # Index s = scale (0: H, 1: H/2, 2: H/4); decoding runs s = 2, 1, 0.
        self.spade = nn.ModuleList([spade(c, c) for c in (c0, c1, c2)])
        self.adain = nn.ModuleList([adain(c) for c in (c0, c1, c2)]) if cfg.use_audio else None
        self.up = nn.ModuleList([PixelShuffleUp(c1, c0), PixelShuffleUp(c2, c1)])
        self.spade_image = spade(c0, cfg.image_channels)
        out = cfg.image_channels + int(cfg.blend_warped)
        conv = nn.Conv2d(c0, out, 7, padding=3, padding_mode="reflect")
        if cfg.blend_warped:
            init_blend_head(conv)
            self.head = nn.Sequential(nn.LeakyReLU(0.2), conv)
        else:
            self.head = nn.Sequential(nn.LeakyReLU(0.2), conv, nn.Tanh())

    def forward(self, driving_faces: Tensor, warped_features: tuple[Tensor, Tensor, Tensor] | list[Tensor],
                warped_image: Tensor, audio: Tensor | None = None) -> Tensor:
        """Render the driving pose/expression with the reference's appearance.

        Args:
            driving_faces: ``(B, face_channels * num_frames, H, W)`` in [-1, 1]; ``H, W`` multiples of 4.
            warped_features: the three warped reference features from :class:`DenseFlowNet`:
                ``(B, c0, H, W)``, ``(B, c1, H/2, W/2)``, ``(B, c2, H/4, W/4)``.
            warped_image: ``(B, image_channels, H, W)`` warped reference image.
            audio: ``(B, audio_dim)`` audio features; required iff ``config.use_audio``.

        Returns:
            ``(B, image_channels, H, W)`` image in [-1, 1].
        """
        cfg = self.config
        check_map("driving_faces", driving_faces, cfg.face_channels * cfg.num_frames, multiple=4)
        b, (h, w) = driving_faces.shape[0], driving_faces.shape[-2:]
        if len(warped_features) != 3:
            raise ValueError(f"warped_features must hold 3 maps (H, H/2, H/4); got {len(warped_features)}")
        for s, (f, c) in enumerate(zip(warped_features, cfg.channels)):
            check_map(f"warped_features[{s}]", f, c, batch=b, size=(h >> s, w >> s))
        check_map("warped_image", warped_image, cfg.image_channels, batch=b, size=(h, w))
        if cfg.use_audio:
            if audio is None:
                raise ValueError(f"audio of shape ({b}, {cfg.audio_dim}) is required (config.use_audio=True)")
            check_vector("audio", audio, cfg.audio_dim, batch=b)
        elif audio is not None:
            raise ValueError("audio was given but config.use_audio is False")

        x = self.encoder(driving_faces)[2]
        for s in (2, 1, 0):
            x = self.spade[s](x, warped_features[s])
            if self.adain is not None:
                x = self.adain[s](x, audio)
            if s > 0:
                x = self.up[s - 1](x)
        x = self.spade_image(x, warped_image)
        if cfg.blend_warped:
            return blend_output(self.head(x), warped_image)
        return self.head(x)


@dataclass(frozen=True)
class HeadGANConfig:
    """Configuration of both HeadGAN generator networks (shared sizes; defaults are HeadGAN's)."""

    image_channels: int = 3
    face_channels: int = 3
    num_frames: int = 3
    base_channels: int = 32
    num_bottleneck_blocks: int = 2
    spade_hidden: int = 256
    audio_dim: int = 300
    use_audio: bool = True
    spectral: bool = True
    cond_interpolation: str = "nearest"
    padding_mode: str = "border"
    width: float = 1.0
    blend_warped: bool = False

    def flow_config(self) -> DenseFlowNetConfig:
        """The :class:`DenseFlowNetConfig` with these shared sizes."""
        return _subset(DenseFlowNetConfig, self)

    def rendering_config(self) -> RenderingNetConfig:
        """The :class:`RenderingNetConfig` with these shared sizes."""
        return _subset(RenderingNetConfig, self)


def _subset(cls, config):
    names = {f.name for f in fields(cls)}
    return cls(**{f.name: getattr(config, f.name) for f in fields(config) if f.name in names})


class HeadGANOutput(NamedTuple):
    """Output of :class:`HeadGANGenerator`.

    Attributes:
        image: ``(B, 3, H, W)`` generated frame in [-1, 1].
        flow: ``(B, 2, H, W)`` pixel flow from F.
        warped_image: ``(B, 3, H, W)`` reference warped by ``flow`` (HeadGAN puts a VGG/L1 loss on it).
        warped_features: F's three warped feature maps.
    """

    image: Tensor
    flow: Tensor
    warped_image: Tensor
    warped_features: tuple[Tensor, Tensor, Tensor]


class HeadGANGenerator(nn.Module):
    """F followed by R: ``(reference, reference_face, driving_faces, audio) -> frame``."""

    def __init__(self, config: HeadGANConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or HeadGANConfig()
        self.flow_net = DenseFlowNet(cfg.flow_config())
        self.rendering_net = RenderingNet(cfg.rendering_config())

    def forward(self, reference_image: Tensor, reference_face: Tensor, driving_faces: Tensor,
                audio: Tensor | None = None) -> HeadGANOutput:
        """Args as :meth:`DenseFlowNet.forward` and :meth:`RenderingNet.forward`.

        Returns:
            :class:`HeadGANOutput`.
        """
        f = self.flow_net(reference_image, reference_face, driving_faces)
        image = self.rendering_net(driving_faces, f.warped_features, f.warped_image, audio)
        return HeadGANOutput(image, f.flow, f.warped_image, f.warped_features)
