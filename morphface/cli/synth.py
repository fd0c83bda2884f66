"""``morphface synth -o DIR``: a synthetic talking-head dataset with ground-truth parameters."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic talking-head dataset (clip-cache format, ground truth)",
        description="Render random identities (ICT default model, procedural albedo textures) with smooth head "
                    "and expression motion over random backgrounds, written as clips of the clip cache "
                    "(DIR/id00000/vid00/clip00/: frames.mp4, params.safetensors with the true parameters, "
                    "audio.safetensors, meta.json). Deterministic given --seed; an interrupted run resumes.")
    p.add_argument("-o", "--output", required=True, help="output folder (the cache root)")
    p.add_argument("--identities", type=int, default=4, help="number of identities (default 4)")
    p.add_argument("--clips-per-identity", type=int, default=2, help="clips per identity (default 2)")
    p.add_argument("--frames", type=int, default=50, help="frames per clip (default 50)")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--supersample", type=int, default=2, help="anti-aliasing supersampling per axis (default 2)")
    p.add_argument("--frames-format", choices=["mp4", "jpg"], default="mp4")
    p.add_argument("--no-audio", action="store_true", help="do not synthesise the voice-like audio features")
    p.add_argument("--fit-check", action="store_true",
                   help="afterwards, fit the clips from their frames (landmark detector + fit_video) and report "
                        "the rotation error against the ground truth")
    p.add_argument("--fit-check-clips", type=int, default=None, help="fit at most this many clips")
    p.add_argument("--detector", default="dlib", help="detector of --fit-check (default dlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synth import SynthConfig, synthesize_dataset
    from ..errors import SettingsMismatchError

    try:
        config = SynthConfig(identities=args.identities, clips_per_identity=args.clips_per_identity,
                             frames=args.frames, size=args.size, fps=args.fps, seed=args.seed,
                             supersample=args.supersample, audio=not args.no_audio,
                             frames_format=args.frames_format)
    except ValueError as e:
        print(f"morphface synth: error: {e}", file=sys.stderr)
        return 2
    try:
        folders = synthesize_dataset(args.output, config, progress=not args.quiet)
    except (SettingsMismatchError, OSError) as e:  # another set in the folder, -o an existing file, ...
        print(f"morphface synth: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(folders)} synthetic clip(s) in {args.output}")
    if args.fit_check:
        from ..data.fit_check import fit_accuracy_on_synth

        report = fit_accuracy_on_synth(args.output, detector=args.detector, max_clips=args.fit_check_clips,
                                       progress=not args.quiet)
        for c in report.clips:
            print(f"  {c.path}: rotation error median {c.rotation_median:.2f} deg, mean {c.rotation_mean:.2f} deg; "
                  f"landmarks {c.landmark_error:.2f} px; detected {100 * c.detected:.0f}% of frames")
        for path, message in report.failed:
            print(f"  {path}: failed: {message}", file=sys.stderr)
        print(f"fit check over {len(report.clips)} clip(s): rotation error median {report.rotation_median:.2f} deg, "
              f"mean {report.rotation_mean:.2f} deg, 90th percentile {report.rotation_p90:.2f} deg")
    return 0
