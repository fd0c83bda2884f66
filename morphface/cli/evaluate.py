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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure a trained reenactment checkpoint on a clip cache",
                       description="Self- or cross-identity reenactment metrics of a HeadGAN/IFaceUV "
                                   "checkpoint on clips of a preprocessed cache; writes metrics.json/.csv "
                                   "and results.mp4.")
    add_checkpoint_arguments(p)
    p.add_argument("--data", required=True, help="clip cache root (<identity>/<video>/<clip>/ folders)")
    p.add_argument("--split", choices=("train", "test", "all"), default="test",
                   help="'test': the last floor(test_fraction * n) identities by name (the training "
                        "dataset's held-out ones), 'train': the others, 'all': every clip")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of identities (the last by name) in the test split, as in training")
    p.add_argument("--test-identities", nargs="+", default=None, help="explicit test identities")
    p.add_argument("--mode", choices=("self", "cross"), default="self",
                   help="same- or cross-identity protocol")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: <checkpoint folder>/eval_<mode>)")
    p.add_argument("--max-clips", type=int, default=None, help="evaluate at most N clips")
    p.add_argument("--max-frames", type=int, default=None, help="use at most N frames per clip")
    p.add_argument("--detector", default="auto",
                   help="landmark detector for AED/APD/ARD ('none' skips those metrics)")
    p.add_argument("--no-csim", action="store_true", help="skip CSIM (dlib face embeddings)")
    p.add_argument("--fid-weights", default=None, help="FID Inception weights file (pytorch-fid's)")
    p.add_argument("--no-video", action="store_true", help="do not write results.mp4")
    p.add_argument("--baselines", action="store_true",
                   help="also score two references on the same clips (L1/PSNR/SSIM): copying the source frame, "
                        "and the pipeline's warp-only output (self mode)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..errors import MorphfaceError
    from ..fitting import FitResult
    from ..metrics import EvalClip, evaluate_reenactment
    from ..pipelines import rescale_fit

    try:
        from ..data import split_identities
        from ..data.cache import PARAMS_NAME, find_clips, load_audio_features, read_clip_frames

        pipe = load_checkpoint_pipeline(args)
        records = find_clips(args.data)
        identities = sorted({r.identity for r in records})
        chosen = set(split_identities(identities, args.split, args.test_fraction, args.test_identities))
        records = [r for r in records if r.identity in chosen]
        if args.max_clips is not None:
            records = records[: args.max_clips]
        if not records:
            raise ValueError(f"the {args.split!r} split of {args.data} has no clips ({len(identities)} "
                             f"identities; test_fraction {args.test_fraction} holds out the last "
                             f"floor(fraction * n) of them): use --split all or --test-identities")
        S = pipe.config.image_size
        clips = []
        for r in records:
            if r.meta.get("model", "default") != pipe.config.model:
                raise ValueError(f"clip {r.path} was fitted with model {r.meta.get('model')!r}; the pipeline "
                                 f"uses {pipe.config.model!r}")
            n = r.num_frames if args.max_frames is None else min(r.num_frames, args.max_frames)
            frames = read_clip_frames(r.path, list(range(n))).float().div(255.0)
            fit = FitResult.load(r.path / PARAMS_NAME)[:n]
            if tuple(frames.shape[-2:]) != (S, S):
                frames = torch.nn.functional.interpolate(frames, size=(S, S), mode="bilinear", antialias=True,
                                                         align_corners=False).clamp(0, 1)
                fit = rescale_fit(fit, S)
            audio = load_audio_features(r.path)
            clips.append(EvalClip(name=f"{r.identity}/{r.video}/{r.clip}", identity=r.identity, frames=frames,
                                  fit=fit, audio=None if audio is None else audio[:n], fps=r.fps))

        def generate(source, source_fit, driving_fit, audio, driving_frames):
            return pipe.reenact(source, driving_frames, driving_params=driving_fit, source_fit=source_fit,
                                audio=audio, crop=False, batch_size=args.batch_size).cpu()

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
        def copy_source(source, source_fit, driving_fit, audio, driving_frames):
            return source[None].expand(driving_fit.batch_size, -1, -1, -1).cpu()

        def warp_only(source, source_fit, driving_fit, audio, driving_frames):
            return pipe.reenact(source, driving_frames, driving_params=driving_fit, source_fit=source_fit,
                                audio=audio, crop=False, batch_size=args.batch_size, output="warped").cpu()

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
