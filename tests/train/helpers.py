"""Helpers of the train tests: toy configs and subprocess launching."""

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"


def toy_config(output_dir, **overrides) -> dict:
    """A tiny toy-GAN run as a plain config dict (what a YAML file would hold)."""
    cfg = {
        "output_dir": str(output_dir),
        "pipeline": {"name": "toy_gan", "config": {"channels": 8, "disc_channels": 8}},
        "data": {"name": "toy_shapes", "config": {"size": 24, "image_size": 16}},
        "steps": 20,
        "batch_size": 4,
        "num_workers": 0,
        "checkpoint_every": 5,
        "keep_last": 3,
        "log_every": 10,
        "image_every": 0,
        "tensorboard": False,
        "progress": False,
        "seed": 3,
    }
    cfg.update(overrides)
    return cfg


def subprocess_env() -> dict:
    env = dict(os.environ)
    # One thread: identical float reductions in every run, and kind to the shared CPU.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), *map(str, args)], env=subprocess_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kw)
