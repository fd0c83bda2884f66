"""Fitting a video: one identity per clip, per-frame expression and pose, temporal smoothness.

Three passes, so that a long video never has to sit in memory (only its landmarks and parameters,
a few hundred floats per frame, are kept):

1. **Landmarks** are detected chunk by chunk (frames streamed from the file). Frames where no
   face is found get landmarks interpolated from their neighbours; a clip with no face at all
   raises :class:`NoFaceError`.
2. **Identity**: one identity is fitted **jointly** with per-frame expression and pose on up to
   ``identity_frames`` frames spread over the clip (:func:`fit_landmarks` with
   ``shared_identity=True``: its N(0, I) prior counts once per clip, and the many views pin down
   the 3D shape far better than an average of per-frame estimates, which each shrink toward the
   mean). Every frame is then fitted with that identity fixed (expression and pose), in chunks.
3. **Temporal smoothness**: expression, Euler angles and translation are smoothed over time by
   the MAP estimate under a Gaussian prior on their second differences,
   ``argmin_x ||x - x_fit||^2 + lambda ||D2 x||^2`` (one banded linear solve per clip; a
   Whittaker smoother), which removes landmark jitter without lagging behind fast motion the
   way a moving average does.

Optionally (``photometric_steps > 0``) each chunk is then refined by :func:`fit_photometric` with the
identity fixed, frames streamed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from ..errors import NoFaceError
from ..morphable import MorphableModel
from ._images import check_image_values
from .dense import MEDIAPIPE_DENSE_POINTS, dense_correspondence_for
from .detectors import resolve_detector
from .image import dense_points
from .landmark_fit import fit_landmarks, spd_solve
from .photometric import fit_photometric
from .result import FitResult

__all__ = ["fit_video", "detect_video_landmarks", "smooth_sequence", "smooth_video_fit", "interpolate_missing"]


def _chunks(frames, chunk: int) -> Iterator[Tensor]:
    """Yield ``(T, 3, H, W)`` float chunks from a path, a tensor, or an iterable of chunks."""
    if isinstance(frames, (str, Path)):
        from ..io import iter_video

        yield from iter_video(frames, chunk=chunk)
    elif isinstance(frames, Tensor):
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W) RGB in [0, 1]; got {tuple(frames.shape)}")
        for i in range(0, frames.shape[0], chunk):
            yield frames[i:i + chunk]
    else:
        yield from frames


def interpolate_missing(values: Tensor, valid: Tensor) -> Tensor:
    """Fill rows of ``values (T, ...)`` where ``valid (T,)`` is False by linear interpolation in time
    (constant beyond the first/last valid row)."""
    if not bool(valid.any()):
        raise ValueError("no valid rows to interpolate from")
    T = values.shape[0]
    t = torch.arange(T, dtype=torch.float64)
    good = torch.nonzero(valid).reshape(-1)
    pos = torch.searchsorted(good, torch.arange(T)).clamp(1, max(good.numel() - 1, 1))
    lo, hi = good[(pos - 1).clamp(min=0)], good[pos.clamp(max=good.numel() - 1)]
    span = (t[hi] - t[lo]).clamp(min=1.0)
    w = ((t - t[lo]) / span).clamp(0.0, 1.0).to(values.dtype).reshape(T, *[1] * (values.dim() - 1))
    filled = values[lo] * (1 - w) + values[hi] * w
    return torch.where(valid.reshape(T, *[1] * (values.dim() - 1)), values, filled)


def smooth_sequence(x: Tensor, strength: float) -> Tensor:
    """Whittaker smoothing of ``x (T, D)`` along time: ``(I + strength * D2^T D2)^{-1} x``.

    ``strength`` is the weight of the squared second differences relative to the data term (0: off).
    The solve is dense in ``T``; clips of a few thousand frames take well under a second.
    """
    T = x.shape[0]
    if strength <= 0 or T < 3:
        return x
    D = torch.zeros(T - 2, T, dtype=torch.float64)
    idx = torch.arange(T - 2)
    D[idx, idx], D[idx, idx + 1], D[idx, idx + 2] = 1.0, -2.0, 1.0
    A = torch.eye(T, dtype=torch.float64) + strength * D.T @ D
    return spd_solve(A, x.to(torch.float64)).to(x.dtype)


def smooth_video_fit(model: MorphableModel, fit: FitResult, landmarks: Tensor, smoothness: float,
                     vertex_ids: Tensor | None = None) -> FitResult:
    """The temporal pass of :func:`fit_video` (module doc, step 3) on a per-frame fit.

    Expression, Euler angles and translation are Whittaker-smoothed with weight ``smoothness``
    (:func:`smooth_sequence`; blendshape weights clamped to [0, 1] afterwards), then the model
    landmarks are projected again and the residuals recomputed. ``fit_video(..., smoothness=s)``
    equals ``smooth_video_fit(model, fit_video(..., smoothness=0), landmarks, s)``, which gives
    callers the fit both before and after smoothing for the price of one fit.

    Args:
        model: the model the fit refers to.
        fit: ``T`` per-frame fits of one clip, in time order.
        landmarks: ``(T, L, 2)`` the target landmarks in pixels (for the residuals).
        smoothness: weight of the second-difference prior (0: no smoothing, only re-projection).
        vertex_ids: ``(L,)`` model vertex per landmark (``-1``: none); default ``model.landmarks``.

    Returns:
        A new :class:`FitResult` (``fit`` is not modified) whose ``landmarks`` are ``(T, L, 2)``
        pixels and ``residuals`` ``(T,)`` RMSE in pixels over the landmarks that have a vertex.
    """
    from dataclasses import replace

    ids = model.landmarks if vertex_ids is None else vertex_ids
    lms = torch.as_tensor(landmarks, dtype=torch.float32)
    exp = smooth_sequence(fit.exp_coeffs, smoothness)
    if model.exp_kind == "blendshape":
        exp = exp.clamp(0.0, 1.0)
    out = replace(fit, exp_coeffs=exp, angles=smooth_sequence(fit.angles, smoothness),
                  translation=smooth_sequence(fit.translation, smoothness), history=list(fit.history))
    cam_pts, _ = out.camera.project(out.vertices(model)[:, ids.clamp(min=0)])
    out.landmarks = cam_pts
    known = (ids >= 0).to(cam_pts)  # points with no vertex (missing landmarks, unknown table rows)
    out.residuals = ((((cam_pts - lms) ** 2).sum(-1) * known).sum(1) / known.sum().clamp(min=1)).sqrt()
    return out


def detect_video_landmarks(
    frames, detector, chunk: int = 32, progress: bool = True, dense: bool = False
) -> tuple[Tensor, Tensor, tuple]:
    """Landmarks ``(T, 68, 2)`` of the largest face per frame (with ``dense``: MediaPipe's ``(T, 468, 2)``
    points; ``ValueError`` if the detector gives none), a ``(T,)`` found mask and ``(H, W)``."""
    from tqdm.auto import tqdm

    n = MEDIAPIPE_DENSE_POINTS if dense else 68
    lms, found, size = [], [], None
    bar = tqdm(desc="detecting", unit="frame", disable=not progress, leave=False)
    for block in _chunks(frames, chunk):
        size = tuple(block.shape[-2:])
        check_image_values(block, "video frames")
        for img in block:
            faces = detector.detect(img)
            best = max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))) if faces else None
            points = None
            if best is not None:
                points = dense_points([best]) if dense else torch.as_tensor(best.landmarks, dtype=torch.float32)[None]
                if points is None:
                    who = getattr(detector, "name", type(detector).__name__)
                    raise ValueError(f"dense=True needs a detector that gives dense points (MediaPipe); {who} does not")
            if points is not None:
                lms.append(points[0, :, :2])
                found.append(True)
            else:
                lms.append(torch.zeros(n, 2))
                found.append(False)
            bar.update(1)
    bar.close()
    if not lms:
        raise ValueError("the video has no frames")
    return torch.stack(lms), torch.tensor(found), size


def fit_video(
    model: MorphableModel,
    frames: str | Path | Tensor | Iterable[Tensor],
    landmarks: Tensor | None = None,
    image_size: tuple[int, int] | None = None,
    detector=None,
    chunk: int = 32,
    smoothness: float = 4.0,
    photometric_steps: int = 0,
    identity_frames: int = 128,
    progress: bool = True,
    name: str | None = None,
    dense: bool | None = None,
    **fit_kwargs,
) -> FitResult:
    """Fit a clip: shared identity, per-frame expression and pose.

    Args:
        model: the morphable model (e.g. ``load_default_model("narrow")``).
        frames: a video path, a ``(T, 3, H, W)`` tensor in [0, 1], or an iterable of such chunks.
            Only needed for detection (``landmarks=None``) and the photometric pass.
        landmarks: ``(T, 68, 2)`` pixels (or MediaPipe's ``(T, 468, 2)``, fitted through the model's
            dense-correspondence table), if already known (then ``frames`` may be ``None`` and
            ``image_size`` must be given).
        image_size: ``(H, W)``; inferred from the frames when they are read.
        detector: a :class:`LandmarkDetector`, or a backend name for :func:`make_detector`
            (``"auto"``, ``"dlib"``, ``"fan"``, ``"mediapipe"``); default ``"auto"``.
        chunk: frames per chunk (memory bound of the streaming passes).
        smoothness: weight of the temporal second-difference prior (module docstring); 0 turns it off.
        photometric_steps: optional analysis-by-synthesis steps per chunk (identity fixed).
        identity_frames: how many frames (evenly spread) the shared identity is fitted on.
        progress: show progress bars.
        name: the file name used in error messages.
        dense: detect and fit MediaPipe's 468 points (:func:`~morphface.fitting.fit_dense_landmarks`)
            instead of the 68. ``None``: when the detector is MediaPipe and the model has a table.
        **fit_kwargs: passed to :func:`fit_landmarks` (``camera``, ``landmark_sigma``...).

    Returns:
        A :class:`FitResult` with ``T`` entries (identity rows all equal).

    Raises:
        NoFaceError: no face in any frame.
    """
    from tqdm.auto import tqdm

    label = name or (str(frames) if isinstance(frames, (str, Path)) else "video")
    if landmarks is None:
        detector = resolve_detector(detector)
        if dense is None:
            dense = getattr(detector, "name", "") == "mediapipe" and dense_correspondence_for(
                model, MEDIAPIPE_DENSE_POINTS
            ) is not None
        lms, found, size = detect_video_landmarks(frames, detector, chunk, progress, dense=bool(dense))
        image_size = image_size or size
        if not bool(found.any()):
            raise NoFaceError(f"{label}: no face found in any of its {lms.shape[0]} frames")
        lms = interpolate_missing(lms, found)
    else:
        if image_size is None:
            raise ValueError("image_size (H, W) is needed when landmarks are given")
        lms = torch.as_tensor(landmarks, dtype=torch.float32)
    T = lms.shape[0]
    ids = model.landmarks
    if dense and lms.shape[1] == 68:
        raise ValueError("dense=True needs MediaPipe's 468 points per frame; got 68 landmarks")
    if lms.shape[1] != 68:
        table = dense_correspondence_for(model, lms.shape[1])
        if table is None:
            raise ValueError(f"{lms.shape[1]} landmarks per frame need a dense-correspondence table; model "
                             f"{model.name!r} has none with that many points")
        ids = table.vertex_ids(model)
        fit_kwargs = {**fit_kwargs, "vertex_ids": ids, "weights": table.weights() * fit_kwargs.get("weights", 1.0)}

    pick = torch.linspace(0, T - 1, min(T, identity_frames)).round().long().unique()
    identity = fit_landmarks(model, lms[pick], image_size, shared_identity=True, **fit_kwargs).id_coeffs[:1]
    raw = FitResult.cat([fit_landmarks(model, lms[i:i + chunk], image_size, id_coeffs=identity, **fit_kwargs)
                         for i in range(0, T, chunk)])
    fit = smooth_video_fit(model, raw, lms, smoothness, vertex_ids=ids)

    if photometric_steps > 0:
        if frames is None:
            raise ValueError("the photometric pass needs the frames")
        refined, start = [], 0
        bar = tqdm(total=T, desc="photometric", unit="frame", disable=not progress, leave=False)
        for block in _chunks(frames, chunk):
            n = block.shape[0]
            refined.append(fit_photometric(model, block, init=fit[start:start + n], steps=photometric_steps,
                                           fit_identity=False))
            start += n
            bar.update(n)
        bar.close()
        fit = FitResult.cat(refined)
    fit.check_finite()
    return fit
