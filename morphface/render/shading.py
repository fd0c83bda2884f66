"""Lambertian shading under 2nd-order spherical-harmonic (SH) lighting, Deep3DFaceRecon's convention.

Irradiance of a surface with unit normal ``n = (x, y, z)`` **in the camera frame** (x right, y up,
z toward the viewer) under per-channel coefficients ``gamma[c, 0:9]``::

    E_c(n) = sum_k gamma[c, k] * Y_k(n)
    Y = [a0 c0,
         -a1 c1 y,  a1 c1 z,  -a1 c1 x,
         a2 c2 x y,  -a2 c2 y z,  a2 c2 / (2 sqrt 3) (3 z^2 - 1),  -a2 c2 x z,  a2 c2 / 2 (x^2 - y^2)]
    a = (pi, 2 pi / sqrt 3, 2 pi / sqrt 8)
    c = (1 / sqrt(4 pi), sqrt 3 / sqrt(4 pi), 3 sqrt 5 / sqrt(12 pi))

(the basis and constants of Deep3DFaceRecon's ``compute_color``, which folds the Lambertian
kernel's ``a_l`` into the basis), and the colour is ``albedo * E``. Coefficients are ``(B, 27)``,
red's nine first, then green's and blue's (Deep3DFaceRecon's ``gamma.reshape(B, 3, 9)``), or
``(B, 3, 9)``. Deep3DFaceRecon adds 0.8 to every channel's DC term (``init_lit``) before shading,
so that zero coefficients mean ambient light; that offset is a fitting concern and is **not** added
here: pass ``gamma`` with the 0.8 already in (``gamma[:, :, 0] += 0.8``), e.g. from
:func:`ambient_sh`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import Camera
from ._camera import check_verts, rasterize_with_camera, to_camera_frame
from .interpolate import interpolate, sample_texture
from .normals import vertex_normals
from .rasterizer import check_faces
from .textured import pixel_uv
from .types import Rendered

__all__ = ["SH_A", "SH_C", "sh_basis", "sh_shading", "ambient_sh", "render_shaded"]

SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))


def sh_basis(normals: Tensor) -> Tensor:
    """``(..., 3)`` unit normals (camera frame) -> ``(..., 9)`` Deep3DFaceRecon's scaled SH basis."""
    x, y, z = normals.unbind(-1)
    k0, k1, k2 = SH_A[0] * SH_C[0], SH_A[1] * SH_C[1], SH_A[2] * SH_C[2]
    return torch.stack([
        torch.full_like(x, k0),
        -k1 * y, k1 * z, -k1 * x,
        k2 * x * y, -k2 * y * z, 0.5 * k2 / math.sqrt(3.0) * (3.0 * z * z - 1.0),
        -k2 * x * z, 0.5 * k2 * (x * x - y * y),
    ], dim=-1)


def _sh_matrix(sh_coeffs: Tensor) -> Tensor:
    ok = isinstance(sh_coeffs, Tensor) and (
        (sh_coeffs.dim() == 2 and sh_coeffs.shape[1] == 27) or (sh_coeffs.dim() == 3 and sh_coeffs.shape[1:] == (3, 9)))
    if not ok:
        shape = tuple(sh_coeffs.shape) if isinstance(sh_coeffs, Tensor) else type(sh_coeffs).__name__
        raise ValueError(f"sh_coeffs must have shape (B, 27) or (B, 3, 9); got {shape}")
    return sh_coeffs.reshape(sh_coeffs.shape[0], 3, 9)


def ambient_sh(batch_size: int = 1, level: float = 0.8, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """``(B, 27)`` coefficients of a uniform white light: DC term ``level`` (Deep3DFaceRecon's 0.8)."""
    g = torch.zeros(batch_size, 3, 9, dtype=dtype, device=device)
    g[:, :, 0] = level
    return g.reshape(batch_size, 27)


def sh_shading(normals: Tensor, sh_coeffs: Tensor, albedo: Tensor | None = None) -> Tensor:
    """Lambertian SH shading of unit normals.

    Args:
        normals: ``(B, *, 3)`` unit normals in the camera frame (per vertex ``(B, V, 3)`` or per
            pixel ``(B, H, W, 3)``).
        sh_coeffs: ``(B|1, 27)`` or ``(B|1, 3, 9)`` (module docstring; no 0.8 offset is added).
        albedo: optional ``(B|1, *, 3)`` linear RGB in ``[0, 1]``.

    Returns:
        ``(B, *, 3)``: ``albedo * irradiance`` (or the irradiance alone), not clamped.
    """
    gamma = _sh_matrix(sh_coeffs)
    if not isinstance(normals, Tensor) or normals.dim() < 2 or normals.shape[-1] != 3:
        shape = tuple(normals.shape) if isinstance(normals, Tensor) else type(normals).__name__
        raise ValueError(f"normals must have shape (B, ..., 3); got {shape}")
    if gamma.shape[0] not in (1, normals.shape[0]) and normals.shape[0] != 1:
        raise ValueError(f"sh_coeffs batch {gamma.shape[0]} does not match normals batch {normals.shape[0]}")
    Y = sh_basis(normals)  # (B, *, 9)
    lead = Y.shape[1:-1]
    B = max(Y.shape[0], gamma.shape[0])
    Yf = Y.reshape(Y.shape[0], -1, 9).expand(B, -1, -1)
    irr = torch.bmm(Yf, gamma.to(Y.dtype).expand(B, -1, -1).transpose(1, 2))  # (B, N, 3)
    irr = irr.reshape(B, *lead, 3)
    return irr if albedo is None else irr * albedo


def render_shaded(
    verts: Tensor,
    faces: Tensor,
    camera: Camera,
    sh_coeffs: Tensor,
    albedo: Tensor | None = None,
    texture: Tensor | None = None,
    uv: Tensor | None = None,
    uv_faces: Tensor | None = None,
    per_pixel: bool = False,
    clamp: bool = True,
    backend: str = "auto",
    cull_backfaces: bool = False,
) -> Rendered:
    """Render a Lambertian mesh under SH lighting, from per-vertex albedo or a UV texture.

    With per-vertex ``albedo`` and ``per_pixel=False`` (the default, Deep3DFaceRecon's way) each
    vertex is shaded with its normal and the colours are interpolated (Gouraud). With
    ``per_pixel=True`` the normals (renormalised) and the albedo are interpolated and each pixel
    is shaded (Phong-style normals; sharper lighting on coarse meshes). A UV ``texture`` is always
    shaded per pixel.

    Args:
        verts: ``(B, V, 3)`` world-frame vertices in mm.
        faces: ``(F, 3)`` int64, counter-clockwise seen from outside (normals point outward).
        camera: the camera (normals are rotated into its frame).
        sh_coeffs: ``(B|1, 27)`` or ``(B|1, 3, 9)`` SH lighting (see :func:`sh_shading`).
        albedo: ``(B|1, V, 3)`` per-vertex linear RGB in ``[0, 1]``.
        texture: ``(B|1, 3, Ht, Wt)`` albedo texture (instead of ``albedo``); needs ``uv``.
        uv: ``(T, 2)`` (or ``(B|1, T, 2)``) UVs, u right, v up (see :func:`sample_texture`).
        uv_faces: ``(F, 3)`` rows of ``uv`` per corner; ``None`` when ``uv`` is per vertex.
        per_pixel: shade per pixel instead of per vertex (per-vertex albedo only).
        clamp: clamp the colours to ``[0, 1]`` (their gradient is then zero where saturated).
        backend, cull_backfaces: see :func:`morphface.render.rasterize`.

    Returns:
        :class:`Rendered`: ``image`` ``(B, 3, H, W)`` (0 on background), ``mask`` ``(B, 1, H, W)``.
        Differentiable w.r.t. ``verts``, ``sh_coeffs``, ``albedo`` and ``texture``.
    """
    check_verts(verts)
    if (albedo is None) == (texture is None):
        raise ValueError("pass exactly one of albedo (B, V, 3) and texture (B, 3, Ht, Wt)")
    faces = check_faces(faces, verts.shape[1]).to(verts.device)
    frags = rasterize_with_camera(verts, faces, camera, backend=backend, cull_backfaces=cull_backfaces)
    n_cam = to_camera_frame(vertex_normals(verts, faces), camera)
    if texture is not None:
        if uv is None:
            raise ValueError("texture shading needs uv (T, 2) (and uv_faces for a layout with seams)")
        uvs = pixel_uv(uv, uv_faces, faces, frags)
        alb = sample_texture(texture, uvs).permute(0, 2, 3, 1)
        n = F.normalize(interpolate(n_cam, faces, frags), dim=-1, eps=1e-12)
        rgb = sh_shading(n, sh_coeffs, alb)
    else:
        check_verts(albedo, verts.shape[1], "albedo")
        if per_pixel:
            n = F.normalize(interpolate(n_cam, faces, frags), dim=-1, eps=1e-12)
            rgb = sh_shading(n, sh_coeffs, interpolate(albedo, faces, frags))
        else:
            rgb = interpolate(sh_shading(n_cam, sh_coeffs, albedo), faces, frags)
    if clamp:
        rgb = rgb.clamp(0.0, 1.0)
    mask = frags.mask[..., None].to(rgb.dtype)
    rgb = rgb * mask
    return Rendered(image=rgb.permute(0, 3, 1, 2).contiguous(), mask=mask.permute(0, 3, 1, 2).contiguous())
