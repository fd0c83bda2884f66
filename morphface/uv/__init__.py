"""UV maps, texture extraction and completion, and non-learned frontalisation.

Layouts (:func:`model_uv_layout`: the model's own UVs, else :func:`generate_uv_layout`), texel
maps (:func:`texel_map`: texel -> triangle and barycentrics, cached per model and resolution),
UV position and normal maps, texture extraction with z-buffer visibility (:func:`unwrap`),
completion (mirror, albedo model, push-pull; :func:`complete_texture`), multi-view fusion
(:func:`fuse_unwraps`), rendering a texture (:func:`render_uv_texture`), closing a mesh's eye and
mouth openings (:func:`fill_holes`), moving the photo around a re-posed face (:func:`head_flow`,
:func:`warp_surroundings`, :func:`even_head_outline`) and :func:`frontalize` (its stages:
:class:`Frontalizer`, its options: :class:`FrontalizeConfig`).

UV convention (the model's, OBJ's): u to the right, v **up**, both in ``[0, 1]``; texel
``(row r, column c)`` of an ``S x S`` texture is centred at ``u = (c + 0.5) / S``,
``v = 1 - (r + 0.5) / S``.
"""

from .blend import feather_mask, laplacian_blend
from .complete import (
    SOURCE_ALBEDO,
    SOURCE_FILL,
    SOURCE_MIRROR,
    SOURCE_SEEN,
    Completion,
    complete_texture,
    fuse_unwraps,
    mirror_fill,
    push_pull_fill,
    symmetry_map,
)
from .frontalize import (
    CompositeConfig,
    FitConfig,
    FrontalizeConfig,
    Frontalizer,
    FrontalizeResult,
    TextureConfig,
    ViewConfig,
    fit_with_contour,
    frontal_fit,
    frontalize,
)
from .headwarp import HeadFlow, head_flow
from .holes import fill_holes
from .layout import UVLayout, UVOverlap, generate_uv_layout, model_uv_layout, uv_overlap, with_uv_layout
from .outliers import reject_colour_outliers
from .render import render_uv_texture
from .shading import camera_normal_map, fit_texel_shading, texel_shading
from .surroundings import even_head_outline, warp_surroundings
from .synthetic import random_face_texture
from .texel import TexelMap, UVMap, normal_map, position_map, texel_attributes, texel_map
from .unwrap import UnwrapResult, unwrap

__all__ = [
    "reject_colour_outliers",
    "camera_normal_map",
    "fit_texel_shading",
    "texel_shading",
    "UVLayout",
    "UVOverlap",
    "model_uv_layout",
    "generate_uv_layout",
    "with_uv_layout",
    "uv_overlap",
    "TexelMap",
    "UVMap",
    "texel_map",
    "texel_attributes",
    "position_map",
    "normal_map",
    "UnwrapResult",
    "unwrap",
    "Completion",
    "complete_texture",
    "mirror_fill",
    "push_pull_fill",
    "fuse_unwraps",
    "symmetry_map",
    "SOURCE_SEEN",
    "SOURCE_MIRROR",
    "SOURCE_ALBEDO",
    "SOURCE_FILL",
    "fill_holes",
    "render_uv_texture",
    "random_face_texture",
    "laplacian_blend",
    "feather_mask",
    "FrontalizeResult",
    "FrontalizeConfig",
    "FitConfig",
    "TextureConfig",
    "ViewConfig",
    "CompositeConfig",
    "Frontalizer",
    "frontalize",
    "frontal_fit",
    "fit_with_contour",
    "HeadFlow",
    "head_flow",
    "warp_surroundings",
    "even_head_outline",
]
