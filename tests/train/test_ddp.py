"""Two gloo processes on CPU (torchrun, 127.0.0.1, a free port) compute the same gradients as one
process on the combined batch: DDP averages per-rank mean-loss gradients, which equals the gradient of
the mean over the union of the ranks' batches."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from morphface.train import TrainConfig, Trainer, latest_checkpoint, read_metrics

from .helpers import REPO, WORKER, free_port, subprocess_env, toy_config
from .worker import grads_and_params

STEPS = 2


def _torchrun(cfg, *worker_args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(cfg),
           *map(str, worker_args)]
    return subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_process_gradients_match_single_process(tmp_path, write_yaml):
    common = {"steps": STEPS, "checkpoint_every": 100, "data": {"name": "toy_shapes", "config": {"size": 16}}}
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    cfg = write_yaml(toy_config(tmp_path / "ddp", batch_size=2, **common))
    proc = _torchrun(cfg, "--dump-grads", dumps)
    assert proc.returncode == 0, proc.stderr[-4000:]

    reference = {}

    def capture(trainer, step, record):
        reference[step] = grads_and_params(trainer)

    single = TrainConfig.from_dict(toy_config(tmp_path / "single", batch_size=4, **common))
    Trainer(single, hooks=[capture]).fit()

    for step in range(1, STEPS + 1):
        r0 = load_file(str(dumps / f"rank0_step{step}.safetensors"))
        r1 = load_file(str(dumps / f"rank1_step{step}.safetensors"))
        assert set(r0) == set(reference[step]) and any(k.startswith("grad.discriminator") for k in r0)
        for key, want in reference[step].items():
            assert torch.equal(r0[key], r1[key]), f"ranks disagree on {key} at step {step}"
            torch.testing.assert_close(r0[key], want, rtol=1e-5, atol=1e-7, msg=f"{key} at step {step}")

    ddp_losses = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    single_losses = read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert len(ddp_losses) == len(single_losses) == STEPS
    for a, b in zip(ddp_losses, single_losses):
        for key in ("g_loss", "d_loss", "g/l1", "d/real"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tmp_path, write_yaml):
    # The losses are all-reduced before the finiteness check, so rank 0 stops too (no hang in the next
    # collective) and neither rank writes a checkpoint after the divergence.
    cfg = write_yaml(toy_config(tmp_path / "run", steps=10, batch_size=2, checkpoint_every=2))
    proc = _torchrun(cfg, "--poison-rank", 1, "--poison-at", 3)
    assert proc.returncode != 0
    assert proc.stderr.count("TrainingDivergedError: training diverged at step 4/10: the generator loss") == 2
    assert latest_checkpoint(tmp_path / "run").step == 2
