"""Fault tolerance: a run killed with SIGKILL after a checkpoint resumes onto the uninterrupted run's
loss curve (deterministic mode, num_workers 0), and partial checkpoint files are ignored."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from morphface.train import TrainConfig, Trainer, list_checkpoints, load_checkpoint, read_metrics

from .helpers import REPO, WORKER, run_worker, subprocess_env, toy_config

# Mid-epoch checkpoints (6 batches per epoch), EMA, clipping and instance noise (torch RNG) all on.
FAULT_RUN = {"steps": 20, "checkpoint_every": 5, "keep_last": 2, "deterministic": True, "ema_decay": 0.9,
             "grad_clip": 1.0, "pipeline": {"name": "toy_gan", "config": {"channels": 8, "disc_channels": 8,
                                                                            "instance_noise": 0.05}}}
LOSS_KEYS = ("g_loss", "d_loss", "g/l1", "g/adv", "d/real", "d/fake", "grad_norm/generator")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, write_yaml):
    ref_cfg = write_yaml(toy_config(tmp_path / "ref", **FAULT_RUN), "ref.yaml")
    cut_cfg = write_yaml(toy_config(tmp_path / "cut", **FAULT_RUN), "cut.yaml")
    marker = tmp_path / "reached"
    cmd = [sys.executable, str(WORKER), cut_cfg, "--hang-at", "12", "--marker", marker]
    killed = subprocess.Popen(cmd, env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        ref = run_worker(ref_cfg)  # the uninterrupted run, meanwhile
        assert ref.returncode == 0, ref.stderr
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert killed.poll() is None, killed.stderr.read()
            assert time.monotonic() < deadline, "the run never reached step 12"
            time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert [c.step for c in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [5, 10]
    assert max(r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")) == 12

    resumed = run_worker(cut_cfg, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    a = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    b = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 21))
    worst = max(abs(ra[k] - rb[k]) for ra, rb in zip(a, b) for k in LOSS_KEYS)
    assert worst <= 1e-6, f"resumed losses differ from the uninterrupted run by up to {worst}"
    wa = load_checkpoint(tmp_path / "ref", ema=True).nets.state_dict()
    wb = load_checkpoint(tmp_path / "cut", ema=True).nets.state_dict()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6


def test_partial_temp_file_is_ignored_and_keep_last_respected(tmp_path):
    cfg = TrainConfig.from_dict(toy_config(tmp_path / "run", steps=10, keep_last=2))
    Trainer(cfg).fit()
    ckdir = tmp_path / "run" / "checkpoints"
    # What a writer killed mid-checkpoint at step 15 leaves: a temp file, and a renamed weights file
    # without its JSON record (the commit marker).
    (ckdir / ".step_00000015.safetensors.tmp-999-deadbeef").write_bytes(b"\x00" * 100)
    (ckdir / "step_00000015.safetensors").write_bytes(b"garbage")
    assert list_checkpoints(ckdir)[-1].step == 10

    summary = Trainer(cfg.replace(steps=20)).fit(resume=True)
    assert summary.step == 20
    rec = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rec] == list(range(1, 21))  # resumed from step 10, not from the debris
    names = sorted(p.name for p in ckdir.iterdir())
    assert names == [f"step_000000{s}{ext}" for s in (15, 20) for ext in (".json", ".safetensors",
                                                                        ".state.safetensors")]
    assert torch.isfinite(next(load_checkpoint(ckdir / "step_00000015.safetensors").parameters())).all()
