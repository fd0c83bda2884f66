"""The 3D conditioning images the pipelines feed their networks, rendered from parameter vectors.

When a batch carries parameters instead of pre-rendered images (inference, or a dataset that does not
cache renders), the pipelines render them here with :mod:`morphface.render`: HeadGAN's NCC images of
the driving frame and its ``k`` previous frames (taken from the motion window, whose rows ``w - k .. w``
are exactly those frames), face masks, and mouth crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..morphable import MorphableModel
from ..render import render_ncc
from .params import ParamLayout

__all__ = ["render_ncc_params", "render_driving_ncc", "crop_boxes", "reorder_newest_first"]


def render_ncc_params(model: MorphableModel, layout: ParamLayout, params: Tensor, image_size: int,
                      backend: str = "auto") -> tuple[Tensor, Tensor]:
    """NCC renders (HeadGAN's triangle mode) of parameter vectors.

    Args:
        model: the morphable model of the parameters.
        layout: its :class:`ParamLayout`.
        params: ``(B, D_p)`` parameter vectors.
        image_size: side of the square image in pixels.

    Returns:
        ``image (B, 3, S, S)`` in [0, 1] (0 on background) and ``mask (B, 1, S, S)`` in {0, 1}; no gradient
        (the triangle-mode NCC is piecewise constant).
    """
    params = layout.check(params)
    with torch.no_grad():
        fit = layout.unpack(params.detach().float(), (image_size, image_size))
        verts = fit.vertices(model)
        out = render_ncc(model, verts, fit.camera, mode="triangle", backend=backend)
    return out.image.to(params.dtype), out.mask.to(params.dtype)


def render_driving_ncc(model: MorphableModel, layout: ParamLayout, params: Tensor, motion: Tensor | None,
                       k: int, image_size: int, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """NCC renders of driving frames and their ``k`` previous frames.

    Args:
        params: ``(B, D_p)`` driving parameter vectors (identity and focal are taken from them).
        motion: ``(B, 2 w + 1, D_m)`` motion windows centred on the driving frames (rows ``w - k .. w``
            are the frames rendered), or ``None``: a static face (the ``k`` previous frames equal
            frame ``t``).
        k: number of previous frames.
        image_size: side of the square image.

    Returns:
        ``ncc (B, 3 (k + 1), S, S)`` with channel blocks ``[t - k, ..., t - 1, t]`` (the data contract's
        order) and ``mask (B, 1, S, S)`` of frame ``t``.
    """
    params = layout.check(params)
    B = params.shape[0]
    if motion is None:
        frames = params[:, None].expand(B, k + 1, -1)
    else:
        if motion.dim() != 3 or motion.shape[0] != B or motion.shape[2] != layout.motion_dim:
            raise ValueError(f"motion must have shape ({B}, 2w + 1, {layout.motion_dim}); got "
                             f"{tuple(motion.shape)}")
        w = (motion.shape[1] - 1) // 2
        if w < k:
            raise ValueError(f"a motion window of {motion.shape[1]} rows cannot give {k} previous frames")
        rows = motion[:, w - k:w + 1]  # (B, k + 1, D_m), oldest first
        frames = layout.with_motion(params[:, None].expand(B, k + 1, -1).reshape(-1, layout.dim),
                                    rows.reshape(-1, layout.motion_dim)).reshape(B, k + 1, -1)
    image, mask = render_ncc_params(model, layout, frames.reshape(B * (k + 1), -1), image_size, backend)
    S = image_size
    return image.reshape(B, 3 * (k + 1), S, S), mask.reshape(B, k + 1, 1, S, S)[:, -1]


def reorder_newest_first(stack: Tensor, channels: int = 3) -> Tensor:
    """``(B, channels * n, H, W)`` frame blocks oldest-first -> newest-first (HeadGAN's networks' order)."""
    B, C, H, W = stack.shape
    if C % channels:
        raise ValueError(f"stack must have a multiple of {channels} channels; got {C}")
    return stack.reshape(B, C // channels, channels, H, W).flip(1).reshape(B, C, H, W)


def crop_boxes(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Differentiable crops of axis-aligned boxes, resampled to ``size x size``.

    Args:
        images: ``(B, C, H, W)``.
        boxes: ``(B, 4)`` ``x0, y0, x1, y1`` in pixels (``morphface.camera`` convention: corners at integer
            coordinates); boxes may extend past the image (zeros are read there).
        size: output side.

    Returns:
        ``(B, C, size, size)`` bilinear samples at the output pixel centres.
    """
    if images.dim() != 4 or boxes.shape != (images.shape[0], 4):
        raise ValueError(f"need images (B, C, H, W) and boxes (B, 4); got {tuple(images.shape)} and "
                         f"{tuple(boxes.shape)}")
    B, _, H, W = images.shape
    t = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size  # (size,)
    b = boxes.to(images)
    xs = b[:, 0:1] + t[None] * (b[:, 2:3] - b[:, 0:1])  # (B, size) pixels
    ys = b[:, 1:2] + t[None] * (b[:, 3:4] - b[:, 1:2])
    # grid_sample with align_corners=False: normalised -1 / +1 are the image's outer edges.
    gx = (2 * xs / W - 1)[:, None, :].expand(B, size, size)
    gy = (2 * ys / H - 1)[:, :, None].expand(B, size, size)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
