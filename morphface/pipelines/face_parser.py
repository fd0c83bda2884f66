"""Train the face-part parser of the kp3d segmentation loss on a clip cache (synthetic renders by default).

``python -m morphface.pipelines.face_parser --data out/synth --out parser.safetensors``

Every frame's part masks (:func:`morphface.render.face_parts.face_part_masks`) are drawn from the landmarks stored
with its fit (synthetic caches hold the ground-truth projections) or from the fit's projected model
landmarks. Identities are split as the dataset splits them (``--test-fraction``); the held-out IoU per part
and for the loss's two groups (eyes + brows, lips + mouth) is printed and written to ``<out>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..nets.parsing import FaceParserConfig, part_iou, save_face_parser, train_face_parser
from ..render.face_parts import FACE_PARTS, face_part_masks
from ._cache_training import load_cache_frames, train_on_cache_main

__all__ = ["load_cache_parts", "main"]


def load_cache_parts(root: str | Path, split: str, test_fraction: float, image_size: int,
                     max_frames_per_clip: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(N, 3, S, S)`` in [0, 1] and part masks ``(N, 4, S, S)`` of a split of a clip cache."""
    return load_cache_frames(root, split, test_fraction, image_size, max_frames_per_clip,
                             targets=lambda landmarks: face_part_masks(landmarks, image_size))


def _test_iou(prob: torch.Tensor, masks: torch.Tensor, train_masks: torch.Tensor) -> dict[str, object]:
    """Held-out IoU per part and for the loss's two groups (eyes + brows, lips + mouth)."""
    iou = part_iou(prob, masks)
    grouped = part_iou(torch.stack([prob[:, :2].amax(1), prob[:, 2:].amax(1)], 1),
                       torch.stack([masks[:, :2].amax(1), masks[:, 2:].amax(1)], 1))
    return {"iou": {n: round(float(v), 4) for n, v in zip(FACE_PARTS, iou)},
            "iou_upper": round(float(grouped[0]), 4), "iou_lower": round(float(grouped[1]), 4)}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (module docstring)."""
    return train_on_cache_main(argv, prog="python -m morphface.pipelines.face_parser",
                               description=__doc__.split("\n")[0], default_lr=3e-3, load=load_cache_parts,
                               config_class=FaceParserConfig, train=train_face_parser, save=save_face_parser,
                               evaluate=_test_iou)


if __name__ == "__main__":
    sys.exit(main())
