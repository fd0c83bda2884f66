"""Backward warping of images and feature maps by dense flow fields.

Flow convention (the only one used in morphface)
-----------------------------------------------
A flow is a ``(B, 2, H, W)`` tensor of displacements **in pixels of the image it is applied to**,
channel 0 = ``dx`` (to the right), channel 1 = ``dy`` (down), and it is a *backward* flow:

    ``output[b, :, y, x] = input[b, :, y + dy[b, y, x], x + dx[b, y, x]]``

i.e. each output pixel says where in the input its value comes from. Pixels follow
:mod:`morphface.camera`: origin at the top-left corner, pixel ``(row i, column j)`` has its centre at
``(j + 0.5, i + 0.5)``. Sampling is bilinear through ``grid_sample(align_corners=False)``, whose
normalised coordinate ``-1`` is the left/top *edge* of the image, so a continuous pixel position
``u`` maps to ``2 u / W - 1`` exactly as in :func:`morphface.camera.pixels_to_ndc`. A zero flow is
therefore the identity and an integer flow an exact shift.

A flow and the tensor it warps must have the same spatial size. A flow predicted at another
resolution is converted with :func:`resize_flow` / :func:`upsample_flow`, which resample the field
*and* rescale its values (a displacement of 1 pixel at 64x64 is 4 pixels at 256x256).

Sampling positions are computed in at least float32 even when the inputs are half/bfloat16 (a
bfloat16 pixel coordinate near 256 has a resolution of 2 pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["warp", "resize_flow", "upsample_flow", "identity_grid"]

_PADDING_MODES = ("border", "zeros", "reflection")


def _check_flow(flow: Tensor) -> None:
    if not isinstance(flow, Tensor) or flow.dim() != 4 or flow.shape[1] != 2:
        shape = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
        raise ValueError(f"flow must have shape (B, 2, H, W); got {shape}")


def _grid_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def identity_grid(height: int, width: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Pixel-centre coordinates of an image.

    Args:
        height, width: image size in pixels.

    Returns:
        ``(2, H, W)``: channel 0 is ``x = j + 0.5``, channel 1 is ``y = i + 0.5`` (pixels).
    """
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=0)


def warp(features: Tensor, flow: Tensor, padding_mode: str = "border") -> Tensor:
    """Backward-warp ``features`` by a pixel flow (see the module docstring for the convention).

    Args:
        features: ``(B, C, H, W)`` image or feature map, any floating dtype.
        flow: ``(B, 2, H, W)`` displacements ``(dx, dy)`` in pixels of ``features``; the batch
            size may also be 1 to warp a whole batch by one flow.
        padding_mode: what is read outside the image: ``"border"`` (replicate the edge, the
            default), ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, C, H, W)`` in the dtype of ``features``; differentiable w.r.t. both inputs.
    """
    if not isinstance(features, Tensor) or features.dim() != 4:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must have shape (B, C, H, W); got {shape}")
    _check_flow(flow)
    if flow.shape[-2:] != features.shape[-2:]:
        raise ValueError(
            f"flow size {tuple(flow.shape[-2:])} differs from the features' size "
            f"{tuple(features.shape[-2:])}; resample it first with resize_flow/upsample_flow"
        )
    if flow.shape[0] not in (1, features.shape[0]):
        raise ValueError(f"flow batch {flow.shape[0]} must be 1 or the features' batch {features.shape[0]}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}; got {padding_mode!r}")

    h, w = features.shape[-2:]
    gdtype = _grid_dtype(torch.promote_types(flow.dtype, features.dtype))
    # Autocast would otherwise run the coordinate arithmetic in low precision.
    with torch.autocast(device_type=flow.device.type, enabled=False):
        pos = identity_grid(h, w, device=flow.device, dtype=gdtype) + flow.to(gdtype)  # (B, 2, H, W)
        scale = torch.tensor([2.0 / w, 2.0 / h], device=flow.device, dtype=gdtype).view(1, 2, 1, 1)
        grid = (pos * scale - 1.0).permute(0, 2, 3, 1)
        if grid.shape[0] != features.shape[0]:
            grid = grid.expand(features.shape[0], -1, -1, -1)
        out = F.grid_sample(features.to(gdtype), grid, mode="bilinear", padding_mode=padding_mode,
                            align_corners=False)
    return out.to(features.dtype)


def resize_flow(flow: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Resample a pixel flow to another image size, rescaling the displacements.

    Up-sampling is bilinear (``align_corners=False``, matching the pixel-centre convention);
    shrinking uses area averaging so that the field is low-pass filtered rather than aliased.

    Args:
        flow: ``(B, 2, h, w)`` in pixels of an ``h x w`` image.
        size: target ``(H, W)`` (or one int for a square).

    Returns:
        ``(B, 2, H, W)`` in pixels of an ``H x W`` image: ``dx`` is multiplied by ``W / w`` and
        ``dy`` by ``H / h``.
    """
    _check_flow(flow)
    hh, ww = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if hh <= 0 or ww <= 0:
        raise ValueError(f"size must be positive; got {(hh, ww)}")
    h, w = flow.shape[-2:]
    if (hh, ww) == (h, w):
        return flow
    mode = "area" if hh <= h and ww <= w else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(flow, size=(hh, ww), mode=mode, **kwargs)
    scale = torch.tensor([ww / w, hh / h], device=flow.device, dtype=out.dtype).view(1, 2, 1, 1)
    return out * scale


def upsample_flow(flow: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Up-sample a pixel flow predicted at low resolution to ``size`` (see :func:`resize_flow`).

    Args:
        flow: ``(B, 2, h, w)`` in pixels of an ``h x w`` image.
        size: target ``(H, W)`` with ``H >= h`` and ``W >= w`` (or one int).

    Returns:
        ``(B, 2, H, W)`` bilinearly up-sampled, displacements scaled by ``W / w`` and ``H / h``.
    """
    _check_flow(flow)
    hh, ww = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if hh < flow.shape[-2] or ww < flow.shape[-1]:
        raise ValueError(f"upsample_flow needs a target size >= the flow's {tuple(flow.shape[-2:])}; "
                         f"got {(hh, ww)} (use resize_flow to shrink)")
    return resize_flow(flow, (hh, ww))
