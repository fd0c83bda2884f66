"""Frontalisation on real video frames nobody tuned it on (issue 21, item 5).

    python bench/frontalize_real.py [--videos ../shared/testdata/videos] [--stride 6] [--per-clip 2]
        [--min-yaw 10] [--grid docs/frontalize_real_grid.jpg]

The fixed protocol, for every clip in ``--videos`` (``*.mp4``, one person per clip):

1. Every ``--stride``-th frame is fitted with :func:`morphface.fitting.fit_image` (the default detector,
   MediaPipe's 468 points where installed, and the default model's ``"narrow"`` face).
2. The ``--per-clip`` most turned frames with ``|yaw| >= --min-yaw`` (at least ``--stride * 4`` frames
   apart) are frontalised with :func:`morphface.uv.frontalize` at its defaults; the clip's least turned
   frame (smallest rotation angle) is the person's near-frontal reference.
3. Each output is fitted again (same detector and model): its **yaw** (target: ``|yaw| <= 3`` degrees)
   and pitch; its **CSIM** (:class:`morphface.metrics.FaceEmbedder`, cosine of dlib face descriptors) to
   the near-frontal reference, beside the CSIM of the turned input to the same reference (what doing
   nothing keeps of the identity).

The clips are split once, by name, into a development half (the ``d`` clips) and an evaluation half
(the ``s`` clips and the rest); frontalisation was not tuned on either (it was developed on three
turned test photos), and both are reported. A grid (input | frontalised | reference, one row per clip)
(each panel a square around the face) is written to ``--grid``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _degrees(angles: torch.Tensor) -> torch.Tensor:
    return angles * (180.0 / math.pi)


def _fit_or_none(model, image, detector):
    from morphface.errors import MorphfaceError
    from morphface.fitting import fit_image

    try:
        return fit_image(model, image, detector=detector)
    except MorphfaceError:
        return None


def _pick_turned(yaws: list[tuple[int, float]], per_clip: int, min_yaw: float, gap: int) -> list[int]:
    """Frame indices of the ``per_clip`` largest ``|yaw|`` at least ``gap`` frames apart."""
    chosen: list[int] = []
    for t, yaw in sorted(yaws, key=lambda p: -abs(p[1])):
        if abs(yaw) < min_yaw or len(chosen) == per_clip:
            break
        if all(abs(t - c) >= gap for c in chosen):
            chosen.append(t)
    return chosen


def _face_square(landmarks: torch.Tensor, size: tuple[int, int], scale: float = 1.8) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of a square ``scale`` times the landmark box's longer side, inside the image."""
    lo, hi = landmarks.amin(0), landmarks.amax(0)
    side = min(int(float((hi - lo).max()) * scale), *size)
    cx, cy = (float(v) for v in (lo + hi) / 2)
    x0 = min(max(int(cx - side / 2), 0), size[1] - side)
    y0 = min(max(int(cy - side / 2), 0), size[0] - side)
    return x0, y0, side


def _crop(image: torch.Tensor, box: tuple[int, int, int]) -> torch.Tensor:
    x0, y0, side = box
    return image[:, y0:y0 + side, x0:x0 + side]


def _panel(images: list[torch.Tensor], height: int) -> torch.Tensor:
    scaled = [F.interpolate(im[None], size=(height, round(im.shape[-1] * height / im.shape[-2])),
                            mode="bilinear", align_corners=False, antialias=True)[0] for im in images]
    return torch.cat(scaled, dim=-1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", default=str(ROOT.parent / "shared" / "testdata" / "videos"))
    p.add_argument("--stride", type=int, default=6, help="fit every n-th frame to find the turned ones")
    p.add_argument("--per-clip", type=int, default=2)
    p.add_argument("--min-yaw", type=float, default=10.0, help="degrees; frames turned less are not used")
    p.add_argument("--max-frames", type=int, default=None, help="frames read per clip (default: all)")
    p.add_argument("--grid", default="docs/frontalize_real_grid.jpg")
    p.add_argument("--grid-height", type=int, default=192)
    args = p.parse_args(argv)

    from morphface import load_default_model
    from morphface.fitting import make_detector
    from morphface.io import iter_video, write_image
    from morphface.metrics import FaceEmbedder, cosine_similarity
    from morphface.uv import frontalize

    videos = sorted(Path(args.videos).glob("*.mp4"))
    if not videos:
        print(f"no *.mp4 in {args.videos}", file=sys.stderr)
        return 2
    model = load_default_model("narrow")
    detector = make_detector("auto")
    embedder = FaceEmbedder()
    rows, stats, grid_rows = [], {"dev": [], "eval": []}, []
    t_start = time.perf_counter()
    for video in videos:
        name = video.stem.replace("liveportrait_", "")
        half = "dev" if name.startswith("d") else "eval"
        frames, yaws, boxes = {}, [], {}
        for chunk_start, chunk in _enumerate_chunks(iter_video(video, max_frames=args.max_frames)):
            for i in range(0, chunk.shape[0]):
                t = chunk_start + i
                if t % args.stride:
                    continue
                image = chunk[i]
                fit = _fit_or_none(model, image, detector)
                if fit is None:
                    continue
                frames[t] = image
                boxes[t] = _face_square(fit.landmarks[0], image.shape[-2:])
                yaws.append((t, float(_degrees(fit.angles[0, 1])), float(_degrees(fit.angles[0]).norm())))
        if not yaws:
            print(f"{name}: no face found", file=sys.stderr)
            continue
        ref_t = min(yaws, key=lambda y: y[2])[0]
        turned = _pick_turned([(t, y) for t, y, _ in yaws], args.per_clip, args.min_yaw, args.stride * 4)
        if not turned:
            print(f"{name}: no frame turned by {args.min_yaw} degrees or more "
                  f"(largest |yaw| {max(abs(y) for _, y, _ in yaws):.1f})")
            continue
        ref_emb = embedder.embed(frames[ref_t])
        for t in turned:
            in_yaw = next(y for tt, y, _ in yaws if tt == t)
            result = frontalize(frames[t], model=model, detector=detector)
            out = result.image[0]
            refit = _fit_or_none(model, out, detector)
            out_yaw = float("nan") if refit is None else float(_degrees(refit.angles[0, 1]))
            out_pitch = float("nan") if refit is None else float(_degrees(refit.angles[0, 0]))
            csim_in = csim_out = float("nan")
            if ref_emb is not None:
                e_in, e_out = embedder.embed(frames[t]), embedder.embed(out)
                if e_in is not None:
                    csim_in = float(cosine_similarity(e_in[None], ref_emb[None])[0])
                if e_out is not None:
                    csim_out = float(cosine_similarity(e_out[None], ref_emb[None])[0])
            rows.append([name, half, t, in_yaw, out_yaw, out_pitch, csim_in, csim_out])
            stats[half].append((abs(out_yaw), csim_in, csim_out))
            if t == turned[0]:
                crop = boxes[t]
                grid_rows.append(_panel([_crop(frames[t], crop), _crop(out, crop),
                                         _crop(frames[ref_t], boxes[ref_t])], args.grid_height))
    print_table(["clip", "half", "frame", "input yaw", "output yaw", "output pitch", "CSIM input",
                 "CSIM output"], rows)
    print()
    summary = []
    for half, vals in stats.items():
        if not vals:
            continue
        yaw_abs = [v[0] for v in vals if v[0] == v[0]]
        summary.append([half, len(vals), statistics.mean(yaw_abs) if yaw_abs else float("nan"),
                        max(yaw_abs) if yaw_abs else float("nan"),
                        sum(y <= 3.0 for y in yaw_abs), _nanmean([v[1] for v in vals]),
                        _nanmean([v[2] for v in vals])])
    print_table(["half", "frames", "mean |output yaw|", "max |output yaw|", "<= 3 deg", "CSIM input",
                 "CSIM output"], summary)
    print(f"({time.perf_counter() - t_start:.0f} s)")
    if grid_rows and args.grid:
        width = max(r.shape[-1] for r in grid_rows)
        grid = torch.cat([F.pad(r, (0, width - r.shape[-1])) for r in grid_rows], dim=-2)
        write_image(args.grid, grid.clamp(0, 1))
        print(f"wrote {args.grid}")
    return 0


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return statistics.mean(kept) if kept else float("nan")


def _enumerate_chunks(chunks):
    start = 0
    for chunk in chunks:
        yield start, chunk
        start += chunk.shape[0]


if __name__ == "__main__":
    raise SystemExit(main())
