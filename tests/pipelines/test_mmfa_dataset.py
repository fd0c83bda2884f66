"""MMFA on the real ReenactmentDataset: the landmark-net command, both training stages and exact resume."""

import json

import pytest
import torch

from morphface.pipelines import MMFA

data = pytest.importorskip("morphface.data", reason="morphface.data is not available")

S = 64
TINY = dict(image_size=S, width=1 / 8, num_keypoints=6, depth=4, appearance_res_blocks=1, keypoint_blocks=2,
            keypoint_max_channels=64, keypoint_volume_channels=8, motion_blocks=2, motion_max_channels=64,
            generator_res_blocks=1, pose_stages=3, scale_stages=2, expression_dim=16, expression_blocks=2,
            expression_hidden=16, vae_latent_dim=4, vae_hidden=16, disc_num_layers=3, blend_warped=True,
            perceptual="off", vae_start_step=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_mmfa")
    cfg = data.SynthConfig(identities=2, clips_per_identity=1, frames=6, size=S, texture_size=64, supersample=1,
                           audio=False)
    data.synthesize_dataset(root, cfg, progress=False)
    return root


@pytest.fixture(scope="module")
def landmark_file(cache, tmp_path_factory):
    from morphface.pipelines.landmark_net import main

    out = tmp_path_factory.mktemp("lm") / "lm.safetensors"
    assert main(["--data", str(cache), "--out", str(out), "--steps", "3", "--batch-size", "4", "--test-fraction",
                 "0.5", "--base-channels", "4", "--num-blocks", "2", "--max-channels", "8"]) == 0
    report = json.loads((out.parent / "lm.safetensors.json").read_text())
    assert report["train_frames"] == 6 and report["test_frames"] == 6 and report["nme"] > 0
    return out


def _train_cfg(cache, out, steps, landmark_file):
    return {"output_dir": str(out),
            "pipeline": {"name": "mmfa", "config": {**TINY, "landmark": "on", "landmark_weights": str(landmark_file)}},
            "data": {"name": "reenactment", "config": {"root": str(cache), "image_size": S, "split": "all",
                                                       "samples_per_epoch": 4, "k": 0, "motion_window": 0}},
            "steps": steps, "batch_size": 2, "num_workers": 0, "checkpoint_every": 2, "log_every": 1,
            "image_every": 0, "tensorboard": False, "progress": False, "seed": 0, "deterministic": True}


def test_both_stages_train_and_resume_exactly(cache, landmark_file, tmp_path):
    """Steps 1-2 train MMFA with every loss (landmark net from the command above), steps 3-4 the VAE; a run stopped
    at the stage boundary and resumed repeats the uninterrupted run."""
    from morphface.pipelines import load_pipeline
    from morphface.train import TrainConfig, Trainer, read_metrics

    Trainer(TrainConfig.from_dict(_train_cfg(cache, tmp_path / "a", 4, landmark_file))).fit()
    Trainer(TrainConfig.from_dict(_train_cfg(cache, tmp_path / "b", 2, landmark_file))).fit()
    Trainer(TrainConfig.from_dict(_train_cfg(cache, tmp_path / "b", 4, landmark_file))).fit(resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("g/l1", "g/equivariance", "g/head_pose", "g/self_supervised", "g/identity", "g/landmark",
                "g/keypoint_prior", "g/deformation_prior", "g/gan", "g/fm", "d/image"):
        assert key in a[0] and key not in a[2], key
    for key in ("g/vae_reconstruction", "g/vae_kl", "g/vae_adversarial", "d/feature"):
        assert key in a[2] and key not in a[0], key
    for ra, rb in zip(a, b):
        for key in ("g_loss", "d_loss"):
            assert ra[key] == rb[key], (ra["step"], key)
    pa, pb = load_pipeline(tmp_path / "a"), load_pipeline(tmp_path / "b")
    assert isinstance(pa, MMFA)
    sa, sb = pa.nets.state_dict(), pb.nets.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the VAE stage left the MMFA networks as the MMFA stage left them
    from safetensors.torch import load_file

    ck = {k[6:]: v for k, v in load_file(str(tmp_path / "b" / "checkpoints" / "step_00000002.safetensors")).items()
          if k.startswith("model.")}
    for k, v in sa.items():
        if not k.startswith(("vae.", "feature_discriminator.")):
            assert torch.equal(v, ck[k]), k
