"""UV layouts: the model's own UVs, or a generated spherical unwrap; and an overlap check.

A layout is a UV table ``(T, 2)`` (u right, v **up**, in ``[0, 1]``; texture row ``(1 - v) * S``)
and per-corner indices ``(F, 3)`` into it, one row per triangle of the model. Per-vertex layouts
(the embedded ICT model) have ``T = V`` and ``uv_faces == triangles``; layouts with seams give a
vertex on a seam one UV entry per side.

**Generated layouts** (:func:`generate_uv_layout`, used for models without UVs such as BFM). A
spherical projection of the mean shape from a centre inside the head:

* centre: the middle of the bounding box in x and y, and ``0.55 * width`` behind the most forward
  point in z (about the middle of a head; for a face-only mask it sits well behind the face, so
  every face triangle looks away from it and the projection is one-to-one over the face);
* ``theta = atan2(x - cx, z - cz)`` (0 straight ahead, positive toward the subject's left, +x) gives
  ``u``; the elevation ``phi = atan2(y - cy, hypot(x - cx, z - cz))`` gives ``v`` (up);
* the seam is the half-plane straight behind the centre (``theta = +-pi``): behind the ears, where a
  face texture has nothing to show. Triangles that straddle it keep their corners' angles
  contiguous (a corner's ``theta`` may pass ``pi``), so the vertices on the seam get a second UV
  entry: per-corner UVs. Vertices on the vertical axis through the centre (the poles, e.g. the
  crown of a full head) take the mean ``theta`` of their triangle's other corners, again per corner;
* ``u`` and ``v`` are scaled independently to fill ``[margin, 1 - margin]`` (a face spans about
  220 by 130 degrees, so an isotropic scale would waste a third of the texture).

Folds remain where the surface is not star-shaped about the centre (the back of the ears, a
neck seen from inside); :func:`uv_overlap` finds them, and the tests check that the triangles a
frontal camera sees never overlap.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import ModelFormatError
from ..morphable.model import MorphableModel
from ._cache import cached
from .mesh import split_rim_and_holes, unique_edges

__all__ = [
    "UVLayout",
    "UVOverlap",
    "model_uv_layout",
    "generate_uv_layout",
    "unwrap_centre",
    "uv_overlap",
    "uv_signed_areas",
    "with_uv_layout",
]


class UVLayout(NamedTuple):
    """A UV layout of a triangle mesh.

    Attributes:
        uv: ``(T, 2)`` float UVs in ``[0, 1]``, u right, v up.
        uv_faces: ``(F, 3)`` int64 rows of ``uv`` for each corner of each of the mesh's triangles.
        generated: True if :func:`generate_uv_layout` made it (the model had no UVs).
    """

    uv: Tensor
    uv_faces: Tensor
    generated: bool = False

    @property
    def n_faces(self) -> int:
        return self.uv_faces.shape[0]

    def corner_uv(self) -> Tensor:
        """``(F, 3, 2)`` UV of each triangle corner."""
        return self.uv[self.uv_faces]


class UVOverlap(NamedTuple):
    """Result of :func:`uv_overlap`.

    Attributes:
        texels: how many texel centres lie inside two or more of the checked triangles.
        covered: how many texel centres lie inside at least one.
        fraction: ``texels / covered`` (0 when nothing is covered).
        faces: ``(N,)`` int64 ids of checked triangles that take part in an overlap.
    """

    texels: int
    covered: int
    fraction: float
    faces: Tensor


def _check_mesh(verts: Tensor, faces: Tensor) -> None:
    if not isinstance(verts, Tensor) or verts.dim() != 2 or verts.shape[1] != 3:
        shape = tuple(verts.shape) if isinstance(verts, Tensor) else type(verts).__name__
        raise ValueError(f"verts must have shape (V, 3); got {shape}")
    if not isinstance(faces, Tensor) or faces.dim() != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        shape = tuple(faces.shape) if isinstance(faces, Tensor) else type(faces).__name__
        raise ValueError(f"faces must be an integer tensor of shape (F, 3); got {shape}")


def unwrap_centre(verts: Tensor) -> Tensor:
    """The projection centre :func:`generate_uv_layout` uses for ``(V, 3)`` vertices (module doc)."""
    lo, hi = verts.amin(0), verts.amax(0)
    width = float(hi[0] - lo[0])
    return torch.stack([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2] - 0.55 * width])


def _wrap(a: Tensor) -> Tensor:
    """Angles into ``[-pi, pi)``."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def _untangle(
    uv: Tensor,
    faces: Tensor,
    checked: Tensor,
    fixed: Tensor,
    holes: list[Tensor],
    rounds: int,
    rings: int = 3,
) -> Tensor:
    """Re-embed the neighbourhoods of folded triangles harmonically (Tutte's barycentric mapping).

    Each round takes the vertices of the triangles with negative UV area (among ``checked``), grows
    that set by ``rings * round`` rings, and solves the uniform-weight Laplace equation for their UVs
    with every other vertex held fixed. Holes are closed by a virtual centre vertex for the solve,
    so the region is a disk. Tutte's theorem makes the result fold-free when the fixed ring is
    convex; in practice a few rounds untangle eyelid, nostril and ear folds.
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    V, H = uv.shape[0], len(holes)
    f = faces.cpu().numpy()
    edges = [unique_edges(faces).cpu().numpy()]
    for h, loop in enumerate(holes):
        lp = loop.cpu().numpy()
        edges.append(np.stack([lp, np.full_like(lp, V + h)], axis=1))
    e = np.concatenate(edges)
    N = V + H
    A = sp.coo_matrix(
        (np.ones(2 * e.shape[0]), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(N, N)
    )
    A = A.tocsr()
    A.data[:] = 1.0
    deg = np.asarray(A.sum(axis=1)).ravel()
    x = uv.detach().cpu().numpy().astype(np.float64)
    x = np.concatenate([x] + [x[lp.cpu().numpy()].mean(0, keepdims=True) for lp in holes])
    locked = np.concatenate([fixed.cpu().numpy(), np.zeros(H, dtype=bool)])
    check = checked.cpu().numpy()
    for rnd in range(1, rounds + 1):
        t = x[f]
        area = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (
            t[:, 2, 0] - t[:, 0, 0]
        )
        bad = (area < 0) & check
        if not bad.any():
            break
        region = np.zeros(N, dtype=bool)
        region[f[bad].ravel()] = True
        for _ in range(rings * rnd):
            region |= (A @ region.astype(np.float64)) > 0
        region &= ~locked
        if region.all() or not region.any():
            break
        free, held = np.nonzero(region)[0], np.nonzero(~region)[0]
        lap = (sp.diags(deg[free]) - A[free][:, free]).tocsc()
        rhs = A[free][:, held] @ x[held]
        x[free] = spsolve(lap, rhs).reshape(-1, 2)
    return torch.from_numpy(x[:V]).to(uv)


def generate_uv_layout(
    verts: Tensor, faces: Tensor, margin: float = 0.02, centre: Tensor | None = None, untangle_rounds: int = 8
) -> UVLayout:
    """A deterministic spherical UV unwrap with its seam behind the head (rules in the module doc).

    Args:
        verts: ``(V, 3)`` mean shape in the model frame (mm; x to the subject's left, y up, z forward).
        faces: ``(F, 3)`` int64 triangles.
        margin: empty border left on each side of the texture, in UV units.
        centre: ``(3,)`` projection centre; default :func:`unwrap_centre`.

    Returns:
        A :class:`UVLayout` whose first ``V`` UV rows belong to vertices ``0..V-1`` (vertices on the
        seam or at a pole have extra rows after them); ``uv_faces == faces`` when nothing needed a
        second entry.
    """
    _check_mesh(verts, faces)
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must lie in [0, 0.5); got {margin}")
    device = verts.device
    v = verts.detach().to(torch.float64)
    faces = faces.to(device=device, dtype=torch.int64)
    V, F = v.shape[0], faces.shape[0]
    c = unwrap_centre(v) if centre is None else torch.as_tensor(centre, dtype=torch.float64, device=device)
    d = v - c
    r_xz = torch.hypot(d[:, 0], d[:, 2])
    theta = torch.atan2(d[:, 0], d[:, 2])
    phi = torch.atan2(d[:, 1], r_xz)
    pole = r_xz <= 1e-9 * d.norm(dim=1).amax().clamp(min=1e-12)

    th, pl = theta[faces], pole[faces]  # (F, 3)
    # Keep each triangle's angles contiguous: measure them from a non-pole corner.
    ref = (~pl).to(torch.int64).argmax(dim=1, keepdim=True)
    th_ref = th.gather(1, ref)
    th = th_ref + _wrap(th - th_ref)
    npl = (~pl).to(torch.float64)
    th_mean = (th * npl).sum(1, keepdim=True) / npl.sum(1, keepdim=True).clamp(min=1.0)
    # A triangle that winds around the axis (it contains a pole in its interior) has no consistent
    # angle: it collapses to a line of constant theta (zero UV area, so it owns no texel).
    winding = _wrap(th[:, [1, 2, 0]] - th).sum(1, keepdim=True)
    around = (winding.abs() > math.pi) & ~pl.any(1, keepdim=True)
    th = torch.where(pl | around, th_mean.expand(-1, 3), th)
    # Put each triangle's centroid angle in [-pi, pi): the seam falls between triangles.
    centroid = th.mean(1, keepdim=True)
    th = th - 2 * math.pi * torch.floor((centroid + math.pi) / (2 * math.pi))

    base_th = torch.where(pole, torch.zeros_like(theta), theta)
    own = (
        ((th - base_th[faces]).abs() < 1e-9) & ~pl & ~around
    )  # corners that can use their vertex's own entry
    lo_t = torch.minimum(th.min(), base_th.min())
    hi_t = torch.maximum(th.max(), base_th.max())
    lo_p, hi_p = phi.min(), phi.max()
    span_t = (hi_t - lo_t).clamp(min=1e-12)
    span_p = (hi_p - lo_p).clamp(min=1e-12)

    def to_uv(t: Tensor, p: Tensor) -> Tensor:
        return torch.stack(
            [
                margin + (1 - 2 * margin) * (t - lo_t) / span_t,
                margin + (1 - 2 * margin) * (p - lo_p) / span_p,
            ],
            dim=-1,
        )

    uv_vert = to_uv(base_th, phi)  # (V, 2)
    if untangle_rounds > 0 and F:
        tri_own = own.all(1)
        fixed = torch.zeros(V, dtype=torch.bool, device=device)
        fixed[faces[~own]] = True
        fixed |= pole
        rim, holes = split_rim_and_holes(v, faces)
        if rim is not None:
            fixed[rim] = True  # the outer boundary frames the re-embedding (Tutte needs it fixed)
        uv_vert = _untangle(uv_vert, faces, tri_own, fixed, holes, untangle_rounds)
    uv_faces = faces.clone()
    extra = ~own
    if bool(extra.any()):
        vid = faces[extra]
        uv_extra = to_uv(th[extra], phi[vid])
        # One extra entry per distinct (vertex, UV): triangles on the same side of a seam share it.
        q = torch.round(uv_extra * 2**24).to(torch.int64)
        keys = torch.stack([vid, q[:, 0], q[:, 1]], dim=1)
        uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
        table = uv_extra.new_zeros(uniq.shape[0], 2).index_copy_(0, inverse, uv_extra)
        uv_faces[extra] = V + inverse
        uv = torch.cat([uv_vert, table])
    else:
        uv = uv_vert
    if F and not bool(torch.isfinite(uv).all()):
        raise ModelFormatError("UV generation produced non-finite values (degenerate mean shape?)")
    return UVLayout(
        uv=uv.to(verts.dtype if verts.is_floating_point() else torch.float32),
        uv_faces=uv_faces,
        generated=True,
    )


def model_uv_layout(model: MorphableModel) -> UVLayout:
    """The model's own UVs (per vertex or per corner), else a generated layout (cached per model).

    Args:
        model: any :class:`~morphface.morphable.MorphableModel`.

    Returns:
        :class:`UVLayout` on the model's device.
    """
    if model.has_uv:
        uv, uvf = model.face_uvs()
        return UVLayout(uv=uv, uv_faces=uvf, generated=False)
    return cached(model, "layout", None, lambda: generate_uv_layout(model.mean, model.triangles))


def with_uv_layout(model: MorphableModel, layout: UVLayout | None = None) -> MorphableModel:
    """A copy of ``model`` carrying ``layout`` (default: :func:`model_uv_layout`) as its UVs."""
    layout = model_uv_layout(model) if layout is None else layout
    if layout.uv_faces.shape != model.triangles.shape:
        raise ValueError(
            f"layout must have uv_faces of shape {tuple(model.triangles.shape)}; "
            f"got {tuple(layout.uv_faces.shape)}"
        )
    out = model.subset(torch.ones(model.n_vertices, dtype=torch.bool, device=model.mean.device))
    per_vertex = layout.uv.shape[0] == model.n_vertices and torch.equal(layout.uv_faces, model.triangles)
    out.uv = layout.uv.to(out.mean)
    out.uv_faces = (
        torch.zeros(0, 3, dtype=torch.int64, device=out.mean.device)
        if per_vertex
        else layout.uv_faces.to(out.mean.device)
    )
    return out


def uv_signed_areas(layout: UVLayout) -> Tensor:
    """``(F,)`` signed UV areas: positive for triangles counter-clockwise in UV (u right, v up)."""
    t = layout.corner_uv().to(torch.float64)
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def uv_overlap(layout: UVLayout, faces_mask: Tensor | None = None, size: int = 512) -> UVOverlap:
    """Texel centres covered by more than one triangle of a layout.

    The triangles are rasterised into a ``size x size`` texture twice, once with depth equal to the
    triangle id and once with minus it: where the two winners differ, at least two triangles
    contain the texel centre (the rasteriser's fill rule gives an edge shared by neighbours to one
    of them only, so neighbours never count).

    Args:
        layout: the layout to check.
        faces_mask: ``(F,)`` bool, the triangles to check (default all).
        size: texture resolution of the check.

    Returns:
        :class:`UVOverlap`.
    """
    from ..render import rasterize

    F = layout.n_faces
    if faces_mask is None:
        faces_mask = torch.ones(F, dtype=torch.bool, device=layout.uv.device)
    if faces_mask.shape != (F,) or faces_mask.dtype != torch.bool:
        raise ValueError(
            f"faces_mask must be a ({F},) bool tensor; got {tuple(faces_mask.shape)} {faces_mask.dtype}"
        )
    ids = torch.nonzero(faces_mask.to(layout.uv.device)).squeeze(1)
    if ids.numel() == 0:
        return UVOverlap(0, 0, 0.0, ids)
    corners = layout.corner_uv()[ids].to(torch.float64)  # (N, 3, 2)
    xy = torch.stack([corners[..., 0] * 2 - 1, 1 - corners[..., 1] * 2], dim=-1)
    rank = torch.arange(ids.numel(), dtype=torch.float64, device=xy.device)[:, None, None].expand(-1, 3, 1)
    tri = torch.arange(3 * ids.numel(), device=xy.device).view(-1, 3)
    winners = []
    for sign in (1.0, -1.0):
        ndc = torch.cat([xy, sign * rank], dim=-1).reshape(1, -1, 3)
        winners.append(rasterize(ndc, tri, (size, size), perspective=False).pix_to_face[0])
    covered = winners[0] >= 0
    clash = covered & (winners[0] != winners[1])
    n = int(clash.sum())
    faces = torch.unique(torch.cat([winners[0][clash], winners[1][clash]]))
    return UVOverlap(
        texels=n, covered=int(covered.sum()), fraction=n / max(int(covered.sum()), 1), faces=ids[faces]
    )
