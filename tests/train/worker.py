"""Subprocess entry of the train tests (not a test module): ``python worker.py CONFIG [options]``.

* ``--resume``: continue from the newest checkpoint.
* ``--hang-at N --marker FILE``: after step N (and its hooks) write FILE and sleep, so the test can
  SIGKILL the process at a known point.
* ``--poison-rank R --poison-at N``: after step N, set rank R's generator weights to NaN (the next
  step's loss is NaN on that rank only).
* ``--dump-grads DIR``: after every step, save each network's gradients and parameters of this rank
  to ``DIR/rank{r}_step{s}.safetensors`` (run under torchrun for the DDP test).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from morphface.train import Trainer, load_config


def grads_and_params(trainer: Trainer) -> dict:
    out = {}
    for name, net in trainer.networks.items():
        for pname, p in net.named_parameters():
            out[f"grad.{name}.{pname}"] = p.grad.detach().clone()
            out[f"param.{name}.{pname}"] = p.detach().clone()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--hang-at", type=int)
    ap.add_argument("--marker")
    ap.add_argument("--dump-grads")
    ap.add_argument("--poison-rank", type=int)
    ap.add_argument("--poison-at", type=int)
    args = ap.parse_args()

    hooks = []
    if args.hang_at is not None:
        def hang(trainer, step, record):
            if step == args.hang_at:
                Path(args.marker).write_text(str(step))
                time.sleep(600)  # the test kills us with SIGKILL here
        hooks.append(hang)
    if args.dump_grads:
        def dump(trainer, step, record):
            path = Path(args.dump_grads) / f"rank{trainer.dist.rank}_step{step}.safetensors"
            save_file(grads_and_params(trainer), str(path))
        hooks.append(dump)
    if args.poison_at is not None:
        def poison(trainer, step, record):
            if step == args.poison_at and trainer.dist.rank == args.poison_rank:
                with torch.no_grad():
                    for p in trainer.networks["generator"].parameters():
                        p.fill_(float("nan"))
        hooks.append(poison)
    Trainer(load_config(args.config), hooks=hooks).fit(resume=args.resume)


if __name__ == "__main__":
    main()
