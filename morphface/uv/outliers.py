"""Distrust texels whose colour is not the face's skin colour: background and hair.

Two ways a face's texels get colours that are not the face's. (1) A fit is never pixel-exact at the
silhouette: where the fitted surface turns away from the camera (the far cheek and jaw of a turned
face, the side of the nose), texels land just outside the real face and sample the background or
hair. (2) Hair hangs in front of the face: a fringe over one temple, a lock over the near cheek.
:func:`reject_colour_outliers` marks such texels unseen, so that completion takes them from the
mirror side or fills them from their surroundings. Four rules, all on skin texels (not eyes, mouth):

- **grazing**: seen at a grazing angle (confidence < ``max_confidence``), a colour outlier, and the
  mirror texel was seen more squarely (by ``mirror_margin``). A grazing texel is also darker from
  shading, and with nothing better to replace it (a frontal face's two borders), it is kept.
- **one-sided**: a colour outlier at any angle whose mirror texel was seen and is *not* one (hair
  over one cheek; a beard or eyebrows, being on both sides, stay). Outside the eyebrow band (an
  asymmetric brow raise must survive), and only patches wider than ``min_patch`` of the texture
  (a mole stays).
- **framing hair**: a strong outlier (``hair_threshold``) above the nose tip, off the eyebrows, in
  a patch that reaches the border of the layout: hair that frames the face from the temples, on
  both sides at once (which the one-sided rule cannot see). Below the nose tip only the part of a
  patch that lies mostly above it (a lock hanging from the temple down the cheek): a beard stays,
  even when sideburns join it to the hair; the nostrils and eyebrows do not reach the border. A
  fringe on the forehead (above the brows, between the outer eye corners) stays (``keep_fringe``):
  the skin under it is seen on neither side, and filling it invented a bald, pale forehead with a
  straight top edge where the layout ends (a face turned by 50 degrees under a fringe); at the
  temples the head's own hair, moved with it, frames the frontal face instead.
- **centre band**: a grazing outlier below the brows within ``centre_band_mm`` of the face's
  symmetry plane (the nose ridge of a profile, behind which hair or background shows), even where
  its mirror is no better: the mirror there is the texel itself or its unseen twin. Completion fills
  it from its neighbours. (The same rule over the whole face costs 1.3-1.6 dB on synthetic faces at
  15-60 degrees: texture detail near the far border is lost to the smooth fill; on the forehead it
  cut a pale notch into a fringe.)

Each rule's patches then grow through neighbouring texels that are weaker outliers (hysteresis): the
fringe of a patch of hair or background is a mix of its colour and the skin's, too close to the skin
to be rejected on its own, and left beside the hole it becomes a seam once the hole is filled.

The skin colour is modelled per image (:func:`~morphface.fitting.skin.fit_colour_model`) from the skin
texels seen squarely.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..fitting.skin import fit_colour_model
from ..morphable import MorphableModel
from ..render.regions import _segment_distance, region_vertex_mask
from ._cache import cached
from .blend import dilate, erode
from .complete import _check_unwrap, _sample_at_uv, mirror_texel_uv
from .texel import texel_map
from .unwrap import UnwrapResult

__all__ = ["reject_colour_outliers"]


def _texel_points(model: MorphableModel, tmap) -> Tensor:
    """``(N, 3)`` mm: each covered texel's point on the model's mean shape."""
    return (model.mean[tmap.vertex_ids] * tmap.weights[..., None].to(model.mean)).sum(1)


def _brow_band(model: MorphableModel, margin_mm: float = 8.0) -> Tensor:
    """``(V,)`` bool: vertices within ``margin_mm`` (frontal view of the mean shape) of the iBUG
    eyebrow polylines (points 17-21, 22-26); all False for a model without them (cached)."""

    def build() -> Tensor:
        mean, lm = model.mean.detach(), model.landmarks
        band = torch.zeros(mean.shape[0], dtype=torch.bool, device=mean.device)
        if lm.numel() != 68 or bool((lm[17:27] < 0).any()):
            return band
        for ids in (list(range(17, 22)), list(range(22, 27))):
            poly = mean[lm[ids], :2]
            band |= _segment_distance(mean[:, :2], poly[:-1], poly[1:]).amin(-1) <= margin_mm
        return band

    return cached(model, "brow_band", float(margin_mm), build)


def _forehead(model: MorphableModel, points: Tensor) -> tuple[Tensor, Tensor]:
    """``(N,)`` bool twice for texel ``points`` ``(N, 3)`` (mean shape, mm): above the highest eyebrow
    landmark (iBUG 17-26), and that between the outer eye corners (36, 45); all False for a model
    without those landmarks."""
    lm = model.landmarks
    none = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    if lm.numel() != 68 or bool((lm[17:27] < 0).any()) or int(lm[36]) < 0 or int(lm[45]) < 0:
        return none, none
    mean = model.mean.to(points)
    above = points[:, 1] > mean[lm[17:27], 1].max()
    return above, above & (points[:, 0].abs() < mean[lm[[36, 45]], 0].abs().max())


def _framing_hair(model: MorphableModel, tmap, candidates: Tensor, radius: int) -> Tensor:
    """``(B, N)`` the ``candidates`` that, after an opening of ``radius`` texels, belong to a connected
    patch touching the layout's border band: the patch's part above the nose tip (mean shape), and
    its part below when most of the patch lies above (a lock hanging from the temple down the
    cheek; a beard, mostly below, stays, even when sideburns join it to the hair)."""
    from scipy.ndimage import label

    y = _texel_points(model, tmap)[:, 1]
    lm = model.landmarks
    tip_y = model.mean[lm[30], 1] if lm.numel() == 68 and int(lm[30]) >= 0 else y.new_tensor(float("inf"))
    upper = (y > tip_y).to(candidates.device)
    if not bool((candidates & upper[None]).any()):
        return torch.zeros_like(candidates)
    f = torch.float32
    cmap = tmap.scatter(candidates[..., None].to(f).cpu())
    cmap = dilate(erode(cmap, radius), radius) * cmap
    inside = tmap.mask.to(f).cpu()[None, None]
    border = (inside - erode(inside, 3 * radius)) > 0.5  # (1, 1, S, S)
    upper_map = tmap.scatter(upper[None, :, None].to(f).cpu())[0, 0] > 0.5
    out = torch.zeros_like(cmap, dtype=torch.bool)
    for b in range(cmap.shape[0]):
        labels, n = label(cmap[b, 0].numpy() > 0.5, structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
        if n == 0:
            continue
        labels = torch.from_numpy(labels).long()
        touching = torch.zeros(n + 1, dtype=torch.bool)
        touching[labels[border[0, 0]]] = True
        touching[0] = False  # not a patch
        mostly_above = 2 * torch.bincount(labels[upper_map], minlength=n + 1) >= torch.bincount(labels.flatten())
        out[b, 0] = touching[labels] & (upper_map | mostly_above[labels])
    return tmap.gather(out.to(f))[..., 0].to(candidates.device) > 0.5


def reject_colour_outliers(
    unwrapped: UnwrapResult,
    model: MorphableModel,
    max_confidence: float = 0.5,
    reference_confidence: float = 0.5,
    threshold: float = 3.5,
    mirror_margin: float = 0.2,
    one_sided: bool = True,
    inlier_threshold: float = 2.0,
    min_patch: float = 0.01,
    framing_hair: bool = True,
    hair_threshold: float = 5.0,
    keep_fringe: bool = True,
    centre_band_mm: float = 6.0,
    grow: float = 0.02,
    grow_threshold: float = 2.5,
) -> tuple[UnwrapResult, Tensor]:
    """Mark skin texels whose colour is far from the face's skin colour as unseen (module doc).

    Args:
        unwrapped: from :func:`~morphface.uv.unwrap` with this ``model``.
        model: the model (its skin region: :func:`~morphface.render.region_vertex_mask`).
        max_confidence: texels seen with a confidence below this count as grazing.
        reference_confidence: skin texels seen with at least this confidence define the skin colour.
        threshold: a texel is an outlier if one of its luma/chroma values is more than this many
            robust standard deviations from the centre.
        mirror_margin: a grazing texel is rejected if its mirror texel was seen with a confidence at
            least this much higher (the mirror then replaces it in completion).
        one_sided: also reject outliers at any angle whose mirror texel was seen as an inlier.
        inlier_threshold: a mirror texel within this many robust standard deviations is an inlier.
        min_patch: one-sided and framing-hair rejections are kept only in patches at least this wide,
            as a fraction of the texture's side (a morphological opening).
        framing_hair: also reject texels off the eyebrows, further than ``hair_threshold`` robust
            SDs from the skin colour, in patches that reach the layout's border, above the nose tip
            (hair that frames a face from the temples or the fringe, on both sides) and below it
            where the patch lies mostly above (module doc).
        hair_threshold: see ``framing_hair``.
        keep_fringe: the framing-hair rule leaves the forehead alone (above the brows' highest
            landmark, between the outer eye corners; module doc). Without the iBUG-68 landmarks it has
            no forehead and rejects everywhere.
        centre_band_mm: half-width (mean shape, mm) of the middle band below the brows where grazing
            outliers are rejected even without a squarer mirror.
        grow: rejected patches then grow by up to this fraction of the texture's side through
            skin texels beyond ``grow_threshold`` robust SDs (off the eyebrows): a patch's fringe
            mixes the outlier's colour with the skin's (blur, antialiasing) and stays under
            ``threshold``, and kept next to the hole it leaves a seam (hysteresis, as in Canny's
            edge linking).
        grow_threshold: see ``grow``.

    Returns:
        ``(result, rejected)``: the unwrap with rejected texels' mask, confidence and colour set to 0,
        and the ``(B, 1, S, S)`` bool map of rejected texels. Images with fewer than 16 reference
        texels are returned unchanged.
    """
    _check_unwrap(unwrapped)
    tex, conf, mask = unwrapped
    S = tex.shape[-1]
    tmap = texel_map(model, S)
    skin_v = region_vertex_mask(model, "skin").to(tmap.vertex_ids.device)
    skin = skin_v[tmap.vertex_ids].all(-1).to(tex.device)  # (N,) texels whose triangle is all skin
    brows = _brow_band(model).to(tmap.vertex_ids.device)[tmap.vertex_ids].any(-1).to(tex.device)
    c = tmap.gather(conf)[..., 0]
    seen = tmap.gather(mask)[..., 0] > 0.5
    ref = seen & skin[None] & (c >= reference_confidence)  # (B, N)
    colours = tmap.gather(tex)
    skin_model = fit_colour_model(colours, ref)
    n_ref = skin_model.count
    z = skin_model.zscore(colours)  # (B, N)
    muv = mirror_texel_uv(model, S).to(tex.device)
    seen_f = seen.to(tex.dtype)[..., None]
    maps = tmap.scatter(torch.cat([c[..., None] * seen_f, z[..., None] * seen_f, seen_f], dim=-1))
    m = _sample_at_uv(maps, muv)  # (B, N, 3): mask-weighted confidence, z, mask
    m_seen = m[..., 2] > 0.5
    m_w = m[..., 2].clamp(min=1e-6)
    m_conf = torch.where(m_seen, m[..., 0] / m_w, torch.zeros_like(m[..., 0]))
    m_z = torch.where(m_seen, m[..., 1] / m_w, torch.full_like(m[..., 1], float("inf")))
    outlier = seen & skin[None] & (z > threshold) & (n_ref >= 16)[:, None]
    grazing = c < max_confidence
    bad = outlier & grazing & (m_conf >= c + mirror_margin)
    # The middle band (the nose ridge): mirror texels there are the texel itself or its unseen twin.
    points = _texel_points(model, tmap)
    above, forehead = _forehead(model, points)
    centre_band = ((points[:, 0].abs() < centre_band_mm) & ~above).to(tex.device)
    bad |= outlier & grazing & centre_band[None]
    if one_sided:
        side = outlier & ~brows[None] & m_seen & (m_z < inlier_threshold)
        r = max(1, round(0.5 * min_patch * S))
        side_map = tmap.scatter(side[..., None].to(tex.dtype))
        side_map = dilate(erode(side_map, r), r) * tmap.scatter(side[..., None].to(tex.dtype))
        bad |= tmap.gather(side_map)[..., 0] > 0.5
    if framing_hair:
        hair = seen & skin[None] & ~brows[None] & (z > hair_threshold) & (n_ref >= 16)[:, None]
        hair = _framing_hair(model, tmap, hair, max(1, round(0.5 * min_patch * S)))
        bad |= hair & ~forehead.to(tex.device)[None] if keep_fringe else hair
    rejected = tmap.scatter(bad[..., None].to(tex.dtype))  # (B, 1, S, S)
    # Hysteresis: the fringes of rejected patches go with them.
    weak = tmap.scatter((seen & skin[None] & ~brows[None] & (z > grow_threshold))[..., None].to(tex.dtype))
    for _ in range(round(grow * S)):
        grown = torch.maximum(rejected, dilate(rejected, 1) * weak)
        if torch.equal(grown, rejected):
            break
        rejected = grown
    rejected = rejected > 0.5
    keep = (~rejected).to(tex.dtype)
    return UnwrapResult(tex * keep, conf * keep, mask * keep), rejected
