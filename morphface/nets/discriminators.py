"""Conditional multi-scale PatchGAN discriminators (pix2pixHD / SPADE style, as used by HeadGAN).

* :class:`MultiScaleDiscriminator`: ``num_scales`` identical PatchGANs, the k-th seeing the input
  average-pooled k times by 2 (3x3, stride 2, padding not counted). Each PatchGAN is a 4x4 conv
  stack: stride 2 for all but the last of ``num_layers`` layers, channels doubling from
  ``base_channels`` up to ``max_channels``, instance norm after all but the first, LeakyReLU(0.2),
  spectral norm on every conv, and a last 4x4 conv to one logit per patch. A condition map (the
  3D-face rendering for HeadGAN's image discriminator) is concatenated to the image channel-wise.
* :class:`MouthDiscriminator`: the same network on a mouth crop, conditioned on the audio feature
  vector replicated over the crop (HeadGAN's mouth discriminator).

Both return a :class:`DiscriminatorOutput` with the logits per scale and the intermediate activations
per scale (for the feature-matching loss in :mod:`morphface.nets.losses`). Inputs in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_map, check_vector
from .blocks import ConvBlock, maybe_spectral, scaled_channels

__all__ = [
    "DiscriminatorConfig",
    "DiscriminatorOutput",
    "PatchDiscriminator",
    "MultiScaleDiscriminator",
    "MouthDiscriminatorConfig",
    "MouthDiscriminator",
]


class DiscriminatorOutput(NamedTuple):
    """Discriminator result.

    Attributes:
        logits: one ``(B, 1, h_k, w_k)`` patch-logit map per scale (finest first).
        features: per scale, the list of intermediate activations (all layers but the logits).
    """

    logits: list[Tensor]
    features: list[list[Tensor]]


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of :class:`MultiScaleDiscriminator`; defaults are HeadGAN's (``num_D=2, n_layers_D=4,
    ndf=64``, spectral instance norm).

    Attributes:
        image_channels: channels of the judged image.
        cond_channels: channels of the condition map concatenated to it (0: unconditional).
        base_channels: channels of the first conv.
        max_channels: cap of the doubling.
        num_layers: strided/normalised conv layers before the logit conv.
        num_scales: how many PatchGANs / input resolutions.
        spectral: spectral normalisation on every conv.
        width: channel multiplier.
    """

    image_channels: int = 3
    cond_channels: int = 3
    base_channels: int = 64
    max_channels: int = 512
    num_layers: int = 4
    num_scales: int = 2
    spectral: bool = True
    width: float = 1.0


class PatchDiscriminator(nn.Module):
    """One PatchGAN (see the module docstring); returns ``(logits, intermediate features)``."""

    def __init__(self, in_channels: int, base_channels: int = 64, max_channels: int = 512, num_layers: int = 4,
                 spectral: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        ch = base_channels
        # Padding 2 with 4x4 kernels (pix2pixHD's ceil((k - 1) / 2)).
        layers = [ConvBlock(in_channels, ch, 4, stride=2, padding=2, norm="none", activation="lrelu",
                            spectral=spectral)]
        for n in range(1, num_layers):
            prev, ch = ch, min(ch * 2, max_channels)
            layers.append(ConvBlock(prev, ch, 4, stride=1 if n == num_layers - 1 else 2, padding=2,
                                    norm="instance", activation="lrelu", spectral=spectral))
        self.layers = nn.ModuleList(layers)
        self.logit = maybe_spectral(nn.Conv2d(ch, 1, 4, padding=2), spectral)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return self.logit(x), feats


class MultiScaleDiscriminator(nn.Module):
    """Conditional multi-scale PatchGAN (HeadGAN's image discriminator)."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DiscriminatorConfig()
        base = scaled_channels(cfg.base_channels, cfg.width)
        top = max(base, scaled_channels(cfg.max_channels, cfg.width))
        self.nets = nn.ModuleList([
            PatchDiscriminator(cfg.image_channels + cfg.cond_channels, base, top, cfg.num_layers, cfg.spectral)
            for _ in range(cfg.num_scales)
        ])

    def forward(self, image: Tensor, cond: Tensor | None = None) -> DiscriminatorOutput:
        """Judge ``image`` given ``cond``.

        Args:
            image: ``(B, image_channels, H, W)`` in [-1, 1].
            cond: ``(B, cond_channels, H, W)`` condition (required iff ``cond_channels > 0``).

        Returns:
            :class:`DiscriminatorOutput` with ``num_scales`` entries.
        """
        cfg = self.config
        check_map("image", image, cfg.image_channels)
        if cfg.cond_channels > 0:
            if cond is None:
                raise ValueError(f"cond of shape (B, {cfg.cond_channels}, H, W) is required")
            check_map("cond", cond, cfg.cond_channels, batch=image.shape[0], size=tuple(image.shape[-2:]))
            x = torch.cat([image, cond.to(image.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("cond was given but config.cond_channels is 0")
        else:
            x = image
        logits, feats = [], []
        for k, net in enumerate(self.nets):
            if k > 0:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            logit, feat = net(x)
            logits.append(logit)
            feats.append(feat)
        return DiscriminatorOutput(logits, feats)


@dataclass(frozen=True)
class MouthDiscriminatorConfig:
    """Sizes of :class:`MouthDiscriminator` (HeadGAN: the image discriminator's architecture on a
    64x64 mouth crop with the 300-D audio features replicated over it).

    Attributes:
        image_channels: channels of the crop.
        audio_dim: length of the audio vector; ``use_audio=False`` makes it unconditional.
        use_audio: condition on audio.
        base_channels, max_channels, num_layers, num_scales, spectral, width: as
            :class:`DiscriminatorConfig`.
    """

    image_channels: int = 3
    audio_dim: int = 300
    use_audio: bool = True
    base_channels: int = 64
    max_channels: int = 512
    num_layers: int = 4
    num_scales: int = 2
    spectral: bool = True
    width: float = 1.0


class MouthDiscriminator(nn.Module):
    """HeadGAN's audio-conditioned mouth discriminator."""

    def __init__(self, config: MouthDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MouthDiscriminatorConfig()
        self.net = MultiScaleDiscriminator(DiscriminatorConfig(
            image_channels=cfg.image_channels, cond_channels=cfg.audio_dim if cfg.use_audio else 0,
            base_channels=cfg.base_channels, max_channels=cfg.max_channels, num_layers=cfg.num_layers,
            num_scales=cfg.num_scales, spectral=cfg.spectral, width=cfg.width))

    def forward(self, mouth: Tensor, audio: Tensor | None = None) -> DiscriminatorOutput:
        """Judge a mouth crop given the audio features of its frame.

        Args:
            mouth: ``(B, image_channels, h, w)`` crop in [-1, 1] (64x64 in HeadGAN).
            audio: ``(B, audio_dim)``; required iff ``config.use_audio``.

        Returns:
            :class:`DiscriminatorOutput`.
        """
        cfg = self.config
        check_map("mouth", mouth, cfg.image_channels)
        if not cfg.use_audio:
            if audio is not None:
                raise ValueError("audio was given but config.use_audio is False")
            return self.net(mouth)
        if audio is None:
            raise ValueError(f"audio of shape ({mouth.shape[0]}, {cfg.audio_dim}) is required")
        check_vector("audio", audio, cfg.audio_dim, batch=mouth.shape[0])
        cond = audio[:, :, None, None].expand(-1, -1, *mouth.shape[-2:])
        return self.net(mouth, cond)
