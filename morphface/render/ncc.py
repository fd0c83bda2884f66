"""Normalised Coordinate Code (NCC) images.

The NCC of a vertex is its position on the model's **mean shape**, normalised per axis to
``[0, 1]`` by the mean shape's bounding box (``(x - min) / (max - min)``, per axis). It depends on
the model only, so it is computed once per model and cached. Two renderings are offered:

* ``mode="triangle"`` (HeadGAN, Doukas et al. 2021): each pixel takes the NCC of the *centroid*
  of its visible triangle, constant over the triangle. The NCC of the centroid is the mean of its
  corners' NCCs (the normalisation is affine).
* ``mode="vertex"`` (3DDFA's PNCC, Zhu et al. 2016): the per-vertex NCC interpolated with the
  (perspective-correct) barycentrics, smooth over the surface.

Images are ``(B, 3, H, W)`` in ``[0, 1]`` with ``(R, G, B) = (x, y, z)`` NCC, 0 on background.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from ..camera import Camera
from ..morphable.model import MorphableModel
from ._camera import check_verts, rasterize_with_camera
from .interpolate import interpolate
from .types import Rendered

__all__ = ["ncc_code", "ncc_face_code", "render_ncc"]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cache_key(model: MorphableModel) -> tuple:
    m = model.mean
    return (m.data_ptr(), m._version, m.device, m.dtype, tuple(m.shape), model.triangles.data_ptr())


def _codes(model: MorphableModel) -> tuple[Tensor, Tensor]:
    if not isinstance(model, MorphableModel):
        raise ValueError(f"model must be a MorphableModel; got {type(model).__name__}")
    key = _cache_key(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    mean = model.mean.detach()
    lo, hi = mean.amin(0), mean.amax(0)
    code = (mean - lo) / (hi - lo).clamp(min=torch.finfo(mean.dtype).eps)
    face_code = code[model.triangles].mean(dim=1)
    _CACHE[model] = (key, code, face_code)
    return code, face_code


def ncc_code(model: MorphableModel) -> Tensor:
    """``(V, 3)`` per-vertex NCC of ``model`` in ``[0, 1]`` (cached per model; min-max per axis)."""
    return _codes(model)[0]


def ncc_face_code(model: MorphableModel) -> Tensor:
    """``(F, 3)`` NCC of each triangle's centroid on the mean shape (HeadGAN's per-triangle colour)."""
    return _codes(model)[1]


def render_ncc(model: MorphableModel, verts: Tensor, camera: Camera, mode: str = "triangle",
               backend: str = "auto", cull_backfaces: bool = False) -> Rendered:
    """Render the NCC image of posed/deformed model vertices.

    Args:
        model: the morphable model whose mean shape defines the code (and whose triangles are drawn).
        verts: ``(B, V, 3)`` world-frame vertices in mm (e.g. ``model(id, exp)``).
        camera: projects world mm to the image; its ``image_size`` sets ``(H, W)``.
        mode: ``"triangle"`` (HeadGAN, constant per triangle) or ``"vertex"`` (3DDFA PNCC).
        backend: rasterisation backend (see :func:`morphface.render.rasterize`).
        cull_backfaces: drop back faces.

    Returns:
        :class:`Rendered` with ``image`` ``(B, 3, H, W)`` in ``[0, 1]`` (0 on background) and
        ``mask`` ``(B, 1, H, W)``. In ``"vertex"`` mode the image is differentiable w.r.t. ``verts``
        through the barycentrics; in ``"triangle"`` mode it is piecewise constant.
    """
    if mode not in ("triangle", "vertex"):
        raise ValueError(f"mode must be 'triangle' or 'vertex'; got {mode!r}")
    check_verts(verts, model.n_vertices)
    code, face_code = _codes(model)
    frags = rasterize_with_camera(verts, model.triangles, camera, backend=backend, cull_backfaces=cull_backfaces)
    if mode == "vertex":
        img = interpolate(code.to(verts), model.triangles, frags)
    else:
        fc = face_code.to(verts)
        img = torch.where(frags.mask[..., None], fc[frags.pix_to_face.clamp(min=0)], fc.new_zeros(()))
    # Perspective-correct weights may leave [0, 1] by a rounding error at triangle edges.
    image = img.clamp(0.0, 1.0).permute(0, 3, 1, 2).contiguous()
    return Rendered(image=image, mask=frags.mask[:, None].to(image.dtype))
