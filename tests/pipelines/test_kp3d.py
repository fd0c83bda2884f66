"""The kp3d pipeline (KeypointGAN): every loss, gradients, named input errors, inference/control API, resume."""

import dataclasses
import math

import pytest
import torch

from morphface.errors import InputShapeError, MissingInputError
from morphface.pipelines import KeypointGAN, KeypointGANConfig, ParamLayout
from morphface.pipelines.kp3d import draw_keypoints
from morphface.train.protocol import check_pipeline

S = 64
TINY = dict(image_size=S, width=1 / 8, num_keypoints=6, depth=4, appearance_res_blocks=1, keypoint_blocks=2,
            keypoint_max_channels=64, keypoint_volume_channels=8, motion_blocks=2, motion_max_channels=64,
            generator_res_blocks=1, pose_stages=3, au_hidden=8, audio_hidden=8, disc_num_layers=3,
            perceptual="off", parser="off")


def _with_audio(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = batch["source"].shape[0]
    return {**batch, "source_audio_window": torch.randn(B, 8, 108, generator=g),
            "driving_audio_window": torch.randn(B, 8, 108, generator=g)}


def _pipe(**kw):
    torch.manual_seed(0)
    return KeypointGAN(**{**TINY, **kw})


def test_defaults_are_face_vid2vid_and_the_paper():
    cfg = KeypointGANConfig()
    assert (cfg.num_keypoints, cfg.depth, cfg.feature_channels, cfg.image_size) == (20, 16, 32, 256)
    assert (cfg.lambda_perceptual, cfg.lambda_gan, cfg.lambda_fm, cfg.lambda_equivariance, cfg.lambda_keypoint,
            cfg.lambda_head_pose, cfg.lambda_deformation) == (10.0, 1.0, 10.0, 20.0, 10.0, 20.0, 5.0)
    assert cfg.use_audio and cfg.parser == "auto"


def test_steps_with_every_loss_give_finite_losses_and_gradients(batch):
    with pytest.warns(UserWarning, match="random"):
        p = _pipe(perceptual="random", parser="random")
    check_pipeline(p)
    b = _with_audio(batch)
    res = p.generator_step(b)
    want = {"l1", "perceptual", "gan", "fm", "equivariance", "keypoint_prior", "head_pose", "deformation_prior",
            "segmentation"}
    assert want == set(res.logs) and bool(torch.isfinite(res.loss))
    assert all(bool(torch.isfinite(v)) and float(v) >= -1e3 for v in res.logs.values())
    res.loss.backward()
    for name, net in p.nets.items():
        if name == "discriminator":
            continue
        missing = [n for n, q in net.named_parameters() if q.grad is None or not bool(torch.isfinite(q.grad).all())]
        assert not missing, (name, missing[:3])
    assert float(p.nets["audio_deformation"].mlp.w2.grad.abs().sum()) > 0
    assert all(q.grad is None for q in p.parser.parameters()) and all(
        q.grad is None for q in p.perceptual.parameters())
    p.zero_grad(set_to_none=True)
    d = p.discriminator_step(b, {k: v.detach() for k, v in res.outputs.items()})
    d.loss.backward()
    assert all(q.grad is not None for q in p.nets["discriminator"].parameters())
    assert all(q.grad is None for q in p.nets["generator"].parameters())
    vis = p.visuals(b, {k: v.detach() for k, v in res.outputs.items()})
    assert list(vis) == ["source_keypoints", "warped", "output", "target_keypoints"]
    for v in vis.values():
        assert v.shape == (2, 3, S, S) and float(v.min()) >= 0 and float(v.max()) <= 1


def test_a_few_steps_on_one_batch_reduce_the_l1_loss(batch):
    p = _pipe(use_audio=False)
    opts = p.make_optimizers(lr=2e-3)
    l1 = [p.training_step(batch, opts)["g/l1"] for _ in range(8)]
    assert l1[-1] < 0.8 * l1[0], l1


def test_head_pose_loss_targets_are_the_fit_angles(batch):
    p = _pipe(use_audio=False)
    out = p.generate(batch)
    layout = ParamLayout.of(p.model)
    target = layout.split(batch["driving_params"])["angles"]
    res = p.generator_step(batch)
    src = layout.split(batch["source_params"])["angles"]
    want = 0.5 * ((out["angles_driving"] - target).abs().mean() + (out["angles_source"] - src).abs().mean())
    assert float(res.logs["head_pose"]) == pytest.approx(float(want.detach()), rel=1e-5)


def test_bad_inputs_raise_named_errors(batch):
    p = _pipe()
    with pytest.raises(MissingInputError, match="driving_audio_window|source_audio_window"):
        p.generator_step(batch)
    b = _with_audio(batch)
    with pytest.raises(InputShapeError, match=r"driving_aus.*\(2, 17\)"):
        p.generator_step({**b, "driving_aus": torch.rand(2, 16)})
    with pytest.raises(InputShapeError, match=r"batch\['driving'\] must have shape \(2, 3, 64, 64\)"):
        p.generator_step({**b, "driving": b["driving"][:, :, :32, :32]})
    with pytest.raises(InputShapeError, match=r"\(B, 8, 108\)"):
        p.generator_step({**b, "driving_audio_window": torch.rand(2, 8, 100)})
    with pytest.raises(ValueError, match="multiple of"):
        KeypointGAN(**{**TINY, "image_size": 80})


def test_silent_clips_switch_the_audio_deformation_off(batch):
    p = _pipe().eval()
    b = _with_audio(batch)
    with torch.no_grad():
        a = p.generate({**b, "has_audio": torch.zeros(2)})
        c = p.generate({**b, "has_audio": torch.zeros(2), "driving_audio_window": torch.randn(2, 8, 108)})
    assert torch.equal(a["kp_driving"], c["kp_driving"]) and float(a["delta_audio_driving"].abs().max()) == 0


def test_config_round_trip_and_registry():
    from morphface.train import build_pipeline

    p = _pipe(lambda_lower=3.0)
    q = build_pipeline("kp3d", p.config_dict())
    assert isinstance(q, KeypointGAN) and q.config == p.config
    assert dataclasses.asdict(KeypointGANConfig(**p.config_dict())) == p.config_dict()
    for name in p.nets:
        assert {k: v.shape for k, v in p.nets[name].state_dict().items()} == \
               {k: v.shape for k, v in q.nets[name].state_dict().items()}


def test_inference_and_control_api(batch):
    p = _pipe()
    layout = ParamLayout.of(p.model)
    src = batch["source"][0]
    sfit = layout.unpack(batch["source_params"][:1], (S, S))
    dfit = layout.unpack(batch["driving_params"], (S, S))
    out = p.reenact(src, driving_params=dfit, source_fit=sfit, audio=torch.randn(2, 108))
    assert out.shape == (2, 3, S, S) and float(out.min()) >= 0 and float(out.max()) <= 1
    warped = p.reenact(src, driving_params=dfit, source_fit=sfit, output="warped")
    assert warped.shape == (2, 3, S, S)
    frames = p.reenact(src, batch["driving"], driving_params=dfit, source_fit=sfit)  # poses from the frames
    assert frames.shape == (2, 3, S, S) and not torch.equal(frames, out)
    base = p.edit(src, fit=sfit)
    smile = p.edit(src, fit=sfit, au_offsets={12: 2.0})
    turned = p.edit(src, fit=sfit, yaw=15.0, translation=[0.05, 0.0, 0.0], au_gain=2.0, audio_gain=0.0)
    assert base.shape == (3, S, S) and not torch.equal(base, smile) and not torch.equal(base, turned)
    front = p.frontalize(src, fit=sfit)
    assert front.shape == (3, S, S)
    kc = p.canonical_keypoints(src, fit=sfit)
    assert kc.shape == (6, 3) and bool((kc.abs() < 1).all())
    pic = p.keypoint_picture(src, fit=sfit)
    assert pic.shape == (3, S, S) and not torch.equal(pic, src)
    with pytest.raises(KeyError, match="AU3"):
        p.edit(src, fit=sfit, au_offsets={3: 1.0})


def test_edit_rotation_offset_is_composed_as_eq_3_5(batch):
    """R_d <- R_u R_d: an edit by yaw equals driving the source with its own pose turned by the same R_u."""
    p = _pipe(use_audio=False)
    layout = ParamLayout.of(p.model)
    sfit = layout.unpack(batch["source_params"][:1], (S, S))
    src = batch["source"][:1]
    got = p.edit(src[0], fit=sfit, yaw=20.0)
    from morphface.nets.keypoints import pose_to_rotation

    R_u = pose_to_rotation(torch.tensor([[0.0, math.radians(20.0), 0.0]]))
    with torch.no_grad():
        p.eval()
        R_s = p.nets["head_pose"](src * 2 - 1).rotation
        want = p.generate({"source": src, "driving": src, "source_params": layout.pack(sfit),
                           "driving_params": layout.pack(sfit), "driving_rotation": R_u @ R_s})["fake"]
    assert torch.allclose(got, ((want[0] + 1) / 2).clamp(0, 1), atol=1e-5)


def test_draw_keypoints_marks_the_keypoint_pixels():
    img = torch.zeros(1, 3, 32, 32)
    kp = torch.tensor([[[0.0, 0.0, 0.0], [-0.5, 0.5, 0.0]]])
    pic = draw_keypoints(img, kp)
    assert float(pic[0, :, 16, 16].sum()) > 0.5 and float(pic[0, :, 24, 8].sum()) > 0.5
    assert float(pic[0, :, 2, 30].sum()) == 0.0


def test_the_paper_sized_default_config_is_valid():
    # face-vid2vid at 256^2: the keypoint hourglass (5 levels) runs on the image resized by 1/4, so 256 is fine
    cfg = KeypointGANConfig()
    cfg.validate()
    assert cfg.image_size == 256 and cfg.keypoint_blocks == 5
