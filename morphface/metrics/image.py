"""Pixel-level reconstruction metrics: L1 (0-255 scale), PSNR and SSIM, batched in torch.

All functions take ``(B, C, H, W)`` images in [0, 1] (any float dtype, any device) and return one value
per image, ``(B,)`` float64, so that callers can average over frames however they like.

* :func:`l1_255`: mean absolute difference on the 0-255 scale (HeadGAN's "L1" column reports this).
* :func:`psnr`: ``10 log10(1 / MSE)`` for [0, 1] images; ``inf`` for identical images.
* :func:`ssim`: Wang et al. (2004) with an 11-tap Gaussian window of sigma 1.5, ``K1 = 0.01``,
  ``K2 = 0.03``, population (biased) variances, statistics on the *valid* part of the image (no
  padding), averaged over pixels and channels. This equals ``skimage.metrics.structural_similarity(a,
  b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)``
  (skimage filters with reflection and then crops the border the window overlaps, which leaves the
  valid part).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["l1_255", "psnr", "ssim", "gaussian_window"]


def _check_pair(pred: Tensor, target: Tensor) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must have shape (B, C, H, W) with values in [0, 1]; got {shape}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")


def l1_255(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error on the 0-255 scale, ``(B,)`` float64 (images in [0, 1])."""
    _check_pair(pred, target)
    return (pred.double() - target.double()).abs().mean(dim=(1, 2, 3)) * 255.0


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, ``(B,)`` float64; ``inf`` where the images are equal.

    Args:
        pred, target: ``(B, C, H, W)``.
        data_range: the value range of the images (1 for [0, 1]).
    """
    _check_pair(pred, target)
    mse = (pred.double() - target.double()).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> Tensor:
    """``(size,)`` normalised 1-D Gaussian taps centred on the middle tap."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be odd and positive; got {size}")
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Structural similarity (module docstring), ``(B,)`` float64 in ``[-1, 1]``.

    Args:
        pred, target: ``(B, C, H, W)`` with ``H, W >= window``.
        window: Gaussian window size (odd).
        sigma: its standard deviation in pixels.
        data_range: value range of the images.
        k1, k2: the stabilising constants' factors.
    """
    _check_pair(pred, target)
    B, C, H, W = pred.shape
    if H < window or W < window:
        raise ValueError(f"images must be at least {window}x{window} for SSIM; got {H}x{W}")
    g = gaussian_window(window, sigma, device=pred.device)
    # Separable filter, channels independent (grouped conv), 'valid' region only.
    kx = g.view(1, 1, 1, window).expand(C, 1, 1, window)
    ky = g.view(1, 1, window, 1).expand(C, 1, window, 1)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, kx, groups=C), ky, groups=C)

    a, b = pred.double(), target.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3))

