"""Completing an unwrapped texture: mirror, albedo model, smooth fill; and multi-view fusion.

:func:`complete_texture` fills every texel that the photo did not show, in three steps:

1. **Mirror** (:func:`mirror_fill`). Faces are nearly left-right symmetric: a texel takes the colour
   of the texel showing its mirror point on the surface. The mirror point comes from the model's
   symmetry map (:func:`symmetry_map`: for every vertex, the vertex nearest to its x-mirrored
   position on the mean shape), interpolated with the texel's barycentrics. The mirror texel is
   looked up with mask-normalised bilinear sampling, so unseen texels never leak in. In the
   default ``"blend"`` mode a texel seen at a grazing angle is also mixed with its mirror when the
   mirror was seen more squarely: weights ``conf`` for the texel and
   ``max(0, conf_mirror - conf) * max(0, 1 - conf / grazing)`` for the mirror (``grazing`` = 0.25,
   i.e. 60 degrees for the default confidence ``cos^2``). This replaces the smeared samples near the
   far silhouette, keeps every texel seen at less than 60 degrees as it is (a mole on the far cheek
   survives), and fades instead of cutting where mirror and photo meet (different lighting on
   the two sides gives no seam). The mirror's share ``w_m / (w_t + w_m)`` is steepened around 1/2
   (``clamp(2.5 (a - 1/2) + 1/2, 0, 1)``): half-and-half mixes of two slightly misregistered
   sources show both (ghosting). ``"fill"`` only fills unseen texels.
2. **Albedo model**, where the model has one: remaining texels inside the layout take the model's
   albedo (``fit.tex_coeffs`` if given), scaled per channel to match the seen texels' colour.
3. **Smooth fill** (:func:`push_pull_fill`, Gortler et al.'s push-pull): the rest, including texels
   outside the layout (so bilinear lookups at the layout's border never see black), is filled from
   a pyramid of confidence-weighted averages. Texels seen nearly edge-on (confidence below 0.05,
   ramping up to full weight at 0.15) take part only in proportion: a few texels that sampled the
   background behind a chin, weighted like the rest, coloured the whole hole around them. Texels
   next to a large hole fade into the fill over a narrow band (``feather``): the skin at a hole's
   edge (a highlight along a profile, the shadow under a fringe) met by a smooth fill was a seam. No
   texel is left empty, and none is NaN: an image with no seen texel at all gets a constant skin colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..fitting.result import FitResult
from ..morphable.model import DEFAULT_SKIN_ALBEDO, MorphableModel
from ._cache import cached
from .blend import blur, dilate, erode
from .layout import model_uv_layout
from .texel import texel_attributes, texel_map
from .unwrap import UnwrapResult

__all__ = [
    "Completion",
    "SOURCE_SEEN",
    "SOURCE_MIRROR",
    "SOURCE_ALBEDO",
    "SOURCE_FILL",
    "symmetry_map",
    "mirror_texel_uv",
    "mirror_fill",
    "push_pull_fill",
    "complete_texture",
    "fuse_unwraps",
]

#: Codes of :attr:`Completion.source`.
SOURCE_SEEN, SOURCE_MIRROR, SOURCE_ALBEDO, SOURCE_FILL = 0, 1, 2, 3


class Completion(NamedTuple):
    """A completed texture.

    Attributes:
        texture: ``(B, 3, S, S)`` RGB in ``[0, 1]``, every texel filled.
        confidence: ``(B, 1, S, S)`` confidence of the seen or mirrored colour (0 where filled).
        source: ``(B, 1, S, S)`` int64: where each texel's colour mostly came from
            (:data:`SOURCE_SEEN`, :data:`SOURCE_MIRROR`, :data:`SOURCE_ALBEDO`, :data:`SOURCE_FILL`).
    """

    texture: Tensor
    confidence: Tensor
    source: Tensor


def _check_unwrap(u: UnwrapResult) -> None:
    t, c, m = u
    if t.dim() != 4 or t.shape[1] != 3 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"texture must have shape (B, 3, S, S); got {tuple(t.shape)}")
    want = (t.shape[0], 1, *t.shape[-2:])
    if tuple(c.shape) != want or tuple(m.shape) != want:
        raise ValueError(
            f"confidence and mask must have shape {want}; got {tuple(c.shape)} and {tuple(m.shape)}"
        )


def symmetry_map(model: MorphableModel) -> Tensor:
    """``(V,)`` int64: for each vertex, the vertex nearest to its mirror image ``(-x, y, z)`` on the
    mean shape (cached per model). A vertex on the symmetry plane maps to itself."""

    def build() -> Tensor:
        from scipy.spatial import cKDTree

        mean = model.mean.detach().cpu().to(torch.float64).numpy()
        _, idx = cKDTree(mean).query(mean * np.array([-1.0, 1.0, 1.0]))
        return torch.as_tensor(idx, dtype=torch.int64, device=model.mean.device)

    return cached(model, "symmetry", None, build)


def _triangle_keys(tri: Tensor, n: int) -> Tensor:
    s = torch.sort(tri, dim=1).values
    return (s[:, 0] * n + s[:, 1]) * n + s[:, 2]


def mirror_texel_uv(model: MorphableModel, size: int) -> Tensor:
    """``(N, 2)`` UV of the mirror point of every covered texel of :func:`texel_map` (cached).

    The texel's corners are mapped through :func:`symmetry_map`; when the mirrored corners form a
    triangle of the mesh, that triangle's own UV corners are used (exact across seams and charts),
    otherwise each mirrored vertex's first UV entry.
    """

    def build() -> Tensor:
        tmap = texel_map(model, size)
        layout = model_uv_layout(model)
        tri, uvf = model.triangles, layout.uv_faces
        V = model.n_vertices
        sym = symmetry_map(model)
        mv = sym[tmap.vertex_ids]  # (N, 3)
        keys = _triangle_keys(tri, V)
        sorted_keys, perm = torch.sort(keys)
        km = _triangle_keys(mv, V)
        pos = torch.searchsorted(sorted_keys, km).clamp(max=keys.numel() - 1)
        found = sorted_keys[pos] == km
        fm = perm[pos]
        corner = (tri[fm][:, None, :] == mv[:, :, None]).to(torch.int64).argmax(-1)  # (N, 3)
        rows_exact = uvf[fm].gather(1, corner)
        first = torch.full((V,), 3 * tri.shape[0], dtype=torch.int64, device=tri.device)
        first = first.scatter_reduce(0, tri.reshape(-1), torch.arange(tri.numel(), device=tri.device), "amin")
        vrow = uvf.reshape(-1)[first.clamp(max=tri.numel() - 1)]
        rows = torch.where(found[:, None], rows_exact, vrow[mv])
        return (layout.uv[rows].to(torch.float64) * tmap.weights[..., None]).sum(1)

    return cached(model, "mirror_uv", int(size), build)


def _sample_at_uv(maps: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of ``(B, C, S, S)`` at ``(N, 2)`` UVs -> ``(B, N, C)`` (zeros outside)."""
    B = maps.shape[0]
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], dim=-1).to(maps)
    out = F.grid_sample(
        maps,
        grid[None, None].expand(B, -1, -1, -1),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out[:, :, 0].transpose(1, 2)


def mirror_fill(
    unwrapped: UnwrapResult,
    model: MorphableModel,
    mode: str = "blend",
    grazing: float = 0.25,
    match_colour: bool = True,
) -> tuple[UnwrapResult, Tensor]:
    """Fill (and optionally improve) texels from their mirror texels (module doc, step 1).

    Args:
        unwrapped: from :func:`~morphface.uv.unwrap` with this ``model``.
        model: the model (its symmetry map and layout).
        mode: ``"blend"`` (unseen texels filled, grazing ones mixed with a squarer mirror) or
            ``"fill"`` (unseen texels only).
        grazing: in ``"blend"`` mode, seen texels with a confidence at or above this are kept as
            they are.
        match_colour: add to the mirrored colours the smooth (blurred, push-pull filled, at most
            0.3 in luma and 0.06 in chroma) difference between each texel and its mirror where both were seen squarely
            (confidence >= ``grazing``), so that a face lit from one side, or with a blotchy cheek,
            gets no colour step where the mirror takes over (0.15 in every channel left a visible patch
            on a test photo's far cheek; synthetic faces score the same either way).

    Returns:
        ``(result, mirrored)``: the updated :class:`UnwrapResult` (mask: seen or mirrored) and a
        ``(B, 1, S, S)`` bool map of the texels whose colour is mostly the mirror's.
    """
    if mode not in ("blend", "fill"):
        raise ValueError(f"mode must be 'blend' or 'fill'; got {mode!r}")
    _check_unwrap(unwrapped)
    tex, conf, mask = unwrapped
    S = tex.shape[-1]
    tmap = texel_map(model, S)
    muv = mirror_texel_uv(model, S).to(tex.device)
    stack = torch.cat([tex * mask, conf, mask], dim=1)  # (B, 5, S, S)
    m_vals = _sample_at_uv(stack, muv)  # (B, N, 5)
    m_w = m_vals[..., 4:5]
    m_ok = m_w > 0.5
    safe = m_w.clamp(min=1e-6)
    m_col, m_conf = m_vals[..., :3] / safe, (m_vals[..., 3:4] / safe) * m_ok

    own = tmap.gather(torch.cat([tex, conf, mask], dim=1))  # (B, N, 5)
    col, c, valid = own[..., :3], own[..., 3:4], own[..., 4:5] > 0.5
    if match_colour:
        # The two sides of a face are rarely lit alike: shift the mirror's colours by the smooth
        # difference between the sides, measured where both were seen, filled in everywhere else.
        both = (valid & m_ok & (c >= grazing) & (m_conf >= grazing)).to(tex.dtype)
        # A smooth field: computed at a quarter of the resolution.
        k = 4 if S >= 64 else 1
        diff = F.avg_pool2d(tmap.scatter((col - m_col) * both), k)
        weight = F.avg_pool2d(tmap.scatter(both), k)
        diff = diff / weight.clamp(min=1e-6) * (weight > 0)
        corr = _limit_shift(blur(push_pull_fill(diff, (weight > 0).to(diff), fallback=0.0), S / 32 / k))
        if k > 1:
            corr = F.interpolate(corr, size=(S, S), mode="bilinear", align_corners=False)
        m_col = m_col + tmap.gather(corr)
    w_self = c * valid
    if mode == "blend":
        w_mir = (m_conf - w_self).clamp(min=0) * (1 - w_self / max(grazing, 1e-6)).clamp(min=0)
    else:
        w_mir = m_conf * ~valid
    total = w_self + w_mir
    # Mirror fraction, steepened around 1/2: two slightly misregistered sources mixed half and half
    # show both (ghosts), so the mix is kept to a narrow band between "mostly one" and "mostly other".
    alpha = torch.where(total > 0, w_mir / total.clamp(min=1e-12), torch.zeros_like(total))
    alpha = ((alpha - 0.5) * 2.5 + 0.5).clamp(0, 1)
    alpha = torch.where(valid, alpha, (w_mir > 0).to(alpha))
    new_col = (1 - alpha) * col + alpha * m_col
    new_conf = (1 - alpha) * w_self + alpha * m_conf
    new_mask = (valid | (alpha > 0)).to(tex.dtype)
    mirrored = tmap.scatter((alpha > 0.5).to(tex.dtype)) > 0.5
    # Texels outside the layout keep what they had (zeros).
    out = UnwrapResult(
        texture=tmap.scatter(new_col * new_mask),
        confidence=tmap.scatter(new_conf),
        mask=tmap.scatter(new_mask),
    )
    return out, mirrored


def _limit_shift(rgb: Tensor, luma: float = 0.3, chroma: float = 0.06) -> Tensor:
    """Clamp a ``(B, 3, H, W)`` colour shift to ``luma`` in BT.601 luma and ``chroma`` in B - Y and R - Y:
    brightness may differ a lot between the two sides of a face, hue hardly (a larger chroma shift,
    measured next to hair or background, tinted a mirrored cheek grey)."""
    r, g, b = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    y2 = y.clamp(-luma, luma)
    cb, cr = (b - y).clamp(-chroma, chroma), (r - y).clamp(-chroma, chroma)
    r2, b2 = y2 + cr, y2 + cb
    g2 = (y2 - 0.299 * r2 - 0.114 * b2) / 0.587
    return torch.stack([r2, g2, b2], dim=1)


def _reduce(x: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, ceil(H/2), ceil(W/2))`` sums over the binomial 4x4 footprint
    ``[1, 3, 3, 1] / 4`` (outer product) at stride 2: each input texel's total contribution is 1.
    Smoother than 2x2 box sums, whose fills from a few sources show the pyramid's blocks."""
    n, (H, W) = x.shape[1], x.shape[-2:]
    k1 = x.new_tensor([1.0, 3.0, 3.0, 1.0]) / 4
    k = (k1[:, None] * k1[None, :]).expand(n, 1, 4, 4)
    return F.conv2d(F.pad(x, (1, 1 + W % 2, 1, 1 + H % 2)), k, stride=2, groups=n)


def push_pull_fill(
    texture: Tensor, weight: Tensor, fallback: Sequence[float] | float = DEFAULT_SKIN_ALBEDO
) -> Tensor:
    """Fill low-weight texels smoothly from their surroundings (push-pull pyramid, binomial
    reduction, bilinear expansion).

    Args:
        texture: ``(B, C, H, W)``.
        weight: ``(B, 1, H, W)`` in ``[0, 1]``: 1 keeps a texel as it is, 0 fills it completely,
            values between blend.
        fallback: colour (``C`` values or a scalar) for an image whose weights are all 0.

    Returns:
        ``(B, C, H, W)``: ``w * texture + (1 - w) * smooth fill``; finite everywhere.
    """
    if (
        texture.dim() != 4
        or weight.dim() != 4
        or weight.shape[1] != 1
        or weight.shape[0] != texture.shape[0]
        or weight.shape[-2:] != texture.shape[-2:]
    ):
        raise ValueError(
            f"texture must be (B, C, H, W) and weight (B, 1, H, W); got {tuple(texture.shape)} "
            f"and {tuple(weight.shape)}"
        )
    w = weight.to(texture.dtype).clamp(0, 1)
    c = torch.nan_to_num(texture) * w
    levels = [(c, w)]
    while min(c.shape[-2:]) > 1:
        c, w = _reduce(c), _reduce(w)
        scale = 1.0 / w.clamp(min=1.0)  # a coarse texel is fully known once its children weigh 1
        c, w = c * scale, w * scale
        levels.append((c, w))
    c, w = levels[-1]
    fb = torch.as_tensor(fallback, dtype=texture.dtype, device=texture.device).reshape(1, -1, 1, 1)
    col = torch.where(w > 0, c / w.clamp(min=1e-12), fb.expand_as(c))
    for c, w in reversed(levels[:-1]):
        H, W = c.shape[-2:]
        up = F.interpolate(
            col, size=(2 * col.shape[-2], 2 * col.shape[-1]), mode="bilinear", align_corners=False
        )
        col = c + (1 - w) * up[..., :H, :W]
    return col


def complete_texture(
    unwrapped: UnwrapResult,
    model: MorphableModel,
    fit: FitResult | None = None,
    mirror: str | None = "blend",
    use_albedo: bool = True,
    trusted_confidence: tuple[float, float] = (0.05, 0.15),
    feather: float = 0.01,
) -> Completion:
    """Fill every texel of an unwrapped texture (module doc).

    Args:
        unwrapped: from :func:`~morphface.uv.unwrap` (or :func:`fuse_unwraps`) with this ``model``.
        model: the morphable model.
        fit: the fit, for its ``tex_coeffs`` when the model has an albedo model.
        mirror: ``"blend"``, ``"fill"`` (see :func:`mirror_fill`) or ``None`` (no mirroring).
        use_albedo: fill from the model's albedo model when it has one.
        trusted_confidence: ``(lo, hi)``: texels seen (or mirrored) with a confidence below ``lo``
            are filled like unseen ones, and up to ``hi`` they are mixed with the fill: a few
            texels seen edge-on (the background behind a chin, hair beside a nose ridge) must not
            colour a whole hole around them.
        feather: texels kept next to a large hole in the layout (wider than 2% of the texture's side) are mixed
            with the smooth fill over a band whose scale is this fraction of the side (weight
            ``1 - 2.5 * blur(hole, feather * S)``): the skin at a hole's edge is often not the skin
            further in (a highlight along a profile, the shadow under a fringe), and a fill that
            meets it abruptly is a seam (a pale stripe down the nose ridge of a face turned by 50
            degrees). Smaller holes (around the eyes) do not blur their surroundings. 0 turns it off.

    Returns:
        :class:`Completion`; differentiable w.r.t. the unwrapped texture.
    """
    _check_unwrap(unwrapped)
    tex, conf, mask = unwrapped
    B = tex.shape[0]
    source = torch.where(mask > 0.5, SOURCE_SEEN, SOURCE_FILL).to(torch.int64)
    if mirror is not None:
        unwrapped, mirrored = mirror_fill(unwrapped, model, mode=mirror)
        tex, conf, mask = unwrapped
        source = torch.where(mirrored, SOURCE_MIRROR, torch.where(mask > 0.5, source, SOURCE_FILL))
    if use_albedo and model.has_albedo:
        tmap = texel_map(model, tex.shape[-1])
        coeffs = fit.tex_coeffs if fit is not None else None
        alb = model.albedo(coeffs, batch_size=B).to(tex)
        alb_tex = texel_attributes(alb, tmap)
        inside = tmap.mask[None, None].to(tex)
        seen = mask * inside
        # Per-channel gain: the albedo model has no lighting; match it to what the photo shows.
        gain = (tex * seen).sum((2, 3), keepdim=True) / (alb_tex * seen).sum((2, 3), keepdim=True).clamp(
            min=1e-6
        )
        gain = torch.where(seen.sum((2, 3), keepdim=True) > 0, gain, torch.ones_like(gain))
        fill = inside * (1 - mask)
        tex = tex + fill * alb_tex * gain
        source = torch.where(fill > 0.5, SOURCE_ALBEDO, source)
    else:
        fill = torch.zeros_like(mask)
    lo, hi = trusted_confidence
    weight = torch.maximum(mask * ((conf - lo) / max(hi - lo, 1e-6)).clamp(0.0, 1.0), fill)
    if feather > 0:
        S = tex.shape[-1]
        # Holes in the layout: its outside is not skin that a fill meets.
        inside = texel_map(model, S).mask[None, None].to(weight)
        hole = (weight < 0.5).to(weight) * inside
        r = max(1, round(0.01 * S))
        large = dilate(erode(hole, r), r) * hole
        weight = torch.where(hole > 0, weight, weight * (1 - 2.5 * blur(large, feather * S)).clamp(0.0, 1.0))
    source = torch.where(weight < 0.5, SOURCE_FILL, source)
    out = push_pull_fill(tex, weight, fallback=DEFAULT_SKIN_ALBEDO).clamp(0.0, 1.0)
    return Completion(texture=out, confidence=conf, source=source)


def fuse_unwraps(unwraps: UnwrapResult | Sequence[UnwrapResult], sharpness: float = 2.0) -> UnwrapResult:
    """Fuse several unwraps of one identity into one texture, weighting each texel by confidence.

    Args:
        unwraps: one :class:`UnwrapResult` whose batch holds the views, or a sequence of them (their
            batches are concatenated).
        sharpness: weights are ``confidence ** sharpness``; larger values trust the squarest view
            more (``inf`` would pick it alone).

    Returns:
        :class:`UnwrapResult` with batch 1: the weighted mean colour, the largest confidence, and the
        union of the masks.
    """
    if not isinstance(unwraps, UnwrapResult):
        parts = list(unwraps)
        if not parts:
            raise ValueError("fuse_unwraps needs at least one unwrap")
        sizes = {tuple(p.texture.shape[1:]) for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"all unwraps must have the same texture shape; got {sorted(sizes)}")
        unwraps = UnwrapResult(*(torch.cat(list(t)) for t in zip(*parts)))
    _check_unwrap(unwraps)
    tex, conf, mask = unwraps
    w = conf.clamp(min=0).pow(sharpness) * mask
    total = w.sum(0, keepdim=True)
    fused = (w * tex).sum(0, keepdim=True) / total.clamp(min=1e-12)
    seen = (mask.amax(0, keepdim=True) > 0.5) & (total > 0)
    seen_f = seen.to(tex.dtype)
    return UnwrapResult(texture=fused * seen_f, confidence=conf.amax(0, keepdim=True) * seen_f, mask=seen_f)
