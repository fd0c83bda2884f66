"""Differentiable rendering: rasterisation primitives, backends and renderers.

Primitives: :func:`rasterize` (visibility from a backend, then differentiable barycentrics and
depth), :func:`interpolate` (vertex attributes at pixels), :func:`sample_texture` (bilinear UV
lookup). Renderers built on them: NCC images (:func:`render_ncc`), normal and depth maps, region
masks, SH-lit Lambertian shading (:func:`render_shaded`), UV-textured meshes
(:func:`render_textured`) and :func:`composite`.

Conventions (see :mod:`morphface.camera`): vertices in the world frame in mm, projected by a
camera to NDC with y down and depth in mm; images ``(B, C, H, W)`` with pixel centres at
``+0.5``; masks ``(B, 1, H, W)`` float. Backends: ``available_backends()``.
"""

from .backends import available_backends
from .composite import composite
from .interpolate import interpolate, sample_texture
from .maps import render_depth, render_normals, render_region_mask
from .ncc import ncc_code, ncc_face_code, render_ncc
from .normals import face_normals, vertex_normals
from .rasterizer import rasterize
from .regions import face_region_labels, region_vertex_mask
from .shading import ambient_sh, render_shaded, sh_basis, sh_shading
from .textured import render_textured
from .types import Fragments, Rendered

__all__ = [
    "rasterize",
    "Fragments",
    "Rendered",
    "interpolate",
    "sample_texture",
    "vertex_normals",
    "face_normals",
    "render_ncc",
    "ncc_code",
    "ncc_face_code",
    "render_normals",
    "render_depth",
    "render_region_mask",
    "sh_basis",
    "sh_shading",
    "ambient_sh",
    "render_shaded",
    "render_textured",
    "composite",
    "face_region_labels",
    "region_vertex_mask",
    "available_backends",
]
