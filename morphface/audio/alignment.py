"""Audio features aligned to video frames: a window of ``2k`` audio parts centred on every frame.

HeadGAN conditions the mouth on the audio around each frame: the audio around frame ``t`` is split
into ``2k`` consecutive parts and each part gives one feature vector (DeepSpeech character logits
in the paper). DeepSpeech weights cannot be had offline, so here each part's vector is the mean of
the MFCC + delta + log-energy frames (:func:`morphface.audio.features.audio_features`, 27 values
with the default :class:`MFCCConfig`) that fall inside the part. :func:`align_to_frames` takes any
feature sequence with a known rate, so logits of a speech recogniser can be plugged in instead.

Timing conventions
------------------
* Video frame ``t`` is shown at time ``t / fps`` seconds (its presentation timestamp).
* Feature frame ``j`` (rate ``r`` frames per second) describes the interval
  ``[(j - 1/2) / r, (j + 1/2) / r)`` around its centre ``j / r``; the feature sequence is treated as
  piecewise constant over these intervals and extended beyond both ends by repeating its first /
  last frame (edge video frames pad by repeating the border).
* Part ``p = 0 .. 2k-1`` of frame ``t`` covers ``[t / fps + (p - k) L, t / fps + (p - k + 1) L)`` with
  part length ``L`` (default ``1 / (2 fps)``: two parts per video frame, like DeepSpeech's 50 Hz
  logits for 25 fps video), so the window spans ``k L`` seconds before and after ``t / fps`` and the
  two central parts ``k-1, k`` together cover exactly the frame's own interval
  ``[(t - 1/2) / fps, (t + 1/2) / fps)``.
* A part's vector is the exact time-weighted mean of the piecewise-constant features over the
  part, so any part length works (a part shorter than a feature frame takes the overlap-weighted
  mean of the one or two frames it touches).

Default output: ``(n_frames, 2k, 27)``, i.e. ``(n_frames, 4, 27)`` for ``k = 2``, or flattened
``(n_frames, 108)`` (:data:`DEFAULT_FLAT_SIZE`).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from .features import DEFAULT_FEATURE_SIZE, MFCCConfig, audio_features, feature_size

__all__ = [
    "DEFAULT_K",
    "DEFAULT_FLAT_SIZE",
    "align_to_frames",
    "frame_aligned_features",
    "frame_aligned_feature_size",
    "video_audio_features",
]

#: Default half window: 2k = 4 parts per video frame.
DEFAULT_K = 2
#: Size of the flattened default per-frame feature: ``2 * DEFAULT_K * DEFAULT_FEATURE_SIZE`` = 108.
DEFAULT_FLAT_SIZE = 2 * DEFAULT_K * DEFAULT_FEATURE_SIZE


def frame_aligned_feature_size(k: int = DEFAULT_K, config: MFCCConfig | None = None) -> int:
    """Length of one flattened per-frame feature, ``2k * feature_size(config)``."""
    return 2 * k * feature_size(config)


def _check_timing(fps: float, k: int, part_duration: float | None) -> float:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number; got {fps!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1 (2k parts per frame); got {k!r}")
    length = 1.0 / (2.0 * fps) if part_duration is None else float(part_duration)
    if not (math.isfinite(length) and length > 0):
        raise ValueError(f"part_duration must be > 0 seconds; got {part_duration!r}")
    return length


def align_to_frames(features: Tensor, feature_rate: float, fps: float, n_frames: int, k: int = DEFAULT_K,
                    *, part_duration: float | None = None, flatten: bool = False) -> Tensor:
    """Resample a feature sequence to ``2k`` part-averaged vectors per video frame (timing: module docstring).

    Args:
        features: ``(..., J, D)`` feature frames; frame ``j`` is centred on ``j / feature_rate`` s.
        feature_rate: feature frames per second (``sample_rate / hop`` for MFCCs).
        fps: video frame rate.
        n_frames: number of video frames to produce.
        k: half the number of parts per frame.
        part_duration: part length in seconds; ``None``: ``1 / (2 fps)``.
        flatten: return ``(..., n_frames, 2k * D)`` instead of ``(..., n_frames, 2k, D)``.

    Returns:
        ``(..., n_frames, 2k, D)`` (or flattened), same dtype and device as ``features``.
    """
    length = _check_timing(fps, k, part_duration)
    if not isinstance(features, Tensor) or features.ndim < 2 or features.shape[-2] < 1:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must have shape (..., J, D) with J >= 1 frames; got {shape}")
    if not (math.isfinite(feature_rate) and feature_rate > 0):
        raise ValueError(f"feature_rate must be > 0 frames per second; got {feature_rate!r}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be an int >= 1; got {n_frames!r}")
    j_count = features.shape[-2]
    # MPS has no float64; elsewhere the running sum is kept in float64 so long clips lose no precision.
    acc = torch.float32 if features.device.type == "mps" else torch.float64
    f = features.to(acc)
    # Integral of the piecewise-constant feature over cell coordinates: cell j spans u in [j, j+1).
    cums = torch.cat([torch.zeros_like(f[..., :1, :]), f.cumsum(-2)], dim=-2)  # (..., J+1, D)

    t = torch.arange(n_frames, dtype=acc, device=f.device)[:, None] / fps
    edges = t + (torch.arange(2 * k + 1, dtype=acc, device=f.device) - k) * length  # (N, 2k+1) seconds
    u = edges * feature_rate + 0.5
    cell = u.floor().clamp(0, j_count - 1)
    frac = (u - cell).unsqueeze(-1)  # < 0 or > 1 outside the sequence: linear extension = border repeat
    idx = cell.long().reshape(-1)
    integral = cums.index_select(-2, idx) + frac.reshape(-1, 1) * f.index_select(-2, idx)
    integral = integral.reshape(*f.shape[:-2], n_frames, 2 * k + 1, f.shape[-1])
    out = (integral[..., 1:, :] - integral[..., :-1, :]) / (length * feature_rate)
    out = out.to(features.dtype)
    return out.flatten(-2) if flatten else out


def frame_aligned_features(waveform: Tensor, sample_rate: int, fps: float, k: int = DEFAULT_K, *,
                           n_frames: int | None = None, part_duration: float | None = None,
                           config: MFCCConfig | None = None, flatten: bool = False) -> Tensor:
    """Per-video-frame audio features: ``2k`` parts of MFCC + deltas + log energy around each frame.

    Args:
        waveform: ``(T,)`` or ``(..., T)`` float samples in ``[-1, 1]`` (``load_audio`` output).
        sample_rate: Hz.
        fps: video frame rate (frames per second).
        k: half window; each frame gets ``2k`` parts (HeadGAN's window of ``2k`` audio features).
        n_frames: number of video frames; ``None``: ``round(T / sample_rate * fps)`` (pass the
            video's frame count when it is known, e.g. :func:`count_video_frames`).
        part_duration: seconds per part; ``None``: ``1 / (2 fps)``.
        config: MFCC front end (default: 27 features per part).
        flatten: return ``(..., n_frames, 2k * D)`` (108 by default) instead of ``(..., n_frames, 2k, D)``.

    Returns:
        ``(..., n_frames, 2k, D)`` float tensor on the waveform's device and dtype. Part ``p`` of
        frame ``t`` averages the audio in ``[t/fps + (p-k) L, t/fps + (p-k+1) L)``; audio outside
        the waveform repeats the first / last feature frame.
    """
    c = config or MFCCConfig()
    _check_timing(fps, k, part_duration)
    feats = audio_features(waveform, sample_rate, c)
    if n_frames is None:
        n_frames = max(1, int(round(waveform.shape[-1] / sample_rate * fps)))
    rate = sample_rate / c.hop_length(sample_rate)
    return align_to_frames(feats, rate, fps, n_frames, k, part_duration=part_duration, flatten=flatten)


def video_audio_features(path: str | os.PathLike, k: int = DEFAULT_K, *, sample_rate: int = 16000,
                         config: MFCCConfig | None = None, flatten: bool = False,
                         count_frames: bool = True) -> Tensor:
    """Frame-aligned audio features of a video file, one entry per video frame.

    Args:
        path: a video with an audio track.
        k: half window (``2k`` parts per frame).
        sample_rate: rate the audio is decoded at.
        config: MFCC front end.
        flatten: as in :func:`frame_aligned_features`.
        count_frames: decode the video to count its frames exactly (else ``round(duration * fps)``
            of the audio).

    Returns:
        ``(n_video_frames, 2k, D)`` float32 (or ``(n_video_frames, 2k * D)``).

    Raises:
        AudioReadError: no audio track. ImageReadError: no readable video stream.
    """
    from .io import count_video_frames, load_audio, video_frame_rate

    fps = video_frame_rate(path)
    wave, sr = load_audio(path, sample_rate)
    n = count_video_frames(path) if count_frames else None
    return frame_aligned_features(wave, sr, fps, k, n_frames=n, config=config, flatten=flatten)
