"""First-order shading of an unwrapped face: take the photo's light out of a texture, and put it back.

A turned face is lit unevenly: the side toward the light is brighter than the other. Mirroring the
bright side's texels onto the dark side (completion) then leaves a seam, and a frontal render of the
texture keeps the old shading glued to the skin. With the light held fixed in the camera frame, the
luma of skin seen at texel ``t`` is modelled as ``s(n_t) = c . (1, n_x, n_y, n_z)``, ``n_t`` the
texel's unit normal in the camera frame (first-order spherical harmonics: ambient plus one
direction, enough for the smooth part of the light and too coarse to explain texture). The
coefficients come from a robust least-squares fit over the skin texels seen with some confidence and
within 3 robust SDs of the skin colour (:func:`fit_texel_shading`, two Huber reweightings).
:func:`texel_shading` evaluates ``s`` for any normals, normalised so that the seen skin's mean is 1;
dividing a texture by the input pose's shading gives an albedo-like texture, and multiplying by the
frontal pose's shading lights the frontalised face as the head would be lit turned to the camera.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..fitting.result import FitResult
from ..fitting.skin import fit_colour_model, luma_chroma
from ..morphable.model import MorphableModel
from ..render.regions import region_vertex_mask
from .texel import normal_map, texel_map
from .unwrap import UnwrapResult

__all__ = ["camera_normal_map", "fit_texel_shading", "texel_shading", "skin_texel_mask"]


def camera_normal_map(fit: FitResult, model: MorphableModel, size: int, verts: Tensor | None = None) -> Tensor:
    """``(B, 3, S, S)`` unit texel normals of ``model`` under ``fit``, in the camera frame (x right,
    y up, z toward the viewer); 0 outside the layout."""
    v = fit.vertices(model) if verts is None else verts
    n = normal_map(model, size=size, verts=v).values  # model frame
    R = fit.rotation.to(n)
    return torch.einsum("bij,bjhw->bihw", R, n)


def skin_texel_mask(model: MorphableModel, size: int) -> Tensor:
    """``(1, 1, S, S)`` float: 1 on texels whose triangle is all skin (not eyes, not mouth), else 0.

    Relighting leaves the other texels as the photo shows them: the first-order light does not model
    a mouth's corners or an eye's socket, and dividing them by it made bright spots.
    """
    tmap = texel_map(model, size)
    skin = region_vertex_mask(model, "skin").to(tmap.vertex_ids.device)[tmap.vertex_ids].all(-1)
    return tmap.scatter(skin.float()[None, :, None])


def _basis(normals: Tensor) -> Tensor:
    """``(B, 4, S, S)``: ``(1, n_x, n_y, n_z)``."""
    return torch.cat([torch.ones_like(normals[:, :1]), normals], dim=1)


def fit_texel_shading(
    unwrapped: UnwrapResult,
    normals: Tensor,
    model: MorphableModel,
    min_confidence: float = 0.2,
    ridge: float = 1e-3,
) -> Tensor:
    """Coefficients ``(B, 4)`` of the luma shading ``c . (1, n)`` of the seen skin (module doc).

    Args:
        unwrapped: from :func:`~morphface.uv.unwrap` with ``model``.
        normals: ``(B, 3, S, S)`` texel normals in the camera frame (:func:`camera_normal_map`).
        model: the model (its skin region).
        min_confidence: texels seen with less confidence are not used.
        ridge: Tikhonov weight on the directional terms (relative to the data's scale): a face seen
            from one side only barely constrains the light from the other.

    Returns:
        ``(B, 4)``; ``(mean luma, 0, 0, 0)`` for an image with fewer than 64 usable texels.
    """
    tex, conf, mask = unwrapped
    B, _, S, _ = tex.shape
    tmap = texel_map(model, S)
    skin = region_vertex_mask(model, "skin").to(tmap.vertex_ids.device)[tmap.vertex_ids].all(-1).to(tex.device)
    colours = tmap.gather(tex)  # (B, N, 3)
    c = tmap.gather(conf)[..., 0]
    seen = (tmap.gather(mask)[..., 0] > 0.5) & skin[None]
    usable = seen & (c >= min_confidence)
    ref = fit_colour_model(colours, usable & (c >= 0.5))
    usable &= ref.zscore(colours) <= 3.0  # NaN (no reference) compares False
    y = luma_chroma(colours)[..., 0]  # (B, N)
    X = tmap.gather(_basis(normals.to(tex)))  # (B, N, 4)
    out = []
    for b in range(B):
        keep = usable[b]
        if int(keep.sum()) < 64:
            mean = y[b][seen[b]].mean() if bool(seen[b].any()) else y.new_tensor(0.5)
            out.append(torch.stack([mean, *(mean.new_zeros(()) for _ in range(3))]))
            continue
        Xb, yb = X[b][keep].double(), y[b][keep].double()
        w = torch.ones_like(yb)
        reg = torch.diag(yb.new_tensor([0.0, 1.0, 1.0, 1.0])) * ridge * float(keep.sum())
        for _ in range(3):
            A = Xb.T @ (Xb * w[:, None]) + reg
            coef = torch.linalg.solve(A, Xb.T @ (w * yb))
            r = (yb - Xb @ coef).abs()
            scale = 1.4826 * r.median().clamp(min=1e-4)
            w = torch.clamp(1.345 * scale / r.clamp(min=1e-12), max=1.0)  # Huber weights
        out.append(coef.to(tex.dtype))
    return torch.stack(out)


def texel_shading(coeffs: Tensor, normals: Tensor, reference: Tensor | None = None, floor: float = 0.7) -> Tensor:
    """``(B, 1, S, S)`` shading ``c . (1, n)`` at texel normals ``(B, 3, S, S)``, divided by its mean over
    ``reference`` (``(B, 1, S, S)`` weights; default all texels with a normal), at least ``floor``.

    The floor bounds how much a texel is brightened when the shading is divided out: a beard or the
    shadow in a mouth corner is dark for reasons the first-order light does not model, and dividing
    it by a small shading turned it white (0.5 still left white spots in a bearded photo's mouth
    corners; 0.7 costs 0.3 dB on lit synthetic faces at 45-60 degrees)."""
    s = (_basis(normals) * coeffs[:, :, None, None].to(normals)).sum(1, keepdim=True)
    has = (normals.norm(dim=1, keepdim=True) > 0.5).to(s)
    ref = has if reference is None else reference.to(s) * has
    mean = (s * ref).sum((2, 3), keepdim=True) / ref.sum((2, 3), keepdim=True).clamp(min=1e-6)
    return torch.where(has > 0, (s / mean.clamp(min=1e-6)).clamp(min=floor), torch.ones_like(s))
