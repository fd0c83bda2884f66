"""A small differentiable face-part parser: the offline stand-in for BiSeNet in the segmentation loss.

:class:`FaceParser` is a 2D U-Net (:class:`~morphface.nets.keypoints.blocks.Hourglass2d`) mapping an image
in [-1, 1] to four independent part probabilities ``(B, 4, H, W)`` (sigmoid; eyes, brows, lips, mouth
interior: :data:`morphface.render.face_parts.FACE_PARTS`). No pretrained face parser can be loaded here,
so the library trains this one on its own synthetic renders, whose part masks are known from the
ground-truth fit (:func:`train_face_parser` on tensors; ``python -m morphface.pipelines.face_parser`` on a
clip cache), or loads user-given weights (:func:`load_face_parser`).

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

__all__ = ["FaceParserConfig", "FaceParser", "train_face_parser", "part_iou", "save_face_parser",
           "load_face_parser"]


@dataclass(frozen=True)
class FaceParserConfig:
    """Sizes of :class:`FaceParser`.

    Attributes:
        base_channels: first U-Net block (16).
        num_blocks: down/up blocks (3; image sides must be multiples of ``2^num_blocks``).
        max_channels: channel cap (128).
        num_parts: output channels (4).
    """

    base_channels: int = 16
    num_blocks: int = 3
    max_channels: int = 128
    num_parts: int = 4


class FaceParser(nn.Module):
    """Image -> part probabilities (module docstring)."""

    def __init__(self, config: FaceParserConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or FaceParserConfig()
        self.first = nn.Sequential(nn.Conv2d(3, cfg.base_channels, 3, padding=1), nn.ReLU())
        self.unet = Hourglass2d(cfg.base_channels, cfg.base_channels, cfg.num_blocks, cfg.max_channels)
        self.head = nn.Conv2d(self.unet.out_channels, cfg.num_parts, 1)

    def logits(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, num_parts, H, W)`` logits."""
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InputShapeError(f"image must have shape (B, 3, H, W); got {shape}")
        return self.head(self.unet(self.first(image)))

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, num_parts, H, W)`` probabilities in (0, 1)."""
        return torch.sigmoid(self.logits(image))


def part_iou(probabilities: Tensor, masks: Tensor, threshold: float = 0.5) -> Tensor:
    """Intersection over union per part, over a whole set of images.

    Args:
        probabilities: ``(B, P, H, W)`` predictions.
        masks: ``(B, P, H, W)`` targets in [0, 1] (thresholded at 0.5).

    Returns:
        ``(P,)`` IoU of the thresholded maps (1 where both are empty).
    """
    if probabilities.shape != masks.shape:
        raise InputShapeError(f"probabilities and masks shapes differ: {tuple(probabilities.shape)} vs "
                              f"{tuple(masks.shape)}")
    p, m = probabilities > threshold, masks > 0.5
    inter = (p & m).sum(dim=(0, 2, 3)).double()
    union = (p | m).sum(dim=(0, 2, 3)).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def train_face_parser(images: Tensor, masks: Tensor, *, steps: int = 300, batch_size: int = 16, lr: float = 3e-3,
                      config: FaceParserConfig | None = None, seed: int = 0,
                      augment: bool = True, log: Callable[[int, float], None] | None = None) -> FaceParser:
    """Train a :class:`FaceParser` on images with known part masks.

    The loss is binary cross-entropy per part, with positive pixels weighted by
    ``min(10, negatives / positives)`` of the training set (the parts are small). Augmentation: random
    brightness/contrast and horizontal flips (the part channels are left/right symmetric).

    Args:
        images: ``(N, 3, H, W)`` RGB in [0, 1].
        masks: ``(N, 4, H, W)`` in [0, 1] (:func:`morphface.render.face_parts.face_part_masks`).
        steps, batch_size, lr: Adam schedule (cosine decay to 0).
        config: network sizes.
        seed: of the initialisation and the batches.
        log: called as ``log(step, loss)`` every 50 steps.

    Returns:
        The trained parser in eval mode, on the images' device.
    """
    if images.dim() != 4 or images.shape[1] != 3 or masks.shape[0] != images.shape[0] or masks.shape[-2:] != \
            images.shape[-2:]:
        raise InputShapeError(f"need images (N, 3, H, W) and masks (N, P, H, W) of the same N, H, W; got "
                              f"{tuple(images.shape)} and {tuple(masks.shape)}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parser = FaceParser(config).to(images.device)
    if masks.shape[1] != parser.config.num_parts:
        raise InputShapeError(f"masks must have {parser.config.num_parts} parts; got {masks.shape[1]}")
    pos = masks.mean(dim=(0, 2, 3)).clamp(min=1e-4)
    pos_weight = ((1 - pos) / pos).clamp(max=10.0)[None, :, None, None].to(images)
    opt = torch.optim.Adam(parser.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    N = images.shape[0]
    parser.train()
    for step in range(steps):
        idx = torch.randint(N, (min(batch_size, N),), generator=g).to(images.device)
        x, y = images[idx], masks[idx].to(images)
        if augment:
            n = x.shape[0]
            a = (1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.4).to(x)
            b = ((torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2).to(x)
            x = ((x - 0.5) * a + 0.5 + b).clamp(0, 1)
            flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
        loss = F.binary_cross_entropy_with_logits(parser.logits(x * 2 - 1), y, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, float(loss.detach()))
    return parser.eval()


def save_face_parser(parser: FaceParser, path: str | os.PathLike) -> None:
    """Write ``parser`` as safetensors with its config in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in parser.state_dict().items()}
    save_file(state, str(path), metadata={"format": "morphface.FaceParser",
                                          "config": json.dumps(dataclasses.asdict(parser.config))})


def load_face_parser(path: str | os.PathLike) -> FaceParser:
    """A :class:`FaceParser` from a file of :func:`save_face_parser`, in eval mode on the CPU.

    Raises:
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: not a face-parser file, or its tensors do not match its config.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"face parser weights not found at {path}: train them with "
                                   f"`python -m morphface.pipelines.face_parser` or set parser_weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "morphface.FaceParser":
            raise CheckpointError(f"{path} is not a morphface face-parser file (format {meta.get('format')!r})")
        parser = FaceParser(FaceParserConfig(**json.loads(meta["config"])))
        parser.load_state_dict(load_file(str(path)), strict=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"could not load a face parser from {path}: {type(exc).__name__}: {exc}") from exc
    return parser.eval()
