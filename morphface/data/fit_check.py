"""Fitting accuracy measured on synthetic clips, whose true parameters are known.

Each synthetic clip (``meta["ground_truth"]``) is fitted from its frames alone, as a real video
would be: landmarks from a detector (dlib by default), then :func:`~morphface.fitting.fit_video`
(shared identity, temporal smoothing). The fit is compared with the stored ground truth:
the geodesic rotation error in degrees per frame, and the 2D distance between the detected
landmarks and the true projected model landmarks (how far the detector's notion of a landmark is
from the model's, plus detection noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ..fitting import FitResult, fit_video, rotation_error_degrees
from .cache import PARAMS_NAME, find_clips, load_cache_model, read_clip_frames

__all__ = ["ClipFitAccuracy", "SynthFitAccuracy", "fit_accuracy_on_synth"]


class ClipFitAccuracy(NamedTuple):
    """One clip: ``path``; rotation error ``rotation_median`` / ``rotation_mean`` in degrees;
    ``landmark_error`` mean pixel distance detected vs true landmarks (on the clip's frames);
    ``detected`` share of frames with a detection."""

    path: Path
    rotation_median: float
    rotation_mean: float
    landmark_error: float
    detected: float


class SynthFitAccuracy(NamedTuple):
    """All clips: per-clip results, and the median / mean / 90th percentile of the per-frame rotation
    errors pooled over every frame (degrees). ``failed`` lists ``(path, message)`` of clips whose
    fit raised."""

    clips: list[ClipFitAccuracy]
    rotation_median: float
    rotation_mean: float
    rotation_p90: float
    failed: list[tuple[Path, str]]


def fit_accuracy_on_synth(root: str | Path, detector: str = "dlib", max_clips: int | None = None,
                          progress: bool = True) -> SynthFitAccuracy:
    """Fit the synthetic clips under ``root`` and compare with their ground truth (module doc).

    Args:
        root: a cache written by :func:`~morphface.data.synth.synthesize_dataset`.
        detector: landmark detector backend for :func:`~morphface.fitting.make_detector`.
        max_clips: fit at most this many clips (the first ones by path).
        progress: show a progress bar.

    Raises:
        ValueError: no ground-truth clip under ``root``, or none could be fitted.
    """
    from tqdm.auto import tqdm

    from ..errors import MorphfaceError, NoFaceError
    from ..fitting import make_detector
    from ..fitting.video import detect_video_landmarks, interpolate_missing

    clips = [r for r in find_clips(root) if r.meta.get("ground_truth")]
    if not clips:
        raise ValueError(f"no synthetic (ground-truth) clip under {root}")
    clips = clips[:max_clips] if max_clips is not None else clips
    det = make_detector(detector)
    results, failed, errors = [], [], []
    models: dict = {}
    for r in tqdm(clips, desc="fit-check", unit="clip", disable=not progress):
        model = models.setdefault(r.meta["model"], load_cache_model(r.meta["model"]))
        gt = FitResult.load(r.path / PARAMS_NAME)
        frames = read_clip_frames(r.path).float() / 255.0
        try:
            lms, found, size = detect_video_landmarks(frames, det, progress=False)
            if not bool(found.any()):
                raise NoFaceError(f"{r.path}: no face found in any of its {lms.shape[0]} frames")
            fit = fit_video(model, None, landmarks=interpolate_missing(lms, found), image_size=size, progress=False,
                            name=str(r.path))
        except MorphfaceError as e:
            failed.append((r.path, f"{type(e).__name__}: {e}"))
            continue
        err = rotation_error_degrees(fit.angles, gt.angles)
        true_lm, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks.clamp(min=0)])
        lm_err = (lms - true_lm).norm(dim=-1).mean(-1)[found]
        errors.append(err)
        results.append(ClipFitAccuracy(path=r.path, rotation_median=float(err.median()),
                                       rotation_mean=float(err.mean()),
                                       landmark_error=float(lm_err.mean()) if lm_err.numel() else float("nan"),
                                       detected=float(found.float().mean())))
    if not errors:
        raise ValueError(f"no synthetic clip under {root} could be fitted: {failed[:3]}")
    pooled = torch.cat(errors)
    return SynthFitAccuracy(clips=results, rotation_median=float(pooled.median()), rotation_mean=float(pooled.mean()),
                            rotation_p90=float(pooled.quantile(0.9)), failed=failed)
