"""Checkpoints: save_pipeline / load_pipeline, and checkpoints written by ``morphface.train``."""

import json

import pytest
import torch
from torch.utils.data import Dataset

from morphface.errors import CheckpointError
from morphface.pipelines import HeadGAN, IFaceUV, load_pipeline, save_pipeline

from .helpers import S, make_batch

TINY = dict(image_size=S, width=1 / 16, perceptual="off")


def _forward(pipe, batch):
    pipe.eval()
    with torch.no_grad():
        return pipe.generate(batch)["fake"]


def _perturb(pipe):
    # untrained weights are reproducible from the seed; make the saved ones unlike a fresh build
    with torch.no_grad():
        for p in pipe.nets.parameters():
            p.add_(0.01 * torch.randn_like(p))


@pytest.mark.parametrize("cls,extra", [(HeadGAN, {}), (IFaceUV, {"uv_size": 32})])
def test_save_then_load_restores_identical_outputs(tmp_path, batch, cls, extra):
    torch.manual_seed(0)
    pipe = cls(**TINY, **extra)
    _perturb(pipe)
    path = save_pipeline(pipe, tmp_path / "model.safetensors", step=7)
    torch.manual_seed(1)  # a different initialisation: everything must come from the file
    loaded = load_pipeline(path)
    assert type(loaded) is cls and loaded.config == pipe.config and not loaded.training
    assert torch.equal(_forward(loaded, batch), _forward(pipe, batch))


class _Batches(Dataset):
    """Two synthetic contract samples (a registered dataset for the trainer)."""

    def __init__(self, config):
        from morphface import load_default_model

        b = make_batch(load_default_model("narrow"), B=2, seed=1)
        self.items = [{k: v[i] for k, v in b.items()} for i in range(2)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_a_checkpoint_written_by_the_trainer_loads(tmp_path, batch):
    from morphface.train import TrainConfig, Trainer, load_checkpoint, register_dataset

    register_dataset("pipelines_test_batches", _Batches, overwrite=True)
    pipe_cfg = {**TINY, "mouth_discriminator": False}
    cfg = TrainConfig.from_dict({
        "output_dir": str(tmp_path / "run"), "pipeline": {"name": "headgan", "config": pipe_cfg},
        "data": {"name": "pipelines_test_batches", "config": {}}, "steps": 2, "batch_size": 2,
        "num_workers": 0,
        "checkpoint_every": 2, "log_every": 1, "image_every": 0, "tensorboard": False, "progress": False,
        "ema_decay": 0.5, "seed": 0})
    Trainer(cfg).fit()
    run = tmp_path / "run"
    raw = load_pipeline(run, ema=False)
    ema = load_pipeline(run)  # default: the EMA generator when the checkpoint has one
    assert isinstance(ema, HeadGAN) and ema.config.mouth_discriminator is False
    reference = load_checkpoint(run, ema=True)
    assert torch.equal(_forward(ema, batch), _forward(reference, batch))
    assert torch.equal(_forward(raw, batch), _forward(load_checkpoint(run, ema=False), batch))
    assert not torch.equal(_forward(raw, batch), _forward(ema, batch))
    record = sorted((run / "checkpoints").glob("step_*.json"))[-1]
    assert torch.equal(_forward(load_pipeline(record), batch), _forward(ema, batch))


def test_bad_checkpoints_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="found none"):
        load_pipeline(tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pipeline(junk)
    from safetensors.torch import save_file

    other = tmp_path / "toy.safetensors"
    save_file({"model.generator.w": torch.zeros(1)}, str(other), metadata={
        "format": "morphface.train.checkpoint/1", "pipeline": json.dumps({"name": "toy_gan", "config": {}})})
    with pytest.raises(CheckpointError, match="load_checkpoint"):
        load_pipeline(other)
    pipe = HeadGAN(**TINY)
    path = save_pipeline(pipe, tmp_path / "hg.safetensors")
    with pytest.raises(CheckpointError, match="no EMA"):
        load_pipeline(path, ema=True)
    # weights of another width do not fit the networks the stored config builds
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    spec = json.loads(meta["pipeline"])
    spec["config"]["width"] = 1 / 8
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={**meta, "pipeline": json.dumps(spec)})
    with pytest.raises(CheckpointError, match="does not match"):
        load_pipeline(tmp_path / "bad.safetensors")
