"""The IFaceUV pipeline: losses, gradients, optional discriminator, overfit, unwrap path."""

import importlib.util

import pytest
import torch

from morphface.pipelines import IFaceUV, IFaceUVPipelineConfig
from morphface.train.protocol import check_pipeline

TINY = dict(image_size=64, uv_size=32, width=1 / 16, perceptual="off")


def _has_unwrap() -> bool:
    if importlib.util.find_spec("morphface.uv") is None:
        return False
    import morphface.uv

    return hasattr(morphface.uv, "unwrap")


def test_defaults_are_the_papers():
    cfg = IFaceUVPipelineConfig()
    assert (cfg.lambda_warp, cfg.lambda_uvref, cfg.lambda_cons, cfg.lambda_edit) == (2.5, 4.0, 1.0, 4.0)
    assert (cfg.window_radius, cfg.uv_size, cfg.descriptor_dim, cfg.lambda_adv) == (13, 256, 256, 0.0)


@pytest.mark.parametrize("blend", [False, True])
def test_steps_give_finite_losses_and_gradients_on_every_parameter(batch, blend):
    torch.manual_seed(0)
    p = IFaceUV(**TINY, blend_input=blend)
    check_pipeline(p)
    assert set(p.nets) == {"generator"}
    res = p.generator_step(batch)
    assert {"warp", "edit", "uvref", "cons"} <= set(res.logs)
    assert bool(torch.isfinite(res.loss)) and all(bool(torch.isfinite(v)) for v in res.logs.values())
    res.loss.backward()
    gen = p.nets["generator"]
    params = list(gen.named_parameters())
    missing = [n for n, q in params if q.grad is None]
    bad = [n for n, q in params if q.grad is not None and not bool(torch.isfinite(q.grad).all())]
    assert not missing and not bad
    for sub in ("motion_encoder", "warping", "uv_refinement", "editing"):
        assert sum(float(q.grad.abs().sum()) for q in getattr(gen, sub).parameters()) > 0, sub
    assert p.discriminator_step(batch, {k: v.detach() for k, v in res.outputs.items()}) is None
    with torch.no_grad():
        vis = p.visuals(batch, res.outputs)
    assert {"source", "driving_ncc", "warped", "output", "target"} <= set(vis)
    assert all(v.shape == (2, 3, 64, 64) for v in vis.values())


def test_optional_discriminator(batch):
    torch.manual_seed(0)
    p = IFaceUV(**TINY, lambda_adv=1.0, lambda_cons=0.0)
    assert set(p.networks()) == {"generator", "discriminator"}
    logs = p.training_step(batch, p.make_optimizers())
    assert {"g/adv", "loss_d", "d/image"} <= set(logs) and "g/cons" not in logs


def test_a_few_steps_on_one_batch_reduce_the_l1_loss(batch, device):
    torch.manual_seed(0)
    p = IFaceUV(**TINY).to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    opts = p.make_optimizers(lr=1e-3)
    l1 = [p.training_step(batch, opts)["g/edit_l1"] for _ in range(8)]
    assert l1[-1] < 0.7 * l1[0], l1


def test_motion_normalisation(narrow_model):
    p = IFaceUV(**TINY)
    m = torch.zeros(1, p.layout.motion_dim)
    m[0, -3:] = torch.tensor([50.0, -20.0, -1300.0])
    out = p.normalise_motion(m)
    assert torch.allclose(out[0, -3:], torch.tensor([0.5, -0.2, -1.0]))
    assert torch.equal(out[0, :-3], m[0, :-3])


def test_uv_maps_of_the_wrong_size_are_rejected(batch):
    p = IFaceUV(**{**TINY, "uv_size": 64})
    with pytest.raises(ValueError, match=r"source_uv.*\(B, 4, 64, 64\)"):
        p.generator_step(batch)


@pytest.mark.skipif(not _has_unwrap(), reason="morphface.uv.unwrap is not available yet")
def test_uv_inputs_are_unwrapped_on_the_fly_when_missing(batch):
    torch.manual_seed(0)
    p = IFaceUV(**TINY)
    plain = {k: v for k, v in batch.items() if k not in ("source_uv", "driving_uv")}
    res = p.generator_step(plain)
    assert bool(torch.isfinite(res.loss)) and "cons" in res.logs
    tex, mask = p.unwrap(batch["source"], batch["source_params"])
    assert tex.shape == (2, 3, 32, 32) and mask.shape == (2, 1, 32, 32)
    assert 0 < float(mask.mean()) < 1
