"""``morphface compare CKPT [CKPT ...] --data CACHE [-o OUT]``: several pipelines and the baselines on the
same frames, with the same metrics, in one table and one picture grid.

Every checkpoint (any registered pipeline: HeadGAN, IFaceUV, X2Face, ...) is evaluated with
:func:`morphface.metrics.evaluate_reenactment` on the same clips of the cache's split, as ``morphface
evaluate`` does (``--mode self``: one-shot same-identity reconstruction, the first frame of each clip is the
source and the rest drive it; ``--mode cross``: each clip's first frame driven by another identity's clip),
beside two baselines measured on the same frames: **copy source** (every output is the source frame) and
each pipeline's **warp only** output where it has one (the source warped by its motion network, no
generator). Writes

* ``OUT/compare.md``: one markdown table, a row per method: L1 (0-255), PSNR, SSIM, CSIM, AED, APD, ARD
  (self) or FID, CSIM, AED, ARD (cross), and the training wall time read from the run's ``metrics.jsonl``;
  metrics whose backend is missing here are marked as such (never substituted);
* ``OUT/compare.json``: the same numbers and every report in full;
* ``OUT/compare_grid.png``: rows are a few driving frames of the first evaluated clip (pair); columns are
  the source, the driving frame and each method's output.

All checkpoints must share the image size and morphable model (they are evaluated on identical tensors).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import positive_int
from ._checkpoint import add_checkpoint_arguments
from ._eval import add_split_arguments

__all__ = ["register", "run", "markdown_table"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="evaluate several checkpoints and the baselines side by side",
                       description="Evaluate checkpoints of any pipelines and the copy-source / warp-only "
                                   "baselines on the same frames with the same metrics; writes compare.md, "
                                   "compare.json and compare_grid.png.")
    add_checkpoint_arguments(p)
    p.add_argument("more_checkpoints", nargs="*", metavar="CHECKPOINT", help="further checkpoints to compare")
    add_split_arguments(p)
    p.add_argument("--names", nargs="+", default=None,
                   help="row names of the checkpoints, in order (default: the pipelines' registry names)")
    p.add_argument("-o", "--output", default="out/compare", help="output folder (default out/compare)")
    p.add_argument("--grid-frames", type=positive_int, default=4, help="driving frames in the picture grid")
    p.set_defaults(func=run)


def _columns(mode: str) -> tuple[str, ...]:
    return ("L1", "PSNR", "SSIM", "CSIM", "AED", "APD", "ARD") if mode == "self" else ("FID", "CSIM", "AED", "ARD")


def markdown_table(rows: list[dict], mode: str) -> str:
    """The comparison table: ``rows`` of ``{"method", "metrics", "unavailable", "train_seconds"}``."""
    cols = _columns(mode)
    lines = ["| method | " + " | ".join(cols) + " | training |", "|---" * (len(cols) + 2) + "|"]
    for row in rows:
        cells = []
        for c in cols:
            if c in row["metrics"]:
                v = row["metrics"][c]
                cells.append(f"{v:.2f}" if c in ("L1", "PSNR", "FID") else f"{v:.3f}")
            else:
                cells.append("n/a" if c in row.get("unavailable", {}) or row.get("baseline") else "-")
        t = row.get("train_seconds")
        cells.append(f"{t / 60:.1f} min" if t else "-")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    unavailable = {c: why for row in rows for c, why in row.get("unavailable", {}).items() if c in cols}
    notes = [f"{c}: {why}" for c, why in sorted(unavailable.items())]
    if notes:
        lines += ["", "n/a: " + "; ".join(notes)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from ..io import write_image
    from ..metrics import evaluate_reenactment
    from ..metrics.protocol import _finite, _pairs
    from ..pipelines import load_pipeline
    from ._eval import copy_source, load_eval_clips, pipeline_generate, training_seconds

    checkpoints = [args.checkpoint, *args.more_checkpoints]
    if args.names is not None and len(args.names) != len(checkpoints):
        raise ValueError(f"--names gives {len(args.names)} name(s) for {len(checkpoints)} checkpoint(s)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipes = [load_pipeline(c, ema=False if args.no_ema else None, map_location=device) for c in checkpoints]
    names = args.names or [_registry_name(p) for p in pipes]
    sizes = {(p.config.image_size, p.config.model) for p in pipes}
    if len(sizes) != 1:
        raise ValueError(f"the checkpoints differ in image size / model ({sorted(sizes)}); compare evaluates "
                         "them on identical frames, so they must agree")
    size, model_name = sizes.pop()
    clips = load_eval_clips(args, size, model_name)
    model = pipes[0].model
    detector = None
    if args.detector != "none":
        from ..fitting import make_detector

        detector = make_detector(args.detector)
    embedder = None
    if not args.no_csim:
        from ..metrics import FaceEmbedder

        embedder = FaceEmbedder()

    methods = [("copy source", copy_source, None, True)]
    for name, pipe, ckpt in zip(names, pipes, checkpoints):
        methods.append((name, pipeline_generate(pipe, args.batch_size), ckpt, False))
        if _has_warp_output(pipe, clips[0]):
            methods.append((f"{name} (warp only)", pipeline_generate(pipe, args.batch_size, "warped"), None, True))

    rows, reports = [], {}
    for method, generate, ckpt, baseline in methods:
        print(f"evaluating {method} ...", flush=True)
        report = evaluate_reenactment(generate, clips, model, mode=args.mode, detector=detector,
                                      embedder=embedder, lpips=None, fid=None, progress=True)
        reports[method] = report.to_dict()
        rows.append({"method": method, "metrics": report.metrics, "unavailable": report.unavailable,
                     "baseline": baseline, "train_seconds": training_seconds(ckpt) if ckpt else None})

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"{args.mode}-reenactment on {len(clips)} clip(s) of {args.data} ({args.split} split), "
              f"{size}x{size}")
    table = markdown_table(rows, args.mode)
    (out / "compare.md").write_text(f"{header}\n\n{table}\n")
    (out / "compare.json").write_text(json.dumps(_finite({"header": header, "rows": rows, "reports": reports}),
                                                 indent=1))
    src_i, drv_i = _pairs(clips, args.mode)[0]
    grid = comparison_grid(clips[src_i], clips[drv_i], [(m, g) for m, g, _, _ in methods], args.grid_frames,
                           self_mode=args.mode == "self")
    write_image(out / "compare_grid.png", grid)
    print(f"{header}\n\n{table}\n\nwrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare_grid.png'}")
    return 0


def comparison_grid(source_clip, driving_clip, methods: list, rows: int, self_mode: bool):
    """``(3, R*S, (2 + M)*S)``: for ``R`` driving frames spread over the clip, the source, the driving frame
    and each of the ``M`` methods' outputs (``methods``: ``(name, generate)`` pairs)."""
    import torch

    start = 1 if self_mode else 0  # in self mode frame 0 is the source itself
    T = driving_clip.frames.shape[0]
    idx = torch.linspace(start, T - 1, min(rows, T - start)).round().long().unique()
    source, source_fit = source_clip.frames[0], source_clip.fit[0:1]
    driving, driving_fit = driving_clip.frames[idx], driving_clip.fit[idx]
    audio = None if driving_clip.audio is None else driving_clip.audio[idx]
    columns = [source[None].expand(len(idx), -1, -1, -1), driving]
    with torch.no_grad():
        for _, generate in methods:
            columns.append(generate(source, source_fit, driving_fit, audio, driving).float().cpu().clamp(0, 1))
    grid = torch.cat(columns, dim=-1)  # (R, 3, S, (2 + M) S)
    return torch.cat(list(grid), dim=-2)


def _registry_name(pipe) -> str:
    from ..pipelines.io import _pipeline_classes

    return next((n for n, cls in _pipeline_classes().items() if type(pipe) is cls), type(pipe).__name__.lower())


def _has_warp_output(pipe, clip) -> bool:
    """Whether the pipeline has a warp-only output (``output="warped"``) that differs from its output (X2Face's
    output *is* a warp), tried on one frame."""
    import torch

    kwargs = {"driving_params": clip.fit[1:2], "source_fit": clip.fit[0:1], "crop": False,
              "audio": None if clip.audio is None else clip.audio[1:2]}
    try:
        with torch.no_grad():
            warped = pipe.reenact(clip.frames[0], clip.frames[1:2], output="warped", **kwargs)
            fake = pipe.reenact(clip.frames[0], clip.frames[1:2], **kwargs)
    except (TypeError, ValueError):
        return False
    return not torch.equal(warped, fake)
