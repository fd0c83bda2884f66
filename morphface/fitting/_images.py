"""Checks of the images given to the fitting functions (``morphface.fitting`` internal)."""

from __future__ import annotations

import torch
from torch import Tensor

#: How far outside [0, 1] values may lie (resampling overshoot) before an image is rejected.
RANGE_MARGIN = 0.05


def check_image_values(images: Tensor, name: str = "image") -> None:
    """Raise ``ValueError`` unless ``images`` is a float tensor of finite values in [0, 1].

    Catches the two common mistakes before they turn into a misleading "no face found": images in
    [0, 255] (or [-1, 1]) and images with NaN/inf. Values up to :data:`RANGE_MARGIN` outside
    [0, 1] are accepted (a resampled image may overshoot a little).
    """
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor with RGB in [0, 1]; got dtype {images.dtype} (convert "
                         f"8-bit data with .float() / 255)")
    if images.numel() == 0:
        return
    v = images.detach()
    finite = torch.isfinite(v)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        nan = int(torch.isnan(v).sum())
        raise ValueError(f"{name} must hold finite RGB values in [0, 1]; found {nan} NaN and {bad - nan} inf "
                         f"of {v.numel()} values in a tensor of shape {tuple(v.shape)}")
    lo, hi = float(v.amin()), float(v.amax())
    if lo < -RANGE_MARGIN or hi > 1 + RANGE_MARGIN:
        hint = " (8-bit values? divide by 255)" if hi > 2 else (" ([-1, 1]? use (x + 1) / 2)" if lo < -0.5 else "")
        raise ValueError(f"{name} must be RGB in [0, 1]; found values in [{lo:.4g}, {hi:.4g}]{hint}")
