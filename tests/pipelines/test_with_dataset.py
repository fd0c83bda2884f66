"""The pipelines on batches of the real ``ReenactmentDataset`` (the data contract, end to end)."""

import pytest
import torch

from morphface.pipelines import HeadGAN, IFaceUV

data = pytest.importorskip("morphface.data", reason="morphface.data is not available")

S = 64


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = data.SynthConfig(identities=2, clips_per_identity=1, frames=6, size=S, texture_size=64,
                           supersample=1, audio=True)
    data.synthesize_dataset(root, cfg, progress=False)
    return root


@pytest.fixture(scope="module")
def batch(cache):
    ds = data.ReenactmentDataset.from_config({"root": str(cache), "image_size": S, "uv_size": 32,
                                              "split": "all", "samples_per_epoch": 2, "seed": 1})
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))


def test_the_dataset_batch_matches_the_pipelines_own_renders(batch):
    p = HeadGAN(image_size=S, width=1 / 16, perceptual="off")
    assert batch["driving_ncc"].shape == (2, 9, S, S) and batch["audio"].shape == (2, 108)
    mine = p.conditioning({k: v for k, v in batch.items() if not k.endswith("_ncc")})
    # the same per-triangle NCC renders from the same parameters: the two sides agree on the contract
    assert torch.allclose(mine["driving_ncc"], batch["driving_ncc"], atol=1e-5)
    assert torch.allclose(mine["source_ncc"], batch["source_ncc"], atol=1e-5)


@pytest.mark.parametrize("cls,extra", [(HeadGAN, {}), (IFaceUV, {"uv_size": 32})])
def test_a_training_step_on_dataset_batches(batch, cls, extra):
    torch.manual_seed(0)
    p = cls(image_size=S, width=1 / 16, perceptual="off", **extra)
    batch = dict(batch)
    if cls is IFaceUV:
        # the dataset unwraps the source only; the pipeline unwraps the driving frame itself
        assert "driving_uv" not in batch and batch["source_uv"].shape == (2, 4, 32, 32)
    logs = p.training_step(batch, p.make_optimizers())
    assert all(v == v and abs(v) < 1e4 for v in logs.values()), logs


def test_training_through_the_registry(cache, tmp_path):
    from morphface.pipelines import load_pipeline
    from morphface.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict({
        "output_dir": str(tmp_path / "run"),
        "pipeline": {"name": "headgan", "config": {"image_size": S, "width": 1 / 16, "perceptual": "off"}},
        "data": {"name": "reenactment", "config": {"root": str(cache), "image_size": S, "split": "all",
                                                   "samples_per_epoch": 4}},
        "steps": 2, "batch_size": 2, "num_workers": 0, "checkpoint_every": 2, "log_every": 1,
        "image_every": 1, "tensorboard": False, "progress": False, "seed": 0})
    Trainer(cfg).fit()
    pipe = load_pipeline(tmp_path / "run")
    assert isinstance(pipe, HeadGAN)
    assert any((tmp_path / "run" / "images").iterdir())  # the visuals were logged
