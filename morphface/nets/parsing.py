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

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputShapeError
from .auxiliary import UNetHead, check_rgb, load_network, random_brightness_contrast, save_network, train_network

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


_FORMAT = "morphface.FaceParser"


class FaceParser(UNetHead):
    """Image -> part probabilities (module docstring)."""

    def __init__(self, config: FaceParserConfig | None = None) -> None:
        cfg = config or FaceParserConfig()
        super().__init__(cfg.base_channels, cfg.num_blocks, cfg.max_channels, cfg.num_parts)
        self.config = cfg

    def logits(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, num_parts, H, W)`` logits."""
        check_rgb(image)
        return self.maps(image)

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
    pos = masks.mean(dim=(0, 2, 3)).clamp(min=1e-4)
    pos_weight = ((1 - pos) / pos).clamp(max=10.0)[None, :, None, None].to(images)

    def check(parser: FaceParser) -> None:
        if masks.shape[1] != parser.config.num_parts:
            raise InputShapeError(f"masks must have {parser.config.num_parts} parts; got {masks.shape[1]}")

    def flip_and_recolour(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = random_brightness_contrast(x, g)
        flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)[:, None, None, None]
        return torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)

    def loss(parser: FaceParser, x: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(parser.logits(x * 2 - 1), y, pos_weight=pos_weight)

    return train_network(lambda: FaceParser(config), images, masks, loss, steps=steps, batch_size=batch_size, lr=lr,
                         seed=seed, augment=flip_and_recolour if augment else None, check=check, log=log)


def save_face_parser(parser: FaceParser, path: str | os.PathLike) -> None:
    """Write ``parser`` as safetensors with its config in the metadata."""
    save_network(parser, path, _FORMAT)


def load_face_parser(path: str | os.PathLike) -> FaceParser:
    """A :class:`FaceParser` from a file of :func:`save_face_parser`, in eval mode on the CPU.

    Raises:
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: not a face-parser file, or its tensors do not match its config.
    """
    return load_network(path, _FORMAT, lambda c: FaceParser(FaceParserConfig(**c)), name="face parser",
                        kind="face-parser", command="morphface.pipelines.face_parser", option="parser_weights")
