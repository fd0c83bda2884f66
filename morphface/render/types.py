"""Result types of the rendering layer."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["Fragments", "Rendered"]


class Fragments(NamedTuple):
    """What :func:`morphface.render.rasterize` returns: the nearest surface at each pixel centre.

    Attributes:
        pix_to_face: ``(B, H, W)`` int64 id of the visible triangle (row of ``faces``), ``-1`` on
            background.
        bary: ``(B, H, W, 3)`` barycentric weights of the visible triangle's three corners at the
            pixel centre; perspective-correct for a perspective camera; zeros on background.
            Differentiable w.r.t. the vertex positions (the visibility itself is not).
        depth: ``(B, H, W)`` interpolated view depth in mm (the third NDC coordinate); 0 on
            background. Differentiable w.r.t. the vertex positions.
        mask: ``(B, H, W)`` bool, True where a triangle covers the pixel centre.
    """

    pix_to_face: Tensor
    bary: Tensor
    depth: Tensor
    mask: Tensor


class Rendered(NamedTuple):
    """An image and its coverage mask, as the renderers return them.

    Attributes:
        image: ``(B, C, H, W)`` float; ``C = 3`` RGB in ``[0, 1]`` for colour renders, 0 on
            background.
        mask: ``(B, 1, H, W)`` float in ``{0, 1}``: 1 where the mesh covers the pixel centre.
    """

    image: Tensor
    mask: Tensor
