"""kp3d on the real ReenactmentDataset: AUs and audio windows in the batch, training and exact resume."""

import pytest
import torch

from morphface.morphable.facs import expression_to_aus
from morphface.pipelines import KeypointGAN, ParamLayout

data = pytest.importorskip("morphface.data", reason="morphface.data is not available")

S = 64
TINY = dict(image_size=S, width=1 / 8, num_keypoints=6, blend_warped=True, depth=4, appearance_res_blocks=1,
            keypoint_blocks=2,
            keypoint_max_channels=64, keypoint_volume_channels=8, motion_blocks=2, motion_max_channels=64,
            generator_res_blocks=1, pose_stages=3, au_hidden=8, audio_hidden=8, disc_num_layers=3,
            perceptual="off", parser="off")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_kp3d")
    cfg = data.SynthConfig(identities=2, clips_per_identity=1, frames=6, size=S, texture_size=64, supersample=1,
                           audio=True)
    data.synthesize_dataset(root, cfg, progress=False)
    return root


def test_dataset_batches_carry_aus_and_audio_windows(cache):
    ds = data.ReenactmentDataset.from_config({"root": str(cache), "image_size": S, "split": "all",
                                              "samples_per_epoch": 2, "seed": 1})
    item = ds[0]
    layout = ParamLayout.of(ds.model)
    exp = layout.split(item["driving_params"][None])["exp"]
    assert torch.allclose(item["driving_aus"], expression_to_aus(exp, ds.model.exp_names)[0], atol=1e-5)
    assert item["source_aus"].shape == (17,) and float(item["driving_aus"].max()) <= 5
    assert item["driving_audio_window"].shape == (8, 108) and float(item["source_has_audio"]) == 1.0
    # the window's row 4 is the driving frame's own audio features (frames t-4 .. t+3)
    assert torch.equal(item["driving_audio_window"][4], item["audio"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    torch.manual_seed(0)
    p = KeypointGAN(**TINY)
    logs = p.training_step(batch, p.make_optimizers())
    assert all(v == v and abs(v) < 1e4 for v in logs.values()), logs


def _train_cfg(cache, out, steps):
    return {"output_dir": str(out),
            "pipeline": {"name": "kp3d", "config": TINY},
            "data": {"name": "reenactment", "config": {"root": str(cache), "image_size": S, "split": "all",
                                                       "samples_per_epoch": 4}},
            "steps": steps, "batch_size": 2, "num_workers": 0, "checkpoint_every": 2, "log_every": 1,
            "image_every": 0, "tensorboard": False, "progress": False, "seed": 0, "deterministic": True}


def test_training_resumes_exactly(cache, tmp_path):
    from morphface.pipelines import load_pipeline
    from morphface.train import TrainConfig, Trainer, read_metrics

    Trainer(TrainConfig.from_dict(_train_cfg(cache, tmp_path / "a", 4))).fit()
    Trainer(TrainConfig.from_dict(_train_cfg(cache, tmp_path / "b", 2))).fit()
    Trainer(TrainConfig.from_dict(_train_cfg(cache, tmp_path / "b", 4))).fit(resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("g_loss", "d_loss", "g/l1", "g/equivariance", "g/head_pose"):
            assert ra[key] == rb[key], (ra["step"], key)
    pa, pb = load_pipeline(tmp_path / "a"), load_pipeline(tmp_path / "b")
    assert isinstance(pa, KeypointGAN)
    sa, sb = pa.nets.state_dict(), pb.nets.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
