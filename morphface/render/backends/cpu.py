"""``cpu`` backend: a z-buffer rasteriser compiled with numba.

For each triangle, the pixels whose centres lie in its bounding box are tested with three edge
functions evaluated directly at the pixel centre (no incremental stepping, so every pixel sees
bit-identical values). Each edge function is computed from the edge's endpoints taken in a
canonical (lexicographic) order, so two triangles sharing an edge evaluate exactly the same number
with opposite signs; together with the top-left fill rule this covers a pixel centre that falls
exactly on a shared edge once and only once. Depths are compared as float32 with ties going to the
smaller triangle id, which is exactly what the ``torch`` backend does with its packed keys.

Parallelism: ``prange`` over (image, horizontal band) work items, each owning its pixels, so no
two threads write the same pixel. A batch with at least as many images as threads uses one band
per image; a smaller batch splits each image into ``ceil(threads / B)`` bands (every band scans
all triangles' bounding boxes, so more bands than needed cost time; parallelising over triangles
instead would need atomic depth tests).

Measured (2 shared cores, 1 thread, BFM-sized 69k-triangle mesh filling ~60% of a 256x256
image, batch 8): about 2 ms per image, i.e. ~30 ns per triangle.

This module imports numba at import time; the backend registry imports it only when the backend
is first used. The kernel is compiled on first use (``cache=True``: later processes reuse the
compiled code from numba's cache directory, ``NUMBA_CACHE_DIR`` when set).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from .. import _numba  # noqa: F401  (threading layer, before any kernel compiles)
from .base import RasterBackend, RasterInputs, ndc_to_screen

__all__ = ["CpuBackend"]

@njit(inline="always", cache=True)
def _edge_setup(ax, ay, bx, by, s):  # pragma: no cover - compiled
    """Canonical endpoints of edge a->b, the sign that orients it and whether it owns ties."""
    if ax < bx or (ax == bx and ay < by):
        sign = s
        cx, cy, dx, dy = ax, ay, bx, by
    else:
        sign = -s
        cx, cy, dx, dy = bx, by, ax, ay
    ex = sign * (dx - cx)
    ey = sign * (dy - cy)
    # Top-left rule in pixel space (y down) for an edge whose interior lies on its positive side.
    owned = ey < 0.0 or (ey == 0.0 and ex > 0.0)
    return cx, cy, dx, dy, sign, owned


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _raster_kernel(scr, faces, valid, H, W, perspective, n_bands, out):  # pragma: no cover - compiled
    """z-buffer visibility: ``scr (B, V, 3)`` float64 pixel x, y, depth -> ``out (B, H, W)`` ids."""
    B = scr.shape[0]
    F = faces.shape[0]
    band_h = (H + n_bands - 1) // n_bands
    zbuf = np.empty((B, H, W), np.float32)
    inf32 = np.float32(np.inf)
    for item in prange(B * n_bands):
        b = item // n_bands
        r0 = (item % n_bands) * band_h
        r1 = min(H, r0 + band_h)
        for i in range(r0, r1):
            for j in range(W):
                zbuf[b, i, j] = inf32
                out[b, i, j] = -1
        for f in range(F):
            if not valid[b, f]:
                continue
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            x0 = scr[b, i0, 0]
            y0 = scr[b, i0, 1]
            x1 = scr[b, i1, 0]
            y1 = scr[b, i1, 1]
            x2 = scr[b, i2, 0]
            y2 = scr[b, i2, 1]
            # Rows whose centre i + 0.5 lies in [ymin, ymax], clipped to this band (the float
            # bounds are clamped first so that far-away vertices cannot overflow the int cast).
            lo = max(r0, math.ceil(max(min(y0, y1, y2), -1.0) - 0.5))
            hi = min(r1 - 1, math.floor(min(max(y0, y1, y2), H + 1.0) - 0.5))
            if lo > hi:
                continue
            clo = max(0, math.ceil(max(min(x0, x1, x2), -1.0) - 0.5))
            chi = min(W - 1, math.floor(min(max(x0, x1, x2), W + 1.0) - 0.5))
            if clo > chi:
                continue
            area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if area2 == 0.0:
                continue
            s = 1.0 if area2 > 0.0 else -1.0
            # Edge k is opposite vertex k: v1->v2, v2->v0, v0->v1.
            a0x, a0y, b0x, b0y, s0, o0 = _edge_setup(x1, y1, x2, y2, s)
            a1x, a1y, b1x, b1y, s1, o1 = _edge_setup(x2, y2, x0, y0, s)
            a2x, a2y, b2x, b2y, s2, o2 = _edge_setup(x0, y0, x1, y1, s)
            z0 = scr[b, i0, 2]
            z1 = scr[b, i1, 2]
            z2 = scr[b, i2, 2]
            for i in range(lo, hi + 1):
                py = i + 0.5
                for j in range(clo, chi + 1):
                    px = j + 0.5
                    e0 = s0 * ((a0x - px) * (b0y - py) - (a0y - py) * (b0x - px))
                    if e0 < 0.0 or (e0 == 0.0 and not o0):
                        continue
                    e1 = s1 * ((a1x - px) * (b1y - py) - (a1y - py) * (b1x - px))
                    if e1 < 0.0 or (e1 == 0.0 and not o1):
                        continue
                    e2 = s2 * ((a2x - px) * (b2y - py) - (a2y - py) * (b2x - px))
                    if e2 < 0.0 or (e2 == 0.0 and not o2):
                        continue
                    tot = e0 + e1 + e2
                    if not tot > 0.0:
                        continue
                    if perspective:
                        z = tot / (e0 / z0 + e1 / z1 + e2 / z2)
                    else:
                        z = (e0 * z0 + e1 * z1 + e2 * z2) / tot
                    zf = np.float32(z)
                    if zf < zbuf[b, i, j]:
                        zbuf[b, i, j] = zf
                        out[b, i, j] = f


class CpuBackend(RasterBackend):
    """Numba z-buffer rasteriser; takes tensors on any device (non-CPU ones are copied)."""

    name = "cpu"

    def is_available(self) -> bool:
        return True

    def supports(self, device: torch.device) -> bool:
        return True

    def visibility(self, inputs: RasterInputs) -> Tensor:
        H, W = inputs.image_size
        device = inputs.verts_ndc.device
        scr = ndc_to_screen(inputs.verts_ndc, inputs.image_size).cpu().contiguous().numpy()
        faces = inputs.faces.cpu().contiguous().numpy()
        valid = inputs.face_valid.cpu().contiguous().numpy()
        B = scr.shape[0]
        out = np.empty((B, H, W), np.int64)
        if B == 0 or H == 0 or W == 0:
            return torch.from_numpy(out).to(device)
        # Each thread scans every triangle of its band, so use as few bands as keep all threads busy.
        n_bands = max(1, min(-(-numba.get_num_threads() // B), H // 8))
        _raster_kernel(scr, faces, valid, H, W, bool(inputs.perspective), n_bands, out)
        return torch.from_numpy(out).to(device)
