"""X2Face's networks (Wiles, Koepke, Zisserman, ECCV 2018), its identity network and its linear maps.

* :class:`EmbeddingNet`: a pix2pix-style U-Net on the source frame that outputs a 2-channel flow; the
  source sampled by it (bilinear) is the **embedded face**, a pose- and expression-normalised face
  that X2Face learns without labels (§3.1).
* :class:`DrivingNet`: an encoder from the driving frame to the **driving vector** (128-D), and a
  decoder from the vector to a 2-channel flow that samples the embedded face into the generated frame.
* :class:`X2FaceGenerator`: both, with multi-source averaging of embedded faces (the paper's test-time
  mode, also usable in training).
* :class:`IdentityVGG`: the stage-II identity network, a VGG-11 (configuration A, the paper's
  VGG-Face network) or VGG-16 (D) laid out as ``torchvision.models.vgg11/16().features``, so any
  torchvision-layout state dict loads (:func:`load_identity_vgg`); :func:`identity_content_loss` is the
  per-layer L1 content loss.
* :class:`DrivingVectorMaps`: the least-squares linear maps of §4 between head pose, audio features
  and the driving vector (:func:`fit_affine`), held in buffers so that they are saved with the networks.

Conventions: images in [-1, 1]; flows are backward and in pixels (:mod:`morphface.nets.warp`), sampled
with ``padding_mode="border"``. The flow heads are zero-initialised, so an untrained generator (and
any network whose head outputs zero) samples its input unchanged: the generated frame starts as the
source. Flows are ``tanh(head) * flow_scale * S`` pixels (``flow_scale = 1``: at most one image side;
the authors' code uses offsets in ``[-1, 1]`` normalised units, i.e. ``flow_scale = 0.5``). A smaller
``flow_scale`` bounds the displacement and lowers the pixel change of one optimiser step in proportion.

Normalisation: ``norm="instance"`` removes every channel's per-sample spatial mean at each level. In the
driving decoder, which grows a 1 x 1 code into a flow, that mean carries most of the driving vector, and
it cancels the flow's global component (a head turn is mostly a translation of the face): measured on
the first small model (instance norm, 64 x 64, depth 6), the across-frame spread of the decoder's
activations fell ~4x a level, from 0.076 after ``from_vector`` to 1e-6 before the flow tanh, and the
decoded flow was the same for every driving frame (per-pixel spread 1e-4 px). Use ``"batch"`` (pix2pix,
the default) or ``"none"`` for the driving network.

Sizes: the supplementary material's exact layers are not in the paper text; the defaults follow
pix2pix's U-Net at 256 x 256 (8 stride-2 4 x 4 convolutions from 64 to 512 channels, batch norm,
LeakyReLU 0.2 down / ReLU up), and the driving network mirrors that encoder with a 128-D bottleneck.
``depth`` is capped so the innermost map is at least 1 x 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ImageSizeError, WeightsNotFoundError
from .blocks import make_norm, scaled_channels
from .warp import warp

__all__ = [
    "EmbeddingNetConfig",
    "EmbeddingNet",
    "DrivingNetConfig",
    "DrivingNet",
    "X2FaceGeneratorConfig",
    "X2FaceGenerator",
    "X2FaceOutput",
    "IdentityVGG",
    "IDENTITY_VGG_CONFIGS",
    "load_identity_vgg",
    "identity_content_loss",
    "fit_affine",
    "DrivingVectorMaps",
]

NORMS = ("batch", "instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return make_norm(kind, channels)


def _check_image(x: Tensor, size: int, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (size, size):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ImageSizeError(f"{name} must have shape (B, 3, {size}, {size}); got {shape}")


def _levels(image_size: int, depth: int) -> int:
    if image_size < 4 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 4; got {image_size}")
    return max(1, min(depth, int(math.log2(image_size))))


def _channels(base: int, cap: int, width: float, n: int) -> list[int]:
    return [scaled_channels(min(base * 2 ** i, cap), width) for i in range(n)]


def _flow_head(in_channels: int) -> nn.ConvTranspose2d:
    head = nn.ConvTranspose2d(in_channels, 2, 4, stride=2, padding=1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class _Down(nn.Sequential):
    """pix2pix encoder unit: [LeakyReLU 0.2] -> conv 4x4 stride 2 -> [norm]."""

    def __init__(self, cin: int, cout: int, norm: str, act: bool) -> None:
        super().__init__(*([nn.LeakyReLU(0.2)] if act else []), nn.Conv2d(cin, cout, 4, 2, 1, bias=norm != "batch"),
                         _norm(norm, cout))


class _Up(nn.Sequential):
    """pix2pix decoder unit: ReLU -> transposed conv 4x4 stride 2 -> norm."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=norm != "batch"), _norm(norm, cout))


@dataclass(frozen=True)
class EmbeddingNetConfig:
    """Sizes of :class:`EmbeddingNet`.

    Attributes:
        image_size: side of the square input (a power of two).
        base_channels: first encoder layer (pix2pix: 64), doubled per level up to ``max_channels``.
        max_channels: channel cap (pix2pix: 512).
        depth: stride-2 levels (pix2pix at 256: 8, down to 1 x 1), capped at ``log2(image_size)``.
        norm: ``"batch"`` (pix2pix), ``"instance"`` or ``"none"`` (the innermost level has none).
        width: channel multiplier.
        flow_scale: largest displacement as a fraction of the image side: flow ``= tanh(head) *
            flow_scale * image_size`` pixels.
    """

    image_size: int = 256
    base_channels: int = 64
    max_channels: int = 512
    depth: int = 8
    norm: str = "batch"
    width: float = 1.0
    flow_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        if not self.flow_scale > 0:
            raise ValueError(f"flow_scale must be > 0; got {self.flow_scale}")
        _levels(self.image_size, self.depth)


class EmbeddingNet(nn.Module):
    """U-Net source frame -> embedding flow (see the module docstring)."""

    def __init__(self, config: EmbeddingNetConfig = EmbeddingNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        n = _levels(c.image_size, c.depth)
        ch = _channels(c.base_channels, c.max_channels, c.width, n)
        # first level: no activation before, no norm (pix2pix); innermost: no norm
        self.down = nn.ModuleList(
            _Down(3 if i == 0 else ch[i - 1], ch[i], "none" if i in (0, n - 1) else c.norm, act=i > 0)
            for i in range(n))
        # decoder level i maps level i+1's features (+ skip) to level i's resolution
        self.up = nn.ModuleList(
            _Up(ch[i + 1] * (1 if i == n - 2 else 2), ch[i], c.norm) for i in range(n - 1))
        self.head = nn.Sequential(nn.ReLU(), _flow_head(ch[0] * (2 if n > 1 else 1)))

    def forward(self, source: Tensor) -> Tensor:
        """Args:
            source: ``(B, 3, S, S)`` in [-1, 1].

        Returns:
            ``(B, 2, S, S)`` backward flow in pixels (embedded face = ``warp(source, flow)``).
        """
        S = self.config.image_size
        _check_image(source, S, "EmbeddingNet input")
        skips, x = [], source
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        for i in range(len(self.up) - 1, -1, -1):
            x = self.up[i](x if i == len(self.up) - 1 else torch.cat([x, skips[i + 1]], 1))
        if len(self.down) > 1:
            x = torch.cat([x, skips[0]], 1)
        return torch.tanh(self.head(x)) * (self.config.flow_scale * S)


@dataclass(frozen=True)
class DrivingNetConfig(EmbeddingNetConfig):
    """Sizes of :class:`DrivingNet`: those of :class:`EmbeddingNetConfig` (encoder and mirrored decoder, flow
    bound) plus ``vector_dim``, the length of the driving vector (the paper: 128)."""

    vector_dim: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vector_dim < 1:
            raise ValueError(f"vector_dim must be >= 1; got {self.vector_dim}")


class DrivingNet(nn.Module):
    """Driving frame -> driving vector -> flow over the embedded face (see the module docstring)."""

    def __init__(self, config: DrivingNetConfig = DrivingNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        n = _levels(c.image_size, c.depth)
        ch = _channels(c.base_channels, c.max_channels, c.width, n)
        self.inner = c.image_size >> n  # side of the innermost map
        self.inner_channels = ch[-1]
        self.down = nn.Sequential(*(
            _Down(3 if i == 0 else ch[i - 1], ch[i], "none" if i in (0, n - 1) else c.norm, act=i > 0)
            for i in range(n)))
        flat = ch[-1] * self.inner * self.inner
        self.to_vector = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(flat, c.vector_dim))
        self.from_vector = nn.Linear(c.vector_dim, flat)
        self.up = nn.Sequential(*(_Up(ch[i + 1], ch[i], c.norm) for i in range(n - 2, -1, -1)))
        self.head = nn.Sequential(nn.ReLU(), _flow_head(ch[0]))

    def encode(self, driving: Tensor) -> Tensor:
        """``(B, 3, S, S)`` driving frames in [-1, 1] -> ``(B, vector_dim)`` driving vectors."""
        _check_image(driving, self.config.image_size, "DrivingNet input")
        return self.to_vector(self.down(driving).flatten(1))

    def decode(self, vector: Tensor) -> Tensor:
        """``(B, vector_dim)`` driving vectors -> ``(B, 2, S, S)`` backward flows in pixels."""
        if vector.dim() != 2 or vector.shape[1] != self.config.vector_dim:
            raise ValueError(f"driving vectors must have shape (B, {self.config.vector_dim}); got "
                             f"{tuple(vector.shape)}")
        x = self.from_vector(vector).view(-1, self.inner_channels, self.inner, self.inner)
        return torch.tanh(self.head(self.up(x))) * (self.config.flow_scale * self.config.image_size)

    def forward(self, driving: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(vector (B, D), flow (B, 2, S, S))``."""
        v = self.encode(driving)
        return v, self.decode(v)


@dataclass(frozen=True)
class X2FaceGeneratorConfig:
    """Sizes of :class:`X2FaceGenerator` (shared by both networks; the paper's at the defaults)."""

    image_size: int = 256
    base_channels: int = 64
    max_channels: int = 512
    depth: int = 8
    norm: str = "batch"
    width: float = 1.0
    vector_dim: int = 128
    flow_scale: float = 1.0


class X2FaceOutput(NamedTuple):
    """What :meth:`X2FaceGenerator.forward` returns.

    Attributes:
        image: ``(B, 3, S, S)`` generated frames in [-1, 1].
        embedded: ``(B, 3, S, S)`` embedded faces (averaged over the sources).
        embedding_flow: ``(B, N, 2, S, S)`` flows of the ``N`` source frames.
        driving_flow: ``(B, 2, S, S)`` flow sampling the embedded face.
        vector: ``(B, vector_dim)`` driving vectors.
    """

    image: Tensor
    embedded: Tensor
    embedding_flow: Tensor
    driving_flow: Tensor
    vector: Tensor


class X2FaceGenerator(nn.Module):
    """Embedding network + driving network (module docstring)."""

    def __init__(self, config: X2FaceGeneratorConfig = X2FaceGeneratorConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = EmbeddingNet(EmbeddingNetConfig(c.image_size, c.base_channels, c.max_channels, c.depth,
                                                         c.norm, c.width, c.flow_scale))
        self.driving = DrivingNet(DrivingNetConfig(c.image_size, c.base_channels, c.max_channels, c.depth, c.norm,
                                                   c.width, c.flow_scale, vector_dim=c.vector_dim))

    def embed(self, sources: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded face of one or several source frames per sample.

        Args:
            sources: ``(B, 3, S, S)`` or ``(B, N, 3, S, S)`` (``N`` frames of one identity) in [-1, 1].

        Returns:
            ``embedded (B, 3, S, S)``: the mean over the ``N`` sampled sources (the paper's multi-source
            mode), and ``flows (B, N, 2, S, S)``.
        """
        if sources.dim() == 4:
            sources = sources[:, None]
        if sources.dim() != 5:
            raise ImageSizeError(f"sources must have shape (B, 3, S, S) or (B, N, 3, S, S); got "
                                 f"{tuple(sources.shape)}")
        B, N = sources.shape[:2]
        flat = sources.reshape(B * N, *sources.shape[2:])
        flow = self.embedding(flat)
        sampled = warp(flat, flow)
        return sampled.view(B, N, *sampled.shape[1:]).mean(1), flow.view(B, N, *flow.shape[1:])

    def render(self, embedded: Tensor, vector: Tensor) -> tuple[Tensor, Tensor]:
        """Sample an embedded face ``(B, 3, S, S)`` with the flow decoded from driving vectors ``(B, D)``.

        Returns ``(image (B, 3, S, S), flow (B, 2, S, S))``.
        """
        flow = self.driving.decode(vector)
        return warp(embedded, flow), flow

    def forward(self, sources: Tensor, driving: Tensor) -> X2FaceOutput:
        """Args:
            sources: ``(B, 3, S, S)`` or ``(B, N, 3, S, S)`` source frames in [-1, 1].
            driving: ``(B, 3, S, S)`` driving frames in [-1, 1].
        """
        embedded, e_flow = self.embed(sources)
        vector = self.driving.encode(driving)
        image, d_flow = self.render(embedded, vector)
        return X2FaceOutput(image, embedded, e_flow, d_flow, vector)


# ---------------------------------------------------------------------------------------------- identity
#: torchvision's VGG configurations "A" (VGG-11, the paper's VGG-Face network) and "D" (VGG-16)
IDENTITY_VGG_CONFIGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class IdentityVGG(nn.Module):
    """A frozen VGG-11/16 feature stack laid out as ``torchvision.models.vggXX().features``.

    Layers are named like the perceptual loss's: ``relu{block}_{conv}`` is the ReLU after the
    ``conv``-th convolution of pooling block ``block`` (VGG-11: relu1_1, relu2_1, relu3_1, relu3_2,
    relu4_1, relu4_2, relu5_1, relu5_2 = the paper's Conv1..Conv8). Inputs are [-1, 1] RGB,
    normalised with ImageNet statistics (torchvision's convention).
    """

    def __init__(self, arch: str = "vgg11") -> None:
        super().__init__()
        if arch not in IDENTITY_VGG_CONFIGS:
            raise ValueError(f"arch must be one of {sorted(IDENTITY_VGG_CONFIGS)}; got {arch!r}")
        self.arch = arch
        layers: list[nn.Module] = []
        self.relu_index: dict[str, int] = {}
        cin, block, conv = 3, 1, 0
        for v in IDENTITY_VGG_CONFIGS[arch]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                block, conv = block + 1, 0
            else:
                conv += 1
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                self.relu_index[f"relu{block}_{conv}"] = len(layers) - 1
                cin = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> IdentityVGG:
        return super().train(False)  # always frozen

    def forward(self, image: Tensor, layers: Sequence[str]) -> list[Tensor]:
        """Activations of ``layers`` (names as in the class docstring) for ``(B, 3, H, W)`` in [-1, 1]."""
        unknown = [n for n in layers if n not in self.relu_index]
        if unknown:
            raise ValueError(f"unknown {self.arch} layers {unknown}; known: {sorted(self.relu_index)}")
        want = {self.relu_index[n]: n for n in layers}
        x = ((image.to(self.mean.dtype) + 1) * 0.5 - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out[want[i]] = x
            if len(out) == len(want):
                break
        return [out[n] for n in layers]


def load_identity_vgg(path: str | os.PathLike) -> IdentityVGG:
    """Build an :class:`IdentityVGG` from a torchvision-layout VGG-11 or VGG-16 state dict.

    Args:
        path: a ``.safetensors`` file, or a ``torch.save`` file read with ``torch.load(weights_only=True)``
            (a bare state dict or one under ``"state_dict"``); keys ``features.N.weight/bias`` (the
            ``classifier.*`` keys are ignored). The architecture is read from the number of conv layers.

    Raises:
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: unreadable file, batch-norm variants, or a layout of neither VGG-11 nor VGG-16.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"identity network weights not found at {p} (expected a torchvision-layout "
                                   "VGG-11/VGG-16 state dict, .pth or .safetensors)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad checkpoint file
        raise CheckpointError(f"cannot read identity network weights {p}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} holds a {type(state).__name__}, not a state dict")
    feats = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    feats = {k: v for k, v in feats.items() if k.startswith("features.")}
    if any(k.endswith("running_mean") for k in feats):
        raise CheckpointError(f"{p} is a batch-norm VGG (vgg11_bn/vgg16_bn); the identity network takes the "
                              "plain VGG-11/VGG-16 layout")
    convs = sum(1 for k, v in feats.items() if k.endswith(".weight") and v.dim() == 4)
    arch = {8: "vgg11", 13: "vgg16"}.get(convs)
    if arch is None:
        raise CheckpointError(f"{p} has {convs} 'features.*' conv layers; expected 8 (VGG-11) or 13 (VGG-16) "
                              "in torchvision's layout")
    net = IdentityVGG(arch)
    try:
        net.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{p} does not match torchvision's {arch} layout: {exc}") from exc
    return net


def identity_content_loss(network: IdentityVGG, pred: Tensor, target: Tensor, layers: Sequence[str],
                          scales: Sequence[Tensor | float] | None = None) -> tuple[Tensor, list[Tensor]]:
    """L1 content loss between identity-network activations.

    Args:
        network: the frozen identity network.
        pred: ``(B, 3, H, W)`` in [-1, 1] (receives gradients).
        target: ``(B, 3, H, W)`` in [-1, 1] (detached).
        layers: layer names.
        scales: optional weight per layer (default 1).

    Returns:
        ``(sum_l scale_l * L1_l, [L1_l per layer, unscaled])``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    b = pred.shape[0]
    feats = network(torch.cat([pred, target.detach()]), layers)
    per = [F.l1_loss(f[:b], f[b:].detach()) for f in feats]
    scales = [1.0] * len(per) if scales is None else list(scales)
    return sum(s * x for s, x in zip(scales, per)), per


# ---------------------------------------------------------------------------------------------- linear maps
def fit_affine(x: Tensor, y: Tensor, ridge: float = 0.0) -> tuple[Tensor, Tensor]:
    """Least-squares affine map ``y ~ x @ W.T + b`` (ordinary least squares; optional ridge on ``W``).

    Args:
        x: ``(N, P)`` inputs.
        y: ``(N, Q)`` targets.
        ridge: ``lambda >= 0`` of ``||y - x W^T - b||^2 + lambda ||W||^2`` (the bias is not penalised;
            solved on centred data in float64).

    Returns:
        ``W (Q, P)`` and ``b (Q,)`` in ``x``'s dtype.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need x (N, P) and y (N, Q) with the same N >= 2; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0; got {ridge}")
    x64, y64 = x.double(), y.double()
    mx, my = x64.mean(0), y64.mean(0)
    xc, yc = x64 - mx, y64 - my
    if ridge > 0:
        gram = xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
        w = torch.linalg.solve(gram, xc.T @ yc).T
    else:
        w = torch.linalg.lstsq(xc, yc, driver="gelsd" if x.device.type == "cpu" else None).solution.T
    b = my - w @ mx
    return w.to(x.dtype), b.to(x.dtype)


class DrivingVectorMaps(nn.Module):
    """The linear maps of §4 between head pose, audio features and driving vectors (buffers only).

    * ``f_v->p``: pose ``(pitch, yaw, roll)`` in radians from a driving vector;
    * ``f_p->v``: driving vector from pose. Only its linear part is used (``W_pv @ delta_pose``): the
      paper's pose edits add ``f_p->v(p_driving - p_source)`` to the source's vector, and a difference
      of poses carries no offset;
    * ``f_a->v``: driving vector from a frame's flattened audio features, z-scored with the training
      statistics (``audio_mean``, ``audio_std``).

    ``pose_fitted`` / ``audio_fitted`` say which maps hold fitted values.
    """

    def __init__(self, vector_dim: int = 128, audio_dim: int = 108) -> None:
        super().__init__()
        self.vector_dim, self.audio_dim = vector_dim, audio_dim
        z = torch.zeros
        for name, shape in (("v2p_weight", (3, vector_dim)), ("v2p_bias", (3,)), ("p2v_weight", (vector_dim, 3)),
                            ("p2v_bias", (vector_dim,)), ("a2v_weight", (vector_dim, audio_dim)),
                            ("a2v_bias", (vector_dim,)), ("audio_mean", (audio_dim,)), ("pose_fitted", ()),
                            ("audio_fitted", ())):
            self.register_buffer(name, z(shape))
        self.register_buffer("audio_std", torch.ones(audio_dim))

    def fit_pose(self, vectors: Tensor, angles: Tensor, ridge: float = 1e-3) -> None:
        """Fit ``f_v->p`` and ``f_p->v`` on pairs ``vectors (N, D)``, ``angles (N, 3)`` radians."""
        if angles.dim() != 2 or angles.shape[1] != 3 or vectors.shape != (angles.shape[0], self.vector_dim):
            raise ValueError(f"need vectors (N, {self.vector_dim}) and angles (N, 3); got {tuple(vectors.shape)} "
                             f"and {tuple(angles.shape)}")
        w, b = fit_affine(vectors, angles, ridge)
        self.v2p_weight.copy_(w)
        self.v2p_bias.copy_(b)
        w, b = fit_affine(angles, vectors)
        self.p2v_weight.copy_(w)
        self.p2v_bias.copy_(b)
        self.pose_fitted.fill_(1.0)

    def fit_audio(self, audio: Tensor, vectors: Tensor, ridge: float = 1.0) -> None:
        """Fit ``f_a->v`` on pairs ``audio (N, A)`` (flattened frame features), ``vectors (N, D)``."""
        if audio.dim() != 2 or audio.shape[1] != self.audio_dim or vectors.shape != (audio.shape[0],
                                                                                     self.vector_dim):
            raise ValueError(f"need audio (N, {self.audio_dim}) and vectors (N, {self.vector_dim}); got "
                             f"{tuple(audio.shape)} and {tuple(vectors.shape)}")
        self.audio_mean.copy_(audio.mean(0))
        self.audio_std.copy_(audio.std(0).clamp_min(1e-6))
        w, b = fit_affine(self._z(audio), vectors, ridge)
        self.a2v_weight.copy_(w)
        self.a2v_bias.copy_(b)
        self.audio_fitted.fill_(1.0)

    def _z(self, audio: Tensor) -> Tensor:
        return (audio - self.audio_mean) / self.audio_std

    def pose(self, vectors: Tensor) -> Tensor:
        """``f_v->p``: ``(N, D)`` -> ``(N, 3)`` pitch, yaw, roll in radians."""
        return vectors @ self.v2p_weight.T + self.v2p_bias

    def vector(self, angles: Tensor) -> Tensor:
        """``f_p->v``: ``(N, 3)`` radians -> ``(N, D)``."""
        return angles @ self.p2v_weight.T + self.p2v_bias

    def pose_delta(self, delta: Tensor) -> Tensor:
        """Linear part of ``f_p->v``: ``(N, 3)`` pose differences (radians) -> ``(N, D)`` vector offsets."""
        return delta @ self.p2v_weight.T

    def audio_vector(self, audio: Tensor) -> Tensor:
        """``f_a->v``: ``(N, A)`` -> ``(N, D)``."""
        return self._z(audio) @ self.a2v_weight.T + self.a2v_bias
