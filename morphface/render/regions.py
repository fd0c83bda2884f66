"""Approximate per-vertex face regions ("eyes", "mouth", "skin") derived from the 68 landmarks.

The embedded ICT model (and most 3DMMs) carry no semantic labels for the eyes or the mouth, but
they do carry the iBUG 68-landmark vertex ids. On the model's *mean shape*, seen frontally
(the model frame looks at +z), the landmarks outline each eye (points 36-41 and 42-47) and the
outer lip contour (48-59). A vertex belongs to a region when its frontal (x, y) position lies inside
that polygon or within ``margin_mm`` of it, and it is not far behind the polygon's landmarks
(``z`` at least ``min landmark z - depth_mm``: keeps the region on the front surface, away from
geometry behind it such as a mouth socket). "skin" is every other vertex (the whole mesh, ears and
neck included). These are approximations for masks and loss weighting, not anatomical labels.

A model that already has vertex sets called ``"eyes"``, ``"mouth"`` or ``"skin"`` keeps them: the
derived labels are only used for names it lacks.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from ..errors import ModelFormatError
from ..morphable.model import MorphableModel

__all__ = ["face_region_labels", "region_vertex_mask", "REGION_NAMES"]

#: Region names :func:`face_region_labels` returns.
REGION_NAMES = ("eyes", "left_eye", "right_eye", "mouth", "skin")

# 0-based iBUG-68 polygons. Image-left eye (36-41) is the subject's right eye.
_POLYGONS = {"right_eye": list(range(36, 42)), "left_eye": list(range(42, 48)), "mouth": list(range(48, 60))}

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _segment_distance(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distances ``(N, E)`` from points ``(N, 2)`` to segments ``a -> b`` (``(E, 2)`` each)."""
    ab = b - a  # (E, 2)
    ap = p[:, None, :] - a[None]  # (N, E, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    return (ap - t[..., None] * ab).norm(dim=-1)


def _inside_polygon(p: Tensor, poly: Tensor) -> Tensor:
    """``(N,)`` bool: even-odd rule for points ``(N, 2)`` in a closed polygon ``(E, 2)``."""
    a, b = poly, poly.roll(-1, 0)
    py = p[:, None, 1]
    crosses = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    dy = torch.where(b[:, 1] == a[:, 1], torch.ones_like(b[:, 1]), b[:, 1] - a[:, 1])
    x_at = a[None, :, 0] + (py - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / dy[None]
    hits = crosses & (p[:, None, 0] < x_at)
    return hits.sum(-1) % 2 == 1


def _polygon_region(mean: Tensor, lm_ids: Tensor, margin_mm: float, depth_mm: float) -> Tensor:
    poly3 = mean[lm_ids]
    xy, poly = mean[:, :2], poly3[:, :2]
    near = _segment_distance(xy, poly, poly.roll(-1, 0)).amin(-1) <= margin_mm
    region = _inside_polygon(xy, poly) | near
    return region & (mean[:, 2] >= poly3[:, 2].amin() - depth_mm)


def face_region_labels(model: MorphableModel, margin_mm: float = 3.0, depth_mm: float = 15.0) -> dict[str, Tensor]:
    """Per-vertex region masks of ``model`` (cached per model for the default arguments).

    Args:
        model: a model with the 68 iBUG landmarks (or with vertex sets named after the regions).
        margin_mm: how far outside a landmark polygon (frontal view of the mean shape) a vertex may
            be and still belong to it.
        depth_mm: how far behind the polygon's nearest-to-back landmark a vertex may be.

    Returns:
        ``{"eyes", "left_eye", "right_eye", "mouth", "skin"}`` -> ``(V,)`` bool masks on the model's
        device; "skin" is the complement of eyes and mouth.

    Raises:
        ModelFormatError: the model has neither the needed landmarks nor vertex sets of those names.
    """
    key = (model.mean.data_ptr(), model.mean._version, model.mean.device, model.landmarks.data_ptr(),
           tuple(model.vertex_set_names), float(margin_mm), float(depth_mm))
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return dict(hit[1])
    have = set(model.vertex_set_names)
    mean = model.mean.detach()
    lm = model.landmarks
    out: dict[str, Tensor] = {}
    for name, ids in _POLYGONS.items():
        if name in have:
            out[name] = model.vertex_mask(name)
            continue
        if lm.numel() < 60 or bool((lm[ids] < 0).any()):
            raise ModelFormatError(
                f"model {model.name!r} has no vertex set {name!r} and lacks the iBUG-68 landmarks "
                f"{ids[0]}-{ids[-1]} needed to derive it (landmarks: {lm.numel()})")
        out[name] = _polygon_region(mean, lm[ids], margin_mm, depth_mm)
    out["eyes"] = model.vertex_mask("eyes") if "eyes" in have else out["left_eye"] | out["right_eye"]
    out["skin"] = model.vertex_mask("skin") if "skin" in have else ~(out["eyes"] | out["mouth"])
    _CACHE[model] = (key, out)
    return dict(out)


def region_vertex_mask(model: MorphableModel, name: str) -> Tensor:
    """``(V,)`` bool mask of a named region: a vertex set of the model, else a derived region."""
    if name in model.vertex_set_names:
        return model.vertex_mask(name)
    labels = face_region_labels(model)
    if name not in labels:
        raise KeyError(f"unknown region {name!r}: model {model.name!r} has vertex sets {model.vertex_set_names} "
                       f"and derived regions {list(labels)}")
    return labels[name]
