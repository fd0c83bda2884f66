import pytest
import torch

from morphface.nets import (
    DenseFlowNet,
    DenseFlowNetConfig,
    HeadGANConfig,
    HeadGANGenerator,
    RenderingNet,
    RenderingNetConfig,
)
from morphface.nets.blocks import AdaINBlock

TINY = HeadGANConfig(width=1 / 16)
# at 512x512 the full-resolution SPADE convs dominate: narrower still
TINIER = HeadGANConfig(width=1 / 32, spade_hidden=128)


def _inputs(b, s, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(b, 3, s, s, generator=g, dtype=dtype) * 2 - 1
    face = torch.rand(b, 3, s, s, generator=g, dtype=dtype) * 2 - 1
    driving = torch.rand(b, 9, s, s, generator=g, dtype=dtype) * 2 - 1
    audio = torch.randn(b, 300, generator=g, dtype=dtype)
    return img, face, driving, audio


def test_default_sizes_follow_the_paper():
    cfg = DenseFlowNetConfig()
    assert cfg.channels == (32, 128, 512)
    f = DenseFlowNet(cfg)
    assert [layer.conv.out_channels for layer in f.encoder.layers] == [32, 128, 512]
    assert [layer.conv.stride for layer in f.encoder.layers] == [(1, 1), (2, 2), (2, 2)]
    assert f.encoder.layers[0].conv.in_channels == 6
    assert f.low[0].norm0.cond_channels == 9  # current + 2 previous NCC frames
    r = RenderingNet()
    assert r.encoder.layers[0].conv.in_channels == 9
    assert r.adain[0].norm0.style_dim == 300


def test_shared_config_reaches_both_networks():
    cfg = HeadGANConfig(width=0.5, use_audio=False, num_frames=2, spade_hidden=64, padding_mode="zeros")
    f, r = cfg.flow_config(), cfg.rendering_config()
    assert (f.width, f.num_frames, f.spade_hidden, f.padding_mode) == (0.5, 2, 64, "zeros")
    assert (r.width, r.num_frames, r.use_audio) == (0.5, 2, False)
    assert f.channels == r.channels == (16, 64, 256)


@pytest.mark.parametrize("size,cfg", [(256, TINY), (512, TINIER)])
def test_generator_forward_backward(size, cfg):
    torch.manual_seed(0)
    g = HeadGANGenerator(cfg)
    img, face, driving, audio = _inputs(1, size)
    out = g(img, face, driving, audio)
    assert out.image.shape == (1, 3, size, size)
    assert out.flow.shape == (1, 2, size, size)
    assert out.warped_image.shape == (1, 3, size, size)
    c0, c1, c2 = g.flow_net.config.channels
    assert [tuple(f.shape) for f in out.warped_features] == [
        (1, c0, size, size), (1, c1, size // 2, size // 2), (1, c2, size // 4, size // 4)]
    assert out.image.abs().max() <= 1 and torch.isfinite(out.flow).all()
    (out.image.mean() + out.warped_image.mean()).backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_untrained_flow_is_near_identity_and_warps_the_reference():
    torch.manual_seed(1)
    f = DenseFlowNet(TINY.flow_config())
    img, face, driving, _ = _inputs(2, 64)
    out = f(img, face, driving)
    assert out.flow.abs().max() < 0.5
    assert (out.warped_image - img).abs().mean() < 0.1


def test_flow_net_warps_with_its_flow():
    # the returned warped image is exactly the reference warped by the returned flow
    from morphface.nets.warp import warp

    torch.manual_seed(2)
    f = DenseFlowNet(TINY.flow_config())
    with torch.no_grad():
        f.flow_head.weight.mul_(300.0)  # make the flow large enough to matter
    img, face, driving, _ = _inputs(1, 64)
    out = f(img, face, driving)
    assert out.flow.abs().max() > 1.0
    torch.testing.assert_close(out.warped_image, warp(img, out.flow))


def test_no_audio_drops_adain_blocks():
    r = RenderingNet(RenderingNetConfig(width=1 / 16, use_audio=False))
    assert r.adain is None and not any(isinstance(m, AdaINBlock) for m in r.modules())
    g = HeadGANGenerator(HeadGANConfig(width=1 / 16, use_audio=False))
    img, face, driving, audio = _inputs(1, 32)
    assert g(img, face, driving).image.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="use_audio"):
        g(img, face, driving, audio)
    with pytest.raises(ValueError, match="audio"):
        HeadGANGenerator(TINY)(img, face, driving)


def test_audio_changes_the_output():
    torch.manual_seed(3)
    g = HeadGANGenerator(TINY).eval()
    img, face, driving, audio = _inputs(1, 32)
    with torch.no_grad():
        a = g(img, face, driving, audio).image
        b = g(img, face, driving, -audio).image
    assert (a - b).abs().max() > 1e-4


def test_bad_shapes_raise():
    g = HeadGANGenerator(TINY)
    img, face, driving, audio = _inputs(1, 32)
    with pytest.raises(ValueError, match=r"\(1, 9, 32, 32\)"):
        g(img, face, driving[:, :6], audio)
    with pytest.raises(ValueError, match="multiples of 4"):
        g(img[..., :30, :30], face, driving, audio)
    with pytest.raises(ValueError, match=r"\(1, 300\)"):
        g(img, face, driving, audio[:, :10])


def test_float64_and_bf16_autocast():
    torch.manual_seed(4)
    g = HeadGANGenerator(TINY).eval()  # eval: spectral norm must not run a power iteration per call
    img, face, driving, audio = _inputs(1, 32)
    out32 = g(img, face, driving, audio).image
    g64 = g.double()
    out64 = g64(*(t.double() for t in (img, face, driving, audio))).image
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, atol=1e-4, rtol=1e-4)
    g = g.float().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(img, face, driving, audio)
    assert torch.isfinite(out.image).all() and out.image.abs().max() <= 1
    assert (out.image.float() - out32).abs().mean() < 0.05
    out.image.float().mean().backward()
    assert all(p.grad is not None for p in g.parameters())
