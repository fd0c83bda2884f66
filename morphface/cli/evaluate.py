"""``morphface evaluate CHECKPOINT --data CACHE [--split test] [--mode self|cross] [-o OUT]``.

Evaluates a trained HeadGAN / IFaceUV / X2Face checkpoint on clips of a clip cache (the format written by
``morphface preprocess`` / ``morphface synth``) with :func:`morphface.metrics.evaluate_reenactment`:
same-identity reconstruction (``--mode self``: L1, PSNR, SSIM, LPIPS, FID, CSIM, AED, APD, ARD) or
cross-identity reenactment (``--mode cross``: FID, CSIM, AED, ARD). Prints the table and writes
``OUT/metrics.json``, ``OUT/metrics.csv`` and ``OUT/results.mp4`` (source | driving | output per clip).

Splits are the training dataset's (:func:`morphface.data.split_identities`): identity folders sorted by
name, ``test`` = the last ``floor(test_fraction * n)`` of them (or ``--test-identities``), ``train`` the
others, ``all`` every clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._checkpoint import add_checkpoint_arguments, load_checkpoint_pipeline
from ._eval import add_split_arguments, copy_source, load_eval_clips, pipeline_generate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure a trained reenactment checkpoint on a clip cache",
                       description="Self- or cross-identity reenactment metrics of a HeadGAN/IFaceUV "
                                   "checkpoint on clips of a preprocessed cache; writes metrics.json/.csv "
                                   "and results.mp4.")
    add_checkpoint_arguments(p)
    add_split_arguments(p)
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: <checkpoint folder>/eval_<mode>)")
    p.add_argument("--fid-weights", default=None, help="FID Inception weights file (pytorch-fid's)")
    p.add_argument("--no-video", action="store_true", help="do not write results.mp4")
    p.add_argument("--baselines", action="store_true",
                   help="also score two references on the same clips (L1/PSNR/SSIM): copying the source frame, "
                        "and the pipeline's warp-only output (self mode)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import MorphfaceError
    from ..metrics import evaluate_reenactment

    try:
        pipe = load_checkpoint_pipeline(args)
        clips = load_eval_clips(args, pipe.config.image_size, pipe.config.model)
        generate = pipeline_generate(pipe, args.batch_size)

        detector = None if args.detector == "none" else "auto"
        if detector is not None and args.detector != "auto":
            from ..fitting import make_detector

            detector = make_detector(args.detector)
        fid = args.fid_weights if args.fid_weights is not None else "auto"
        out_dir = Path(args.output) if args.output else _default_output(args.checkpoint, args.mode)
        out_dir.mkdir(parents=True, exist_ok=True)
        report = evaluate_reenactment(generate, clips, pipe.model, mode=args.mode, detector=detector,
                                      embedder=None if args.no_csim else "auto", fid=fid, progress=True,
                                      video_path=None if args.no_video else out_dir / "results.mp4")
    except (MorphfaceError, ValueError, OSError) as e:  # FileNotFoundError: no cache folder
        print(f"morphface evaluate: error: {e}", file=sys.stderr)
        return 1
    report.save_json(out_dir / "metrics.json")
    report.save_csv(out_dir / "metrics.csv")
    print(report.table())
    if args.baselines:
        warp_only = pipeline_generate(pipe, args.batch_size, output="warped")
        for name, fn in (("copy_source", copy_source), ("warp_only", warp_only)):
            base = evaluate_reenactment(fn, clips, pipe.model, mode=args.mode, detector=None, embedder=None,
                                        lpips=None, fid=None, progress=False)
            base.save_json(out_dir / f"metrics_{name}.json")
            print(f"\nbaseline: {name}\n{base.table()}")
    print(f"wrote {out_dir / 'metrics.json'}, {out_dir / 'metrics.csv'}"
          + ("" if args.no_video else f", {out_dir / 'results.mp4'}"))
    return 0


def _default_output(checkpoint: str, mode: str) -> Path:
    p = Path(checkpoint)
    folder = p if p.is_dir() else p.parent
    return folder / f"eval_{mode}"
