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
