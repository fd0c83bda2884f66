"""Alpha compositing of a render over a background."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["composite"]


def composite(foreground: Tensor, mask: Tensor, background: Tensor | float) -> Tensor:
    """``foreground * mask + background * (1 - mask)``.

    Args:
        foreground: ``(B, C, H, W)``, e.g. a render (0 on background).
        mask: ``(B|1, 1, H, W)`` float in ``[0, 1]`` (soft masks blend) or bool.
        background: ``(B|1, C, H, W)`` image, a ``(C,)`` colour, or a scalar.

    Returns:
        ``(B, C, H, W)``; differentiable w.r.t. all three.
    """
    if not isinstance(foreground, Tensor) or foreground.dim() != 4:
        shape = tuple(foreground.shape) if isinstance(foreground, Tensor) else type(foreground).__name__
        raise ValueError(f"foreground must have shape (B, C, H, W); got {shape}")
    B, C, H, W = foreground.shape
    if (not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, B)
            or mask.shape[2:] != (H, W)):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape ({B}|1, 1, {H}, {W}); got {shape}")
    bg = torch.as_tensor(background, dtype=foreground.dtype, device=foreground.device)
    if bg.dim() == 1:
        if bg.shape[0] not in (1, C):
            raise ValueError(f"a background colour must have {C} entries; got {tuple(bg.shape)}")
        bg = bg.view(1, -1, 1, 1)
    elif bg.dim() == 4:
        if bg.shape[0] not in (1, B) or bg.shape[1] not in (1, C) or bg.shape[2:] != (H, W):
            raise ValueError(f"background must have shape ({B}|1, {C}|1, {H}, {W}); got {tuple(bg.shape)}")
    elif bg.dim() != 0:
        raise ValueError(f"background must be a scalar, a (C,) colour or (B, C, H, W); got {tuple(bg.shape)}")
    m = mask.to(foreground.dtype)
    return foreground * m + bg * (1.0 - m)
