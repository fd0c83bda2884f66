"""Building blocks shared by the reenactment networks.

* :class:`SPADE` (Park et al. 2019): parameter-free instance norm, then a per-pixel scale and shift
  predicted by a small conv net from a conditioning map resized to the activation's size.
* :class:`AdaIN` (Huang & Belongie 2017): instance norm, then a per-channel scale and shift predicted
  from a vector. Both modulate as ``norm(x) * (1 + gamma) + beta`` so that zero-initialised
  predictors start as plain instance norm.
* :class:`SPADEBlock` / :class:`AdaINBlock`: HeadGAN's blocks, i.e. a SPADE (AdaIN) ResNet block's
  residual branch *without* the skip path: ``norm -> LeakyReLU(0.2) -> conv3x3`` twice, channel count
  kept.
* :class:`PixelShuffleUp`: x``scale`` up-sampling by sub-pixel rearrangement (optionally after a conv).
* :class:`ConvBlock`: conv (optionally spectral-normalised) + norm + activation, the unit of encoders
  and discriminators.
* :func:`blend_output` / :func:`init_blend_head`: an optional output head that predicts colours and a
  soft mask and blends the colours with an image the network was given (e.g. the warped reference),
  as few-shot vid2vid (Wang et al. 2019) and FOMM's occlusion masks do.

All blocks are dtype/device agnostic and work under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "scaled_channels",
    "maybe_spectral",
    "make_norm",
    "make_activation",
    "SPADE",
    "AdaIN",
    "SPADEBlock",
    "AdaINBlock",
    "PixelShuffleUp",
    "ConvBlock",
    "blend_output",
    "init_blend_head",
]

#: Initial mask logit of :func:`init_blend_head`: sigmoid(2) = 0.88 of the given image at the start.
BLEND_INIT_LOGIT = 2.0


def blend_output(head: Tensor, base: Tensor, valid: Tensor | None = None) -> Tensor:
    """Blend a network's colour prediction with an image it was given, by a mask it predicts.

    ``out = m * base + (1 - m) * tanh(colour)`` with ``m = sigmoid(mask logit)``: the network keeps
    what ``base`` already gets right (pixels the warp moved correctly) and synthesises the rest
    (disocclusions, the mouth interior, regions the warp smeared). Starting near ``base`` makes a
    briefly trained generator no worse than its input, which a from-scratch tanh output is not.

    Args:
        head: ``(B, C + 1, H, W)`` raw output: ``C`` colour logits, then one mask logit.
        base: ``(B, C, H, W)`` the image to blend with, in [-1, 1].
        valid: optional ``(B, 1, H, W)`` validity of ``base`` in [0, 1] (multiplies the mask: invalid
            pixels of ``base`` are never copied).

    Returns:
        ``(B, C, H, W)`` in [-1, 1].
    """
    c = base.shape[1]
    if head.dim() != 4 or head.shape[1] != c + 1 or head.shape[-2:] != base.shape[-2:]:
        raise ValueError(f"blend_output needs head (B, {c + 1}, H, W) matching base {tuple(base.shape)}; got "
                         f"{tuple(head.shape)}")
    mask = torch.sigmoid(head[:, c:])
    if valid is not None:
        mask = mask * valid.to(mask)
    return mask * base + (1 - mask) * torch.tanh(head[:, :c])


def init_blend_head(conv: nn.Conv2d) -> None:
    """Initialise the conv that feeds :func:`blend_output`: the mask channel (the last) starts at
    :data:`BLEND_INIT_LOGIT` with small weights, so the output starts close to the given image."""
    with torch.no_grad():
        conv.weight[-1].mul_(0.1)
        if conv.bias is not None:
            conv.bias[-1].fill_(BLEND_INIT_LOGIT)


def scaled_channels(channels: int, width: float) -> int:
    """``channels`` scaled by a width multiplier, at least 1."""
    if width <= 0:
        raise ValueError(f"width must be > 0; got {width}")
    return max(1, int(round(channels * width)))


def maybe_spectral(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module`` (conv/linear) in spectral normalisation if ``enabled``."""
    return spectral_norm(module) if enabled else module


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer by name: ``"instance"`` (affine), ``"layer"`` (over C, H, W) or ``"none"``."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'instance', 'layer' or 'none'; got {kind!r}")


def make_activation(kind: str | None, negative_slope: float = 0.2) -> nn.Module:
    """An activation by name: ``"relu"``, ``"lrelu"`` (with ``negative_slope``) or ``None``."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "lrelu":
        return nn.LeakyReLU(negative_slope)
    if kind is None or kind == "none":
        return nn.Identity()
    raise ValueError(f"activation must be 'relu', 'lrelu' or None; got {kind!r}")


def _check_4d(name: str, x: Tensor, channels: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} must have shape {want}; got {shape}")


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation.

    ``out = instance_norm(x) * (1 + gamma(c)) + beta(c)`` with ``gamma, beta`` predicted per pixel from
    the conditioning map ``c`` resized to ``x``'s resolution.

    Args:
        channels: channels of the normalised activation ``x``.
        cond_channels: channels of the conditioning map.
        hidden_channels: width of the shared conv embedding (SPADE: 128, HeadGAN: 256).
        kernel_size: kernel of the embedding convs.
        interpolation: how the conditioning map is resized: ``"nearest"`` (SPADE, for label maps) or
            ``"bilinear"`` (for continuous maps).
    """

    def __init__(self, channels: int, cond_channels: int, hidden_channels: int = 128,
                 kernel_size: int = 3, interpolation: str = "nearest") -> None:
        super().__init__()
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear'; got {interpolation!r}")
        self.channels, self.cond_channels, self.interpolation = channels, cond_channels, interpolation
        pad = kernel_size // 2
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden_channels, kernel_size, padding=pad),
                                    nn.ReLU())
        self.gamma = nn.Conv2d(hidden_channels, channels, kernel_size, padding=pad)
        self.beta = nn.Conv2d(hidden_channels, channels, kernel_size, padding=pad)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """Args: ``x`` ``(B, C, H, W)``; ``cond`` ``(B, cond_channels, h, w)`` any size.
        Returns ``(B, C, H, W)``."""
        _check_4d("x", x, self.channels)
        _check_4d("cond", cond, self.cond_channels)
        if cond.shape[0] != x.shape[0]:
            raise ValueError(f"cond batch {cond.shape[0]} differs from x batch {x.shape[0]}")
        if cond.shape[-2:] != x.shape[-2:]:
            kwargs = {"align_corners": False} if self.interpolation == "bilinear" else {}
            cond = F.interpolate(cond, size=x.shape[-2:], mode=self.interpolation, **kwargs)
        actv = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(actv)) + self.beta(actv)


class AdaIN(nn.Module):
    """Adaptive instance normalisation from a vector.

    Args:
        channels: channels of the normalised activation.
        style_dim: length of the modulating vector.
    """

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.channels, self.style_dim = channels, style_dim
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """Args: ``x`` ``(B, C, H, W)``; ``style`` ``(B, style_dim)``. Returns ``(B, C, H, W)``."""
        _check_4d("x", x, self.channels)
        if not isinstance(style, Tensor) or style.dim() != 2 or style.shape[1] != self.style_dim \
                or style.shape[0] != x.shape[0]:
            shape = tuple(style.shape) if isinstance(style, Tensor) else type(style).__name__
            raise ValueError(f"style must have shape ({x.shape[0]}, {self.style_dim}); got {shape}")
        gamma, beta = self.fc(style)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class SPADEBlock(nn.Module):
    """HeadGAN's SPADE block: ``(SPADE -> LeakyReLU(0.2) -> conv3x3) x 2`` without a skip path.

    Args:
        channels: input = output channels.
        cond_channels: channels of the conditioning map.
        hidden_channels: SPADE embedding width.
        spectral: spectral-normalise the two convs (HeadGAN's ``spectralspadeinstance3x3``).
        interpolation: see :class:`SPADE`.
    """

    def __init__(self, channels: int, cond_channels: int, hidden_channels: int = 128, spectral: bool = True,
                 interpolation: str = "nearest") -> None:
        super().__init__()
        self.norm0 = SPADE(channels, cond_channels, hidden_channels, interpolation=interpolation)
        self.conv0 = maybe_spectral(nn.Conv2d(channels, channels, 3, padding=1), spectral)
        self.norm1 = SPADE(channels, cond_channels, hidden_channels, interpolation=interpolation)
        self.conv1 = maybe_spectral(nn.Conv2d(channels, channels, 3, padding=1), spectral)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """Args: ``x`` ``(B, C, H, W)``; ``cond`` ``(B, cond_channels, h, w)``. Returns ``(B, C, H, W)``."""
        x = self.conv0(F.leaky_relu(self.norm0(x, cond), 0.2))
        return self.conv1(F.leaky_relu(self.norm1(x, cond), 0.2))


class AdaINBlock(nn.Module):
    """HeadGAN's AdaIN block: ``(AdaIN -> LeakyReLU(0.2) -> conv3x3) x 2`` without a skip path.

    Args:
        channels: input = output channels.
        style_dim: length of the modulating vector.
        spectral: spectral-normalise the two convs.
    """

    def __init__(self, channels: int, style_dim: int, spectral: bool = True) -> None:
        super().__init__()
        self.norm0 = AdaIN(channels, style_dim)
        self.conv0 = maybe_spectral(nn.Conv2d(channels, channels, 3, padding=1), spectral)
        self.norm1 = AdaIN(channels, style_dim)
        self.conv1 = maybe_spectral(nn.Conv2d(channels, channels, 3, padding=1), spectral)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """Args: ``x`` ``(B, C, H, W)``; ``style`` ``(B, style_dim)``. Returns ``(B, C, H, W)``."""
        x = self.conv0(F.leaky_relu(self.norm0(x, style), 0.2))
        return self.conv1(F.leaky_relu(self.norm1(x, style), 0.2))


class PixelShuffleUp(nn.Module):
    """Sub-pixel up-sampling by ``scale``.

    If ``in_channels == out_channels * scale**2`` and ``learned`` is not True this is a bare
    :class:`torch.nn.PixelShuffle` (HeadGAN: it trades channels for resolution, 512 -> 128 -> 32);
    otherwise a 3x3 conv first maps to ``out_channels * scale**2`` channels (ESPCN).

    Args:
        in_channels, out_channels: channels before and after.
        scale: integer up-sampling factor.
        learned: force (True) or forbid (False) the conv; None chooses as above.
        spectral: spectral-normalise the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, learned: bool | None = None,
                 spectral: bool = False) -> None:
        super().__init__()
        fits = in_channels == out_channels * scale * scale
        if learned is False and not fits:
            raise ValueError(f"a bare PixelShuffle({scale}) maps {in_channels} channels to "
                             f"{in_channels / scale**2:g}, not {out_channels}")
        self.conv = (maybe_spectral(nn.Conv2d(in_channels, out_channels * scale * scale, 3, padding=1), spectral)
                     if (learned or not fits) else nn.Identity())
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, scale H, scale W)``."""
        return self.shuffle(self.conv(x))


class ConvBlock(nn.Module):
    """``conv -> norm -> activation`` with optional spectral normalisation of the conv.

    Args:
        in_channels, out_channels: channels.
        kernel_size, stride: of the conv; padding is ``kernel_size // 2`` ("same" at stride 1), or
            ``padding`` if given.
        norm: ``"instance"``, ``"layer"`` or ``"none"`` (see :func:`make_norm`).
        activation: ``"relu"``, ``"lrelu"`` or None.
        spectral: spectral-normalise the conv.
        padding_mode: ``"zeros"`` or ``"reflect"`` (large first-layer kernels use reflect).
        negative_slope: of the leaky ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 norm: str = "instance", activation: str | None = "relu", spectral: bool = False,
                 padding_mode: str = "zeros", padding: int | None = None, negative_slope: float = 0.2) -> None:
        super().__init__()
        pad = kernel_size // 2 if padding is None else padding
        self.conv = maybe_spectral(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                                             padding_mode=padding_mode), spectral)
        self.norm = make_norm(norm, out_channels)
        self.act = make_activation(activation, negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')``."""
        return self.act(self.norm(self.conv(x)))
