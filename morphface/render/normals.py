"""Face and vertex normals of batched triangle meshes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .rasterizer import check_faces

__all__ = ["face_normals", "vertex_normals"]


def _check_verts(verts: Tensor) -> None:
    if not isinstance(verts, Tensor) or verts.dim() != 3 or verts.shape[-1] != 3:
        shape = tuple(verts.shape) if isinstance(verts, Tensor) else type(verts).__name__
        raise ValueError(f"verts must have shape (B, V, 3); got {shape}")


def face_normals(verts: Tensor, faces: Tensor, normalize: bool = True) -> Tensor:
    """Normals of each triangle.

    Args:
        verts: ``(B, V, 3)`` positions (any frame, any unit).
        faces: ``(F, 3)`` int64 vertex ids.
        normalize: unit length if True; otherwise the length is twice the triangle's area.

    Returns:
        ``(B, F, 3)`` ``(v1 - v0) x (v2 - v0)``: outward for triangles counter-clockwise seen from
        outside in a right-handed frame. Zero-area triangles give zero vectors.
    """
    _check_verts(verts)
    faces = check_faces(faces, verts.shape[1]).to(verts.device)
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    n = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    return F.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals.

    Args:
        verts: ``(B, V, 3)`` positions.
        faces: ``(F, 3)`` int64 vertex ids.

    Returns:
        ``(B, V, 3)`` unit normals: the normalised sum of the (area-weighted, i.e. unnormalised)
        normals of the triangles around each vertex; outward for counter-clockwise triangles.
        Vertices used by no triangle get zero vectors. Differentiable.
    """
    _check_verts(verts)
    faces = check_faces(faces, verts.shape[1]).to(verts.device)
    fn = face_normals(verts, faces, normalize=False)  # (B, F, 3)
    vn = torch.zeros_like(verts)
    for k in range(3):  # three vectorised scatter-adds, one per triangle corner
        vn = vn.index_add(1, faces[:, k], fn)
    return F.normalize(vn, dim=-1, eps=1e-12)
