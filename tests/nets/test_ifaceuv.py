import pytest
import torch

from morphface.nets import (
    AdaINUNet,
    AdaINUNetConfig,
    EditingNet,
    EditingNetConfig,
    MotionEncoder,
    MotionEncoderConfig,
    UVRefinementNet,
    UVRefinementNetConfig,
    WarpingNet,
    WarpingNetConfig,
)
from morphface.nets.warp import upsample_flow, warp

Z = 16  # latent size used by the tiny configs


def _img(b, s, c=3, seed=0):
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_motion_encoder_defaults_and_receptive_field():
    enc = MotionEncoder()
    assert enc.config.window == 27 and enc.config.motion_dim == 70
    assert enc.first.in_channels == 70 and enc(torch.randn(2, 27, 70)).shape == (2, 256)
    # every frame of the window influences z
    tiny = MotionEncoder(MotionEncoderConfig(width=1 / 16, descriptor_dim=Z))
    motion = torch.randn(1, 27, 70, requires_grad=True)
    tiny(motion).sum().backward()
    assert (motion.grad.abs().sum(dim=2) > 0).all()


def test_motion_encoder_config_and_shape_checks():
    enc = MotionEncoder(MotionEncoderConfig(expression_dim=53, window_radius=12, width=1 / 16, descriptor_dim=Z))
    assert enc(torch.randn(3, 25, 59)).shape == (3, Z)
    with pytest.raises(ValueError, match=r"\(B, 25, 59\)"):
        enc(torch.randn(3, 27, 59))
    with pytest.raises(ValueError, match="too short"):
        MotionEncoder(MotionEncoderConfig(window_radius=11))


@pytest.mark.parametrize("size", [256, 512])
def test_warping_net(size):
    torch.manual_seed(0)
    net = WarpingNet(WarpingNetConfig(width=1 / 16, descriptor_dim=Z))
    src = _img(1, size).requires_grad_(True)
    z = torch.randn(1, Z, requires_grad=True)
    out = net(src, z)
    assert out.flow.shape == (1, 2, size, size) and out.warped_image.shape == (1, 3, size, size)
    # the flow is predicted at 1/4 resolution and up-sampled: it equals the up-sampled low-res head output
    low = net.unet(src, z)
    assert low.shape == (1, 2, size // 4, size // 4)
    torch.testing.assert_close(out.flow, upsample_flow(low, size))
    torch.testing.assert_close(out.warped_image, warp(src, out.flow))
    assert out.flow.abs().max() < 0.5  # near-identity at initialisation
    out.warped_image.mean().backward()
    assert src.grad is not None and z.grad is not None
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("size,uv", [(256, 256), (512, 256)])
def test_uv_refinement_net(size, uv):
    torch.manual_seed(1)
    net = UVRefinementNet(UVRefinementNetConfig(width=1 / 16, descriptor_dim=Z))
    src = _img(1, size)
    uv_map, mask = _img(1, uv, seed=1), (torch.rand(1, 1, uv, uv) > 0.5).float()
    z = torch.randn(1, Z)
    out = net(src, uv_map, mask, z)
    assert out.shape == (1, 3, uv, uv) and out.abs().max() <= 1
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert net.unet.config.in_channels == 7
    with pytest.raises(ValueError, match=r"uv_mask must have shape \(1, 1, 256, 256\)"):
        net(src, uv_map, mask[..., :128, :128], z)


@pytest.mark.parametrize("size", [256, 512])
def test_editing_net(size):
    torch.manual_seed(2)
    net = EditingNet(EditingNetConfig(width=1 / 16, descriptor_dim=Z))
    imgs = [_img(1, size, seed=i) for i in range(3)]
    z = torch.randn(1, Z)
    out = net(*imgs, z)
    assert out.shape == (1, 3, size, size) and out.abs().max() <= 1
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="combined"):
        net(imgs[0], imgs[1], imgs[2][..., :128, :128], z)


def test_uv_and_editing_nets_share_one_implementation():
    uv, ed = UVRefinementNet(), EditingNet()
    assert type(uv.unet) is AdaINUNet and type(ed.unet) is AdaINUNet
    assert (uv.unet.config.in_channels, ed.unet.config.in_channels) == (7, 9)
    assert uv.unet.config.levels == (64, 128, 256, 256)


def test_adain_unet_depends_on_z_and_uses_skips():
    torch.manual_seed(3)
    net = AdaINUNet(AdaINUNetConfig(4, 2, style_dim=8, base_channels=8, max_channels=16, num_down=3,
                                    num_up=2, out_activation="none")).eval()
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        a = net(x, torch.randn(2, 8))
        b = net(x, torch.randn(2, 8))
    assert a.shape == (2, 2, 16, 16) and (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.randn(1, 4, 20, 20), torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"z must have shape \(1, 8\)"):
        net(torch.randn(1, 4, 32, 32), torch.randn(2, 8))


def test_bf16_autocast_and_float64():
    torch.manual_seed(4)
    enc = MotionEncoder(MotionEncoderConfig(width=1 / 16, descriptor_dim=Z))
    warper = WarpingNet(WarpingNetConfig(width=1 / 16, descriptor_dim=Z, num_down=3, flow_downsample=2))
    editor = EditingNet(EditingNetConfig(width=1 / 16, descriptor_dim=Z))
    src, motion = _img(1, 32), torch.randn(1, 27, 70)

    def run():
        z = enc(motion)
        w = warper(src, z)
        return editor(src, w.warped_image, w.warped_image, z)

    ref = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run()
    assert torch.isfinite(out).all() and (out.float() - ref).abs().mean() < 0.05
    out.float().mean().backward()
    for m in (enc, warper, editor):
        m.double()
    src, motion = src.double(), motion.double()
    out64 = run()
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), ref, atol=1e-4, rtol=1e-4)
