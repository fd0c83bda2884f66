"""Train the 2D landmark network of MMFA's landmark loss on a clip cache (synthetic renders by default).

``python -m morphface.pipelines.landmark_net --data out/synth --out out/landmarks_synth.safetensors``

Every frame's 68 landmarks are those stored with its fit (synthetic caches hold the ground-truth projections) or
the fit's projected model landmarks. Identities are split as the dataset splits them (``--test-fraction``); the
held-out NME (inter-ocular, :func:`~morphface.nets.landmarks.landmark_nme`) is printed and written to
``<out>.json`` next to the mean-training-shape NME it must beat.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..nets.landmarks import LandmarkNetConfig, landmark_nme, save_landmark_net, train_landmark_net
from ._cache_training import load_cache_frames, train_on_cache_main

__all__ = ["load_cache_landmarks", "main"]


def load_cache_landmarks(root: str | Path, split: str, test_fraction: float, image_size: int,
                         max_frames_per_clip: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(N, 3, S, S)`` in [0, 1] and their 68 landmarks ``(N, 68, 2)`` in pixels of a split of a cache."""
    return load_cache_frames(root, split, test_fraction, image_size, max_frames_per_clip)


def _test_nme(pred: torch.Tensor, landmarks: torch.Tensor, train_landmarks: torch.Tensor) -> dict[str, object]:
    """Held-out NME, and that of the mean training shape it must beat."""
    mean_shape = train_landmarks.mean(0, keepdim=True).expand_as(landmarks)
    return {"nme": round(float(landmark_nme(pred, landmarks).mean()), 4),
            "nme_mean_shape": round(float(landmark_nme(mean_shape, landmarks).mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (module docstring)."""
    return train_on_cache_main(argv, prog="python -m morphface.pipelines.landmark_net",
                               description=__doc__.split("\n")[0], default_lr=5e-3, load=load_cache_landmarks,
                               config_class=LandmarkNetConfig, train=train_landmark_net, save=save_landmark_net,
                               evaluate=_test_nme)


if __name__ == "__main__":
    sys.exit(main())
