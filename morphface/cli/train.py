"""``morphface train CONFIG.yaml``: train a registered pipeline (see :mod:`morphface.train`).

Single process: ``morphface train cfg.yaml``; several GPUs / nodes:
``torchrun --nproc_per_node 8 -m morphface train cfg.yaml`` (the trainer reads torchrun's environment).
"""

from __future__ import annotations

import argparse

from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a pipeline from a YAML config (torchrun for several GPUs)",
                       description="Train the pipeline named in CONFIG on its dataset, writing checkpoints, "
                                   "metrics.jsonl, TensorBoard logs and image grids under output_dir. "
                                   "Launch with torchrun (-m morphface train ...) for multi-GPU/multi-node "
                                   "DDP. Put CONFIG before --resume.")
    p.add_argument("config", help="YAML train config (fields: see morphface.train.TrainConfig)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in output_dir (a new run if there is none), "
                        "or from the given checkpoint file/folder")
    p.add_argument("--output-dir", help="override output_dir of the config")
    p.add_argument("--steps", type=positive_int, help="override steps of the config (total, not additional)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first so it can register a pipeline/dataset (repeatable; a config file "
                        "never names modules itself)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from ..errors import MorphfaceError
    from ..train import ConfigError, Trainer, latest_checkpoint, load_config
    from ..train.registry import UnknownNameError

    rank = os.environ.get("RANK")
    tag = f"morphface train[rank {rank}]" if rank not in (None, "0") else "morphface train"
    try:
        cfg = load_config(args.config)
        changes = {}
        if args.output_dir is not None:
            changes["output_dir"] = args.output_dir
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.plugin:
            changes["imports"] = list(args.plugin)
        if changes:
            cfg = cfg.replace(**changes)
    except (ConfigError, FileNotFoundError) as e:
        print(f"{tag}: error: {e}", file=sys.stderr)
        return 2
    try:
        summary = Trainer(cfg).fit(resume=args.resume)
    except (MorphfaceError, FileExistsError, UnknownNameError, ImportError) as e:
        # User errors (existing run, unknown name, bad checkpoint, divergence): a message, no traceback.
        print(f"{tag}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        last = latest_checkpoint(cfg.output_dir)
        where = (f"the last checkpoint is {last.weights} (step {last.step}); continue with --resume" if last
                 else f"no checkpoint was written yet in {cfg.output_dir}")
        print(f"\n{tag}: interrupted; {where}", file=sys.stderr)
        return 130
    if summary.checkpoint is not None:
        print(f"done: {summary.step} steps; last checkpoint {summary.checkpoint}")
    return 0
