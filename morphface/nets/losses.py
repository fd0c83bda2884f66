"""Losses for the reenactment networks.

* :class:`VGGPerceptualLoss`: weighted L1 between VGG19 activations (relu1_1 .. relu5_1 by default,
  pix2pixHD's weights ``1/32, 1/16, 1/8, 1/4, 1``). The network is :class:`VGG19`, laid out exactly as
  ``torchvision.models.vgg19().features`` (same module indices), so torchvision's ImageNet file
  ``vgg19-dcbb9e9d.pth`` loads with its own key names ``features.N.weight/bias``. Weights come from an
  explicit path, from torch hub's cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``, where
  torchvision stores it), or -- only with ``allow_download=True`` -- are downloaded through torchvision
  (or torch hub when torchvision is missing). morphface never downloads silently.
* Hinge GAN losses, pix2pixHD discriminator feature matching, (masked) L1, IFaceUV's UV
  cross-consistency loss, and a face-parsing segmentation loss around any parser module.

Multi-scale discriminator outputs (lists, one entry per scale) are averaged over scales.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, WeightsNotFoundError

__all__ = [
    "VGG19",
    "VGG19_FILENAME",
    "VGG19_URL",
    "VGG19_RELU_INDEX",
    "default_vgg19_path",
    "load_vgg19_weights",
    "VGGPerceptualLoss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "feature_matching_loss",
    "l1_loss",
    "uv_consistency_loss",
    "SegmentationLoss",
]

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILENAME}"

# torchvision's configuration "E": conv widths, "M" = 2x2 max pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M")


def _relu_index() -> dict[str, int]:
    names, idx, block, conv = {}, 0, 1, 0
    for v in _VGG19_CFG:
        if v == "M":
            idx, block, conv = idx + 1, block + 1, 0
        else:
            conv += 1
            names[f"relu{block}_{conv}"] = idx + 1
            idx += 2
    return names


#: Index in ``VGG19.features`` of each ReLU output, e.g. ``relu1_1 -> 1``, ``relu5_1 -> 29``.
VGG19_RELU_INDEX: dict[str, int] = _relu_index()

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19(nn.Module):
    """VGG19 convolutional trunk with torchvision's exact ``features`` layout (37 modules)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                ch = v
        self.features = nn.Sequential(*layers)
        for m in self.modules():  # torchvision's initialisation, for pretrained=False
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        """Activations after the ``features`` modules with the given indices (ascending or not).

        Args:
            x: ``(B, 3, H, W)`` ImageNet-normalised RGB.
            indices: module indices (see :data:`VGG19_RELU_INDEX`).

        Returns:
            One tensor per index, in the order of ``indices``; only the needed prefix is run.
        """
        wanted = set(indices)
        out: dict[int, Tensor] = {}
        for i, layer in enumerate(self.features):
            if i > max(wanted):
                break
            x = layer(x)
            if i in wanted:
                out[i] = x
        return [out[i] for i in indices]


def default_vgg19_path() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights: ``<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth``
    (``$TORCH_HOME/hub/checkpoints`` or ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


def load_vgg19_weights(vgg: VGG19, path: str | os.PathLike) -> None:
    """Load a torchvision VGG19 state dict from ``path`` into ``vgg`` (strictly, ``features.*`` keys).

    ``classifier.*`` keys of the full torchvision file are ignored. The file is read with
    ``torch.load(weights_only=True)``, so it cannot run code.

    Raises:
        WeightsNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable file, or missing/unexpected/mis-shaped ``features.*`` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"VGG19 weights file not found: expected a torchvision state dict at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"could not read VGG19 weights from {path}: expected a torch state dict "
                              f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a state dict")
    feats = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    if not feats:
        raise CheckpointError(f"{path} has no 'features.N.weight/bias' keys (torchvision VGG19 layout); "
                              f"found e.g. {list(state)[:4]}")
    try:
        vgg.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match torchvision's VGG19 features: {exc}") from exc


def _download_vgg19_state() -> dict[str, Tensor]:
    try:
        from torchvision.models import VGG19_Weights
    except ImportError:
        return torch.hub.load_state_dict_from_url(VGG19_URL, check_hash=True, weights_only=True)
    return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True)


class VGGPerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 activations of a prediction and a target.

    Args:
        weights: path of a torchvision VGG19 state dict (``vgg19-dcbb9e9d.pth``). None: use
            :func:`default_vgg19_path` if it exists.
        pretrained: False builds a randomly initialised VGG19 (tests, or weights loaded later);
            then ``weights`` must be None.
        allow_download: with no local file, download through torchvision (torch hub without it).
        layers: ReLU outputs compared (keys of :data:`VGG19_RELU_INDEX`).
        layer_weights: one weight per layer.
        input_range: ``"[-1,1]"`` (network outputs, the default) or ``"[0,1]"`` (library images).

    Raises:
        WeightsNotFoundError: pretrained weights are wanted but no file is found and downloading is
            not allowed; the message says where to put the file.

    The VGG parameters are frozen. Inputs are cast to the module's dtype (change it with ``.to``);
    the target gets no gradient.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, pretrained: bool = True,
                 allow_download: bool = False,
                 layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 layer_weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
                 input_range: str = "[-1,1]") -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_RELU_INDEX]
        if unknown or not layers:
            raise ValueError(f"layers must be a non-empty subset of {sorted(VGG19_RELU_INDEX)}; got {list(layers)}")
        if len(layer_weights) != len(layers):
            raise ValueError(f"need one weight per layer: {len(layers)} layers, {len(layer_weights)} weights")
        if input_range not in ("[-1,1]", "[0,1]"):
            raise ValueError(f"input_range must be '[-1,1]' or '[0,1]'; got {input_range!r}")
        if weights is not None and not pretrained:
            raise ValueError("weights were given but pretrained=False; pass one or the other")
        self.layers, self.layer_weights, self.input_range = tuple(layers), tuple(layer_weights), input_range
        self.indices = tuple(VGG19_RELU_INDEX[name] for name in layers)
        self.vgg = VGG19()
        if pretrained:
            self._load(weights, allow_download)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _load(self, weights: str | os.PathLike | None, allow_download: bool) -> None:
        if weights is not None:
            load_vgg19_weights(self.vgg, weights)
            return
        cached = default_vgg19_path()
        if cached.is_file():
            load_vgg19_weights(self.vgg, cached)
            return
        if not allow_download:
            raise WeightsNotFoundError(
                f"VGG19 ImageNet weights are needed for the perceptual loss but were not found at {cached}. "
                f"Put torchvision's '{VGG19_FILENAME}' ({VGG19_URL}) there or pass weights=PATH; "
                f"allow_download=True downloads it; pretrained=False uses random weights.")
        state = _download_vgg19_state()
        try:
            self.vgg.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"downloaded VGG19 weights do not match torchvision's layout: {exc}") from exc

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        super().train(mode)
        self.vgg.eval()
        return self

    def _normalise(self, x: Tensor) -> Tensor:
        x = x.to(self.mean.dtype)
        if self.input_range == "[-1,1]":
            x = (x + 1) * 0.5
        return (x - self.mean) / self.std

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Args:
            pred, target: ``(B, 3, H, W)`` RGB in ``input_range``.

        Returns:
            Scalar: ``sum_l w_l * mean |VGG_l(pred) - VGG_l(target)|``.
        """
        if not isinstance(pred, Tensor) or pred.dim() != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
            raise ValueError(f"pred and target must both have shape (B, 3, H, W); got "
                             f"{tuple(getattr(pred, 'shape', ()))} and {tuple(getattr(target, 'shape', ()))}")
        b = pred.shape[0]
        # One pass over the concatenated batch: the target half is detached.
        x = torch.cat([self._normalise(pred), self._normalise(target.detach())], dim=0)
        feats = self.vgg(x, self.indices)
        loss = pred.new_zeros((), dtype=feats[0].dtype)
        for w, f in zip(self.layer_weights, feats):
            loss = loss + w * F.l1_loss(f[:b], f[b:].detach())
        return loss


def _as_list(x: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    out = [x] if isinstance(x, Tensor) else list(x)
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def hinge_discriminator_loss(real_logits: Tensor | Sequence[Tensor],
                             fake_logits: Tensor | Sequence[Tensor]) -> Tensor:
    """Hinge loss of a discriminator: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``.

    Args:
        real_logits, fake_logits: a logit map or one per scale (averaged over scales); pass fake
            logits computed from detached generator outputs.

    Returns:
        Scalar >= 0.
    """
    real, fake = _as_list(real_logits, "real_logits"), _as_list(fake_logits, "fake_logits")
    if len(real) != len(fake):
        raise ValueError(f"real and fake logits have {len(real)} and {len(fake)} scales")
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def hinge_generator_loss(fake_logits: Tensor | Sequence[Tensor]) -> Tensor:
    """Hinge loss of a generator: ``-mean(D(fake))``, averaged over scales."""
    fake = _as_list(fake_logits, "fake_logits")
    return -sum(f.mean() for f in fake) / len(fake)


def feature_matching_loss(fake_features: Sequence[Sequence[Tensor]],
                          real_features: Sequence[Sequence[Tensor]]) -> Tensor:
    """Discriminator feature matching (pix2pixHD): L1 between the discriminator's intermediate
    activations on fake and (detached) real inputs, averaged over layers and over scales.

    Args:
        fake_features, real_features: per scale, the list of activations
            (:attr:`morphface.nets.discriminators.DiscriminatorOutput.features`).

    Returns:
        Scalar >= 0. (pix2pixHD's sum ``sum_k sum_l 4 / (n_layers + 1) / num_D * L1`` equals this times
        ``4 * n_layers / (n_layers + 1)``.)
    """
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(f"fake and real features have {len(fake_features)} and {len(real_features)} scales")
    total = 0.0
    for k, (fs, rs) in enumerate(zip(fake_features, real_features)):
        if len(fs) != len(rs) or not fs:
            raise ValueError(f"scale {k}: fake and real have {len(fs)} and {len(rs)} layers")
        total = total + sum(F.l1_loss(f, r.detach()) for f, r in zip(fs, rs)) / len(fs)
    return total / len(fake_features)


def l1_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Mean absolute error, optionally weighted by a mask.

    Args:
        pred, target: ``(B, C, H, W)`` (any equal shapes).
        mask: None, or weights in [0, 1] broadcastable to ``pred`` (e.g. ``(B, 1, H, W)``).

    Returns:
        Scalar ``sum(m |pred - target|) / sum(m)`` with the mask broadcast over channels; 0 when
        the mask is empty.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    try:
        m = mask.to(diff.dtype).expand_as(diff)
    except RuntimeError as exc:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {tuple(pred.shape)}") from exc
    return (diff * m).sum() / m.sum().clamp_min(eps)


def uv_consistency_loss(uv_a: Tensor, uv_b: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """IFaceUV's UV cross-consistency loss: the refined UV maps of two frames of one identity agree
    where both are valid.

    Args:
        uv_a, uv_b: ``(B, 3, S, S)`` refined UV maps (both receive gradients).
        mask_a, mask_b: ``(B, 1, S, S)`` validity masks in [0, 1].

    Returns:
        Scalar masked L1 over ``mask_a * mask_b``; 0 without overlap.
    """
    for name, m in (("mask_a", mask_a), ("mask_b", mask_b)):
        if m.dim() != 4 or m.shape[1] != 1 or m.shape[0] != uv_a.shape[0] or m.shape[-2:] != uv_a.shape[-2:]:
            raise ValueError(f"{name} must have shape ({uv_a.shape[0]}, 1, {uv_a.shape[-2]}, {uv_a.shape[-1]}); "
                             f"got {tuple(m.shape)}")
    return l1_loss(uv_a, uv_b, mask_a * mask_b)


class SegmentationLoss(nn.Module):
    """Face-parsing consistency: ``cross_entropy(parser(output), argmax parser(target))``.

    Args:
        parser: any module mapping ``(B, 3, H, W)`` images to ``(B, K, h, w)`` class logits (e.g. a
            BiSeNet face parser).
        preprocess: applied to both images before the parser (e.g. the parser's normalisation);
            None passes them as they are.
        freeze: freeze the parser's parameters and keep it in eval mode.

    The target's labels are computed without gradient.
    """

    def __init__(self, parser: nn.Module, preprocess: Callable[[Tensor], Tensor] | None = None,
                 freeze: bool = True) -> None:
        super().__init__()
        if not isinstance(parser, nn.Module):
            raise TypeError(f"parser must be a torch.nn.Module; got {type(parser).__name__}")
        self.parser, self.preprocess, self.freeze = parser, preprocess, freeze
        if freeze:
            parser.requires_grad_(False)
            parser.eval()

    def train(self, mode: bool = True) -> SegmentationLoss:
        super().train(mode)
        if self.freeze:
            self.parser.eval()
        return self

    def _logits(self, x: Tensor) -> Tensor:
        y = self.parser(self.preprocess(x) if self.preprocess is not None else x)
        if not isinstance(y, Tensor) or y.dim() != 4:
            raise ValueError(f"parser must return (B, K, h, w) logits; got "
                             f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        return y

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """Args:
            output: ``(B, 3, H, W)`` generated image (receives gradients).
            target: ``(B, 3, H, W)`` ground-truth image.

        Returns:
            Scalar cross-entropy (mean over pixels).
        """
        if output.shape != target.shape:
            raise ValueError(f"output and target shapes differ: {tuple(output.shape)} vs {tuple(target.shape)}")
        with torch.no_grad():
            labels = self._logits(target).argmax(dim=1)
        return F.cross_entropy(self._logits(output).float(), labels)
