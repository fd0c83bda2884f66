"""Train the face-part parser of the kp3d segmentation loss on a clip cache (synthetic renders by default).

``python -m morphface.pipelines.face_parser --data out/synth --out parser.safetensors``

Every frame's part masks (:func:`morphface.render.face_parts.face_part_masks`) are drawn from the landmarks stored
with its fit (synthetic caches hold the ground-truth projections) or from the fit's projected model
landmarks. Identities are split as the dataset splits them (``--test-fraction``); the held-out IoU per part
and for the loss's two groups (eyes + brows, lips + mouth) is printed and written to ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..nets.parsing import FaceParserConfig, part_iou, save_face_parser, train_face_parser
from ..render.face_parts import FACE_PARTS, face_part_masks

__all__ = ["load_cache_parts", "main"]


def load_cache_parts(root: str | Path, split: str, test_fraction: float, image_size: int,
                     max_frames_per_clip: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(N, 3, S, S)`` in [0, 1] and part masks ``(N, 4, S, S)`` of a split of a clip cache."""
    from ..data import split_identities
    from ..data.cache import PARAMS_NAME, find_clips, load_cache_model, read_clip_frames
    from ..fitting import FitResult

    records = find_clips(root)
    if not records:
        raise ValueError(f"no complete clip under {root}")
    keep = set(split_identities([r.identity for r in records], split, test_fraction))
    images, masks = [], []
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
        masks.append(face_part_masks(lm * scale, image_size))
    if not images:
        raise ValueError(f"the {split!r} split of {root} is empty")
    return torch.cat(images), torch.cat(masks)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m morphface.pipelines.face_parser", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="clip cache root (e.g. the output of `morphface synth`)")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--num-blocks", type=int, default=3)
    ap.add_argument("--max-channels", type=int, default=64)
    ap.add_argument("--max-frames-per-clip", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    x, y = load_cache_parts(args.data, "train", args.test_fraction, args.image_size, args.max_frames_per_clip)
    print(f"{x.shape[0]} training frames ({time.time() - t0:.0f} s to load)", flush=True)
    cfg = FaceParserConfig(base_channels=args.base_channels, num_blocks=args.num_blocks,
                           max_channels=args.max_channels)
    parser = train_face_parser(x, y, steps=args.steps, batch_size=args.batch_size, lr=args.lr, config=cfg,
                               seed=args.seed, log=lambda s, v: print(f"step {s}: loss {v:.4f}", flush=True))
    save_face_parser(parser, args.out)
    report: dict[str, object] = {"train_frames": int(x.shape[0]), "steps": args.steps,
                                 "seconds": round(time.time() - t0, 1)}
    if args.test_fraction > 0:
        tx, ty = load_cache_parts(args.data, "test", args.test_fraction, args.image_size, args.max_frames_per_clip)
        with torch.no_grad():
            prob = torch.cat([parser(tx[i:i + 64] * 2 - 1) for i in range(0, tx.shape[0], 64)])
        iou = part_iou(prob, ty)
        grouped = part_iou(torch.stack([prob[:, :2].amax(1), prob[:, 2:].amax(1)], 1),
                           torch.stack([ty[:, :2].amax(1), ty[:, 2:].amax(1)], 1))
        report.update(test_frames=int(tx.shape[0]), iou={n: round(float(v), 4) for n, v in zip(FACE_PARTS, iou)},
                      iou_upper=round(float(grouped[0]), 4), iou_lower=round(float(grouped[1]), 4))
    Path(str(args.out) + ".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
