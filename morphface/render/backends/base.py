"""The interface every rasterisation backend implements: visibility only.

A backend answers one question: which triangle is nearest at the centre of each pixel. It gets
the vertices in NDC (``x, y`` in ``[-1, 1]`` with ``(-1, -1)`` the top-left image corner and y
down; third coordinate the depth in mm), the shared ``(F, 3)`` faces and a ``(B, F)`` mask of
the triangles it may draw (the caller already dropped triangles with non-finite vertices, with
a vertex nearer than ``znear`` for a perspective camera, and back faces when culling). It returns
``(B, H, W)`` int64 triangle ids with ``-1`` on background. No gradient flows through it: the
barycentrics and depth are recomputed, differentiably, by code shared by all backends
(:mod:`morphface.render.rasterizer`).

Rules every backend follows (as closely as its rasteriser allows): pixel ``(i, j)`` is sampled at
its centre, NDC ``((2j + 1) / W - 1, (2i + 1) / H - 1)``; the nearest surface (smallest depth)
wins; both windings are drawn; zero-area triangles never win.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RasterInputs", "RasterBackend", "ndc_to_screen"]


@dataclass(frozen=True)
class RasterInputs:
    """What a backend's :meth:`RasterBackend.visibility` receives (all detached, same device).

    Attributes:
        verts_ndc: ``(B, V, 3)`` float NDC x, y (y down) and depth in mm.
        faces: ``(F, 3)`` int64 vertex ids.
        face_valid: ``(B, F)`` bool; False for triangles the backend must not draw.
        image_size: ``(H, W)``.
        perspective: True if depth divides the image coordinates (the depth of a point inside a
            triangle is then the harmonic interpolation of its corners' depths).
    """

    verts_ndc: Tensor
    faces: Tensor
    face_valid: Tensor
    image_size: tuple[int, int]
    perspective: bool


def ndc_to_screen(verts_ndc: Tensor, image_size: tuple[int, int], dtype: torch.dtype = torch.float64) -> Tensor:
    """``(B, V, 3)`` NDC -> ``(B, V, 3)`` pixel x, pixel y (centres at +0.5) and depth, in ``dtype``.

    The cpu and torch backends both start from exactly this tensor, so that they evaluate the same
    floating-point edge functions and agree pixel for pixel.
    """
    H, W = image_size
    v = verts_ndc.to(dtype)
    scale = v.new_tensor([W / 2.0, H / 2.0])
    return torch.cat([(v[..., :2] + 1.0) * scale, v[..., 2:3]], dim=-1)


class RasterBackend(ABC):
    """A visibility rasteriser. Subclasses set :attr:`name` and implement the three methods."""

    #: The name ``rasterize(..., backend=name)`` selects it by.
    name: str = ""

    @abstractmethod
    def is_available(self) -> bool:
        """True if the backend can run on this machine at all (its imports work)."""

    @abstractmethod
    def supports(self, device: torch.device) -> bool:
        """True if the backend can take tensors on ``device`` (possibly by copying them)."""

    @abstractmethod
    def visibility(self, inputs: RasterInputs) -> Tensor:
        """``(B, H, W)`` int64 id of the nearest valid triangle at each pixel centre, ``-1`` on
        background, on the inputs' device."""

    def unavailable_reason(self) -> str:
        """Why :meth:`is_available` is False (for error messages)."""
        return f"backend {self.name!r} is not available"
