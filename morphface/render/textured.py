"""Meshes textured from a UV map."""

from __future__ import annotations

import torch
from torch import Tensor

from ..camera import Camera
from ._camera import check_verts, rasterize_with_camera
from .interpolate import interpolate, sample_texture
from .rasterizer import check_faces
from .types import Fragments, Rendered

__all__ = ["render_textured", "pixel_uv"]


def pixel_uv(uv: Tensor, uv_faces: Tensor | None, faces: Tensor, fragments: Fragments) -> Tensor:
    """Per-pixel texture coordinates ``(B, H, W, 2)`` (0 on background).

    Args:
        uv: ``(T, 2)`` or ``(B|1, T, 2)`` UV table (u right, v up).
        uv_faces: ``(F, 3)`` rows of ``uv`` for each corner of each of the mesh's triangles, or
            ``None`` when ``uv`` is per vertex (then ``faces`` index it).
        faces: ``(F, 3)`` the mesh's triangles (those rasterised into ``fragments``).
        fragments: from :func:`morphface.render.rasterize`.
    """
    if not isinstance(uv, Tensor) or uv.shape[-1] != 2 or uv.dim() not in (2, 3):
        shape = tuple(uv.shape) if isinstance(uv, Tensor) else type(uv).__name__
        raise ValueError(f"uv must have shape (T, 2) or (B, T, 2); got {shape}")
    T = uv.shape[-2]
    if uv_faces is None:
        table = check_faces(faces, T, "faces (indexing per-vertex uv)")
    else:
        table = check_faces(uv_faces, T, "uv_faces")
        if table.shape[0] != faces.shape[0]:
            raise ValueError(f"uv_faces must have one row per triangle, ({faces.shape[0]}, 3); "
                             f"got {tuple(table.shape)}")
    return interpolate(uv, table.to(fragments.pix_to_face.device), fragments)


def render_textured(
    verts: Tensor,
    faces: Tensor,
    uv: Tensor,
    uv_faces: Tensor | None,
    texture: Tensor,
    camera: Camera,
    backend: str = "auto",
    cull_backfaces: bool = False,
    padding_mode: str = "border",
) -> Rendered:
    """Render a mesh coloured by a UV texture (no lighting).

    Args:
        verts: ``(B, V, 3)`` world-frame vertices in mm.
        faces: ``(F, 3)`` int64.
        uv: ``(T, 2)`` or ``(B|1, T, 2)`` UVs in ``[0, 1]``, u right, v **up** (image row
            ``(1 - v) * Ht``), e.g. ``model.face_uvs()[0]``.
        uv_faces: ``(F, 3)`` rows of ``uv`` per corner, or ``None`` for per-vertex UVs.
        texture: ``(B|1, C, Ht, Wt)``, e.g. RGB in ``[0, 1]``.
        camera: the camera; its ``image_size`` sets ``(H, W)``.
        backend, cull_backfaces: see :func:`morphface.render.rasterize`.
        padding_mode: see :func:`morphface.render.sample_texture`.

    Returns:
        :class:`Rendered`: ``image`` ``(B, C, H, W)`` (0 on background), ``mask`` ``(B, 1, H, W)``.
        Differentiable w.r.t. ``texture`` and ``verts`` (through the barycentrics).
    """
    check_verts(verts)
    faces = check_faces(faces, verts.shape[1]).to(verts.device)
    frags = rasterize_with_camera(verts, faces, camera, backend=backend, cull_backfaces=cull_backfaces)
    uvs = pixel_uv(uv.to(verts.device), uv_faces, faces, frags)
    mask = frags.mask[:, None].to(torch.promote_types(verts.dtype, texture.dtype))
    image = sample_texture(texture, uvs, mask=mask, padding_mode=padding_mode)
    return Rendered(image=image, mask=mask)
