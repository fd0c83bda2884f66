"""Per-clip quality statistics of ``morphface preprocess``: frame accounting, fit error and jitter.

**Jitter** is the RMS of the temporal **second difference** ``a[t] = x[t+1] - 2 x[t] + x[t-1]``, a
discrete acceleration. Smooth motion (constant velocity) gives exactly zero, so head movement is not
counted; frame-to-frame noise is: independent noise of standard deviation ``s`` per coordinate gives
``sqrt(6) s`` per coordinate (``sqrt(12) s`` for the length of a 2D point's second difference), and an
alternation ``+d, -d, +d, ...`` gives ``4 d``. Only triplets ``(t-1, t, t+1)`` whose three frames are
all valid (a face was detected: no interpolated landmarks) are counted, so a gap filled by linear
interpolation does not make a clip look smoother than it is.

* :func:`landmark_jitter`: landmarks ``(T, L, 2)`` in pixels (the crop's pixels in the cache) ->
  ``sqrt(mean over t, l of |a[t, l]|^2)`` in px/frame^2, ``|.|`` the Euclidean length of the 2D
  second difference.
* :func:`pose_jitter`: Euler angles ``(T, 3)`` (pitch, yaw, roll) in **degrees** -> ``(3,)`` the RMS
  second difference of each angle, deg/frame^2 (differences wrapped to ``[-180, 180)``).
* :func:`rms`: the combined value of such per-component numbers, ``sqrt(mean(v^2))``.
* :func:`face_runs`: the leading / interior / trailing frames without a face of a detection mask.
* :func:`summary_table`: the markdown table ``morphface preprocess`` prints and writes as
  ``CACHE/preprocess_summary.md``, from the clips' ``meta.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["landmark_jitter", "pose_jitter", "rms", "FaceRuns", "face_runs", "summary_table", "SUMMARY_NAME"]

SUMMARY_NAME = "preprocess_summary.md"


def _second_differences(x: Tensor, valid: Tensor | None) -> Tensor:
    """``(M, ...)`` second differences of ``x (T, ...)`` over the ``M`` triplets whose frames are all valid."""
    if x.dim() < 2:
        raise ValueError(f"a sequence must be (T, ...) with at least one value per frame; got {tuple(x.shape)}")
    T = x.shape[0]
    if valid is not None:
        valid = torch.as_tensor(valid, dtype=torch.bool)
        if valid.shape != (T,):
            raise ValueError(f"valid must be a (T,) = ({T},) mask; got {tuple(valid.shape)}")
    if T < 3:
        return x.new_zeros((0, *x.shape[1:]))
    a = x[2:] - 2 * x[1:-1] + x[:-2]
    if valid is not None:
        a = a[valid[2:] & valid[1:-1] & valid[:-2]]
    return a


def landmark_jitter(landmarks: Tensor, valid: Tensor | None = None) -> float:
    """Landmark jitter (module doc): RMS length of the second difference of each point.

    Args:
        landmarks: ``(T, L, 2)`` pixel positions.
        valid: ``(T,)`` frames to use (default all); triplets with an invalid frame are skipped.

    Returns:
        px/frame^2, or NaN when no triplet of three valid frames exists (fewer than 3 frames).

    Raises:
        ValueError: ``landmarks`` is not ``(T, L, 2)`` or ``valid`` not ``(T,)``.
    """
    if not isinstance(landmarks, Tensor) or landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        shape = tuple(landmarks.shape) if isinstance(landmarks, Tensor) else type(landmarks).__name__
        raise ValueError(f"landmarks must be (T, L, 2) pixels; got {shape}")
    a = _second_differences(landmarks.detach().to(torch.float64), valid)
    if a.shape[0] == 0:
        return math.nan
    return float((a ** 2).sum(-1).mean().sqrt())


def pose_jitter(angles_deg: Tensor, valid: Tensor | None = None) -> Tensor:
    """Pose jitter (module doc): RMS second difference of each Euler angle.

    Args:
        angles_deg: ``(T, 3)`` pitch, yaw, roll in degrees.
        valid: ``(T,)`` frames to use (default all).

    Returns:
        ``(3,)`` float64 deg/frame^2 (pitch, yaw, roll); NaN when no valid triplet exists.

    Raises:
        ValueError: ``angles_deg`` is not ``(T, 3)`` or ``valid`` not ``(T,)``.
    """
    if not isinstance(angles_deg, Tensor) or angles_deg.dim() != 2 or angles_deg.shape[-1] != 3:
        shape = tuple(angles_deg.shape) if isinstance(angles_deg, Tensor) else type(angles_deg).__name__
        raise ValueError(f"angles must be (T, 3) degrees (pitch, yaw, roll); got {shape}")
    x = angles_deg.detach().to(torch.float64)
    if x.shape[0] >= 2:  # unwrap, so that a turn through +-180 degrees is not a 360 degree jump
        step = torch.remainder(x.diff(dim=0) + 180.0, 360.0) - 180.0
        x = torch.cat([x[:1], x[:1] + step.cumsum(0)])
    a = _second_differences(x, valid)
    if a.shape[0] == 0:
        return torch.full((3,), math.nan, dtype=torch.float64)
    return (a ** 2).mean(0).sqrt()


def rms(values: Tensor | Sequence[float]) -> float:
    """``sqrt(mean(values^2))`` (NaN for an empty input)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    return float((v ** 2).mean().sqrt()) if v.numel() else math.nan


class FaceRuns(NamedTuple):
    """Where a clip has no face: ``leading`` and ``trailing`` counts of frames before the first and
    after the last detection, and the ``interior`` frame indices in between without one."""

    leading: int
    trailing: int
    interior: list[int]


def face_runs(found: Tensor) -> FaceRuns:
    """Split a ``(T,)`` detection mask into its runs without a face (indices of ``found``).

    Raises:
        ValueError: ``found`` is not a non-empty ``(T,)`` mask, or has no detection at all.
    """
    found = torch.as_tensor(found, dtype=torch.bool)
    if found.dim() != 1 or found.numel() == 0:
        raise ValueError(f"found must be a non-empty (T,) mask; got {tuple(found.shape)}")
    idx = torch.nonzero(found).reshape(-1)
    if idx.numel() == 0:
        raise ValueError("found has no detection; a clip without any face has no runs to split")
    first, last = int(idx[0]), int(idx[-1])
    inner = torch.nonzero(~found[first:last + 1]).reshape(-1) + first
    return FaceRuns(first, found.numel() - 1 - last, [int(i) for i in inner])


# ----------------------------------------------------------------------------------------- table
_COLUMNS = ("clip", "source frames", "kept", "no face: start / interior / end", "handling", "fit RMSE px",
            "landmark jitter px: detector / raw fit / smoothed fit", "pose jitter deg: raw fit / smoothed fit",
            "audio")


def _num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _row(name: str, meta: dict) -> list[str]:
    stats = meta.get("stats") or {}
    nf = meta.get("no_face") or {}
    src = meta.get("source_frames")
    source = "-" if src is None else str(src)
    if meta.get("truncated"):
        source += f" (header: {meta.get('expected_frames', '?')}, truncated)"
    if nf:
        counts = f"{nf['leading']} / {len(nf['interior'])} / {nf['trailing']}"
        parts = []
        if nf["leading"] or nf["trailing"]:
            parts.append(f"trimmed {nf['leading'] + nf['trailing']}")
        if nf["interior"]:
            parts.append(f"interpolated {len(nf['interior'])}")
        handling = ", ".join(parts) or "none needed"
    else:
        counts, handling = "-", "-"
    fit = f"{_num(stats.get('fit_rmse_px'))} (raw {_num(stats.get('fit_rmse_raw_px'))})" if stats else "-"
    lm = " / ".join(_num(stats.get(k)) for k in ("landmark_jitter_detector_px", "landmark_jitter_raw_fit_px",
                                                   "landmark_jitter_fit_px")) if stats else "-"
    pose = " / ".join(_num(stats.get(k)) for k in ("pose_jitter_raw_fit_deg", "pose_jitter_fit_deg")) \
        if stats else "-"
    return [name, source, str(meta.get("num_frames", "-")), counts, handling, fit, lm, pose,
            "yes" if meta.get("audio") else "no"]


def summary_table(clips: Sequence[tuple[str, dict]], failed: Sequence[tuple[str, str]] = (),
                  size: int | None = None) -> str:
    """The markdown summary of a preprocessed cache.

    Args:
        clips: ``(name, meta)`` of each complete clip (``name`` e.g. ``"id/video/clip"``); clips
            written before the statistics existed show ``-``.
        failed: ``(source, "ErrorType: message")`` of clips that failed in this run.
        size: the crop side, named in the legend (pixels are crop pixels).

    Returns:
        A table with one row per clip, a legend, and the failures (if any), ending in a newline.
    """
    rows = [_row(name, meta) for name, meta in clips]
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    crop = f"{size}x{size} crop" if size else "crop"
    lines += [
        "",
        f"{len(rows)} clip(s). Pixels are {crop} pixels. **fit RMSE**: mean over frames with a detected face of "
        "the RMS distance between the cached fit's projected landmarks and the detector's (raw: the per-frame fit "
        "before temporal smoothing). **Jitter**: RMS second difference x[t+1] - 2x[t] + x[t-1] over triplets of "
        "frames with a detected face (0 for motion at constant velocity; px/frame^2 for landmarks, deg/frame^2 "
        "for pitch/yaw/roll combined). **No face**: frames where the detector found none; those before the first "
        "and after the last detection are trimmed from the cached clip, those in between are kept with "
        "landmarks interpolated from their neighbours (meta.json `no_face`).",
    ]
    if failed:
        lines += ["", f"Failed in this run ({len(failed)}; see preprocess_errors.log, retried by the next run):", ""]
        lines += [f"- `{src}`: {msg}" for src, msg in failed]
    return "\n".join(lines) + "\n"
