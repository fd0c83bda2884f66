"""The X2Face pipeline: curriculum (stage I / stage II with random-weight VGG state dicts), training,
resume, inference (embed / render_from_embedding / pose and audio driving) and its named errors."""

import math
import warnings

import pytest
import torch

from morphface.errors import ImageSizeError, WeightsNotFoundError
from morphface.nets import IdentityVGG
from morphface.pipelines import X2Face, X2FaceConfig, load_pipeline, save_pipeline

from .helpers import S, make_batch

data = pytest.importorskip("morphface.data", reason="morphface.data is not available")

SMALL = {"image_size": S, "width": 1 / 8, "depth": 6, "norm": "instance", "identity_loss": "off"}


def _pipe(**kw) -> X2Face:
    torch.manual_seed(0)
    return X2Face({**SMALL, **kw})


@pytest.fixture(scope="module")
def x2_batch(narrow_model):
    b = make_batch(narrow_model, B=4, seed=3)
    b["identity_index"] = torch.tensor([0, 0, 1, 2])  # rows 0 and 1: the same identity
    return b


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory):
    """Random weights in torchvision's VGG-11 layout (``features.N.*``), written by the test itself:
    torchvision is not installed here, so the layout comes from :class:`IdentityVGG`."""
    torch.manual_seed(5)
    state = {k: torch.randn_like(v) * 0.05 for k, v in IdentityVGG("vgg11").state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg11_random.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = data.SynthConfig(identities=2, clips_per_identity=1, frames=6, size=S, texture_size=64,
                           supersample=1, audio=True)
    data.synthesize_dataset(root, cfg, progress=False)
    return root


def test_defaults_are_the_papers():
    c = X2FaceConfig()
    assert (c.image_size, c.vector_dim, c.depth, c.norm, c.base_channels, c.max_channels) == (256, 128, 8, "batch",
                                                                                             64, 512)
    assert (c.lambda_identity_same, c.lambda_identity_other, c.perceptual) == (1.0, 0.1, "off")
    assert c.identity_layers_same == ("relu2_1", "relu3_1", "relu3_2", "relu4_1", "relu5_1")  # Conv2-5, Conv7
    assert c.identity_layers_other == ("relu4_2", "relu5_1")  # Conv6-7


def test_stage_one_steps_reduce_the_l1_loss(x2_batch):
    p = _pipe()
    opt = p.make_optimizers(lr=2e-3, betas=(0.9, 0.999))
    first = p.training_step(x2_batch, opt)
    for _ in range(14):
        last = p.training_step(x2_batch, opt)
    assert first["g/stage"] == 1 and "loss_d" not in first  # no discriminator
    assert last["g/l1"] < 0.8 * first["g/l1"], (first, last)


def test_stage_two_identity_losses_with_random_vgg_weights(x2_batch, vgg_path):
    p = _pipe(identity_loss="on", identity_weights=str(vgg_path), stage2_step=3)
    assert isinstance(p.identity, IdentityVGG) and p.identity.arch == "vgg11"
    p.set_step(2)
    assert p.stage == 1 and "id_same" not in p.generator_step(x2_batch).logs
    p.set_step(3)
    gen = p.nets["generator"]
    with torch.no_grad():  # non-zero flows: at the zero-initialised start g_dR is s_A itself (no content loss)
        for head in (gen.embedding.head[-1], gen.driving.head[-1]):
            head.weight.normal_(0, 0.01)
    res = p.generator_step(x2_batch)
    logs = res.logs
    assert p.stage == 2 and float(logs["stage"]) == 2
    # each same-identity layer is scaled to the photometric L1's size (5 layers), the other-identity ones to 1/10
    l1 = float(logs["l1"])
    assert float(res.loss.detach()) == pytest.approx(l1 + 5 * l1 + 2 * 0.1 * l1, rel=1e-4)
    assert float(logs["id_other"]) > 0
    assert float(logs["other_pairs"]) == 0.75  # roll(1) pairs row 1 with row 0: same identity, masked out
    res.loss.backward()
    grads = [q.grad for q in p.nets["generator"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert not any(q.grad is not None for q in p.identity.parameters())  # the identity network is frozen


def test_stage_two_modes_and_named_errors(tmp_path, x2_batch):
    with pytest.raises(WeightsNotFoundError, match="identity_weights"):
        _pipe(identity_loss="on")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        _pipe(identity_loss="on", identity_weights=str(tmp_path / "nope.pth"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building (e.g. to load for inference) says nothing ...
        p = _pipe(identity_loss="auto")
    assert p.identity is None and p.stage == 1
    with pytest.warns(UserWarning, match="stage II .* is SKIPPED"):  # ... the first training step says it once
        p.generator_step(x2_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.generator_step(x2_batch)
    with pytest.raises(ValueError, match="does not use it"):
        _pipe(identity_loss="off", identity_weights="x.pth")
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert _pipe(identity_loss="random").stage == 2
    bad = {**x2_batch, "driving": x2_batch["driving"][..., :32, :32]}
    with pytest.raises(ImageSizeError, match=r"batch\['driving'\] must have shape \(4, 3, 64, 64\)"):
        p.generator_step(bad)
    with pytest.raises(ImageSizeError, match="extra_sources"):
        p.generate({**x2_batch, "extra_sources": x2_batch["source"]})


def test_extra_sources_are_averaged_in_training(x2_batch):
    p = _pipe().eval()
    two = {**x2_batch, "extra_sources": x2_batch["driving"][:, None]}
    with torch.no_grad():
        out = p.generate(two)
        a, _ = p.nets["generator"].embed(x2_batch["source"] * 2 - 1)
        b, _ = p.nets["generator"].embed(x2_batch["driving"] * 2 - 1)
    assert out["embedding_flow"].shape[1] == 2
    assert torch.allclose(out["embedded"], (a + b) / 2, atol=1e-5)


def _train_cfg(root, out, steps):
    return {"output_dir": str(out), "pipeline": {"name": "x2face", "config": SMALL},
            "data": {"name": "reenactment", "config": {"root": str(root), "image_size": S, "split": "all",
                                                       "samples_per_epoch": 6, "renders": False,
                                                       "extra_sources": 1}},
            "steps": steps, "batch_size": 2, "num_workers": 0, "checkpoint_every": 2, "log_every": 1,
            "image_every": 0, "tensorboard": False, "progress": False, "seed": 0, "deterministic": True,
            "lr": 1e-3, "betas": [0.9, 0.999]}


def test_resume_repeats_the_uninterrupted_run(cache, tmp_path):
    from morphface.train import TrainConfig, Trainer, read_metrics

    def fit(cfg, resume=False):
        return Trainer(TrainConfig.from_dict(cfg)).fit(resume=resume)

    fit(_train_cfg(cache, tmp_path / "a", 4))
    fit(_train_cfg(cache, tmp_path / "b", 2))
    fit(_train_cfg(cache, tmp_path / "b", 4), resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["g_loss"] == rb["g_loss"] and ra["g/l1"] == rb["g/l1"], ra["step"]
    wa = load_pipeline(tmp_path / "a").nets.state_dict()
    wb = load_pipeline(tmp_path / "b").nets.state_dict()
    assert isinstance(load_pipeline(tmp_path / "a"), X2Face)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_untrained_pipeline_copies_the_source_and_edits_propagate(x2_batch):
    p = _pipe()  # zero-initialised flow heads: embedded face = source, output = embedded face
    src, clip = x2_batch["source"][0], x2_batch["driving"]
    assert torch.allclose(p.reenact(src, clip), src.expand(4, -1, -1, -1), atol=1e-5)
    emb = p.embed(src)
    assert torch.allclose(emb, src, atol=1e-5)
    edited = emb.clone()
    edited[:, 20:30, 20:30] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    out = p.render_from_embedding(edited, clip)
    assert torch.allclose(out, edited.expand(4, -1, -1, -1), atol=1e-5)
    with pytest.raises(ImageSizeError, match=r"\(3, 64, 64\)"):
        p.render_from_embedding(edited[:, :32], clip)
    with pytest.raises(ValueError, match="driven by images"):
        p.reenact(src, None, driving_params=x2_batch["driving_params"])
    # several source frames: the mean of their embedded faces
    assert torch.allclose(p.embed(clip[:2]), clip[:2].mean(0), atol=1e-5)


def test_trained_outputs_follow_the_driving_frame_relative_mode_keeps_the_source(x2_batch):
    p = _pipe()
    opt = p.make_optimizers(lr=2e-3, betas=(0.9, 0.999))
    for _ in range(6):
        p.training_step(x2_batch, opt)
    src, clip = x2_batch["source"][0], x2_batch["driving"]
    out = p.reenact(src, clip)
    rel = p.reenact(src, clip, relative=True)
    self_driven = p.reenact(src, src[None])
    assert out.shape == (4, 3, S, S)
    assert torch.allclose(rel[0], self_driven[0], atol=1e-5)  # frame 0 of a relative clip: the source's own vector
    assert torch.allclose(p.reconstruct(clip)[0], p.reenact(clip[0], clip[:1])[0], atol=1e-6)


def test_maps_pose_and_audio_driving_and_saving(cache, tmp_path):
    p = _pipe()
    with pytest.raises(ValueError, match="pose map is not fitted"):
        p.drive_with_pose(torch.rand(3, S, S), [[0.0, 10.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = p.fit_maps(cache, split="all")
    assert stats["frames"] == 12 and stats["audio_frames"] == 12
    maps = p.nets["maps"]
    assert bool(maps.pose_fitted) and bool(maps.audio_fitted)
    clip = data.ReenactmentDataset(str(cache), image_size=S, split="all", renders=False)._frames(0, [0, 1])
    src = clip[0]
    self_driven = p.reenact(src, src[None])
    nan = float("nan")
    keep = p.drive_with_pose(src, [[nan, nan, nan]])  # every angle kept: the source driven by itself
    assert torch.allclose(keep, self_driven, atol=1e-5)
    turned = p.drive_with_pose(src, [[0.0, -30.0, 0.0], [0.0, 30.0, 0.0]])
    assert turned.shape == (2, 3, S, S)
    pose = p.pose_of(src)
    assert pose.shape == (1, 3) and torch.isfinite(pose).all()
    mean = maps.audio_mean.clone()
    quiet = p.drive_with_audio(src, mean[None].expand(3, -1))  # audio = the training mean: no change
    assert torch.allclose(quiet, self_driven.expand(3, -1, -1, -1), atol=1e-5)
    wave = torch.sin(torch.linspace(0, 2000 * math.pi, 16000))  # 1 s at 16 kHz -> 25 frames at 25 fps
    assert p.drive_with_audio(src, wave, fps=25.0).shape == (25, 3, S, S)
    with pytest.raises(ValueError, match="108 values per frame"):
        p.drive_with_audio(src, torch.zeros(3, 10))
    # the maps are buffers of nets["maps"]: saved and restored with the networks
    loaded = load_pipeline(save_pipeline(p, tmp_path / "x2.safetensors"))
    assert torch.equal(loaded.nets["maps"].p2v_weight, maps.p2v_weight)
    assert torch.allclose(loaded.drive_with_pose(src, [[0.0, 30.0, 0.0]]), turned[1:], atol=1e-6)
