"""The HeadGAN pipeline: losses, gradients, the on-the-fly 3D inputs, a tiny overfit, config round trip."""

import dataclasses

import pytest
import torch

from morphface.errors import WeightsNotFoundError
from morphface.pipelines import HeadGAN, HeadGANPipelineConfig
from morphface.train.protocol import check_pipeline, discriminator_names

TINY = dict(image_size=64, width=1 / 16, perceptual="off")


def _finite_grads(module):
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    bad = [n for n, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    return params, missing, bad


def test_defaults_are_the_papers():
    cfg = HeadGANPipelineConfig()
    assert (cfg.lambda_l1, cfg.lambda_vgg, cfg.lambda_fm, cfg.mouth_discriminator) == (50.0, 10.0, 10.0, True)
    assert (cfg.image_size, cfg.num_previous, cfg.mouth_crop_size) == (256, 2, 64)


@pytest.mark.parametrize("blend", [False, True])
def test_steps_give_finite_losses_and_gradients_on_every_parameter(batch, blend):
    torch.manual_seed(0)
    p = HeadGAN(**TINY, blend_warped=blend)
    check_pipeline(p)
    assert discriminator_names(p, p.networks()) == {"discriminator", "mouth_discriminator"}
    res = p.generator_step(batch)
    assert res.loss.dim() == 0 and bool(torch.isfinite(res.loss))
    assert {"l1", "l1_warp", "adv", "fm", "adv_mouth", "fm_mouth"} <= set(res.logs)
    assert all(bool(torch.isfinite(v)) for v in res.logs.values())
    res.loss.backward()
    params, missing, bad = _finite_grads(p.nets["generator"])
    assert len(params) > 50 and not missing and not bad
    # the audio reaches R's AdaIN blocks
    assert float(p.nets["generator"].rendering_net.adain[0].norm0.fc.weight.grad.abs().sum()) > 0
    p.zero_grad(set_to_none=True)
    d = p.discriminator_step(batch, {k: v.detach() for k, v in res.outputs.items()})
    assert bool(torch.isfinite(d.loss)) and {"image", "mouth"} <= set(d.logs)
    d.loss.backward()
    for name in ("discriminator", "mouth_discriminator"):
        _, missing, bad = _finite_grads(p.nets[name])
        assert not missing and not bad, name
    assert all(p.grad is None for p in p.nets["generator"].parameters())
    vis = p.visuals(batch, {k: v.detach() for k, v in res.outputs.items()})
    assert list(vis) == ["source", "driving_ncc", "warped", "output", "target"]
    for v in vis.values():
        assert v.shape == (2, 3, 64, 64) and float(v.min()) >= 0 and float(v.max()) <= 1


def test_prerendered_and_on_the_fly_ncc_give_the_same_output(narrow_model):
    from .helpers import make_batch

    torch.manual_seed(0)
    p = HeadGAN(**TINY).eval()
    with_ncc = make_batch(narrow_model, B=1, seed=5, rendered=True)
    without = {k: v for k, v in with_ncc.items() if not k.endswith(("_ncc", "_mask"))}
    with torch.no_grad():
        a = p.generate(with_ncc)["fake"]
        b = p.generate(without)["fake"]
    assert torch.equal(a, b)


def test_a_few_steps_on_one_batch_reduce_the_l1_loss(batch, device):
    torch.manual_seed(0)
    p = HeadGAN(**TINY).to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    opts = p.make_optimizers(lr=1e-3)
    l1 = [p.training_step(batch, opts)["g/l1"] for _ in range(8)]
    assert all(map(lambda v: v == v, l1))
    assert l1[-1] < 0.7 * l1[0], l1


def test_without_audio_and_mouth_discriminator(batch):
    torch.manual_seed(0)
    p = HeadGAN(**TINY, use_audio=False, mouth_discriminator=False)
    assert set(p.nets) == {"generator", "discriminator"}
    res = p.generator_step({k: v for k, v in batch.items() if k not in ("audio", "has_audio")})
    assert "adv_mouth" not in res.logs and bool(torch.isfinite(res.loss))


def test_config_dict_rebuilds_the_same_networks():
    p = HeadGAN(**TINY, lambda_l1=20.0)
    cfg = p.config_dict()
    q = HeadGAN.from_config(cfg)
    assert q.config == p.config and q.config.lambda_l1 == 20.0
    for name in p.nets:
        assert {k: v.shape for k, v in p.nets[name].state_dict().items()} == \
               {k: v.shape for k, v in q.nets[name].state_dict().items()}
    with pytest.raises(ValueError, match="unknown HeadGAN config field"):
        HeadGAN.from_config({**cfg, "lamda_l1": 1.0})
    assert dataclasses.asdict(HeadGANPipelineConfig(**cfg)) == cfg


def test_perceptual_loss_modes(tmp_path, monkeypatch, batch):
    import morphface.pipelines.perceptual as perceptual

    monkeypatch.setattr(perceptual, "default_vgg19_path", lambda: tmp_path / "vgg19-dcbb9e9d.pth")
    with pytest.warns(UserWarning, match="perceptual .VGG. loss is OFF"):
        p = HeadGAN(image_size=64, width=1 / 16)  # default "auto", no weights here
    assert p.perceptual is None
    with pytest.raises(WeightsNotFoundError, match="vgg19"):
        HeadGAN(image_size=64, width=1 / 16, perceptual="on")
    with pytest.warns(UserWarning, match="randomly initialised"):
        r = HeadGAN(image_size=64, width=1 / 16, perceptual="random", mouth_discriminator=False)
    res = r.generator_step(batch)
    assert {"vgg", "vgg_warp"} <= set(res.logs) and bool(torch.isfinite(res.loss))
    assert "perceptual" not in r.networks()  # the frozen VGG is not a trained network


def test_bad_batches_name_the_expected_shapes(batch):
    p = HeadGAN(**TINY)
    with pytest.raises(ValueError, match=r"batch\['driving'\] must have shape \(2, 3, 64, 64\)"):
        p.generator_step({**batch, "driving": batch["driving"][:, :, :32]})
    with pytest.raises(ValueError, match="source_params"):
        p.generator_step({k: v for k, v in batch.items() if k != "source_params"})
    with pytest.raises(ValueError, match="multiple of 32"):
        HeadGAN(image_size=48, width=1 / 16, perceptual="off")
