"""L1 (0-255), PSNR and SSIM against closed forms and scikit-image."""

import math

import numpy as np
import pytest
import torch

from morphface.metrics import l1_255, psnr, ssim


def test_l1_is_on_the_0_255_scale():
    a = torch.rand(2, 3, 8, 8) * 0.8
    assert torch.allclose(l1_255(a + 0.1, a), torch.full((2,), 25.5, dtype=torch.float64))
    assert l1_255(a, a).tolist() == [0.0, 0.0]


def test_psnr_of_a_known_noise_level():
    a = torch.full((1, 3, 16, 16), 0.5)
    sign = (torch.arange(16 * 16).reshape(16, 16) % 2 * 2 - 1).float()
    for sigma in (0.1, 0.01):
        noisy = a + sigma * sign  # |error| = sigma everywhere: MSE = sigma^2
        assert float(psnr(noisy, a)) == pytest.approx(-20 * math.log10(sigma), abs=1e-4)
    g = torch.Generator().manual_seed(0)
    b = torch.rand(4, 3, 32, 32, generator=g)
    noise = torch.randn(4, 3, 32, 32, generator=g) * 0.05
    mse = noise.double().square().mean(dim=(1, 2, 3))
    assert torch.allclose(psnr(b + noise, b), 10 * torch.log10(1 / mse))
    assert math.isinf(float(psnr(b, b)[0]))


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_skimage(seed):
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, 40, 48, generator=g)
    b = (a + 0.15 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ours = ssim(b, a)
    for i in range(2):
        ref = structural_similarity(b[i].numpy(), a[i].numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert float(ours[i]) == pytest.approx(float(ref), abs=1e-3)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))


def test_ssim_matches_skimage_on_a_photo():
    from skimage.data import astronaut
    from skimage.metrics import structural_similarity

    img = torch.from_numpy(np.ascontiguousarray(astronaut()[::4, ::4])).permute(2, 0, 1).float()[None] / 255
    blurred = torch.nn.functional.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
    ref = structural_similarity(blurred[0].numpy(), img[0].numpy(), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0, channel_axis=0)
    assert float(ssim(blurred, img)[0]) == pytest.approx(float(ref), abs=1e-3)


def test_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
