import pytest
import torch
import torch.nn.functional as F
from torch import nn

from morphface.nets.blocks import (
    SPADE,
    AdaIN,
    AdaINBlock,
    ConvBlock,
    PixelShuffleUp,
    SPADEBlock,
    scaled_channels,
)


def _instance_norm(x, eps=1e-5):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def test_spade_closed_form_with_constant_modulation():
    torch.manual_seed(0)
    spade = SPADE(4, 3, hidden_channels=8)
    with torch.no_grad():
        for conv, value in ((spade.gamma, 0.5), (spade.beta, -2.0)):
            conv.weight.zero_()
            conv.bias.fill_(value)
    x = torch.randn(2, 4, 8, 8) * 3 + 1
    out = spade(x, torch.randn(2, 3, 32, 32))  # conditioning at another resolution is resized
    torch.testing.assert_close(out, _instance_norm(x) * 1.5 - 2.0, atol=1e-5, rtol=1e-5)


def test_spade_is_spatially_adaptive():
    torch.manual_seed(1)
    spade = SPADE(2, 1, hidden_channels=4)
    x = torch.randn(1, 2, 8, 8)
    cond = torch.zeros(1, 1, 8, 8)
    cond2 = cond.clone()
    cond2[..., :4] = 5.0  # change the left half only
    diff = (spade(x, cond) - spade(x, cond2)).abs().sum(dim=(0, 1))
    assert diff[:, :3].min() > 0 and diff[:, 6:].max() == 0  # 3x3 convs reach 2 pixels across the edge


def test_adain_sets_channel_statistics():
    torch.manual_seed(2)
    adain = AdaIN(3, style_dim=5)
    x = torch.randn(2, 3, 16, 16) * 4 + 7
    s = torch.randn(2, 5)
    out = adain(x, s)
    gamma, beta = adain.fc(s).chunk(2, dim=1)
    torch.testing.assert_close(out.mean(dim=(2, 3)), beta, atol=1e-4, rtol=1e-4)
    std = out.var(dim=(2, 3), unbiased=False).sqrt()
    torch.testing.assert_close(std, (1 + gamma).abs(), atol=1e-3, rtol=1e-3)


def test_headgan_blocks_keep_channels_and_have_no_skip_path():
    torch.manual_seed(3)
    x = torch.randn(2, 6, 8, 8)
    sb = SPADEBlock(6, 3, hidden_channels=4, spectral=False)
    ab = AdaINBlock(6, 7, spectral=False)
    assert sb(x, torch.randn(2, 3, 16, 16)).shape == x.shape
    assert ab(x, torch.randn(2, 7)).shape == x.shape
    for blk in (sb, ab):
        with torch.no_grad():
            blk.conv1.weight.zero_()
            blk.conv1.bias.zero_()
    # with the last conv zeroed a residual block would return x; these return 0
    assert torch.equal(sb(x, torch.randn(2, 3, 8, 8)), torch.zeros_like(x))
    assert torch.equal(ab(x, torch.randn(2, 7)), torch.zeros_like(x))


def test_pixel_shuffle_up():
    x = torch.randn(2, 32, 5, 6)
    bare = PixelShuffleUp(32, 8)
    assert sum(p.numel() for p in bare.parameters()) == 0
    assert torch.equal(bare(x), F.pixel_shuffle(x, 2))
    learned = PixelShuffleUp(32, 5, scale=2)
    assert learned(x).shape == (2, 5, 10, 12)
    assert PixelShuffleUp(32, 8, learned=True)(x).shape == (2, 8, 10, 12)
    with pytest.raises(ValueError, match="PixelShuffle"):
        PixelShuffleUp(32, 5, learned=False)


def test_spectral_conv_block_normalises_the_weight():
    torch.manual_seed(4)
    blk = ConvBlock(4, 8, 3, stride=2, norm="none", activation=None, spectral=True)
    with torch.no_grad():
        blk.conv.parametrizations.weight.original.mul_(10.0)
    x = torch.randn(1, 4, 8, 8)
    for _ in range(30):  # power iterations run in training mode
        blk(x)
    sigma = torch.linalg.matrix_norm(blk.conv.weight.detach().reshape(8, -1), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-2
    assert blk(x).shape == (1, 8, 4, 4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        SPADE(4, 3)(torch.zeros(1, 5, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(1, 5\)"):
        AdaIN(4, 5)(torch.zeros(1, 4, 8, 8), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="width"):
        scaled_channels(32, 0)
    assert scaled_channels(32, 1 / 64) == 1
    assert isinstance(ConvBlock(3, 4, norm="layer").norm, nn.GroupNorm)


def test_blend_output_closed_form_and_validity():
    from morphface.nets.blocks import BLEND_INIT_LOGIT, blend_output, init_blend_head

    g = torch.Generator().manual_seed(0)
    head = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    base = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64) * 2 - 1
    m = torch.sigmoid(head[:, 3:])
    assert torch.allclose(blend_output(head, base), m * base + (1 - m) * torch.tanh(head[:, :3]))
    valid = (torch.rand(2, 1, 5, 6, generator=g) > 0.5).double()
    out = blend_output(head, base, valid)
    assert torch.allclose(out[valid.expand_as(out) == 0], torch.tanh(head[:, :3])[valid.expand_as(out) == 0])
    inputs = (head.clone().requires_grad_(), base.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda h, b: blend_output(h, b, valid), inputs)
    with pytest.raises(ValueError, match="blend_output needs"):
        blend_output(head[:, :3], base)
    conv = nn.Conv2d(8, 4, 3, padding=1)
    init_blend_head(conv)
    x = torch.randn(1, 8, 4, 4, generator=g)
    with torch.no_grad():
        mask = torch.sigmoid(conv(x)[:, 3])
    assert float(conv.bias[3].detach()) == BLEND_INIT_LOGIT and float(mask.min()) > 0.75


def test_blending_generators_start_close_to_their_input():
    from morphface.nets import EditingNet, EditingNetConfig, HeadGANConfig, HeadGANGenerator

    g = torch.Generator().manual_seed(1)
    gen = HeadGANGenerator(HeadGANConfig(width=1 / 16, use_audio=False, blend_warped=True))
    ref = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        out = gen(ref, torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 9, 32, 32, generator=g))
    assert out.image.shape == ref.shape
    assert float((out.image - out.warped_image).abs().mean()) < 0.25 * float(out.warped_image.abs().mean())
    ed = EditingNet(EditingNetConfig(width=1 / 16, blend_input=True))
    combined = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        y = ed(ref, ref, combined, torch.randn(1, 256, generator=g))
    assert float((y - combined).abs().mean()) < 0.25 * float(combined.abs().mean())
