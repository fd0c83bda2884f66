"""The MMFA pipeline: every loss, the VAE stage, named input errors, the control API, registry, exact resume."""

import dataclasses

import pytest
import torch

from morphface.errors import ImageSizeError, InputShapeError, MissingInputError
from morphface.pipelines import MMFA, MMFAConfig, ParamLayout
from morphface.train.protocol import check_pipeline

S = 64
TINY = dict(image_size=S, width=1 / 8, num_keypoints=6, depth=4, appearance_res_blocks=1, keypoint_blocks=2,
            keypoint_max_channels=64, keypoint_volume_channels=8, motion_blocks=2, motion_max_channels=64,
            generator_res_blocks=1, pose_stages=3, scale_stages=2, expression_dim=16, expression_blocks=2,
            expression_hidden=16, vae_latent_dim=4, vae_hidden=16, disc_num_layers=3, perceptual="off",
            landmark="off")
#: networks that get no gradient in the MMFA stage: the core pose net's translation head (MMFA's t has its own
#: decoder) and the VAE stage's networks
UNUSED = {"head_pose": ("translation.",), "vae": ("",), "feature_discriminator": ("",)}


def _pipe(**kw):
    torch.manual_seed(0)
    return MMFA(**{**TINY, **kw})


def test_defaults_and_config_round_trip():
    cfg = MMFAConfig()
    assert (cfg.num_keypoints, cfg.image_size, cfg.multiscale, cfg.vae_start_step) == (20, 256, True, None)
    cfg.validate()
    from morphface.train import build_pipeline

    p = _pipe(lambda_identity=3.0, vae_start_step=5)
    q = build_pipeline("mmfa", p.config_dict())
    assert isinstance(q, MMFA) and q.config == p.config
    assert dataclasses.asdict(MMFAConfig(**p.config_dict())) == p.config_dict()
    with pytest.raises(ValueError, match="multiple of"):
        MMFA(**{**TINY, "image_size": 80})


def test_generator_step_with_every_loss_and_its_gradients(batch):
    with pytest.warns(UserWarning, match="random"):
        p = _pipe(perceptual="random", landmark="random")
    check_pipeline(p)
    res = p.generator_step(batch)
    want = {"l1", "perceptual", "gan", "fm", "equivariance", "keypoint_prior", "head_pose", "deformation_prior",
            "self_supervised", "identity", "landmark"}
    assert want == set(res.logs) and bool(torch.isfinite(res.loss))
    assert all(bool(torch.isfinite(v)) for v in res.logs.values())
    res.loss.backward()
    for name, net in p.nets.items():
        if name == "discriminator":
            continue
        skip = UNUSED.get(name, ())
        missing = [n for n, q in net.named_parameters() if not any(n.startswith(s) for s in skip)
                   and (q.grad is None or not bool(torch.isfinite(q.grad).all()))]
        assert not missing, (name, missing[:3])
    assert all(q.grad is None for q in p.nets["vae"].parameters())
    assert all(q.grad is None for q in p.landmark_net.parameters())
    p.zero_grad(set_to_none=True)
    d = p.discriminator_step(batch, {k: v.detach() for k, v in res.outputs.items()})
    d.loss.backward()
    assert all(q.grad is not None for q in p.nets["discriminator"].parameters())
    assert all(q.grad is None for q in p.nets["generator"].parameters())
    vis = p.visuals(batch, {k: v.detach() for k, v in res.outputs.items()})
    assert list(vis) == ["source_keypoints", "warped", "output", "target_keypoints"]
    for v in vis.values():
        assert v.shape == (2, 3, S, S) and float(v.min()) >= 0 and float(v.max()) <= 1


def test_generate_composes_the_keypoints_by_eq_5(batch):
    from morphface.nets.keypoints import compose_keypoints

    p = _pipe().eval()
    with torch.no_grad():
        out = p.generate(batch)
    assert torch.allclose(out["kp_canonical"].mean(1), torch.zeros(2, 3), atol=1e-6)  # assumption 1
    assert bool((out["translation_driving"][:, 2] == 0).all())  # orthographic: t in the image plane
    want = compose_keypoints(out["kp_canonical"], out["scale_driving"], out["rotation_driving"],
                             out["translation_driving"], out["delta_driving"])
    assert torch.allclose(out["kp_driving"], want, atol=1e-6)
    assert [p.shape[-1] for p in out["pyramid"]] == [S // 4, S // 2, S]


def test_a_few_steps_on_one_batch_reduce_the_l1_loss(batch):
    p = _pipe(blend_warped=True)
    opts = p.make_optimizers(lr=2e-3)
    l1 = [p.training_step(batch, opts)["g/l1"] for _ in range(6)]
    assert l1[-1] < 0.9 * l1[0], l1


def test_the_vae_stage_trains_only_the_vae_and_its_discriminator(batch):
    p = _pipe(vae_start_step=1)
    opts = p.make_optimizers(lr=1e-3)
    p.set_step(0)
    assert p.stage == "mmfa"
    p.set_step(1)
    assert p.stage == "vae"
    before = {k: v.clone() for k, v in p.nets.state_dict().items()}
    logs = p.training_step(batch, opts)
    assert {"g/vae_reconstruction", "g/vae_kl", "g/vae_adversarial", "d/feature"} <= set(logs)
    after = p.nets.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"vae", "feature_discriminator"}, changed
    res = p.generator_step(batch)
    vis = p.visuals(batch, {k: v.detach() for k, v in res.outputs.items()})
    assert list(vis) == ["source", "vae_reconstruction", "vae_sample", "target"]
    assert all(v.shape == (2, 3, S, S) for v in vis.values())
    assert p.nets["expression_decoder"].training  # visuals restore the training mode
    p2 = _pipe(vae_start_step=0, lambda_vae_adversarial=0.0)
    p2.set_step(0)
    res = p2.generator_step(batch)
    assert "vae_adversarial" not in res.logs and p2.discriminator_step(batch, res.outputs) is None


def test_bad_inputs_raise_named_errors(batch):
    p = _pipe()
    with pytest.raises(MissingInputError, match="driving"):
        p.generator_step({k: v for k, v in batch.items() if k != "driving"})
    with pytest.raises(MissingInputError, match="source_params"):
        p.generator_step({k: v for k, v in batch.items() if k != "source_params"})
    with pytest.raises(ImageSizeError, match=r"batch\['driving'\] must have shape \(2, 3, 64, 64\)"):
        p.generator_step({**batch, "driving": batch["driving"][:, :, :32, :32]})
    with pytest.raises(InputShapeError, match="driving_scale"):
        p.generate({**batch, "driving_scale": torch.ones(3)})
    src = batch["source"][0]
    with pytest.raises(MissingInputError, match="driven by images"):
        p.reenact(src, driving_params=torch.zeros(1, ParamLayout.of(p.model).dim))
    with pytest.raises(InputShapeError, match="rotation"):
        p.edit(src, rotation=[1.0, 2.0])
    with pytest.raises(InputShapeError, match="VAE latent"):
        p.edit(src, expression=torch.zeros(7))
    with pytest.raises(InputShapeError, match="scale"):
        p.edit(src, scale=-1.0)
    with pytest.raises(MissingInputError, match="landmark_weights"):
        MMFA(**{**TINY, "landmark": "on"})
    with pytest.raises(MissingInputError, match="rotation_from_fit"):
        _pipe(rotation_from_fit=True).reenact(src, batch["driving"])


def test_inference_and_control_api(batch):
    p = _pipe()
    src, drv = batch["source"][0], batch["driving"]
    out = p.reenact(src, drv)
    assert out.shape == (2, 3, S, S) and float(out.min()) >= 0 and float(out.max()) <= 1
    rel = p.reenact(src, drv, relative=True)
    assert rel.shape == (2, 3, S, S) and not torch.equal(rel, out)
    assert p.reenact(src, drv, output="warped").shape == (2, 3, S, S)
    assert p.reconstruct(drv).shape == (2, 3, S, S)
    base = p.edit(src)
    for kw in (dict(rotation=[0.0, 20.0, 0.0]), dict(translation=[0.1, 0.0]), dict(scale=1.2),
               dict(expression=drv[1]), dict(expression=torch.randn(4))):
        e = p.edit(src, **kw)
        assert e.shape == (3, S, S) and not torch.equal(e, base), kw
    front = p.edit(src, rotation=[0.0, 0.0, 0.0], relative=False)
    assert front.shape == (3, S, S)
    # an edit by nothing is the source driven by itself
    assert torch.allclose(base, p.reenact(src, src[None])[0], atol=1e-6)
    kc = p.canonical_keypoints(src)
    assert kc.shape == (6, 3) and torch.allclose(kc.mean(0), torch.zeros(3), atol=1e-6)
    assert p.canonical_face(src).shape == (3, S, S)
    assert p.expression_feature(src).shape == (16,) and p.expression_latent(src).shape == (4,)
    assert p.sample_expressions(3, seed=0).shape == (3, 16)
    assert torch.equal(p.sample_expressions(2, seed=1), p.sample_expressions(2, seed=1))
    assert p.sample_expressions(2, src, seed=0).shape == (2, 3, S, S)
    strip = p.interpolation_strip(src, drv[0], drv[1], steps=5)
    assert strip.shape == (3, S, 7 * S)


def test_interpolation_endpoints_are_the_two_expressions_through_the_vae(batch):
    """The first and last interpolated frames are the source edited with mu(a) and mu(b) decoded by the VAE."""
    p = _pipe()
    src, a, b = batch["source"][0], batch["driving"][0], batch["driving"][1]
    frames = p.interpolate_expression(src, a, b, steps=4)
    assert frames.shape == (4, 3, S, S)
    ea = p.edit(src, expression_feature=p.decode_expression(p.expression_latent(a)))
    eb = p.edit(src, expression_feature=p.decode_expression(p.expression_latent(b)))
    assert torch.allclose(frames[0], ea, atol=1e-5) and torch.allclose(frames[-1], eb, atol=1e-5)


def test_the_small_config_builds_and_has_both_stages():
    from pathlib import Path

    from morphface.train import build_pipeline
    from morphface.train.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "mmfa_synth_small.yaml")
    assert cfg.pipeline.name == "mmfa" and cfg.data.config["test_fraction"] == 0.25
    assert 0 < cfg.pipeline.config["vae_start_step"] < cfg.steps
    p = build_pipeline("mmfa", {**cfg.pipeline.config, "perceptual": "off", "landmark": "off"})
    assert isinstance(p, MMFA) and p.config.image_size == 64 and p.config.multiscale
