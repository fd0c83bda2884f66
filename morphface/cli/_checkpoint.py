"""Arguments and loading shared by the subcommands that run a trained reenactment checkpoint."""

from __future__ import annotations

import argparse

from ._args import device, positive_int


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """``checkpoint`` (positional), ``--device``, ``--batch-size`` and ``--no-ema``."""
    p.add_argument("checkpoint", help="a training checkpoint (step_N.safetensors, its .json, or a run folder)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="frames per generator call")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator weights instead of the EMA ones")


def load_checkpoint_pipeline(args: argparse.Namespace):
    """The pipeline of ``args.checkpoint`` on ``args.device`` (EMA weights unless ``--no-ema``)."""
    import torch

    from ..pipelines import load_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_pipeline(args.checkpoint, ema=False if args.no_ema else None, map_location=device)
