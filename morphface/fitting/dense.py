"""Dense landmarks: MediaPipe Face Mesh's 468 points placed on the morphable model's surface.

MediaPipe's points are fixed points of its face mesh: at any pose each one marks the same spot of
the skin, on the near side and the far side of the face alike (unlike the jaw line of the 68-point
regressors, which follows the silhouette). Fitted through a correspondence table, they pin down
large head turns far better than 68 points (there are ~7x more, spread over cheeks, nose and brows).

MediaPipe does not ship its canonical mesh in the wheel, so the table is *estimated*:
:func:`estimate_dense_correspondence` fits the model to near-frontal images (68 points, or an earlier
table), finds for each MediaPipe point the visible model vertex whose projection is nearest, and takes
the per-point median of those vertices' positions on the model's mean shape across images.
``python -m morphface.fitting.dense ../shared/testdata`` rebuilds the table that ships with the default
model (``assets/ict_facekit/mediapipe468.npz``) from the test photos and clip; :class:`DenseCorrespondence`
keeps the per-point spread across images, which weights the fit.

Units: positions in mm in the model frame (``morphface.camera``); pixel coordinates as everywhere.
"""

from __future__ import annotations

import functools
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
    "MEDIAPIPE_DENSE_POINTS",
    "default_dense_correspondence_path",
    "load_dense_correspondence",
    "estimate_dense_correspondence",
    "dense_correspondence_for",
    "fit_dense_landmarks",
]

#: MediaPipe Face Mesh points without the 10 iris points (``refine_landmarks`` adds them after these).
MEDIAPIPE_DENSE_POINTS = 468


def default_dense_correspondence_path() -> Path:
    """The MediaPipe table estimated for the embedded ICT-FaceKit model."""
    return Path(__file__).resolve().parents[1] / "assets" / "ict_facekit" / "mediapipe468.npz"


@dataclass
class DenseCorrespondence:
    """Where each dense landmark lies on a model.

    Attributes:
        positions: ``(N, 3)`` mm, points on the model's mean shape (model frame).
        spread: ``(N,)`` mm, median distance of the per-image estimates from ``positions`` (how well
            the point is defined; large on the face outline).
        counts: ``(N,)`` images that contributed to each point (0: unknown, ignored).
        model_name: the model the table was estimated for.
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
        :func:`~morphface.fitting.fit_landmarks` ignores ``-1`` entries."""
        mean = model.mean.reshape(-1, 3).detach().to(device="cpu", dtype=torch.float32)
        return _nearest_vertices(mean, self.positions.float().cpu(), self.counts.cpu(), float(max_distance)).to(
            model.mean.device)

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
    return _load_cached(str(p.resolve()))


def dense_correspondence_for(model: MorphableModel, n_points: int) -> DenseCorrespondence | None:
    """The shipped table if it was estimated for ``model`` (same name: the embedded ICT model or a
    region of it) and has ``n_points`` points, else ``None``."""
    path = default_dense_correspondence_path()
    if not path.is_file():
        return None
    table = load_dense_correspondence(path)
    return table if table.model_name == model.name and len(table) == n_points else None


def fit_dense_landmarks(model: MorphableModel, points: Tensor, image_size: tuple[int, int],
                        correspondence: DenseCorrespondence | None = None, **fit_kwargs) -> FitResult:
    """:func:`~morphface.fitting.fit_landmarks` on dense landmarks through a correspondence table.

    Args:
        model: the morphable model.
        points: ``(B, N, 2)`` pixel coordinates (MediaPipe's first 468 points; irises are not used).
        image_size: ``(H, W)``.
        correspondence: the table (default: the shipped MediaPipe table, which must fit ``model``).
        **fit_kwargs: passed to :func:`~morphface.fitting.fit_landmarks` (not ``vertex_ids``); ``weights``
            ``(N,)`` or ``(B, N)`` multiply the table's per-point weights.

    Returns:
        A :class:`FitResult` whose ``landmarks`` and ``residuals`` refer to the dense points.

    Raises:
        ModelFormatError: no table for this model.
    """
    from .landmark_fit import fit_landmarks

    points = torch.as_tensor(points)
    if correspondence is None:
        correspondence = dense_correspondence_for(model, points.shape[-2])
        if correspondence is None:
            raise ModelFormatError(f"no dense-correspondence table with {points.shape[-2]} points for model "
                                   f"{model.name!r}; estimate one with estimate_dense_correspondence")
    weights = correspondence.weights()
    if "weights" in fit_kwargs:
        weights = weights * torch.as_tensor(fit_kwargs.pop("weights"), dtype=weights.dtype)
    return fit_landmarks(model, points, image_size, vertex_ids=correspondence.vertex_ids(model),
                         weights=weights, **fit_kwargs)


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


def _build_default(root: Path, out: Path, clip_every: int = 30) -> None:  # pragma: no cover - a build script
    """Estimate the default table from the photos in ``root`` and every ``clip_every``-th frame of its
    first ``.mp4`` (the project's shared test data)."""
    import math

    from tqdm.auto import tqdm

    from ..io import read_image, read_video
    from ..morphable import load_default_model
    from .detectors import make_detector
    from .landmark_fit import fit_landmarks

    images = [read_image(p) for p in sorted(root.glob("*")) if p.suffix.lower() in (".png", ".jpg")]
    frames = read_video(next(root.glob("*.mp4"))).frames[::clip_every]
    images += list(frames)
    det = make_detector("mediapipe")
    model = load_default_model("full")
    samples = []
    for img in tqdm(images, desc="detect"):
        faces = det.detect(img)
        if faces:
            f = max(faces, key=lambda f: f.area)
            samples.append((tuple(img.shape[-2:]), f.landmarks_2d, f.dense[:MEDIAPIPE_DENSE_POINTS, :2].float()))
    fits, dense = [], []
    for size, lm68, pts in samples:
        fit = fit_landmarks(model, lm68[None], size)
        if abs(math.degrees(float(fit.angles[0, 1]))) < 20:  # near-frontal: a visible vertex under every point
            fits.append(fit)
            dense.append(pts)
    # One round only: refitting with the table itself would reproduce it (its own fixed point).
    table = estimate_dense_correspondence(model, fits, [p[None] for p in dense])
    known = table.counts > 0
    print(f"{len(fits)} near-frontal images, {int(known.sum())} points, median spread "
          f"{float(table.spread[known].median()):.2f} mm")
    table.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="Re-estimate the MediaPipe correspondence table of the embedded model.")
    ap.add_argument("data", type=Path, help="folder of near-frontal face photos and one talking-head .mp4")
    ap.add_argument("-o", "--output", type=Path, default=default_dense_correspondence_path())
    args = ap.parse_args()
    _build_default(args.data, args.output)
