"""The pipelines on a CUDA device: training step, inference and checkpoint round trip follow the device."""

import pytest
import torch

from morphface.pipelines import HeadGAN, IFaceUV, load_pipeline, save_pipeline

from .helpers import S, make_batch, render_faces, sequence_fit

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("cls,extra", [(HeadGAN, {}), (IFaceUV, {"uv_size": 32})])
def test_training_and_inference_on_cuda(narrow_model, tmp_path, cls, extra):
    torch.manual_seed(0)
    pipe = cls(image_size=S, width=1 / 16, perceptual="off", **extra).cuda()
    batch = {k: v.cuda() for k, v in make_batch(narrow_model, B=2, seed=0).items()}
    logs = pipe.training_step(batch, pipe.make_optimizers())
    assert all(v == v for v in logs.values())  # no NaN
    fit = sequence_fit(narrow_model, T=3, seed=1)
    frames = render_faces(narrow_model, fit)
    out = pipe.reenact(frames[0], driving_params=fit, source_fit=fit[0])
    assert out.device.type == "cuda" and out.shape == (3, 3, S, S)
    loaded = load_pipeline(save_pipeline(pipe, tmp_path / "p.safetensors"), map_location="cuda")
    again = loaded.reenact(frames[0], driving_params=fit, source_fit=fit[0])
    assert torch.allclose(again, out, atol=1e-4)
    # the same networks on the CPU give nearly the same frames (kernels, TF32 and edge pixels of the
    # renders may differ a little between devices)
    cpu = pipe.to("cpu").reenact(frames[0], driving_params=fit, source_fit=fit[0])
    assert float((cpu - out.cpu()).abs().mean()) < 0.02


def test_mmfa_both_stages_and_its_controls_on_cuda(narrow_model, tmp_path):
    from morphface.pipelines import MMFA

    from .test_mmfa import TINY

    torch.manual_seed(0)
    pipe = MMFA(**{**TINY, "vae_start_step": 1}).cuda()
    batch = {k: v.cuda() for k, v in make_batch(narrow_model, B=2, seed=0).items()}
    opts = pipe.make_optimizers()
    for step in range(2):  # one MMFA step, one VAE step
        pipe.set_step(step)
        logs = pipe.training_step(batch, opts)
        assert all(v == v for v in logs.values())
    src, drv = batch["source"][0], batch["driving"]
    out = pipe.reenact(src, drv, relative=True)
    assert out.device.type == "cuda" and out.shape == (2, 3, S, S)
    assert pipe.edit(src, rotation=[0.0, 10.0, 0.0], scale=1.1, expression=torch.randn(4)).device.type == "cuda"
    assert pipe.interpolation_strip(src, drv[0], drv[1], steps=3).shape == (3, S, 5 * S)
    loaded = load_pipeline(save_pipeline(pipe, tmp_path / "p.safetensors"), map_location="cuda")
    assert torch.allclose(loaded.reenact(src, drv, relative=True), out, atol=1e-4)
