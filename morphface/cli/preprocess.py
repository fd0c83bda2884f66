"""``morphface preprocess VIDEO_DIR -o CACHE``: crop, fit and cache a tree of talking-head clips."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help="crop, fit and cache a VoxCeleb-style tree of clips for training",
        description="For every clip of VIDEO_DIR/<identity>/<video>/<clip>.mp4 (or <clip>/*.jpg): detect "
                    "landmarks, crop one square box per clip, fit the 3DMM per frame on the crop, extract "
                    "frame-aligned audio features, and write CACHE/<identity>/<video>/<clip>/ (frames.mp4, "
                    "params.safetensors, audio.safetensors, meta.json with per-clip statistics). Frames without a face "
                    "before the first / after the last detection are trimmed, those in between interpolated; "
                    "both are reported. Resumable: complete clips are skipped. Clips that fail are logged to "
                    "CACHE/preprocess_errors.log and skipped. Ends with a table of every clip (frames, fit "
                    "error, jitter before/after smoothing), also written to CACHE/preprocess_summary.md.")
    p.add_argument("video_dir", help="input tree <identity>/<video>/<clip>.mp4 or <identity>/<video>/<clip>/*.jpg")
    p.add_argument("-o", "--output", required=True, help="cache root")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1: in this process)")
    p.add_argument("--detector", default="auto", choices=["auto", "dlib", "fan", "mediapipe"])
    p.add_argument("--frames-format", choices=["mp4", "jpg"], default="mp4")
    p.add_argument("--crop-scale", type=float, default=1.8, help="crop side / landmark box side (default 1.8)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of folders of frames (default 25)")
    p.add_argument("--no-audio", action="store_true", help="skip the audio features")
    p.add_argument("--model", default="default", help="'default' (the narrow ICT face) or a model file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.preprocess import ERROR_LOG, SUMMARY_NAME, PreprocessConfig, preprocess_tree

    src = Path(args.video_dir)
    if not src.is_dir():
        print(f"morphface preprocess: error: {src} is not a folder", file=sys.stderr)
        return 2
    try:
        config = PreprocessConfig(size=args.size, detector=args.detector, frames_format=args.frames_format,
                                  crop_scale=args.crop_scale, fps=args.fps, audio=not args.no_audio,
                                  model=args.model)
        summary = preprocess_tree(src, args.output, config, workers=args.workers, progress=not args.quiet)
    except (ValueError, NotADirectoryError) as e:  # bad options, a cache with other settings, -o a file
        print(f"morphface preprocess: error: {e}", file=sys.stderr)
        return 2
    print(summary.table, end="")
    print(f"(summary: {Path(args.output) / SUMMARY_NAME})")
    print(f"preprocessed {len(summary.written)} clip(s), {len(summary.skipped)} already done, "
          f"{len(summary.failed)} failed" + (f" (see {Path(args.output) / ERROR_LOG})" if summary.failed else ""))
    return 1 if summary.failed else 0
