"""What ``evaluate`` and ``compare`` share: the split arguments, loading the evaluation clips of a cache,
and binding a pipeline (or a baseline) to the protocol's ``generate`` function."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import positive_int

__all__ = ["add_split_arguments", "load_eval_clips", "pipeline_generate", "copy_source", "training_seconds"]


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--split``, ``--test-fraction``, ``--test-identities``, ``--mode``, ``--max-clips``,
    ``--max-frames``, ``--detector``, ``--no-csim``."""
    p.add_argument("--data", required=True, help="clip cache root (<identity>/<video>/<clip>/ folders)")
    p.add_argument("--split", choices=("train", "test", "all"), default="test",
                   help="'test': the last floor(test_fraction * n) identities by name (the training "
                        "dataset's held-out ones), 'train': the others, 'all': every clip")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of identities (the last by name) in the test split, as in training")
    p.add_argument("--test-identities", nargs="+", default=None, help="explicit test identities")
    p.add_argument("--mode", choices=("self", "cross"), default="self",
                   help="same- or cross-identity protocol")
    p.add_argument("--max-clips", type=positive_int, default=None, help="evaluate at most N clips")
    p.add_argument("--max-frames", type=positive_int, default=None, help="use at most N frames per clip")
    p.add_argument("--detector", default="auto",
                   help="landmark detector for AED/APD/ARD ('none' skips those metrics)")
    p.add_argument("--no-csim", action="store_true", help="skip CSIM (dlib face embeddings)")


def load_eval_clips(args: argparse.Namespace, image_size: int, model: str) -> list:
    """The clips of ``args.split`` of the cache ``args.data`` as :class:`~morphface.metrics.EvalClip` at
    ``image_size`` pixels (frames resized with antialiasing, fits rescaled).

    Raises:
        ValueError: the split has no clips, or a clip was fitted with another model than ``model``.
    """
    import torch

    from ..data import split_identities
    from ..data.cache import PARAMS_NAME, find_clips, load_audio_features, read_clip_frames
    from ..fitting import FitResult
    from ..metrics import EvalClip
    from ..pipelines import rescale_fit

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
    clips = []
    for r in records:
        if r.meta.get("model", "default") != model:
            raise ValueError(f"clip {r.path} was fitted with model {r.meta.get('model')!r}; the pipeline "
                             f"uses {model!r}")
        n = r.num_frames if args.max_frames is None else min(r.num_frames, args.max_frames)
        frames = read_clip_frames(r.path, list(range(n))).float().div(255.0)
        fit = FitResult.load(r.path / PARAMS_NAME)[:n]
        if tuple(frames.shape[-2:]) != (image_size, image_size):
            frames = torch.nn.functional.interpolate(frames, size=(image_size, image_size), mode="bilinear",
                                                     antialias=True, align_corners=False).clamp(0, 1)
            fit = rescale_fit(fit, image_size)
        audio = load_audio_features(r.path)
        clips.append(EvalClip(name=f"{r.identity}/{r.video}/{r.clip}", identity=r.identity, frames=frames,
                              fit=fit, audio=None if audio is None else audio[:n], fps=r.fps))
    return clips


def pipeline_generate(pipe, batch_size: int, output: str | None = None):
    """The protocol's ``generate`` function for a loaded pipeline; ``output="warped"``: its warp-only
    output (the baseline of pipelines that warp the source)."""
    extra = {} if output is None else {"output": output}

    def generate(source, source_fit, driving_fit, audio, driving_frames):
        return pipe.reenact(source, driving_frames, driving_params=driving_fit, source_fit=source_fit,
                            audio=audio, crop=False, batch_size=batch_size, **extra).cpu()

    return generate


def copy_source(source, source_fit, driving_fit, audio, driving_frames):
    """The copy-the-source-frame baseline: every output is the source image."""
    return source[None].expand(driving_frames.shape[0], -1, -1, -1).cpu()


def training_seconds(checkpoint: str | Path) -> float | None:
    """Wall-clock seconds of the training run that wrote ``checkpoint`` (sum of ``sec`` over the run's
    ``metrics.jsonl`` up to the checkpoint's step; a step logged twice, before and after a resume, counts
    once), or ``None`` when the run folder has no such log."""
    import json

    from ..pipelines import resolve_weights

    weights = resolve_weights(checkpoint)
    log = weights.parent.parent / "metrics.jsonl"
    try:
        step = int(weights.stem.split("_")[-1])
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    by_step = {int(r["step"]): float(r["sec"]) for r in rows if "sec" in r and "step" in r}  # a resume re-logs
    secs = [sec for s, sec in by_step.items() if s <= step]
    return sum(secs) if secs else None
