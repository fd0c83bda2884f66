"""Closing a face mesh's holes (eye and mouth openings) with textured caps.

The embedded ICT model, like most face masks, is open at the eyes and the mouth. Rendered alone,
those openings are holes through which the background shows; for frontalisation the eyes and
the inside of the mouth must come from the photo like the rest of the face. :func:`fill_holes`
adds, for every boundary loop except the outer rim, one new vertex at the loop's centroid and a fan
of triangles from it to the loop's edges (oriented like the mesh). The new vertex follows
identity and expression as the mean of its loop's vertices, so a cap opens with the mouth and
closes with a blink.

**UVs of the caps.** The openings have almost no area in a typical layout (the ICT eye is a slit
2 texels tall in a 512 texture), so each cap gets its own chart: the loop's vertices projected on
the plane of the hole (axes: the model's x direction and its perpendicular, seen from outside),
scaled to the layout's median texel density, and placed in the free space of the texture nearest
to the hole's own UVs (the charts are per-corner UVs, so the loop's vertices get a second UV
entry: a seam along the rim of the hole). The chart is at least half as tall as it is wide, so a
mouth that opens still has texels. When no free space fits even a shrunken chart, the cap is
laid in place, inside the hole's own UV outline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..morphable.model import MorphableModel
from ._cache import cached
from .layout import model_uv_layout, uv_signed_areas
from .mesh import split_rim_and_holes

__all__ = ["fill_holes", "CAP_VERTEX_SET"]

#: Name of the vertex set holding the cap centre vertices added by :func:`fill_holes`.
CAP_VERTEX_SET = "hole_caps"


def _hole_frame(points: Tensor, centre: Tensor) -> tuple[Tensor, Tensor]:
    """Two in-plane axes of a hole (``e1`` close to +x, ``e2 = n x e1``) from its loop ``(N, 3)``."""
    a, b = points - centre, points.roll(-1, 0) - centre
    n = torch.linalg.cross(b, a, dim=-1).sum(0)  # area vector of the (b, a, centre) fan: the cap's outside
    n = F.normalize(n, dim=0, eps=1e-12)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=points.dtype, device=points.device)
    e1 = x - (x @ n) * n
    if float(e1.norm()) < 1e-6:  # a hole facing sideways: any in-plane axis
        e1 = torch.tensor([0.0, 1.0, 0.0], dtype=points.dtype, device=points.device)
        e1 = e1 - (e1 @ n) * n
    e1 = F.normalize(e1, dim=0)
    return e1, torch.linalg.cross(n, e1, dim=0)


def _occupancy(layout, grid: int) -> Tensor:
    """``(G, G)`` bool grid cells touched by the layout (dilated by a cell, border cells included)."""
    from .texel import rasterize_layout

    hit = rasterize_layout(layout, grid).mask[0].to(torch.float32)
    # Texel centres miss thin triangles: draw at 4x and pool, then dilate by one cell.
    fine = rasterize_layout(layout, 4 * grid).mask[0].to(torch.float32)
    hit = torch.maximum(hit, F.max_pool2d(fine[None, None], 4)[0, 0])
    hit = F.max_pool2d(hit[None, None], 3, stride=1, padding=1)[0, 0] > 0
    hit[0, :] = hit[-1, :] = hit[:, 0] = hit[:, -1] = True
    return hit


def _place(occupied: Tensor, h: int, w: int, target_rc: tuple[float, float]) -> tuple[int, int] | None:
    """Top-left cell of a free ``h x w`` rectangle nearest ``target_rc`` (row, col), or None."""
    G = occupied.shape[0]
    if h > G or w > G:
        return None
    occ = occupied.to(torch.float64)
    ii = F.pad(occ.cumsum(0).cumsum(1), (1, 0, 1, 0))
    sums = ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]  # (G - h + 1, G - w + 1)
    free = sums == 0
    if not bool(free.any()):
        return None
    r = torch.arange(free.shape[0], dtype=torch.float64)[:, None] + h / 2
    c = torch.arange(free.shape[1], dtype=torch.float64)[None, :] + w / 2
    dist = (r - target_rc[0]) ** 2 + (c - target_rc[1]) ** 2
    dist = torch.where(free, dist, torch.full_like(dist, math.inf))
    k = int(dist.argmin())
    return k // free.shape[1], k % free.shape[1]


def _build(model: MorphableModel, charts: bool, grid: int) -> MorphableModel:
    mean = model.mean.detach()
    _, holes = split_rim_and_holes(mean, model.triangles)
    if not holes:
        return model
    layout = model_uv_layout(model)
    V, T = model.n_vertices, layout.uv.shape[0]
    dev = mean.device
    # The UV row each boundary corner uses in its (only) triangle: directed edge a -> b, row of a.
    tri, uvf = model.triangles, layout.uv_faces
    keys_all = torch.cat([tri[:, k] * (V + 1) + tri[:, (k + 1) % 3] for k in range(3)])
    rows_all = torch.cat([uvf[:, k] for k in range(3)])
    sorted_keys, perm = torch.sort(keys_all)

    def loop_uv_rows(loop: Tensor) -> Tensor:
        key = loop * (V + 1) + loop.roll(-1)
        pos = torch.searchsorted(sorted_keys, key).clamp(max=sorted_keys.numel() - 1)
        return rows_all[perm[pos]]

    # Texel density of the layout: UV length per mm, from the total UV and surface areas.
    uv_area = uv_signed_areas(layout).clamp(min=0).sum()
    v0, v1, v2 = mean[tri[:, 0]], mean[tri[:, 1]], mean[tri[:, 2]]
    area3 = 0.5 * torch.linalg.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1).sum()
    density = float(torch.sqrt(uv_area.to(torch.float64) / area3.to(torch.float64).clamp(min=1e-12)))
    occupied = _occupancy(layout, grid) if charts else None

    new_uv, new_faces, new_uvf, centres = [], [], [], []
    next_row = T
    order = sorted(range(len(holes)), key=lambda i: -holes[i].numel())
    for h in order:
        loop = holes[h]
        pts = mean[loop].to(torch.float64)
        centre = pts.mean(0)
        c_id = V + len(centres)
        centres.append(loop)
        nxt = loop.roll(-1)
        new_faces.append(torch.stack([nxt, loop, torch.full_like(loop, c_id)], dim=1))
        own_rows = loop_uv_rows(loop)
        placed = None
        if charts:
            e1, e2 = _hole_frame(pts, centre)
            ab = torch.stack([(pts - centre) @ e1, (pts - centre) @ e2], dim=1)  # (N, 2) mm
            lo, hi = ab.amin(0), ab.amax(0)
            w_mm = float(hi[0] - lo[0])
            h_mm = max(float(hi[1] - lo[1]), 0.5 * w_mm)
            own_uv = layout.uv[own_rows.clamp(min=0)].to(torch.float64).mean(0)
            target = ((1 - float(own_uv[1])) * grid, float(own_uv[0]) * grid)
            for shrink in (1.0, 0.8, 0.64, 0.5, 0.4):
                hc = max(2, math.ceil(h_mm * density * shrink * grid) + 2)
                wc = max(2, math.ceil(w_mm * density * shrink * grid) + 2)
                pos = _place(occupied, hc, wc, target)
                if pos is not None:
                    placed = (pos, hc, wc)
                    break
        if placed is not None:
            (r0, c0), hc, wc = placed
            occupied[r0 : r0 + hc, c0 : c0 + wc] = True
            # One cell of padding inside the rectangle; the loop is centred vertically in it.
            u0, u1 = (c0 + 1) / grid, (c0 + wc - 1) / grid
            v_top, v_bot = 1 - (r0 + 1) / grid, 1 - (r0 + hc - 1) / grid
            su, sv = (u1 - u0) / max(w_mm, 1e-9), (v_top - v_bot) / max(h_mm, 1e-9)
            mid_b = (lo[1] + hi[1]) / 2
            mid_v = (v_top + v_bot) / 2
            with_c = torch.cat([ab, ab.new_zeros(1, 2)])  # the loop, then the centre (origin of ab)
            cap_uv = torch.stack(
                [u0 + (with_c[:, 0] - lo[0]) * su, mid_v + (with_c[:, 1] - mid_b) * sv], dim=1
            )
            rows = torch.arange(next_row, next_row + loop.numel(), device=dev)
            new_uv.append(cap_uv)
            c_row = next_row + loop.numel()
            next_row += loop.numel() + 1
        else:
            rows = own_rows
            c_uv = layout.uv[rows].to(torch.float64).mean(0)
            new_uv.append(c_uv[None])
            c_row = next_row
            next_row += 1
        new_uvf.append(torch.stack([rows.roll(-1), rows, torch.full_like(rows, c_row)], dim=1))

    def extend(t: Tensor) -> Tensor:  # (K, V, 3) or (V, 3): append each cap's loop mean
        if t.numel() == 0:
            return t
        ext = torch.stack([t[..., lp, :].mean(-2) for lp in centres], dim=-2)
        return torch.cat([t, ext.to(t.dtype)], dim=-2)

    uv = torch.cat([layout.uv.to(torch.float64)] + [u.to(dev) for u in new_uv]).to(model.mean.dtype)
    sets = {n: model.vertex_set(n).cpu() for n in model.vertex_set_names}
    sets[CAP_VERTEX_SET] = torch.arange(V, V + len(centres))
    return MorphableModel(
        mean=extend(model.mean),
        triangles=torch.cat([tri] + new_faces),
        id_basis=extend(model.id_basis),
        id_std=model.id_std,
        exp_basis=extend(model.exp_basis),
        exp_std=model.exp_std,
        exp_kind=model.exp_kind,
        exp_names=model.exp_names,
        albedo_mean=extend(model.albedo_mean) if model.has_albedo else None,
        albedo_basis=extend(model.albedo_basis) if model.has_albedo else None,
        albedo_std=model.albedo_std if model.has_albedo else None,
        uv=uv,
        uv_faces=torch.cat([uvf] + new_uvf),
        landmarks=model.landmarks if model.has_landmarks else None,
        vertex_sets=sets,
        name=model.name,
    ).to(dev)


def fill_holes(model: MorphableModel, charts: bool = True, grid: int = 128) -> MorphableModel:
    """A copy of ``model`` with every hole (boundary loop but the outer rim) closed by a cap.

    Args:
        model: a morphable model; one without holes is returned unchanged.
        charts: give each cap its own UV chart in free texture space (module doc); False lays the
            caps inside the holes' own UV outlines.
        grid: resolution of the free-space search (cells per texture side).

    Returns:
        A new model (cached per input model): the original vertices and triangles first, then one
        vertex per hole (listed in the vertex set :data:`CAP_VERTEX_SET`) and its fan of triangles;
        same bases (cap vertices are their loop's mean), landmarks and vertex sets; UVs per corner.
    """
    return cached(
        model, "fill_holes", (bool(charts), int(grid)), lambda: _build(model, bool(charts), int(grid))
    )
