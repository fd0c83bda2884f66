"""Rendering a UV texture on the model at any pose and expression (through :mod:`morphface.render`)."""

from __future__ import annotations

from torch import Tensor

from ..camera import Camera
from ..morphable.model import MorphableModel
from ..render import render_textured
from ..render.types import Rendered
from .layout import model_uv_layout

__all__ = ["render_uv_texture"]


def render_uv_texture(
    texture: Tensor,
    model: MorphableModel,
    camera: Camera,
    id_coeffs: Tensor | None = None,
    exp_coeffs: Tensor | None = None,
    verts: Tensor | None = None,
    backend: str = "auto",
) -> Rendered:
    """Render the model coloured by a UV texture (no lighting: the texture is the final colour).

    Args:
        texture: ``(B|1, 3, S, S)`` in the model's layout (:func:`~morphface.uv.model_uv_layout`),
            e.g. :attr:`~morphface.uv.Completion.texture`.
        model: the morphable model.
        camera: pose and projection; its ``image_size`` sets the output size.
        id_coeffs, exp_coeffs: ``(B, K)`` coefficients (``None``: zeros), or
        verts: ``(B, V, 3)`` model-frame vertices (mm) to use instead.
        backend: rasteriser backend.

    Returns:
        :class:`~morphface.render.Rendered`: ``image`` ``(B, 3, H, W)`` (0 off the face) and ``mask``.
        Differentiable w.r.t. the texture and the geometry.
    """
    if verts is None:
        verts = model(id_coeffs, exp_coeffs)
    layout = model_uv_layout(model)
    verts = verts.to(device=texture.device, dtype=texture.dtype)
    return render_textured(
        verts,
        model.triangles.to(texture.device),
        layout.uv.to(texture),
        layout.uv_faces.to(texture.device),
        texture,
        camera.to(device=texture.device, dtype=texture.dtype),
        backend=backend,
    )
