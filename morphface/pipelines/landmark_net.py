"""Train the 2D landmark network of MMFA's landmark loss on a clip cache (synthetic renders by default).

``python -m morphface.pipelines.landmark_net --data out/synth --out out/landmarks_synth.safetensors``

Every frame's 68 landmarks are those stored with its fit (synthetic caches hold the ground-truth projections) or
the fit's projected model landmarks. Identities are split as the dataset splits them (``--test-fraction``); the
held-out NME (inter-ocular, :func:`~morphface.nets.landmarks.landmark_nme`) is printed and written to
``<out>.json`` next to the mean-training-shape NME it must beat.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..nets.landmarks import LandmarkNetConfig, landmark_nme, save_landmark_net, train_landmark_net

__all__ = ["load_cache_landmarks", "main"]


def load_cache_landmarks(root: str | Path, split: str, test_fraction: float, image_size: int,
                         max_frames_per_clip: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(N, 3, S, S)`` in [0, 1] and their 68 landmarks ``(N, 68, 2)`` in pixels of a split of a cache."""
    from ..data import split_identities
    from ..data.cache import PARAMS_NAME, find_clips, load_cache_model, read_clip_frames
    from ..fitting import FitResult

    records = find_clips(root)
    if not records:
        raise ValueError(f"no complete clip under {root}")
    keep = set(split_identities([r.identity for r in records], split, test_fraction))
    images, points = [], []
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
        points.append(lm * scale)
    if not images:
        raise ValueError(f"the {split!r} split of {root} is empty")
    return torch.cat(images), torch.cat(points)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m morphface.pipelines.landmark_net",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="clip cache root (e.g. the output of `morphface synth`)")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--num-blocks", type=int, default=3)
    ap.add_argument("--max-channels", type=int, default=64)
    ap.add_argument("--max-frames-per-clip", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    x, y = load_cache_landmarks(args.data, "train", args.test_fraction, args.image_size, args.max_frames_per_clip)
    print(f"{x.shape[0]} training frames ({time.time() - t0:.0f} s to load)", flush=True)
    cfg = LandmarkNetConfig(base_channels=args.base_channels, num_blocks=args.num_blocks,
                            max_channels=args.max_channels)
    net = train_landmark_net(x, y, steps=args.steps, batch_size=args.batch_size, lr=args.lr, config=cfg,
                             seed=args.seed, log=lambda s, v: print(f"step {s}: loss {v:.4f}", flush=True))
    save_landmark_net(net, args.out)
    report: dict[str, object] = {"train_frames": int(x.shape[0]), "steps": args.steps,
                                 "seconds": round(time.time() - t0, 1)}
    if args.test_fraction > 0:
        tx, ty = load_cache_landmarks(args.data, "test", args.test_fraction, args.image_size,
                                      args.max_frames_per_clip)
        with torch.no_grad():
            pred = torch.cat([net(tx[i:i + 64] * 2 - 1) for i in range(0, tx.shape[0], 64)])
        mean_shape = y.mean(0, keepdim=True).expand_as(ty)
        report.update(test_frames=int(tx.shape[0]), nme=round(float(landmark_nme(pred, ty).mean()), 4),
                      nme_mean_shape=round(float(landmark_nme(mean_shape, ty).mean()), 4))
    Path(str(args.out) + ".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
