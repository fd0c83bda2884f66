"""Small 2D painting helpers for procedural textures: distances to segments, polygon tests, soft edges.

Coordinates are any 2D frame (texel pixels or UV units); shapes are ``(P, 2)`` query points and
``(E, 2)`` segment ends or polygon corners.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["segment_distance", "inside_polygon", "soft_edge"]


def segment_distance(points: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance ``(P,)`` from each of ``points`` ``(P, 2)`` to the nearest segment ``a[i] -> b[i]``
    (``(E, 2)`` each): ``(line[:-1], line[1:])`` for a polyline, ``(poly, poly.roll(-1, 0))`` for a
    closed outline."""
    ab = b - a
    ap = points[:, None] - a[None]
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return (ap - t[..., None] * ab).norm(dim=-1).amin(-1)


def inside_polygon(points: Tensor, polygon: Tensor) -> Tensor:
    """Even-odd rule: ``(P,)`` bool, whether each of ``points`` ``(P, 2)`` lies inside the closed
    ``polygon`` ``(E, 2)``."""
    a, b = polygon, polygon.roll(-1, 0)
    py = points[:, None, 1]
    crosses = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    dy = (b[:, 1] - a[:, 1]).where(b[:, 1] != a[:, 1], b.new_ones(()))
    x_at = a[None, :, 0] + (py - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / dy[None]
    return ((crosses & (points[:, None, 0] < x_at)).sum(-1) % 2) == 1


def soft_edge(distance: Tensor, radius: float, feather: float) -> Tensor:
    """1 within ``radius``, 0 beyond ``radius + feather``, smoothstep in between."""
    t = ((radius + feather - distance) / max(feather, 1e-6)).clamp(0, 1)
    return t * t * (3 - 2 * t)
