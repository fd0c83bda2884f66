"""A small differentiable heatmap landmark detector: the offline stand-in for MMFA's pre-trained 2D landmark network.

:class:`HeatmapLandmarkNet` is a 2D U-Net (:class:`~morphface.nets.keypoints.blocks.Hourglass2d`) on the image
(optionally down-sampled by ``scale``) giving one heatmap per landmark; a spatial softmax and the expected
position (soft-argmax) turn each into ``(x, y)`` in **pixels** of the input image (library convention: origin at the
top-left corner, pixel centres at integer + 0.5), so the output is differentiable in the image, as MMFA's 2D
landmark loss needs. It predicts the 68 iBUG points that synthetic caches store as ground truth (MMFA's detector
has 145 points with pupils; none can be downloaded here). The library trains it on its own renders
(:func:`train_landmark_net`; ``python -m morphface.pipelines.landmark_net`` on a clip cache) or loads user-given
weights (:func:`load_landmark_net`). :func:`landmark_nme` is the usual normalised mean error (inter-ocular: outer
eye corners 36 and 45).

Files: safetensors of the ``state_dict`` with the JSON config in the metadata (never unpickled).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, InputShapeError, WeightsNotFoundError
from .keypoints.blocks import Hourglass2d

__all__ = ["LandmarkNetConfig", "HeatmapLandmarkNet", "train_landmark_net", "landmark_nme", "save_landmark_net",
           "load_landmark_net"]

_FORMAT = "morphface.HeatmapLandmarkNet"


@dataclass(frozen=True)
class LandmarkNetConfig:
    """Sizes of :class:`HeatmapLandmarkNet`.

    Attributes:
        num_landmarks: output points (68).
        base_channels: first U-Net block (16).
        num_blocks: down/up blocks (3).
        max_channels: channel cap (128).
        scale: the image is resized by this factor before the U-Net (0.5: heatmaps at half resolution).
        temperature: of the spatial softmax (learned logits are divided by it; 1).
    """

    num_landmarks: int = 68
    base_channels: int = 16
    num_blocks: int = 3
    max_channels: int = 128
    scale: float = 0.5
    temperature: float = 1.0


class HeatmapLandmarkNet(nn.Module):
    """Image -> landmarks ``(B, n, 2)`` in pixels (module docstring)."""

    def __init__(self, config: LandmarkNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or LandmarkNetConfig()
        self.first = nn.Sequential(nn.Conv2d(3, cfg.base_channels, 3, padding=1), nn.ReLU())
        self.unet = Hourglass2d(cfg.base_channels, cfg.base_channels, cfg.num_blocks, cfg.max_channels)
        self.head = nn.Conv2d(self.unet.out_channels, cfg.num_landmarks, 1)

    def heatmaps(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, n, h, w)`` heatmap logits (``h = H * scale``)."""
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InputShapeError(f"image must have shape (B, 3, H, W); got {shape}")
        x = image
        if self.config.scale != 1:
            x = F.interpolate(x, scale_factor=self.config.scale, mode="bilinear", align_corners=False, antialias=True)
        return self.head(self.unet(self.first(x)))

    def soft_argmax(self, logits: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, n, h, w)`` heatmap logits -> ``(B, n, 2)`` expected positions in pixels of an ``size = (H, W)``
        image."""
        B, n, h, w = logits.shape
        prob = torch.softmax(logits.flatten(2).float() / self.config.temperature, dim=-1).reshape(B, n, h, w)
        H, W = size
        xs = (torch.arange(w, device=logits.device, dtype=prob.dtype) + 0.5) * (W / w)
        ys = (torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5) * (H / h)
        x = (prob.sum(dim=2) * xs).sum(-1)
        y = (prob.sum(dim=3) * ys).sum(-1)
        return torch.stack([x, y], dim=-1).to(logits.dtype)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, n, 2)`` soft-argmax positions in pixels of the input image."""
        return self.soft_argmax(self.heatmaps(image), tuple(image.shape[-2:]))


def _random_similarity(images: Tensor, landmarks: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Warp images by a random similarity ``x'(p) = x(A p + b)`` (normalised coordinates) and move the pixel
    landmarks to match (``p = A^{-1} (q - b)``)."""
    n = images.shape[0]
    u = torch.rand(n, 4, generator=g) * 2 - 1
    ang, sc = u[:, 0] * 0.1745, 1 + u[:, 1] * 0.1
    c, s = torch.cos(ang) * sc, torch.sin(ang) * sc
    A = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], 1)  # (n, 2, 2)
    b = u[:, 2:] * 0.12
    theta = torch.cat([A, b[:, :, None]], dim=2).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    H, W = images.shape[-2:]
    side = torch.tensor([W, H], dtype=images.dtype, device=images.device)
    q = landmarks * (2 / side) - 1
    p = (q - b[:, None, :].to(q)) @ torch.linalg.inv(A).transpose(-1, -2).to(q)
    return warped, (p + 1) * (side / 2)


def _heatmap_cross_entropy(logits: Tensor, landmarks: Tensor, size, temperature: float) -> Tensor:
    """Mean cross-entropy of the spatial softmax of ``(B, n, h, w)`` logits against normalised Gaussians
    (sigma 1 heatmap pixel) around ``(B, n, 2)`` pixel landmarks of an image of ``size``."""
    B, n, h, w = logits.shape
    H, W = size
    xs = torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5
    px = landmarks[..., 0].float() * (w / W)
    py = landmarks[..., 1].float() * (h / H)
    d2 = (xs[None, None, None, :] - px[..., None, None]) ** 2 + (ys[None, None, :, None] - py[..., None, None]) ** 2
    target = torch.softmax(-0.5 * d2.flatten(2), dim=-1)
    logp = torch.log_softmax(logits.flatten(2).float() / temperature, dim=-1)
    return -(target * logp).sum(-1).mean() * 0.1


def landmark_nme(pred: Tensor, target: Tensor) -> Tensor:
    """Mean point-to-point error normalised by the inter-ocular distance (outer eye corners 36 and 45).

    Args:
        pred, target: ``(B, 68, 2)``.

    Returns:
        ``(B,)`` NME per image.
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[1] != 68 or pred.shape[2] != 2:
        raise InputShapeError(f"pred and target must both be (B, 68, 2); got {tuple(pred.shape)} and "
                              f"{tuple(target.shape)}")
    iod = (target[:, 36] - target[:, 45]).norm(dim=-1).clamp(min=1e-6)
    return (pred - target).norm(dim=-1).mean(dim=1) / iod


def train_landmark_net(images: Tensor, landmarks: Tensor, *, steps: int = 300, batch_size: int = 16,
                       lr: float = 3e-3, config: LandmarkNetConfig | None = None, seed: int = 0,
                       augment: bool = True, log: Callable[[int, float], None] | None = None) -> HeatmapLandmarkNet:
    """Train a :class:`HeatmapLandmarkNet` on images with known landmarks.

    The loss is the mean L1 distance of the soft-argmax positions to the targets, in units of the image side, plus
    the cross-entropy of each spatial softmax against a Gaussian around its target (``sigma`` = 1 heatmap pixel),
    which trains much faster from scratch than the coordinates alone. Augmentation: random brightness/contrast and a
    random similarity transform (scale +-10 %, rotation +-10 degrees, translation +-6 % of the side) applied to image
    and landmarks alike (no flips, which would permute the iBUG indices).

    Args:
        images: ``(N, 3, H, W)`` RGB in [0, 1].
        landmarks: ``(N, n, 2)`` in pixels of those images.
        steps, batch_size, lr: Adam schedule (cosine decay to 0).
        config: network sizes (``num_landmarks`` must be ``n``).
        seed: of the initialisation and the batches.
        log: called as ``log(step, loss)`` every 50 steps.

    Returns:
        The trained network in eval mode, on the images' device.
    """
    if images.dim() != 4 or images.shape[1] != 3 or landmarks.dim() != 3 or landmarks.shape[0] != images.shape[0] \
            or landmarks.shape[2] != 2:
        raise InputShapeError(f"need images (N, 3, H, W) and landmarks (N, n, 2) of the same N; got "
                              f"{tuple(images.shape)} and {tuple(landmarks.shape)}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = HeatmapLandmarkNet(config or LandmarkNetConfig(num_landmarks=landmarks.shape[1])).to(images.device)
    if landmarks.shape[1] != net.config.num_landmarks:
        raise InputShapeError(f"landmarks must have {net.config.num_landmarks} points; got {landmarks.shape[1]}")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    N, side = images.shape[0], float(images.shape[-1])
    net.train()
    for step in range(steps):
        idx = torch.randint(N, (min(batch_size, N),), generator=g).to(images.device)
        x, y = images[idx], landmarks[idx].to(images)
        if augment:
            n = x.shape[0]
            a = (1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.4).to(x)
            b = ((torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2).to(x)
            x = ((x - 0.5) * a + 0.5 + b).clamp(0, 1)
            x, y = _random_similarity(x, y, g)
        logits = net.heatmaps(x * 2 - 1)
        loss = (net.soft_argmax(logits, x.shape[-2:]) - y).abs().mean() / side
        loss = loss + _heatmap_cross_entropy(logits, y, x.shape[-2:], net.config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, float(loss.detach()))
    return net.eval()


def save_landmark_net(net: HeatmapLandmarkNet, path: str | os.PathLike) -> None:
    """Write ``net`` as safetensors with its config in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"format": _FORMAT, "config": json.dumps(dataclasses.asdict(net.config))})


def load_landmark_net(path: str | os.PathLike) -> HeatmapLandmarkNet:
    """A :class:`HeatmapLandmarkNet` from a file of :func:`save_landmark_net`, in eval mode on the CPU.

    Raises:
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: not a landmark-network file, or its tensors do not match its config.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"landmark network weights not found at {path}: train them with "
                                   f"`python -m morphface.pipelines.landmark_net` or set landmark_weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _FORMAT:
            raise CheckpointError(f"{path} is not a morphface landmark-network file (format {meta.get('format')!r})")
        net = HeatmapLandmarkNet(LandmarkNetConfig(**json.loads(meta["config"])))
        net.load_state_dict(load_file(str(path)), strict=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"could not load a landmark network from {path}: {type(exc).__name__}: {exc}") from exc
    return net.eval()
