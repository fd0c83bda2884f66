"""Dense landmarks: MediaPipe Face Mesh's 468 points placed on the morphable model's surface.

MediaPipe's points are fixed points of its face mesh: at any pose each one marks the same spot of
the skin, on the near side and the far side of the face alike (unlike the jaw line of the 68-point
regressors, which follows the silhouette). Fitted through a correspondence table, they pin down
large head turns far better than 68 points (there are ~7x more, spread over cheeks, nose and brows).

**The table is built from MediaPipe's canonical face** (``assets/mediapipe/canonical_face.npz``,
Apache-2.0, converted from MediaPipe's ``geometry_pipeline_metadata_landmarks.pbtxt``: vertex ``i``
is landmark ``i``, in mm). :func:`register_dense_correspondence` registers that mesh to the model:
a similarity from 16 unambiguous points (eye and mouth corners, nose, lip midpoints, chin; the
model's iBUG-68 vertices against :data:`~morphface.fitting.detectors.MEDIAPIPE_TO_IBUG68`), then
alternating (a) the nearest point of the model's surface to every canonical vertex, (b) the model's
identity coefficients (ridge solve) that bring its surface onto the canonical vertices and anchors
(non-rigid alignment) and (c) the similarity again. Each MediaPipe point is then the nearest
surface point of the deformed model, carried to the mean shape by its triangle and barycentric
coordinates. ``python -m morphface.fitting.dense`` rebuilds the shipped table
(``assets/ict_facekit/mediapipe468.npz``) and prints the registration's residuals.
(:func:`estimate_dense_correspondence` still estimates a table from fitted photos, for a model or
detector without a canonical mesh.)

Units: positions in mm in the model frame (``morphface.camera``); pixel coordinates as everywhere.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelFormatError
from ..morphable import MorphableModel
from .result import FitResult

__all__ = [
    "DenseCorrespondence",
    "CanonicalFaceMesh",
    "MEDIAPIPE_DENSE_POINTS",
    "default_dense_correspondence_path",
    "load_dense_correspondence",
    "load_mediapipe_canonical",
    "read_mediapipe_geometry_pbtxt",
    "register_dense_correspondence",
    "closest_surface_points",
    "estimate_dense_correspondence",
    "dense_correspondence_for",
    "fit_dense_landmarks",
]

#: MediaPipe Face Mesh points without the 10 iris points (``refine_landmarks`` adds them after these).
MEDIAPIPE_DENSE_POINTS = 468


@functools.lru_cache(maxsize=1)
def _package_dir() -> Path:
    # resolved once: Path.resolve() stats every component, ~0.1 ms, paid twice per dense fit before
    return Path(__file__).resolve().parents[1]


def default_dense_correspondence_path() -> Path:
    """The MediaPipe table registered for the embedded ICT-FaceKit model."""
    return _package_dir() / "assets" / "ict_facekit" / "mediapipe468.npz"


def mediapipe_canonical_path() -> Path:
    """MediaPipe's canonical face mesh as shipped with the package (Apache-2.0, see its README)."""
    return Path(__file__).resolve().parents[1] / "assets" / "mediapipe" / "canonical_face.npz"


@dataclass
class CanonicalFaceMesh:
    """A detector's canonical face: the 3D position of each of its dense points.

    Attributes:
        vertices: ``(N, 3)`` mm, point ``i`` is the detector's landmark ``i`` (x toward the subject's
            left, y up, z out of the face: the model frame).
        triangles: ``(F, 3)`` int64.
        procrustes_weights: ``(N,)`` the weights MediaPipe's own pose estimate gives its stable points
            (0 elsewhere).
    """

    vertices: Tensor
    triangles: Tensor
    procrustes_weights: Tensor


def read_mediapipe_geometry_pbtxt(path: str | Path) -> CanonicalFaceMesh:
    """Parse MediaPipe's ``geometry_pipeline_metadata_landmarks.pbtxt`` (canonical mesh in landmark
    order, centimetres, as ``x y z u v`` vertex records; triangle index buffer; Procrustes weights).

    Raises:
        ModelFormatError: the file does not hold a 468-vertex canonical mesh.
    """
    import re

    text = Path(path).read_text()
    vb = np.array([float(v) for v in re.findall(r"vertex_buffer:\s*([-+0-9.eE]+)", text)])
    ib = np.array([int(v) for v in re.findall(r"index_buffer:\s*(\d+)", text)])
    if vb.size != MEDIAPIPE_DENSE_POINTS * 5 or ib.size == 0 or ib.size % 3:
        raise ModelFormatError(f"{path}: expected {MEDIAPIPE_DENSE_POINTS} vertex records of 5 values and a "
                               f"triangle index buffer; got {vb.size} values and {ib.size} indices")
    weights = np.zeros(MEDIAPIPE_DENSE_POINTS)
    for i, w in re.findall(r"landmark_id:\s*(\d+)\s+weight:\s*([-+0-9.eE]+)", text):
        weights[int(i)] = float(w)
    return CanonicalFaceMesh(torch.from_numpy(vb.reshape(-1, 5)[:, :3] * 10.0).float(),
                             torch.from_numpy(ib.reshape(-1, 3)).long(), torch.from_numpy(weights).float())


def load_mediapipe_canonical(path: str | Path | None = None) -> CanonicalFaceMesh:
    """MediaPipe's canonical face (default: the copy shipped with the package).

    Raises:
        ModelFormatError: the file is missing or malformed.
    """
    p = Path(path) if path is not None else mediapipe_canonical_path()
    try:
        with np.load(p) as z:
            mesh = CanonicalFaceMesh(torch.from_numpy(z["vertices"]).float(), torch.from_numpy(z["triangles"]).long(),
                                     torch.from_numpy(z["procrustes_weights"]).float())
    except (OSError, KeyError, ValueError) as e:
        raise ModelFormatError(f"{p}: not a canonical face mesh (.npz with vertices, triangles, "
                               f"procrustes_weights): {e}") from e
    if mesh.vertices.shape != (MEDIAPIPE_DENSE_POINTS, 3):
        raise ModelFormatError(f"{p}: expected vertices ({MEDIAPIPE_DENSE_POINTS}, 3); got "
                               f"{tuple(mesh.vertices.shape)}")
    return mesh


@dataclass
class DenseCorrespondence:
    """Where each dense landmark lies on a model.

    Attributes:
        positions: ``(N, 3)`` mm, points on the model's mean shape (model frame).
        spread: ``(N,)`` mm, how uncertain each point is: the distance of the registered canonical
            vertex from the model's surface (:func:`register_dense_correspondence`), or the median
            distance of per-image estimates (:func:`estimate_dense_correspondence`).
        counts: ``(N,)`` estimates behind each point (0: unknown, ignored; 1 for a registered table).
        model_name: the model the table was made for.
    """

    positions: Tensor
    spread: Tensor
    counts: Tensor
    model_name: str = ""

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def vertex_ids(self, model: MorphableModel, max_distance: float = 5.0) -> Tensor:
        """``(N,)`` int64: the nearest vertex of ``model.mean`` to each point, ``-1`` where none lies
        within ``max_distance`` mm (a point outside a cropped model) or the point is unknown.
        :func:`~morphface.fitting.fit_landmarks` ignores ``-1`` entries.

        Cached per model (until its mean or this table's tensors change): the search over every
        model vertex took ~10x as long as a whole fast single-face fit."""
        key = (id(self), *((t.data_ptr(), t._version) for t in (self.positions, self.counts, model.mean)),
               float(max_distance), str(model.mean.device))
        per_model = _VERTEX_IDS_CACHE.setdefault(model, {})
        table_ref, ids = per_model.get(key, (None, None))
        if ids is None or table_ref() is not self:  # (an id can be reused once a table is dropped)
            mean = model.mean.reshape(-1, 3).detach().to(device="cpu", dtype=torch.float32)
            ids = _nearest_vertices(mean, self.positions.float().cpu(), self.counts.cpu(), float(max_distance)).to(
                model.mean.device)
            if len(per_model) >= 8:
                per_model.pop(next(iter(per_model)))
            per_model[key] = (weakref.ref(self), ids)
        return ids.clone()

    def weights(self, scale: float = 2.0) -> Tensor:
        """``(N,)`` fitting weights ``1 / (1 + (spread / scale)^2)``, 0 for unknown points: points whose
        place varies across faces count less."""
        w = 1.0 / (1.0 + (self.spread.float() / scale) ** 2)
        return torch.where(self.counts > 0, w, torch.zeros_like(w))

    def save(self, path: str | Path) -> None:
        """Write the table as ``.npz`` (``positions``, ``spread``, ``counts``, ``model_name``)."""
        np.savez_compressed(Path(path), positions=self.positions.cpu().numpy().astype(np.float32),
                            spread=self.spread.cpu().numpy().astype(np.float32),
                            counts=self.counts.cpu().numpy().astype(np.int32), model_name=np.array(self.model_name))


# model -> {(table id, tensor versions, max_distance, device): (table weakref, ids)}; weak keys free a dropped
# model's entries
_VERTEX_IDS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _nearest_vertices(mean: Tensor, positions: Tensor, counts: Tensor, max_distance: float) -> Tensor:
    d = torch.cdist(positions, mean)  # (N, V); small (468 x 10k)
    dist, ids = d.min(dim=1)
    return torch.where((dist <= max_distance) & (counts > 0), ids, torch.full_like(ids, -1))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> DenseCorrespondence:
    try:
        with np.load(path) as z:
            pos, spread, counts = z["positions"], z["spread"], z["counts"]
            name = str(z["model_name"]) if "model_name" in z else ""
    except (OSError, KeyError, ValueError) as e:
        raise ModelFormatError(f"{path}: not a dense-correspondence table (.npz with positions, spread, counts): "
                               f"{e}") from e
    if pos.ndim != 2 or pos.shape[1] != 3 or spread.shape != pos.shape[:1] or counts.shape != pos.shape[:1]:
        raise ModelFormatError(f"{path}: expected positions (N, 3), spread (N,), counts (N,); got "
                               f"{pos.shape}, {spread.shape}, {counts.shape}")
    return DenseCorrespondence(torch.from_numpy(pos).float(), torch.from_numpy(spread).float(),
                               torch.from_numpy(counts).long(), name)


def load_dense_correspondence(path: str | Path | None = None) -> DenseCorrespondence:
    """Read a table written by :meth:`DenseCorrespondence.save` (default: the one for the embedded
    model, :func:`default_dense_correspondence_path`).

    Raises:
        ModelFormatError: the file is missing or not such a table.
    """
    p = Path(path) if path is not None else default_dense_correspondence_path()
    if not p.is_file():
        raise ModelFormatError(f"dense-correspondence table not found: {p} (rebuild the default one with "
                               "`python -m morphface.fitting.dense PHOTO_DIR`)")
    return _load_cached(str(p if path is None else p.resolve()))  # the default path is resolved already


def dense_correspondence_for(model: MorphableModel, n_points: int) -> DenseCorrespondence | None:
    """The shipped table if it was estimated for ``model`` (same name: the embedded ICT model or a
    region of it) and has ``n_points`` points, else ``None``."""
    path = default_dense_correspondence_path()
    if not path.is_file():
        return None
    table = load_dense_correspondence()  # (the default: no path resolution per call)
    return table if table.model_name == model.name and len(table) == n_points else None


#: ``fit_dense_landmarks``'s ways of finding the rotation.
POSE_MODES = ("joint", "rigid", "regressed")


def fit_dense_landmarks(model: MorphableModel, points: Tensor, image_size: tuple[int, int],
                        correspondence: DenseCorrespondence | None = None, pose: str = "joint",
                        depth_weight: float = 2.0, **fit_kwargs) -> FitResult:
    """:func:`~morphface.fitting.fit_landmarks` on dense landmarks through a correspondence table.

    With a depth column (MediaPipe's ``z``) the fit also matches the points' relative depths
    (``depth_weight``): MediaPipe's 2D points are biased toward frontal at large head pitch while its
    depths still carry the turn (renders of known pose, ``bench/fit_real.py``: pitch slope 0.68 -> 0.83
    for |yaw| <= 40 deg).

    ``pose="joint"`` (default) fits rotation, camera and shape at once. ``pose="rigid"`` takes the
    rotation from a fit of the mean shape (only the size mode free) and then fits shape and camera with
    that rotation kept: with every identity mode free the shape absorbs part of the pitch, so on the
    renders this undoes nearly all of the compression (pitch slope 0.97), but it biases the rotation
    of faces far from the mean (up to several degrees on exact points of random N(0, I) identities).
    ``pose="regressed"`` takes the rotation from the learned calibration of MediaPipe's pose bias
    (:mod:`morphface.fitting.pose_regressor`; needs the depth column) and fits shape and camera with
    that rotation kept.

    Args:
        model: the morphable model.
        points: ``(B, N, 2)`` pixel coordinates (MediaPipe's first 468 points; irises are not used), or
            ``(B, N, 3)`` with MediaPipe's relative depth (pixels, larger = farther) as the third column.
        image_size: ``(H, W)``.
        correspondence: the table (default: the shipped MediaPipe table, which must fit ``model``).
        pose: ``"joint"``, ``"rigid"`` or ``"regressed"`` (above).
        depth_weight: weight of the depth column in the rotation fit (``fit_landmarks``'s
            ``depth_weight``; ignored for 2-column points).
        **fit_kwargs: passed to :func:`~morphface.fitting.fit_landmarks` (not ``vertex_ids``); ``weights``
            ``(N,)`` or ``(B, N)`` multiply the table's per-point weights.

    Returns:
        A :class:`FitResult` whose ``landmarks`` and ``residuals`` refer to the dense points.

    Raises:
        ModelFormatError: no table for this model.
        ValueError: an unknown ``pose``, or ``pose="regressed"`` without a depth column.
        FileNotFoundError: ``pose="regressed"`` and no regressor weights.
    """
    from .landmark_fit import fit_landmarks

    if pose not in POSE_MODES:
        raise ValueError(f"pose must be one of {POSE_MODES}; got {pose!r}")
    points = torch.as_tensor(points)
    if correspondence is None:
        correspondence = dense_correspondence_for(model, points.shape[-2])
        if correspondence is None:
            raise ModelFormatError(f"no dense-correspondence table with {points.shape[-2]} points for model "
                                   f"{model.name!r}; estimate one with estimate_dense_correspondence")
    weights = correspondence.weights()
    if "weights" in fit_kwargs:
        weights = weights * torch.as_tensor(fit_kwargs.pop("weights"), dtype=weights.dtype)
    ids = correspondence.vertex_ids(model)
    if pose == "regressed" and "angles" not in fit_kwargs:
        from .pose_regressor import regress_rotation

        if points.shape[-1] != 3:
            raise ValueError("pose='regressed' needs MediaPipe's depth column: points of shape (B, N, 3)")
        angles = regress_rotation(points, image_size, focal=fit_kwargs.get("focal"))
        return fit_landmarks(model, points[..., :2], image_size, vertex_ids=ids, weights=weights, angles=angles,
                             **fit_kwargs)
    if pose == "joint" or "angles" in fit_kwargs:
        return fit_landmarks(model, points, image_size, vertex_ids=ids, weights=weights,
                             depth_weight=depth_weight, **fit_kwargs)
    rigid_kwargs = {k: v for k, v in fit_kwargs.items() if k in ("camera", "focal")}
    rigid = fit_landmarks(model, points, image_size, vertex_ids=ids, weights=weights, n_id=1, n_exp=0,
                          depth_weight=depth_weight, **rigid_kwargs)
    return fit_landmarks(model, points[..., :2], image_size, vertex_ids=ids, weights=weights, angles=rigid.angles,
                         **fit_kwargs)


def _estimates(model: MorphableModel, fits: FitResult, points: Tensor, max_pixel_distance: float) -> Tensor:
    """``(B, N, 3)`` per-image positions on ``model.mean`` (NaN where no vertex is close enough)."""
    from ..render.normals import vertex_normals

    points = torch.as_tensor(points, dtype=torch.float32)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != fits.batch_size:
        raise ValueError(f"points must be ({fits.batch_size}, N, 2) pixels; got {tuple(points.shape)}")
    fits = fits.detach().to(dtype=torch.float32, device=model.mean.device)
    verts = fits.vertices(model)  # (B, V, 3) model frame
    pix, _ = fits.camera.project(verts)  # (B, V, 2)
    R = fits.rotation
    normals = vertex_normals(verts, model.triangles) @ R.transpose(1, 2)
    if fits.camera_kind == "perspective":  # facing the camera at the origin
        facing = (normals * -(verts @ R.transpose(1, 2) + fits.translation[:, None])).sum(-1) > 0
    else:  # orthographic view along -z
        facing = normals[..., 2] > 0
    H, W = fits.image_size
    d = torch.cdist(points.to(pix), pix).masked_fill(~facing[:, None, :], float("inf"))  # (B, N, V)
    dist, ids = d.min(dim=-1)
    est = model.mean.reshape(-1, 3).to(pix)[ids]
    return est.masked_fill(~(dist <= max_pixel_distance * float(np.hypot(H, W)))[..., None], float("nan"))


def estimate_dense_correspondence(model: MorphableModel, fits: FitResult | list[FitResult],
                                  points: Tensor | list[Tensor], max_pixel_distance: float = 0.02
                                  ) -> DenseCorrespondence:
    """Estimate where dense 2D landmarks lie on the model from fits of the same images.

    For every image and point, the visible vertex (normal facing the camera) whose projection is
    nearest to the point; its position on ``model.mean`` is that image's estimate. The table holds the
    per-point coordinate-wise median over images and the median distance of the estimates from it.
    Use near-frontal images: there each point has a visible vertex under it.

    Args:
        model: the model that was fitted.
        fits: fits of ``B`` images (:func:`~morphface.fitting.fit_landmarks`), or a list of fits (images
            of different sizes).
        points: ``(B, N, 2)`` pixel coordinates of the dense landmarks in those images, or a list
            matching ``fits``.
        max_pixel_distance: an estimate counts only if the vertex projects within this fraction of the
            image diagonal of the point (points off the model's surface are dropped).

    Returns:
        A :class:`DenseCorrespondence` for ``model``.
    """
    fits_list = fits if isinstance(fits, (list, tuple)) else [fits]
    points_list = points if isinstance(points, (list, tuple)) else [points]
    if len(fits_list) != len(points_list) or not fits_list:
        raise ValueError(f"need as many point sets as fits (at least one); got {len(points_list)} and "
                         f"{len(fits_list)}")
    with torch.no_grad():
        est = torch.cat([_estimates(model, f, p, max_pixel_distance) for f, p in zip(fits_list, points_list)])
        pos = torch.nanmedian(est, dim=0).values  # (N, 3)
        counts = (~est[..., 0].isnan()).sum(0)
        spread = torch.nanmedian((est - pos).norm(dim=-1), dim=0).values
    return DenseCorrespondence(torch.nan_to_num(pos).cpu(), torch.nan_to_num(spread).cpu(), counts.cpu(), model.name)


def _similarity(src: Tensor, dst: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted Umeyama similarity ``dst ~ s R src + t``: ``src, dst (N, 3)``, ``w (N,)`` ->
    ``s ()``, ``R (3, 3)``, ``t (3,)``."""
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    s0, d0 = src - ms, dst - md
    U, S, Vh = torch.linalg.svd((d0 * w[:, None]).T @ s0)
    d = torch.ones(3, dtype=src.dtype, device=src.device)
    d[2] = torch.sign(torch.linalg.det(U @ Vh))
    R = U @ torch.diag(d) @ Vh
    scale = (S * d).sum() / (w @ (s0 ** 2).sum(1))
    return scale, R, md - scale * R @ ms


def closest_surface_points(points: Tensor, vertices: Tensor, triangles: Tensor, candidates: int = 24
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """The nearest point of a triangle mesh to each query point.

    Exact among the ``candidates`` triangles whose centroids lie nearest to the point (on a smooth,
    evenly meshed surface like a face model the nearest triangle is always among them).

    Args:
        points: ``(N, 3)`` query points.
        vertices: ``(V, 3)`` mesh vertices (same units).
        triangles: ``(F, 3)`` int64.
        candidates: triangles examined per point.

    Returns:
        ``distance (N,)``, ``triangle (N,)`` int64 and ``barycentric (N, 3)`` of the nearest points.
    """
    tri_v = vertices[triangles]  # (F, 3, 3)
    k = min(int(candidates), triangles.shape[0])
    cand = torch.cdist(points, tri_v.mean(1)).topk(k, largest=False).indices  # (N, k)
    A, B, C = tri_v[cand].unbind(2)  # (N, k, 3) each
    q = points[:, None]
    # the plane projection's barycentrics (valid when all are >= 0) ...
    e0, e1, vq = B - A, C - A, q - A
    d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
    d20, d21 = (vq * e0).sum(-1), (vq * e1).sum(-1)
    den = (d00 * d11 - d01 * d01).clamp(min=1e-12)
    v, w = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    inside = torch.stack([1 - v - w, v, w], -1)

    def edge(P0: Tensor, P1: Tensor) -> Tensor:  # parameter of the nearest point on segment P0-P1
        e = P1 - P0
        return (((q - P0) * e).sum(-1) / (e * e).sum(-1).clamp(min=1e-12)).clamp(0, 1)

    tab, tbc, tca = edge(A, B), edge(B, C), edge(C, A)
    z = torch.zeros_like(tab)
    bary = torch.stack([inside, torch.stack([1 - tab, tab, z], -1), torch.stack([z, 1 - tbc, tbc], -1),
                        torch.stack([tca, z, 1 - tca], -1)], dim=2)  # (N, k, 4, 3)
    near = bary[..., 0:1] * A[:, :, None] + bary[..., 1:2] * B[:, :, None] + bary[..., 2:3] * C[:, :, None]
    dist = (near - q[:, :, None]).norm(dim=-1)  # (N, k, 4)
    dist[..., 0] = dist[..., 0].masked_fill(~(inside >= 0).all(-1), float("inf"))
    flat = dist.reshape(points.shape[0], -1).argmin(-1)
    rows = torch.arange(points.shape[0], device=points.device)
    best = bary.reshape(points.shape[0], -1, 3)[rows, flat]
    return dist.reshape(points.shape[0], -1)[rows, flat], cand[rows, flat // 4], best


#: iBUG-68 points whose place is unambiguous on both meshes (nose, eye and mouth corners, lip
#: midpoints, chin): the rigid start of :func:`register_dense_correspondence`.
_ANCHORS = (27, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57, 62, 66, 8)


def register_dense_correspondence(model: MorphableModel, canonical: CanonicalFaceMesh | None = None,
                                  iterations: int = 12, anchor_weight: float = 10.0, id_prior: float = 4.0,
                                  verbose: bool = False) -> DenseCorrespondence:
    """Place a detector's canonical face on ``model`` by registration (module doc).

    Args:
        model: the target model (use the largest region: points at the temples need it).
        canonical: the detector's canonical mesh (default: MediaPipe's, shipped).
        iterations: closest-point / identity / similarity rounds.
        anchor_weight: weight of each anchor pair relative to one canonical vertex.
        id_prior: ridge weight (mm^2) on the identity coefficients (std units) of the non-rigid step.
        verbose: print the residuals per round.

    Returns:
        A table with ``positions`` on ``model.mean``, ``spread`` = each canonical vertex's distance
        (mm) from the registered surface, ``counts`` = 1.
    """
    from .detectors import MEDIAPIPE_TO_IBUG68

    canonical = canonical or load_mediapipe_canonical()
    if not model.has_landmarks or model.landmarks.numel() != 68:
        raise ModelFormatError(f"registration needs the model's 68 iBUG landmarks; model {model.name!r} has "
                               f"{model.landmarks.numel()}")
    dt = torch.float64
    P = canonical.vertices.to(dt)
    mean = model.mean.detach().to(dt).cpu()
    basis = (model.id_basis * model.id_std[:, None, None]).detach().to(dt).cpu()  # (K, V, 3)
    tris = model.triangles.cpu()
    anchors = torch.tensor(_ANCHORS)
    pairs = torch.tensor(MEDIAPIPE_TO_IBUG68)[anchors]
    P_anchor = P[pairs].mean(1)  # (A, 3)
    a_ids = model.landmarks.cpu()[anchors]
    wa = torch.full((len(_ANCHORS),), float(anchor_weight), dtype=dt)
    scale, R, t = _similarity(P_anchor, mean[a_ids], torch.ones(len(_ANCHORS), dtype=dt))
    c = torch.zeros(basis.shape[0], dtype=dt)
    eye = torch.eye(basis.shape[0], dtype=dt)
    with torch.no_grad():
        for it in range(iterations):
            X = mean + torch.einsum("k,kvc->vc", c, basis)
            Q, QA = scale * P @ R.T + t, scale * P_anchor @ R.T + t
            dist, tri, bary = closest_surface_points(Q, X, tris)
            corner = tris[tri]  # (N, 3)
            # surface points and their identity rows as barycentric mixtures of the corners
            Mi = (bary[..., None] * mean[corner]).sum(1)
            Bi = (bary[None, ..., None] * basis[:, corner]).sum(2)  # (K, N, 3)
            Ba = basis[:, a_ids]
            A = torch.einsum("knc,jnc->kj", Bi, Bi) + torch.einsum("knc,jnc,n->kj", Ba, Ba, wa) + id_prior * eye
            rhs = torch.einsum("knc,nc->k", Bi, Q - Mi) + torch.einsum("knc,nc,n->k", Ba, QA - mean[a_ids], wa)
            c = torch.linalg.solve(A, rhs)
            X = mean + torch.einsum("k,kvc->vc", c, basis)
            Xi = (bary[..., None] * X[corner]).sum(1)
            scale, R, t = _similarity(torch.cat([P, P_anchor]), torch.cat([Xi, X[a_ids]]),
                                      torch.cat([torch.ones(P.shape[0], dtype=dt), wa]))
            if verbose:
                res_a = (scale * P_anchor @ R.T + t - X[a_ids]).norm(dim=-1)
                print(f"round {it}: surface distance median {float(dist.median()):.2f} mm, max "
                      f"{float(dist.max()):.2f}; anchors mean {float(res_a.mean()):.2f} mm; scale {float(scale):.4f}")
        X = mean + torch.einsum("k,kvc->vc", c, basis)
        dist, tri, bary = closest_surface_points(scale * P @ R.T + t, X, tris)
        positions = (bary[..., None] * mean[tris[tri]]).sum(1)
    return DenseCorrespondence(positions.float(), dist.float(), torch.ones(P.shape[0], dtype=torch.long), model.name)


def _build_default(out: Path, pbtxt: Path | None = None) -> None:  # pragma: no cover - a build script
    """Register MediaPipe's canonical face to the embedded model and write the default table
    (``pbtxt``: first convert MediaPipe's geometry file into the shipped canonical mesh)."""
    from ..morphable import load_default_model
    from .detectors import MEDIAPIPE_TO_IBUG68

    if pbtxt is not None:
        mesh = read_mediapipe_geometry_pbtxt(pbtxt)
        np.savez_compressed(mediapipe_canonical_path(), vertices=mesh.vertices.numpy().astype(np.float32),
                            triangles=mesh.triangles.numpy().astype(np.int32),
                            procrustes_weights=mesh.procrustes_weights.numpy().astype(np.float32))
        print(f"wrote {mediapipe_canonical_path()}")
    model = load_default_model("full")
    table = register_dense_correspondence(model, verbose=True)
    print(f"{len(table)} points, distance to the registered surface median {float(table.spread.median()):.2f} mm, "
          f"max {float(table.spread.max()):.2f} mm")
    # the model's 68 points against MediaPipe's iBUG-68 points on the registered surface
    mp68 = table.positions[torch.tensor(MEDIAPIPE_TO_IBUG68)].mean(1)
    d = (mp68 - model.mean[model.landmarks].float()).norm(dim=-1)
    groups = {"jaw 0-16": range(0, 17), "brows 17-26": range(17, 27), "nose 27-35": range(27, 36),
              "eyes 36-47": range(36, 48), "lips 48-67": range(48, 68)}
    print("model 68 vs MediaPipe iBUG-68 on the mean face (mm): " + ", ".join(
        f"{k} {float(d[list(v)].mean()):.1f}" for k, v in groups.items()))
    table.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="Rebuild the MediaPipe correspondence table of the embedded model "
                                             "from MediaPipe's canonical face.")
    ap.add_argument("-o", "--output", type=Path, default=default_dense_correspondence_path())
    ap.add_argument("--pbtxt", type=Path, default=None,
                    help="MediaPipe's geometry_pipeline_metadata_landmarks.pbtxt: re-create the shipped canonical mesh")
    args = ap.parse_args()
    _build_default(args.output, args.pbtxt)
