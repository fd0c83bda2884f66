"""Attribute interpolation over rasterised fragments, and bilinear texture lookup."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .rasterizer import check_faces, check_ids, use_fused_cpu
from .types import Fragments

__all__ = ["interpolate", "sample_texture"]


def interpolate(attrs: Tensor, faces: Tensor, fragments: Fragments) -> Tensor:
    """Interpolate per-vertex (or per-corner) attributes at every pixel.

    Args:
        attrs: ``(B|1, N, C)`` attributes (or ``(N, C)``, shared by the batch).
        faces: ``(F, 3)`` int64 rows of ``attrs`` for each triangle corner: the mesh's faces for
            per-vertex attributes, or another index table with the same rows as the mesh's faces
            (e.g. ``uv_faces`` for a UV table with seams).
        fragments: from :func:`morphface.render.rasterize` with these triangles.

    Returns:
        ``(B, H, W, C)``: ``sum_k bary_k * attrs[faces[pix_to_face, k]]``, 0 on background.
        Differentiable w.r.t. ``attrs`` and, through ``fragments.bary``, the vertex positions.
    """
    if not isinstance(attrs, Tensor) or attrs.dim() not in (2, 3):
        shape = tuple(attrs.shape) if isinstance(attrs, Tensor) else type(attrs).__name__
        raise ValueError(f"attrs must have shape (B, N, C) or (N, C); got {shape}")
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0)
    pix_to_face, bary = fragments.pix_to_face, fragments.bary
    B, H, W = pix_to_face.shape
    if attrs.shape[0] not in (1, B):
        raise ValueError(f"attrs batch must be 1 or {B} (the fragments' batch); got {tuple(attrs.shape)}")
    N = attrs.shape[1]
    faces = check_faces(faces, N).to(pix_to_face.device)
    check_ids(pix_to_face, faces.shape[0])
    dtype = torch.promote_types(attrs.dtype, bary.dtype)

    if use_fused_cpu(attrs, bary):
        from ._fused_cpu import Interpolate

        return Interpolate.apply(attrs.to(dtype).contiguous(), faces, pix_to_face, bary.to(dtype))
    return interpolate_torch(attrs, faces, pix_to_face, bary)


def interpolate_torch(attrs: Tensor, faces: Tensor, pix_to_face: Tensor, bary: Tensor) -> Tensor:
    """The PyTorch path of :func:`interpolate` on checked inputs (``attrs`` ``(B|1, N, C)``, int64 ``faces``):
    any device, any order of derivatives. The fused CPU kernel's double backward runs through it."""
    B, H, W = pix_to_face.shape
    N, C = attrs.shape[1], attrs.shape[2]
    dtype = torch.promote_types(attrs.dtype, bary.dtype)
    idx = (pix_to_face >= 0).reshape(-1).nonzero().squeeze(1)  # (P,) covered pixels
    P = idx.numel()
    corner = faces.index_select(0, pix_to_face.reshape(-1).index_select(0, idx))  # (P, 3)
    if attrs.shape[0] != 1:
        corner = corner + (idx.div(H * W, rounding_mode="floor") * N)[:, None]
    vals = attrs.reshape(-1, C).index_select(0, corner.reshape(-1)).view(P, 3, C).to(dtype)
    w = bary.reshape(B * H * W, 3).index_select(0, idx).to(dtype)
    out_c = torch.bmm(w.unsqueeze(1), vals).squeeze(1)  # (P, C)
    out = out_c.new_zeros(B * H * W, C).index_copy(0, idx, out_c)
    return out.view(B, H, W, C)


def sample_texture(texture: Tensor, uv: Tensor, mask: Tensor | None = None, padding_mode: str = "border") -> Tensor:
    """Bilinear texture lookup at per-pixel UV coordinates (``grid_sample``).

    UV convention (the model's, OBJ's): ``u`` to the right, ``v`` **up**, both in ``[0, 1]`` over
    the whole texture: ``(0, 0)`` is the bottom-left *corner* of the texture image and texel
    ``(row r, column c)`` has its centre at ``u = (c + 0.5) / Wt``, ``v = 1 - (r + 0.5) / Ht``
    (image row ``= (1 - v) * Ht``).

    Args:
        texture: ``(B|1, C, Ht, Wt)``.
        uv: ``(B, H, W, 2)`` texture coordinates.
        mask: optional ``(B, H, W)`` / ``(B, 1, H, W)`` bool or float; the result is multiplied by it
            (background pixels become 0).
        padding_mode: ``grid_sample``'s handling of UVs outside ``[0, 1]``; ``"border"`` repeats
            the edge texels (no dark seams at the layout's border).

    Returns:
        ``(B, C, H, W)``; differentiable w.r.t. ``texture`` and ``uv``.
    """
    if not isinstance(texture, Tensor) or texture.dim() != 4:
        shape = tuple(texture.shape) if isinstance(texture, Tensor) else type(texture).__name__
        raise ValueError(f"texture must have shape (B, C, Ht, Wt); got {shape}")
    if not isinstance(uv, Tensor) or uv.dim() != 4 or uv.shape[-1] != 2:
        shape = tuple(uv.shape) if isinstance(uv, Tensor) else type(uv).__name__
        raise ValueError(f"uv must have shape (B, H, W, 2); got {shape}")
    B = uv.shape[0]
    if texture.shape[0] not in (1, B):
        raise ValueError(f"texture batch must be 1 or {B} (the uv batch); got {tuple(texture.shape)}")
    dtype = torch.promote_types(texture.dtype, uv.dtype)
    # grid_sample (align_corners=False): -1 and +1 are the outer edges of the border texels, and
    # its y grows downward, so v = 1 (the top) is grid y = -1.
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1).to(dtype)
    tex = texture.to(dtype).expand(B, -1, -1, -1)
    out = F.grid_sample(tex, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if mask is not None:
        m = mask.unsqueeze(1) if mask.dim() == 3 else mask
        if m.shape[0] != B or m.shape[-2:] != out.shape[-2:] or m.shape[1] != 1:
            raise ValueError(f"mask must have shape ({B}, H, W) or ({B}, 1, H, W) matching uv; got {tuple(mask.shape)}")
        out = out * m.to(out.dtype)
    return out
