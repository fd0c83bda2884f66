import numpy as np
import pytest
import torch

from morphface.nets.warp import identity_grid, resize_flow, upsample_flow, warp


def _bilinear_reference(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Independent loop implementation of the documented convention with border padding:
    out(y, x) = img(y + dy, x + dx) with integer pixel indices at pixel centres."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            x = min(max(j + flow[0, i, j], 0.0), w - 1.0)
            y = min(max(i + flow[1, i, j], 0.0), h - 1.0)
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            ax, ay = x - x0, y - y0
            out[:, i, j] = ((1 - ay) * ((1 - ax) * img[:, y0, x0] + ax * img[:, y0, x1])
                            + ay * ((1 - ax) * img[:, y1, x0] + ax * img[:, y1, x1]))
    return out


def test_identity_flow_is_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, 32)
    assert torch.equal(warp(x, torch.zeros(2, 2, 16, 32)), x)
    # non power-of-two sizes: exact up to the float rounding of the grid normalisation
    y = torch.randn(1, 3, 13, 21)
    torch.testing.assert_close(warp(y, torch.zeros(1, 2, 13, 21)), y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dx,dy", [(3, 0), (0, -2), (-4, 5), (1, 1)])
def test_integer_translation_is_exact_in_the_interior(dx, dy):
    torch.manual_seed(1)
    h, w = 16, 32
    x = torch.randn(2, 3, h, w)
    flow = torch.empty(2, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    out = warp(x, flow)
    ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    src_ys, src_xs = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    assert torch.equal(out[..., ys, xs], x[..., src_ys, src_xs])
    # border padding replicates the edge outside
    if dx > 0:
        assert torch.equal(out[..., ys, w - 1], x[..., src_ys, w - 1])


def test_matches_independent_bilinear_reference():
    torch.manual_seed(2)
    img = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    flow = torch.randn(1, 2, 7, 9, dtype=torch.float64) * 2.5  # some samples fall outside: border
    expected = _bilinear_reference(img[0].numpy(), flow[0].numpy())
    np.testing.assert_allclose(warp(img, flow)[0].numpy(), expected, atol=1e-12)


def test_pixel_centre_convention_on_a_linear_ramp():
    # image value = x coordinate of the pixel centre: warping by dx adds dx (bilinear is exact on ramps)
    h, w = 8, 12
    ramp = identity_grid(h, w)[0:1][None]  # (1, 1, H, W), values j + 0.5
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 0.3
    out = warp(ramp, flow)
    torch.testing.assert_close(out[..., :, : w - 1], ramp[..., :, : w - 1] + 0.3)


def test_zeros_padding_and_broadcast_flow():
    x = torch.ones(3, 1, 4, 4)
    flow = torch.zeros(1, 2, 4, 4)
    flow[:, 0] = 10.0
    out = warp(x, flow, padding_mode="zeros")
    assert out.shape == (3, 1, 4, 4) and torch.equal(out, torch.zeros_like(out))
    assert torch.equal(warp(x, flow, padding_mode="border"), x)


def test_gradcheck_features_and_flow():
    torch.manual_seed(3)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    # keep sample positions away from integer pixel centres, where bilinear is not differentiable
    base = torch.randint(-1, 2, (1, 2, 5, 6)).double()
    flow = (base + 0.2 + 0.6 * torch.rand(1, 2, 5, 6, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, f: warp(a, f), (x, flow))
    assert torch.autograd.gradcheck(lambda a, f: warp(a, f, padding_mode="zeros"), (x, flow))


def test_upsample_flow_scales_values():
    flow = torch.zeros(2, 2, 8, 16)
    flow[:, 0], flow[:, 1] = 1.5, -0.75
    up = upsample_flow(flow, (32, 32))
    assert up.shape == (2, 2, 32, 32)
    torch.testing.assert_close(up[:, 0], torch.full((2, 32, 32), 3.0))  # x scaled by 32 / 16
    torch.testing.assert_close(up[:, 1], torch.full((2, 32, 32), -3.0))  # y scaled by 32 / 8
    with pytest.raises(ValueError, match="upsample_flow"):
        upsample_flow(flow, 4)


def test_upsampled_flow_warps_consistently_across_resolutions():
    # a 1-pixel shift at 16x16 is a 4-pixel shift at 64x64
    torch.manual_seed(4)
    hi = torch.randn(1, 3, 64, 64)
    low_flow = torch.ones(1, 2, 16, 16)
    out = warp(hi, upsample_flow(low_flow, 64))
    assert torch.equal(out[..., :60, :60], hi[..., 4:, 4:])


def test_resize_flow_down_averages_and_scales():
    flow = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    down = resize_flow(flow, (2, 2))
    expected = torch.nn.functional.avg_pool2d(flow, 2) * 0.5
    torch.testing.assert_close(down, expected)


def test_low_precision_inputs_keep_pixel_accuracy():
    torch.manual_seed(5)
    x = torch.randn(1, 3, 256, 256).bfloat16()
    flow = torch.full((1, 2, 256, 256), 3.0, dtype=torch.bfloat16)
    out = warp(x, flow)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[..., :250, :250], x[..., 3:253, 3:253])


def test_bad_shapes_raise():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        warp(x, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="resize_flow"):
        warp(x, torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        warp(torch.zeros(2, 3, 8, 8), torch.zeros(3, 2, 8, 8))
    with pytest.raises(ValueError, match="padding_mode"):
        warp(x, torch.zeros(1, 2, 8, 8), padding_mode="wrap")
