"""What the training commands of the small loss networks share (``python -m morphface.pipelines.face_parser`` and
``python -m morphface.pipelines.landmark_net``): the frames and 68 landmarks of a split of a clip cache
(:func:`load_cache_frames`) and the command line (:func:`train_on_cache_main`: arguments, training on the train
split, the weights file and the held-out report ``<out>.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["load_cache_frames", "train_on_cache_main"]


def load_cache_frames(root: str | Path, split: str, test_fraction: float, image_size: int,
                      max_frames_per_clip: int | None = None,
                      targets: Callable[[Tensor], Tensor] = lambda landmarks: landmarks) -> tuple[Tensor, Tensor]:
    """Frames ``(N, 3, S, S)`` in [0, 1] of a split of a clip cache and per-frame targets made of their 68
    landmarks.

    Every frame's landmarks are those stored with its fit (synthetic caches hold the ground-truth projections) or
    the fit's projected model landmarks, in pixels of the ``S x S`` frames; ``targets`` maps each clip's
    ``(T, 68, 2)`` landmarks to its targets (default: the landmarks). Identities are split as the dataset splits
    them.
    """
    from ..data import split_identities
    from ..data.cache import PARAMS_NAME, find_clips, load_cache_model, read_clip_frames
    from ..fitting import FitResult

    records = find_clips(root)
    if not records:
        raise ValueError(f"no complete clip under {root}")
    keep = set(split_identities([r.identity for r in records], split, test_fraction))
    images, outputs = [], []
    model = None
    for r in records:
        if r.identity not in keep:
            continue
        n = r.num_frames if max_frames_per_clip is None else min(r.num_frames, max_frames_per_clip)
        frames = read_clip_frames(r.path, list(range(n))).float().div(255.0)
        fit = FitResult.load(r.path / PARAMS_NAME)[:n]
        if fit.landmarks is not None and fit.landmarks.shape[-2] == 68:
            lm = fit.landmarks.float()
        else:
            if model is None:
                model = load_cache_model(r.meta["model"])
            lm, _ = fit.camera.project(fit.vertices(model)[:, model.landmarks.clamp(min=0)])
        scale = image_size / frames.shape[-1]
        if frames.shape[-1] != image_size:
            frames = F.interpolate(frames, size=(image_size, image_size), mode="bilinear", antialias=True,
                                   align_corners=False).clamp(0, 1)
        images.append(frames)
        outputs.append(targets(lm * scale))
    if not images:
        raise ValueError(f"the {split!r} split of {root} is empty")
    return torch.cat(images), torch.cat(outputs)


def train_on_cache_main(argv: list[str] | None, *, prog: str, description: str, default_lr: float,
                        load: Callable[..., tuple[Tensor, Tensor]], config_class: Callable[..., Any],
                        train: Callable[..., nn.Module], save: Callable[[nn.Module, str], None],
                        evaluate: Callable[[Tensor, Tensor, Tensor], Mapping[str, Any]]) -> int:
    """The command line of a small loss network's training on a clip cache.

    Args:
        argv: the arguments (``None``: ``sys.argv``).
        prog, description, default_lr: of the command.
        load: ``load(root, split, test_fraction, image_size, max_frames_per_clip) -> (images, targets)``.
        config_class: the network's config class (``base_channels``, ``num_blocks``, ``max_channels`` come from
            the arguments).
        train: ``train(images, targets, steps=, batch_size=, lr=, config=, seed=, log=)`` -> network.
        save: writes the network to ``--out``.
        evaluate: ``evaluate(predictions, test_targets, train_targets)`` -> report entries of the test split.

    Returns:
        0 (the report is printed and written to ``<out>.json``).
    """
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--data", required=True, help="clip cache root (e.g. the output of `morphface synth`)")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=default_lr)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--num-blocks", type=int, default=3)
    ap.add_argument("--max-channels", type=int, default=64)
    ap.add_argument("--max-frames-per-clip", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    x, y = load(args.data, "train", args.test_fraction, args.image_size, args.max_frames_per_clip)
    print(f"{x.shape[0]} training frames ({time.time() - t0:.0f} s to load)", flush=True)
    cfg = config_class(base_channels=args.base_channels, num_blocks=args.num_blocks, max_channels=args.max_channels)
    net = train(x, y, steps=args.steps, batch_size=args.batch_size, lr=args.lr, config=cfg, seed=args.seed,
                log=lambda s, v: print(f"step {s}: loss {v:.4f}", flush=True))
    save(net, args.out)
    report: dict[str, object] = {"train_frames": int(x.shape[0]), "steps": args.steps,
                                 "seconds": round(time.time() - t0, 1)}
    if args.test_fraction > 0:
        tx, ty = load(args.data, "test", args.test_fraction, args.image_size, args.max_frames_per_clip)
        with torch.no_grad():
            pred = torch.cat([net(tx[i:i + 64] * 2 - 1) for i in range(0, tx.shape[0], 64)])
        report.update(test_frames=int(tx.shape[0]), **evaluate(pred, ty, y))
    Path(str(args.out) + ".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return 0
