"""In-process tests of the Trainer on the toy GAN (CPU, tiny sizes)."""

import math

import pytest
import torch

from morphface.errors import CheckpointError, TrainingDivergedError
from morphface.train import (
    StepResult,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    load_checkpoint,
    read_metrics,
    register_pipeline,
)
from morphface.train.toy import ToyGANPipeline, ToyShapesDataset

from .helpers import toy_config


def _fit(cfg: dict, resume=False, hooks=()):
    return Trainer(TrainConfig.from_dict(cfg), hooks=hooks).fit(resume=resume)


def test_toy_gan_loss_falls_and_checkpoint_reloads(tmp_path):
    run = tmp_path / "run"
    # lr 1e-3 (not the papers' 2e-4): the 8-channel toy then learns its shading within a few dozen steps.
    cfg = toy_config(run, steps=40, lr=1e-3, checkpoint_every=20, ema_decay=0.9, grad_clip=5.0,
                     image_every=20, tensorboard=True,
                     data={"name": "toy_shapes", "config": {"size": 32, "image_size": 16}})
    summary = _fit(cfg)
    rec = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rec] == list(range(1, 41))
    assert {"g_loss", "d_loss", "g/l1", "g/adv", "d/real", "d/fake", "grad_norm/generator"} <= set(rec[0])
    first = sum(r["g/l1"] for r in rec[:5]) / 5
    last = sum(r["g/l1"] for r in rec[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert sum(r["g_loss"] for r in rec[-5:]) < 0.8 * sum(r["g_loss"] for r in rec[:5])
    assert summary.step == 40 and summary.checkpoint == run / "checkpoints" / "step_00000040.safetensors"
    assert sorted((run / "images").iterdir())[-1].name == "step_00000040.png"
    assert any((run / "tb").iterdir()) and (run / "config.yaml").is_file()

    batch = torch.utils.data.default_collate([ToyShapesDataset(8, 16, seed=1)[i] for i in range(4)])
    loaded = load_checkpoint(summary.checkpoint)
    assert isinstance(loaded, ToyGANPipeline) and not loaded.training
    trainer_net = ToyGANPipeline(8, 8)
    # The checkpoint holds the trained weights: its L1 on held-out items is far below an untrained net's.
    l1 = (loaded.generate(batch["cond"]) - batch["image"]).abs().mean()
    l1_untrained = (trainer_net.generate(batch["cond"]) - batch["image"]).abs().mean()
    assert l1 < 0.6 * l1_untrained
    ema = load_checkpoint(run, ema=True)
    assert not torch.equal(ema.nets["generator"].body[0].weight, loaded.nets["generator"].body[0].weight)


def test_toy_training_runs_on_the_device(tmp_path, device):
    """``--device``: the trainer puts the pipeline, the batches and the checkpoint round trip on it (bf16
    autocast on CUDA)."""
    amp = "bf16" if device.type == "cuda" else "off"
    summary = _fit(toy_config(tmp_path / "run", steps=6, checkpoint_every=6, device=str(device), amp=amp))
    rec = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert summary.step == 6 and all(math.isfinite(r["g_loss"]) and math.isfinite(r["d_loss"]) for r in rec)
    pipe = load_checkpoint(tmp_path / "run", map_location=str(device))
    assert next(pipe.parameters()).device.type == device.type


@pytest.mark.filterwarnings("ignore:ignoring checkpoint")
def test_resume_in_process_repeats_the_run(tmp_path):
    cfg = toy_config(tmp_path / "a", steps=12, checkpoint_every=7, deterministic=True, ema_decay=0.8,
                     grad_clip=1.0, pipeline={"name": "toy_gan", "config": {"channels": 8, "disc_channels": 8,
                                                              "instance_noise": 0.1}})
    _fit(cfg)
    _fit({**cfg, "output_dir": str(tmp_path / "b"), "steps": 9})  # checkpoints at 7 and 9
    (tmp_path / "b" / "checkpoints" / "step_00000009.state.safetensors").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="ignoring"):  # the step-9 checkpoint is torn: resume from 7
        _fit({**cfg, "output_dir": str(tmp_path / "b")}, resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 13))
    for ra, rb in zip(a, b):
        for key in ("g_loss", "d_loss", "g/l1", "d/real", "grad_norm/generator"):
            assert ra[key] == rb[key], (ra["step"], key)
    wa = load_checkpoint(tmp_path / "a", ema=True).nets.state_dict()
    wb = load_checkpoint(tmp_path / "b", ema=True).nets.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_with_loader_workers(tmp_path):
    # Toy items depend only on their index, so a mid-epoch resume with worker processes is exact too.
    cfg = toy_config(tmp_path / "a", steps=9, checkpoint_every=5, num_workers=2, deterministic=True,
                     pipeline={"name": "toy_gan", "config": {"channels": 4, "disc_channels": 4,
                                                              "instance_noise": 0.1}})
    _fit(cfg)
    _fit({**cfg, "output_dir": str(tmp_path / "b"), "steps": 5})
    _fit({**cfg, "output_dir": str(tmp_path / "b")}, resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [(r["g_loss"], r["d_loss"]) for r in a] == [(r["g_loss"], r["d_loss"]) for r in b]


def test_nan_loss_stops_with_last_checkpoint_intact(tmp_path):
    run = tmp_path / "run"

    def poison(trainer, step, record):
        if step == 7:  # after the step-5 checkpoint, before the step-10 one
            with torch.no_grad():
                trainer.networks["generator"].body[0].weight.fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"step 8/20: the generator loss is nan.*step_00000005"):
        _fit(toy_config(run), hooks=[poison])
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, 8))
    assert latest_checkpoint(run).step == 5
    pipe = load_checkpoint(run)
    assert all(torch.isfinite(p).all() for p in pipe.parameters())


class _BadDiscriminatorPipeline(ToyGANPipeline):
    """The toy GAN whose discriminator loss becomes infinite at step index 3 (uses ``set_step``)."""

    def set_step(self, step):
        self.current = step

    def discriminator_step(self, batch, outputs):
        res = super().discriminator_step(batch, outputs)
        if self.current == 3:
            return StepResult(res.loss * math.inf, res.logs, res.outputs)
        return res


def test_discriminator_divergence_is_named(tmp_path):
    register_pipeline("test_bad_d", lambda cfg: _BadDiscriminatorPipeline(**cfg), overwrite=True)
    cfg = toy_config(tmp_path, pipeline={"name": "test_bad_d", "config": {"channels": 4, "disc_channels": 4}})
    with pytest.raises(TrainingDivergedError, match=r"step 4/20: the discriminator loss is inf.*no checkpo"):
        _fit(cfg)


def test_existing_run_needs_resume(tmp_path):
    cfg = toy_config(tmp_path, steps=5)
    _fit({**cfg, "steps": 3}, resume=True)  # --resume with no checkpoint: a new run
    with pytest.raises(FileExistsError, match="pass resume=True"):
        _fit(cfg)
    summary = _fit(cfg, resume=True)
    assert summary.step == 5 and [c.name for c in sorted((tmp_path / "checkpoints").glob("*.json"))] == [
        "step_00000003.json", "step_00000005.json"]
    with pytest.raises(CheckpointError, match="does not match"), pytest.warns(UserWarning, match="differs"):
        _fit({**toy_config(tmp_path, steps=6), "pipeline": {"name": "toy_gan", "config": {"channels": 5}}},
             resume=True)


def test_amp_on_cpu_falls_back_with_warning(tmp_path):
    with pytest.warns(UserWarning, match="amp='bf16' needs CUDA"):
        summary = _fit(toy_config(tmp_path, steps=2, amp="bf16"))
    assert summary.step == 2


class _NoNetsPipeline:
    """The protocol without an nn.Module or a ``nets`` dict: fine single-process, no compile."""

    def __init__(self):
        self.g = torch.nn.Linear(2, 2)

    def networks(self):
        return {"generator": self.g}

    def generator_step(self, batch):
        loss = (self.g(batch) - 1).square().mean()
        return loss, {"mse": loss.detach()}, {}

    def discriminator_step(self, batch, outputs):
        return None

    def visuals(self, batch, outputs):
        return {"x": batch[:, :1, None, None].expand(-1, 3, 2, 2).clamp(0, 1)}

    def config_dict(self):
        return {}


def test_plain_object_pipeline_and_tuple_results(tmp_path):
    from morphface.train import register_dataset

    register_pipeline("test_plain", lambda cfg: _NoNetsPipeline(), overwrite=True)
    register_dataset("test_vectors", lambda cfg: torch.rand(16, 2), overwrite=True)
    cfg = toy_config(tmp_path, steps=30, image_every=10, pipeline={"name": "test_plain"},
                     data={"name": "test_vectors"}, lr=0.05)
    summary = _fit(cfg)
    rec = read_metrics(tmp_path / "metrics.jsonl")
    assert "d_loss" not in rec[0] and rec[-1]["g/mse"] < 0.2 * rec[0]["g/mse"]
    assert summary.metrics["step"] == 30 and (tmp_path / "images" / "step_00000030.png").is_file()


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_amp_trains_and_resumes(tmp_path, amp):
    cfg = toy_config(tmp_path / "b", steps=8, checkpoint_every=4, amp=amp, device="cuda", deterministic=True,
                     ema_decay=0.9)
    _fit({**cfg, "output_dir": str(tmp_path / "a")})
    _fit({**cfg, "steps": 4})
    _fit(cfg, resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 9))
    assert all(math.isfinite(r["g_loss"]) and math.isfinite(r["d_loss"]) for r in b)
    if amp == "fp16":
        assert "amp_scale" in b[-1] and b[-1]["amp_scale"] == a[-1]["amp_scale"]
    for ra, rb in zip(a, b):
        assert ra["g_loss"] == pytest.approx(rb["g_loss"], abs=1e-6)
    pipe = load_checkpoint(tmp_path / "b", map_location="cuda")
    assert next(pipe.parameters()).is_cuda
