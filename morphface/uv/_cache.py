"""Per-model caches for the UV layer (layouts, texel maps, symmetry maps).

A cache entry lives as long as its model (a weak reference) and is dropped when the model's
geometry buffers change in place, move to another device or change dtype: the key records the
buffers' storage pointers, version counters, devices and dtypes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import TypeVar

from torch import Tensor

from ..morphable.model import MorphableModel

T = TypeVar("T")

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(t: Tensor) -> tuple:
    return (t.data_ptr(), t._version, t.device, t.dtype, tuple(t.shape))


def model_fingerprint(model: MorphableModel) -> tuple:
    """What a cached value derived from ``model``'s mean shape, triangles, UVs and landmarks depends on."""
    return tuple(
        _fingerprint(t) for t in (model.mean, model.triangles, model.uv, model.uv_faces, model.landmarks)
    )


def cached(model: MorphableModel, name: str, key: Hashable, build: Callable[[], T]) -> T:
    """``build()`` once per ``(model, name, key)``; rebuilt when the model's buffers change."""
    per_model = _CACHES.setdefault(model, {})
    fp = model_fingerprint(model)
    hit = per_model.get((name, key))
    if hit is not None and hit[0] == fp:
        return hit[1]
    value = build()
    per_model[(name, key)] = (fp, value)
    return value
