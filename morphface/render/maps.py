"""Geometry maps: camera-frame normal maps, depth maps and face-region masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import Camera
from ._camera import check_verts, rasterize_with_camera, to_camera_frame
from .interpolate import interpolate
from .normals import vertex_normals
from .types import Rendered

__all__ = ["render_normals", "render_depth", "render_region_mask"]


def render_normals(verts: Tensor, faces: Tensor, camera: Camera, encode: bool = True, backend: str = "auto",
                   cull_backfaces: bool = False) -> Rendered:
    """Camera-frame normal map.

    Per-vertex area-weighted normals are rotated into the camera frame (x right, y up, z toward
    the viewer: a surface facing the camera has ``n = (0, 0, 1)``), interpolated and renormalised
    per pixel.

    Args:
        verts: ``(B, V, 3)`` world-frame vertices in mm.
        faces: ``(F, 3)`` int64, counter-clockwise seen from outside.
        camera: its rotation gives the camera frame; its ``image_size`` the image size.
        encode: map the unit normals from ``[-1, 1]`` to ``[0, 1]`` (``(n + 1) / 2``, the usual
            display encoding); if False the image holds the unit normals themselves.
        backend, cull_backfaces: see :func:`morphface.render.rasterize`.

    Returns:
        :class:`Rendered`: ``image`` ``(B, 3, H, W)`` (0 on background in both encodings),
        ``mask`` ``(B, 1, H, W)``. Differentiable w.r.t. ``verts``.
    """
    check_verts(verts)
    frags = rasterize_with_camera(verts, faces, camera, backend=backend, cull_backfaces=cull_backfaces)
    n_cam = to_camera_frame(vertex_normals(verts, faces), camera)
    n = F.normalize(interpolate(n_cam, faces, frags), dim=-1, eps=1e-12)
    mask = frags.mask[..., None].to(n.dtype)
    img = ((n + 1.0) * 0.5 if encode else n) * mask
    return Rendered(image=img.permute(0, 3, 1, 2).contiguous(), mask=mask.permute(0, 3, 1, 2).contiguous())


def render_depth(verts: Tensor, faces: Tensor, camera: Camera, normalize: bool = False, backend: str = "auto",
                 cull_backfaces: bool = False) -> Rendered:
    """Depth map: the view depth of the visible surface.

    Args:
        verts: ``(B, V, 3)`` world-frame vertices in mm.
        faces: ``(F, 3)`` int64.
        camera: the camera (perspective depth is the distance along the view axis).
        normalize: if True, map each image's covered depths to ``[0, 1]`` with the nearest point 1
            and the farthest 0 (a display encoding); otherwise depths in mm.
        backend, cull_backfaces: see :func:`morphface.render.rasterize`.

    Returns:
        :class:`Rendered`: ``image`` ``(B, 1, H, W)`` (mm, or ``[0, 1]``; 0 on background),
        ``mask`` ``(B, 1, H, W)``. Differentiable w.r.t. ``verts``.
    """
    check_verts(verts)
    frags = rasterize_with_camera(verts, faces, camera, backend=backend, cull_backfaces=cull_backfaces)
    depth, m = frags.depth[:, None], frags.mask[:, None]
    if normalize:
        big = torch.finfo(depth.dtype).max
        near = torch.where(m, depth, big).amin(dim=(1, 2, 3), keepdim=True)
        far = torch.where(m, depth, -big).amax(dim=(1, 2, 3), keepdim=True)
        # Spans within a few float ulps of the depths are rounding noise: such an image is flat.
        flat = (far - near) <= 64 * torch.finfo(depth.dtype).eps * torch.maximum(near.abs(), far.abs()).clamp(min=1.0)
        span = torch.where(flat, torch.ones_like(far), far - near)
        depth = torch.where(m, torch.where(flat, depth.new_ones(()), (far - depth) / span), depth.new_zeros(()))
    return Rendered(image=depth, mask=m.to(depth.dtype))


def render_region_mask(verts: Tensor, faces: Tensor, camera: Camera, vertex_mask: Tensor, backend: str = "auto",
                       cull_backfaces: bool = False) -> Tensor:
    """Mask of the pixels whose visible surface belongs to a region given per vertex.

    The region indicator is interpolated over the visible triangle and thresholded at 0.5, so a
    region's border runs mid-way across the triangles that straddle it.

    Args:
        verts: ``(B, V, 3)`` world-frame vertices in mm.
        faces: ``(F, 3)`` int64.
        camera: the camera.
        vertex_mask: ``(V,)`` or ``(B, V)`` bool/float region membership, e.g.
            ``model.vertex_mask(name)`` or :func:`morphface.render.face_region_labels` ``(model)[name]``.
        backend, cull_backfaces: see :func:`morphface.render.rasterize`.

    Returns:
        ``(B, 1, H, W)`` float mask in ``{0, 1}`` (occlusion by other parts of the mesh respected).
    """
    check_verts(verts)
    V = verts.shape[1]
    if not isinstance(vertex_mask, Tensor) or vertex_mask.shape[-1] != V or vertex_mask.dim() not in (1, 2):
        shape = tuple(vertex_mask.shape) if isinstance(vertex_mask, Tensor) else type(vertex_mask).__name__
        raise ValueError(f"vertex_mask must have shape ({V},) or (B, {V}); got {shape}")
    frags = rasterize_with_camera(verts, faces, camera, backend=backend, cull_backfaces=cull_backfaces)
    ind = vertex_mask.to(device=verts.device, dtype=verts.dtype)
    ind = ind[None, :, None] if ind.dim() == 1 else ind[..., None]
    with torch.no_grad():
        val = interpolate(ind, faces, frags)[..., 0]
    return ((val >= 0.5) & frags.mask)[:, None].to(verts.dtype)
