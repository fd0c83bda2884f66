"""Rasterising in UV space: which triangle and barycentrics each texel centre has, and UV maps.

A texture of ``S x S`` texels has texel ``(row r, column c)`` centred at ``u = (c + 0.5) / S``,
``v = 1 - (r + 0.5) / S`` (v up; :func:`morphface.render.sample_texture`'s convention). The UV
triangles are drawn with :func:`morphface.render.rasterize` through an orthographic "camera" whose
NDC is ``x = 2u - 1``, ``y = 1 - 2v``, which puts pixel ``(r, c)``'s centre exactly on that texel's
centre. Where a (generated) layout folds, triangles that are counter-clockwise in UV (the outside
of the surface) win over folded ones. The result, a :class:`TexelMap`, is cached per model,
resolution and device.

Texels whose centre no triangle contains are *outside* the layout (``mask`` False): the position
and normal maps are 0 there and :func:`morphface.uv.unwrap` never samples them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..morphable.model import MorphableModel
from ..render import rasterize, vertex_normals
from ..render.types import Fragments
from ._cache import cached
from .layout import UVLayout, model_uv_layout, uv_signed_areas

__all__ = [
    "TexelMap",
    "UVMap",
    "rasterize_layout",
    "texel_map",
    "texel_attributes",
    "position_map",
    "normal_map",
    "texel_centres",
]


class TexelMap(NamedTuple):
    """Texel -> (triangle, barycentrics) for one layout and resolution.

    Attributes:
        size: ``S``, the texture is ``S x S``.
        face: ``(S, S)`` int64 triangle id (row of the model's ``triangles``), ``-1`` outside.
        bary: ``(S, S, 3)`` float64 barycentrics of the texel centre in that triangle (0 outside).
        mask: ``(S, S)`` bool, True inside the layout.
        index: ``(N,)`` int64 flat (row-major) ids of the ``N`` covered texels.
        vertex_ids: ``(N, 3)`` int64 model vertices of the corners of each covered texel's triangle.
        weights: ``(N, 3)`` float64 their barycentric weights (rows sum to 1).
        uv_ids: ``(N, 3)`` int64 rows of the layout's UV table of the same corners.
    """

    size: int
    face: Tensor
    bary: Tensor
    mask: Tensor
    index: Tensor
    vertex_ids: Tensor
    weights: Tensor
    uv_ids: Tensor

    @property
    def n_texels(self) -> int:
        return self.index.numel()

    def scatter(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Covered-texel values ``(B, N, C)`` -> a texture ``(B, C, S, S)`` (``fill`` outside)."""
        B, N, C = values.shape
        S = self.size
        out = values.new_full((B, C, S * S), fill)
        out = out.index_copy(2, self.index.to(values.device), values.transpose(1, 2))
        return out.view(B, C, S, S)

    def gather(self, texture: Tensor) -> Tensor:
        """A texture ``(B, C, S, S)`` -> its covered texels ``(B, N, C)``."""
        B, C = texture.shape[:2]
        return texture.reshape(B, C, -1).index_select(2, self.index.to(texture.device)).transpose(1, 2)


class UVMap(NamedTuple):
    """A map over the texture: ``values`` ``(B, C, S, S)`` (0 outside) and ``mask`` ``(1, 1, S, S)`` float."""

    values: Tensor
    mask: Tensor


def texel_centres(size: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """``(S, S, 2)`` UV of every texel centre (u right, v up)."""
    c = (torch.arange(size, dtype=dtype, device=device) + 0.5) / size
    u = c.expand(size, size)
    v = (1.0 - c)[:, None].expand(size, size)
    return torch.stack([u, v], dim=-1)


def rasterize_layout(layout: UVLayout, size: int, backend: str = "auto") -> Fragments:
    """Rasterise a layout's UV triangles into an ``S x S`` texture (batch of 1, float64 barycentrics).

    Each triangle gets its own three NDC vertices so that folded triangles (clockwise in UV) can be
    put behind the others.
    """
    if int(size) <= 0:
        raise ValueError(f"size must be a positive number of texels; got {size}")
    corners = layout.corner_uv().to(torch.float64)  # (F, 3, 2)
    F_ = corners.shape[0]
    folded = (uv_signed_areas(layout) < 0).to(torch.float64)
    depth = folded[:, None, None].expand(F_, 3, 1)
    ndc = torch.cat([corners[..., :1] * 2 - 1, 1 - corners[..., 1:] * 2, depth], dim=-1).reshape(1, -1, 3)
    tri = torch.arange(3 * F_, device=ndc.device).view(F_, 3)
    return rasterize(ndc, tri, (int(size), int(size)), perspective=False, backend=backend)


def _build_texel_map(model: MorphableModel, size: int, backend: str) -> TexelMap:
    layout = model_uv_layout(model)
    frags = rasterize_layout(layout, size, backend=backend)
    face = frags.pix_to_face[0]
    mask = face >= 0
    index = torch.nonzero(mask.reshape(-1)).squeeze(1)
    f = face.reshape(-1)[index]
    weights = frags.bary[0].reshape(-1, 3)[index]
    return TexelMap(
        size=int(size),
        face=face,
        bary=frags.bary[0],
        mask=mask,
        index=index,
        vertex_ids=model.triangles[f],
        weights=weights,
        uv_ids=layout.uv_faces[f],
    )


def texel_map(model: MorphableModel, size: int = 256, backend: str = "auto") -> TexelMap:
    """The :class:`TexelMap` of the model's layout (:func:`~morphface.uv.model_uv_layout`) at ``size``.

    Cached per model, size and device; rebuilt if the model's mean, triangles or UVs change.
    """
    return cached(
        model, "texel_map", (int(size), backend), lambda: _build_texel_map(model, int(size), backend)
    )


def texel_attributes(attrs: Tensor, tmap: TexelMap, fill: float = 0.0) -> Tensor:
    """Interpolate per-vertex attributes at every texel centre.

    Args:
        attrs: ``(B, V, C)`` or ``(V, C)`` per-vertex values.
        tmap: from :func:`texel_map`.
        fill: value outside the layout.

    Returns:
        ``(B, C, S, S)``; differentiable w.r.t. ``attrs``.
    """
    if not isinstance(attrs, Tensor) or attrs.dim() not in (2, 3):
        shape = tuple(attrs.shape) if isinstance(attrs, Tensor) else type(attrs).__name__
        raise ValueError(f"attrs must have shape (B, V, C) or (V, C); got {shape}")
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0)
    vid = tmap.vertex_ids.to(attrs.device)
    if vid.numel() and int(vid.max()) >= attrs.shape[1]:
        raise ValueError(
            f"attrs has {attrs.shape[1]} vertices but the texel map refers to vertex {int(vid.max())}"
        )
    w = tmap.weights.to(device=attrs.device, dtype=attrs.dtype)
    vals = (attrs[:, vid] * w[None, :, :, None]).sum(2)  # (B, N, C)
    return tmap.scatter(vals, fill)


def _model_verts(
    model: MorphableModel, verts: Tensor | None, id_coeffs: Tensor | None, exp_coeffs: Tensor | None
) -> Tensor:
    if verts is None:
        return model(id_coeffs, exp_coeffs)
    if not isinstance(verts, Tensor) or verts.dim() != 3 or verts.shape[1:] != (model.n_vertices, 3):
        shape = tuple(verts.shape) if isinstance(verts, Tensor) else type(verts).__name__
        raise ValueError(f"verts must have shape (B, {model.n_vertices}, 3); got {shape}")
    return verts


def position_map(
    model: MorphableModel,
    id_coeffs: Tensor | None = None,
    exp_coeffs: Tensor | None = None,
    size: int = 256,
    verts: Tensor | None = None,
) -> UVMap:
    """UV position map: the 3D point (model frame, mm) of the surface at every texel centre.

    Args:
        model: the morphable model (its UVs, or a generated layout).
        id_coeffs, exp_coeffs: ``(B, K)`` coefficients (``None``: zeros), or
        verts: ``(B, V, 3)`` vertices to use instead.
        size: texture resolution ``S``.

    Returns:
        :class:`UVMap` with ``values`` ``(B, 3, S, S)`` in mm (0 outside the layout).
    """
    v = _model_verts(model, verts, id_coeffs, exp_coeffs)
    tmap = texel_map(model, size)
    return UVMap(texel_attributes(v, tmap), tmap.mask[None, None].to(v.dtype))


def normal_map(
    model: MorphableModel,
    id_coeffs: Tensor | None = None,
    exp_coeffs: Tensor | None = None,
    size: int = 256,
    verts: Tensor | None = None,
) -> UVMap:
    """UV normal map: the unit surface normal (model frame) at every texel centre.

    Vertex normals (area-weighted) are interpolated and renormalised, so the map is smooth across
    triangles. Arguments as :func:`position_map`.

    Returns:
        :class:`UVMap` with ``values`` ``(B, 3, S, S)`` unit vectors (0 outside the layout).
    """
    v = _model_verts(model, verts, id_coeffs, exp_coeffs)
    tmap = texel_map(model, size)
    n = texel_attributes(vertex_normals(v, model.triangles), tmap)
    n = F.normalize(n, dim=1, eps=1e-12)
    return UVMap(n, tmap.mask[None, None].to(v.dtype))
