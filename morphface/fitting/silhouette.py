"""Silhouette refinement: keep the fitted face's outline inside the person mask.

Landmark detectors are least reliable where a turned face meets the background: MediaPipe's mesh
(like any regressor) draws the nose and lips of a 50-degree profile where an average profile would
be, and on the 52-degree test photo it puts the nose tip ~18 px in front of the real one, so a fit
to its points samples background into the nose. A person mask
(:mod:`morphface.fitting.segmentation`) says where the head ends. :func:`refine_with_person_mask`
alternates, as in ICP-style silhouette fitting (e.g. Romdhani & Vetter 2005's edge term, here
one-sided), between

1. finding the fitted mesh's visible **occluding contour** (:func:`occluding_contour`: vertices
   of triangles facing the camera next to vertices whose triangles all face away, not hidden behind
   other parts of the face); each contour vertex that projects onto the background (person
   probability below ``background_level`` there, and further from the ``level`` mask than the
   segmentation's own accuracy) gets the nearest pixel of the mask as its target (Euclidean
   distance transform, ``scipy``); and
2. refitting :func:`~morphface.fitting.fit_landmarks` with those targets added to the landmarks, the
   landmarks next to the targeted contour down-weighted (the detector's guess there is what is in
   doubt). A vertex keeps its target in later rounds, once pulled inside too: without it the
   landmarks would push it straight back out (a one-sided term alone oscillates).

The term is one-sided: an outline inside the mask is left to the landmarks (inside the mask could be
hair, neck or the other cheek), so a face whose fit already stays inside the person is not changed.

Units: pixels as in :mod:`morphface.camera`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..morphable import MorphableModel
from ..render import rasterize, vertex_normals
from .landmark_fit import fit_landmarks
from .photometric import mesh_edges
from .result import FitResult

__all__ = ["Contour", "occluding_contour", "refine_with_person_mask"]


class Contour(NamedTuple):
    """The visible occluding contour of a fitted mesh in one image.

    Attributes:
        vertex_ids: ``(K,)`` int64 contour vertices.
        pixels: ``(K, 2)`` their image positions, pixels.
        normals: ``(K, 2)`` unit outward directions of the contour in the image (x right, y down).
    """

    vertex_ids: Tensor
    pixels: Tensor
    normals: Tensor


def occluding_contour(
    model: MorphableModel,
    fit: FitResult,
    depth_tolerance: float = 3.0,
    backend: str = "auto",
    edges: Tensor | None = None,
) -> list[Contour]:
    """The visible occluding contour of ``model`` under each fit of the batch.

    A vertex is on the contour when one of its triangles faces the camera and it shares an edge with a
    vertex all of whose triangles face away; it is kept when visible: at its pixel the z-buffer is empty
    (the contour against the background) or no more than ``depth_tolerance`` mm in front of it.

    Args:
        model: the morphable model; close its holes first (:func:`~morphface.uv.fill_holes`) if their
            rims should not count.
        fit: a fit of ``B`` images for ``model``.
        depth_tolerance: mm.
        backend: rasteriser backend.
        edges: ``(E, 2)`` the mesh's edges (:func:`~morphface.fitting.photometric.mesh_edges`), if at hand.

    Returns:
        ``B`` :class:`Contour` s.
    """
    faces = model.triangles
    with torch.no_grad():
        cam = fit.camera
        verts = fit.vertices(model).to(cam.R)
        B, V = verts.shape[:2]
        pix, depth = cam.project(verts)
        a, b, c = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
        tri_n = torch.cross(b - a, c - a, dim=-1)
        facing = (tri_n * cam.view_directions((a + b + c) / 3)).sum(-1) > 0  # (B, F)
        front_v = torch.zeros(B, V, dtype=torch.bool, device=verts.device).scatter_reduce(
            1, faces.reshape(-1).expand(B, -1), facing.repeat_interleave(3, dim=1), "amax"
        )
        e = mesh_edges(faces) if edges is None else edges
        frags = rasterize(cam.to_ndc(verts), faces, cam.image_size, perspective=cam.is_perspective, backend=backend)
        H, W = cam.image_size
        n_cam = vertex_normals(verts, faces) @ cam.R.transpose(-1, -2)
        out = []
        for i in range(B):
            fv = front_v[i]
            on = torch.cat([e[:, 0][fv[e[:, 0]] & ~fv[e[:, 1]]], e[:, 1][fv[e[:, 1]] & ~fv[e[:, 0]]]]).unique()
            p = pix[i, on]
            inside = (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)
            xi = p[:, 0].floor().long().clamp(0, W - 1)
            yi = p[:, 1].floor().long().clamp(0, H - 1)
            visible = ~frags.mask[i, yi, xi] | (frags.depth[i, yi, xi] >= depth[i, on] - depth_tolerance)
            keep = visible & inside
            on, p = on[keep], p[keep]
            d = torch.stack([n_cam[i, on, 0], -n_cam[i, on, 1]], dim=-1)
            out.append(Contour(on, p, d / d.norm(dim=-1, keepdim=True).clamp(min=1e-6)))
    return out


def _grow(mask: Tensor, edges: Tensor, rings: int) -> Tensor:
    for _ in range(rings):
        hit = mask[edges[:, 0]] | mask[edges[:, 1]]
        mask = mask.clone()
        mask[edges[hit].reshape(-1)] = True
    return mask


def refine_with_person_mask(
    model: MorphableModel,
    points: Tensor,
    fit: FitResult,
    foreground: Tensor,
    vertex_ids: Tensor | None = None,
    weights: Tensor | None = None,
    level: float = 0.9,
    rounds: int = 5,
    target_weight: float = 3.0,
    landmark_weight_near: float = 0.1,
    tolerance: float = 0.02,
    max_distance: float = 0.15,
    background_level: float = 0.25,
    backend: str = "auto",
    **fit_kwargs,
) -> FitResult:
    """Refit so that the face's occluding contour does not reach onto the background (module doc).

    Args:
        model: the morphable model fitted (holes closed, see :func:`occluding_contour`).
        points: ``(B, L, 2)`` the landmarks ``fit`` was fitted to, pixels.
        fit: their fit (batch ``B``).
        foreground: ``(B, 1, H, W)`` person probability (:meth:`~morphface.fitting.PersonSegmenter.segment`).
        vertex_ids: ``(L,)`` the landmarks' vertices (default ``model.landmarks``); ``-1``: ignored.
        weights: ``(L,)`` or ``(B, L)`` landmark weights (default 1).
        level: the person probability from which a pixel counts as the person.
        rounds: contour / refit alternations at most (fewer once no contour vertex is outside).
        target_weight: weight of a contour target relative to a landmark of weight 1.
        landmark_weight_near: multiplier of the weights of landmarks within two mesh rings of a
            targeted contour vertex.
        tolerance: contour vertices at most this fraction of the face's size outside the mask get no
            target: a segmentation's outline is a few pixels off at fine detail (MediaPipe's, computed
            at 256x256, cuts ~2% off a rendered nose tip), and the landmarks are better there.
        background_level: only contour vertices where the person probability is below this count
            as outside: a segmentation that is unsure (MediaPipe's, where it misses part of a rendered
            face, says 0.3-0.5 there) moves nothing; the background beside a real profile is ~0.
        max_distance: contour vertices further outside the mask than this fraction of the face's size
            (its landmark box's longer side) get no target (the mask, not the fit, is wrong there).
        backend: rasteriser backend.
        **fit_kwargs: passed to :func:`~morphface.fitting.fit_landmarks`.

    Returns:
        The refined :class:`~morphface.fitting.FitResult`, its ``landmarks``, ``target_landmarks`` and
        ``residuals`` those of ``points`` alone (unweighted RMSE over the valid ids), like the input fit's.
    """
    from scipy.ndimage import distance_transform_edt

    ids = model.landmarks if vertex_ids is None else torch.as_tensor(vertex_ids, device=model.mean.device)
    B, L = points.shape[:2]
    H, W = fit.image_size
    if foreground.dim() != 4 or foreground.shape[0] != B or foreground.shape[1] != 1 or (
        tuple(foreground.shape[-2:]) != (H, W)
    ):
        raise ValueError(f"foreground must have shape ({B}, 1, {H}, {W}); got {tuple(foreground.shape)}")
    w = torch.ones(B, L, dtype=points.dtype, device=points.device)
    if weights is not None:
        w = w * torch.as_tensor(weights, dtype=points.dtype, device=points.device).expand(B, L)
    edges = mesh_edges(model.triangles)
    valid = ids >= 0
    out = []
    for b in range(B):
        f = fit[b]
        person = (foreground[b, 0] >= level).detach().cpu().numpy()
        if not person.any():
            out.append(f)
            continue
        dist, (iy, ix) = distance_transform_edt(~person, return_indices=True)
        dist, iy, ix = (torch.from_numpy(np.ascontiguousarray(a)) for a in (dist, iy, ix))
        size = float((points[b].amax(0) - points[b].amin(0)).amax())
        changed = False
        # Targets persist across rounds: a contour pulled inside the mask gets no new target, and
        # without the old one the landmarks would push it straight back out (one-sided ICP oscillates).
        has_target = torch.zeros(model.n_vertices, dtype=torch.bool, device=ids.device)
        target_xy = torch.zeros(model.n_vertices, 2, dtype=points.dtype, device=ids.device)
        for _ in range(rounds):
            (contour,) = occluding_contour(model, f, backend=backend, edges=edges)
            p = contour.pixels.cpu()
            xi = p[:, 0].floor().long().clamp(0, W - 1)
            yi = p[:, 1].floor().long().clamp(0, H - 1)
            d = dist[yi, xi]
            prob = foreground[b, 0, yi.to(foreground.device), xi.to(foreground.device)].cpu()
            outside = (d > max(1.0, tolerance * size)) & (d <= max_distance * size) & (prob < background_level)
            if not bool(outside.any()):
                break
            moved = contour.vertex_ids[outside.to(contour.vertex_ids.device)].to(ids.device)
            nearest = torch.stack([ix[yi, xi], iy[yi, xi]], dim=-1)[outside] + 0.5
            target_xy[moved] = nearest.to(target_xy)
            has_target[moved] = True
            cv = torch.nonzero(has_target).flatten()
            target = target_xy[cv].to(points)
            near = _grow(has_target, edges.to(ids.device), 2)[ids.clamp(min=0)].to(w.device)
            lw = torch.where(near, landmark_weight_near, 1.0).to(w) * w[b]
            all_w = torch.cat([lw, torch.full((cv.numel(),), target_weight, dtype=w.dtype, device=w.device)])
            f = fit_landmarks(model, torch.cat([points[b], target])[None], (H, W),
                              vertex_ids=torch.cat([ids, cv]), weights=all_w[None], **fit_kwargs)
            changed = True
        if changed:
            proj = f.camera.project(f.vertices(model)[:, ids.clamp(min=0)])[0].to(points)
            err = ((proj - points[b : b + 1]) ** 2).sum(-1)[:, valid.to(points.device)]
            f = replace(f, landmarks=proj, target_landmarks=points[b : b + 1], residuals=err.mean(1).sqrt())
        out.append(f)
    return FitResult.cat(out) if len(out) > 1 else out[0]
