"""Distrust grazing texels whose colour is not the face's skin colour.

A fit is never pixel-exact at the silhouette: where the fitted surface turns away from the camera
(the far cheek and jaw of a turned face, the side of the nose), its texels may land just outside the
real face and sample the background or hair. Those texels are seen at a grazing angle, and their
colour is unlike the skin seen squarely elsewhere on the same face. :func:`reject_colour_outliers`
marks them unseen, so that completion takes them from the mirror side instead. Only texels whose
mirror texel was seen more squarely are rejected: a grazing texel is also darker from shading, and
with nothing better to replace it (a frontal face's two borders), keeping it is the better choice.

The skin colour is modelled per image by the robust centre (median) and spread (scaled median
absolute deviation) of luma and two chroma differences over the skin texels seen squarely: no
trained skin detector, and tolerant of beards and uneven light (the spread grows with them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..morphable import MorphableModel
from ..render.regions import region_vertex_mask
from .complete import _check_unwrap, _sample_at_uv, mirror_texel_uv
from .texel import texel_map
from .unwrap import UnwrapResult

__all__ = ["reject_colour_outliers"]

_MAD_TO_STD = 1.4826
# Floors of the spread (colour units in [0, 1]): a very even face must not make every shade an outlier.
_MIN_SPREAD = (0.03, 0.012, 0.012)


def _luma_chroma(rgb: Tensor) -> Tensor:
    """``(..., 3)`` RGB -> ``(..., 3)`` (Y, B - Y, R - Y), BT.601 luma."""
    y = rgb @ rgb.new_tensor([0.299, 0.587, 0.114])
    return torch.stack([y, rgb[..., 2] - y, rgb[..., 0] - y], dim=-1)


def reject_colour_outliers(
    unwrapped: UnwrapResult,
    model: MorphableModel,
    max_confidence: float = 0.5,
    reference_confidence: float = 0.5,
    threshold: float = 3.5,
    mirror_margin: float = 0.2,
) -> tuple[UnwrapResult, Tensor]:
    """Mark grazing skin texels whose colour is far from the face's skin colour as unseen.

    Args:
        unwrapped: from :func:`~morphface.uv.unwrap` with this ``model``.
        model: the model (its skin region: :func:`~morphface.render.region_vertex_mask`).
        max_confidence: only texels seen with a confidence below this can be rejected.
        reference_confidence: skin texels seen with at least this confidence define the skin colour.
        threshold: a texel is an outlier if one of its luma/chroma values is more than this many
            robust standard deviations from the centre.
        mirror_margin: a texel is only rejected if its mirror texel was seen with a confidence at
            least this much higher (the mirror then replaces it in completion).

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
    col = _luma_chroma(tmap.gather(tex))  # (B, N, 3)
    c = tmap.gather(conf)[..., 0]
    seen = tmap.gather(mask)[..., 0] > 0.5
    ref = seen & skin[None] & (c >= reference_confidence)  # (B, N)
    n_ref = ref.sum(1)
    nan = torch.full_like(col, float("nan"))
    ref_col = torch.where(ref[..., None], col, nan)
    centre = torch.nanmedian(ref_col, dim=1, keepdim=True).values  # (B, 1, 3)
    spread = _MAD_TO_STD * torch.nanmedian((ref_col - centre).abs(), dim=1, keepdim=True).values
    spread = torch.maximum(spread, spread.new_tensor(_MIN_SPREAD))
    z = ((col - centre) / spread).abs().amax(-1)  # (B, N)
    m = _sample_at_uv(torch.cat([conf * mask, mask], dim=1), mirror_texel_uv(model, S).to(tex.device))
    m_conf = torch.where(m[..., 1] > 0.5, m[..., 0] / m[..., 1].clamp(min=1e-6), torch.zeros_like(m[..., 0]))
    bad = seen & skin[None] & (c < max_confidence) & (z > threshold) & (n_ref >= 16)[:, None]
    bad &= m_conf >= c + mirror_margin
    rejected = tmap.scatter(bad[..., None].to(tex.dtype)) > 0.5  # (B, 1, S, S)
    keep = (~rejected).to(tex.dtype)
    return UnwrapResult(tex * keep, conf * keep, mask * keep), rejected
