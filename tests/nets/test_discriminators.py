import pytest
import torch

from morphface.nets import (
    DiscriminatorConfig,
    MouthDiscriminator,
    MouthDiscriminatorConfig,
    MultiScaleDiscriminator,
)


def _has_spectral_norm(module):
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs and all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in convs)


def test_default_sizes():
    d = MultiScaleDiscriminator()
    assert len(d.nets) == 2
    net = d.nets[0]
    assert [layer.conv.out_channels for layer in net.layers] == [64, 128, 256, 512]
    assert net.layers[0].conv.in_channels == 6  # image + 3D-face rendering
    assert _has_spectral_norm(d)
    m = MouthDiscriminator()
    assert m.net.nets[0].layers[0].conv.in_channels == 303  # crop + 300-D audio


@pytest.mark.parametrize("size", [256, 512])
def test_image_discriminator_forward_backward(size):
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(DiscriminatorConfig(width=1 / 16))
    img = (torch.rand(1, 3, size, size) * 2 - 1).requires_grad_(True)
    cond = torch.rand(1, 3, size, size) * 2 - 1
    out = d(img, cond)
    assert len(out.logits) == 2 and len(out.features) == 2
    # 3 stride-2 layers, then stride 1; 4x4 kernels with padding 2 add one pixel per stride-1 conv
    s0 = size
    for _ in range(3):
        s0 = s0 // 2 + 1
    assert out.logits[0].shape == (1, 1, s0 + 2, s0 + 2)
    assert out.logits[1].shape[-1] < out.logits[0].shape[-1]
    assert all(len(f) == 4 for f in out.features)
    sum(logit.mean() for logit in out.logits).backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert all(p.grad is not None for p in d.parameters())


def test_second_scale_sees_the_downsampled_input():
    torch.manual_seed(1)
    cfg = DiscriminatorConfig(width=1 / 16, cond_channels=0)
    d = MultiScaleDiscriminator(cfg).eval()
    img = torch.randn(1, 3, 64, 64)
    down = torch.nn.functional.avg_pool2d(img, 3, stride=2, padding=1, count_include_pad=False)
    with torch.no_grad():
        torch.testing.assert_close(d(img).logits[1], d.nets[1](down)[0])


def test_mouth_discriminator_replicates_audio():
    torch.manual_seed(2)
    m = MouthDiscriminator(MouthDiscriminatorConfig(width=1 / 16)).eval()
    mouth = torch.rand(2, 3, 64, 64) * 2 - 1
    audio = torch.randn(2, 300)
    with torch.no_grad():
        out = m(mouth, audio)
        ref = m.net(mouth, audio[:, :, None, None].repeat(1, 1, 64, 64))
        other = m(mouth, audio.flip(0))
    for a, b in zip(out.logits, ref.logits):
        torch.testing.assert_close(a, b)
    assert (out.logits[0] - other.logits[0]).abs().max() > 0
    no_audio = MouthDiscriminator(MouthDiscriminatorConfig(width=1 / 16, use_audio=False))
    assert no_audio(mouth).logits[0].shape == out.logits[0].shape


def test_bad_inputs_raise():
    d = MultiScaleDiscriminator(DiscriminatorConfig(width=1 / 16))
    with pytest.raises(ValueError, match="cond"):
        d(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\)"):
        d(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 16))
    m = MouthDiscriminator(MouthDiscriminatorConfig(width=1 / 16))
    with pytest.raises(ValueError, match=r"\(1, 300\)"):
        m(torch.zeros(1, 3, 32, 32), torch.zeros(1, 30))


def test_bf16_autocast():
    torch.manual_seed(3)
    d = MultiScaleDiscriminator(DiscriminatorConfig(width=1 / 16))
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(img, img)
    assert all(torch.isfinite(logit).all() for logit in out.logits)
    sum(logit.float().mean() for logit in out.logits).backward()
    assert all(p.grad is not None for p in d.parameters())
