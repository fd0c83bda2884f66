"""Preprocess a VoxCeleb-style tree of talking-head clips into the clip cache.

Input: ``VIDEO_DIR/<identity>/<video>/<clip>.mp4`` (any container ffmpeg reads) or
``VIDEO_DIR/<identity>/<video>/<clip>/*.jpg|png`` (a folder of frames, sorted by name, at
``config.fps``). Output: ``CACHE/<identity>/<video>/<clip>/`` in the format of
:mod:`morphface.data.cache`.

Per clip:

1. **Landmarks** are detected on every frame (streamed, never the whole clip in memory); a clip
   with no face at all is an error (:class:`~morphface.errors.NoFaceError`). **Frames without a
   face** are never dropped silently: those before the first and after the last detection are
   **trimmed** from the cached clip (a blank or turned-away start would otherwise be cached with a
   made-up fit), those in between are **kept** with landmarks interpolated linearly from their
   neighbours. Both are reported: a warning (stderr and the error log) and ``meta.json``'s
   ``source_frames``, ``source_start`` (cached frame ``i`` is source frame ``source_start + i``) and
   ``no_face`` (``{"leading", "trailing", "interior": [cached indices], "handling"}``).
2. **One crop per clip**: each frame's box (:func:`~morphface.fitting.crop_box_from_landmarks`,
   side ``crop_scale`` x the landmark box, centre raised by ``crop_shift``) and the square around
   their union (:func:`~morphface.fitting.smooth_crop_track`), so the background does not jitter.
3. **Fit**: the landmarks are mapped into the crop with the crop transform (no second
   detection) and :func:`~morphface.fitting.fit_video` fits one identity and per-frame expression
   and pose in the crop's pixel coordinates, unsmoothed; its temporal smoothing
   (:func:`~morphface.fitting.video.smooth_video_fit`, weight ``smoothness``) is applied after, so
   that the statistics see the fit before and after it (the cached fit is the same as
   ``fit_video(..., smoothness=smoothness)``).
4. **Frames**: the clip is decoded again and every frame cropped to ``size x size``
   (:meth:`~morphface.fitting.CropTransform.crop`, area-averaged when shrinking) into
   ``frames.mp4`` (or ``frames/%06d.jpg``).
5. **Audio** (videos with an audio track): :func:`~morphface.audio.frame_aligned_features`
   (``k = 2``, 27 MFCC-based values per part) for the source's frames, cut to the kept ones.
6. ``meta.json`` last (atomically): the clip is complete. Its ``stats`` hold the clip's quality
   numbers (:mod:`~morphface.data.clip_stats`, all pixels in crop pixels, only frames with a
   detected face counted): ``fit_rmse_px`` / ``fit_rmse_raw_px`` (mean per-frame landmark RMSE of
   the smoothed / unsmoothed fit), ``landmark_jitter_detector_px``, ``landmark_jitter_raw_fit_px``,
   ``landmark_jitter_fit_px`` (RMS second difference of the detector's landmarks, of the unsmoothed
   and of the cached fit's projected landmarks, px/frame^2), ``pose_jitter_raw_fit_deg`` /
   ``pose_jitter_fit_deg`` (the same for pitch, yaw and roll combined, deg/frame^2; per angle in
   ``..._pyr``), ``jitter_triplets`` (frame triplets counted).

**Summary**: at the end of a run the table of all complete clips
(:func:`~morphface.data.clip_stats.summary_table`, rebuilt from their ``meta.json``, so a resumed
run covers the clips of earlier runs too) is written atomically to ``CACHE/preprocess_summary.md``
and returned in :class:`PreprocessSummary` (the CLI prints it).

**Resumable**: complete clips are skipped; a folder without ``meta.json`` (a run killed while
writing it) is deleted and redone. The settings that shape a clip (``size``, ``crop_scale``,
``crop_shift``, ``crop_mode``, ``smoothness``, ``fps``, ``model``, ``frames_format``) are stored in
the cache's ``cache_settings.json``; a run with other settings into the same cache raises
:class:`~morphface.errors.SettingsMismatchError` (the detector, audio, ``crf`` and ``chunk`` may
change between runs). **Truncated videos**: when a video decodes to fewer frames than its header
announces (:class:`~morphface.errors.TruncatedVideoWarning`) the clip is cached with the frames
there are, a warning goes to stderr and the error log, and its ``meta.json`` records
``"truncated": true`` and ``"expected_frames"``. **Errors**: a clip that fails (unreadable file, no face, a fit
that diverges, ...) is logged to ``CACHE/preprocess_errors.log`` and stderr, its partial folder is
removed, and the run goes on; it is retried by the next run. **Parallel**: clips are spread over a
``spawn`` process pool (``workers > 1``), each worker with its own model and detector and one
torch thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import AudioReadError, ImageReadError, NoFaceError, TruncatedVideoWarning
from ..io import atomic_write
from .cache import (
    CACHE_VERSION,
    PARAMS_NAME,
    check_cache_settings,
    is_complete,
    load_cache_model,
    prepare_clip_folder,
    read_meta,
    save_audio_features,
    write_meta,
)
from .clip_stats import SUMMARY_NAME, face_runs, landmark_jitter, pose_jitter, rms, summary_table

__all__ = ["PreprocessConfig", "ClipSource", "PreprocessSummary", "discover_clips", "preprocess_clip",
           "preprocess_tree", "clip_statistics", "write_summary", "ERROR_LOG", "SUMMARY_NAME"]

VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ERROR_LOG = "preprocess_errors.log"


@dataclass
class PreprocessConfig:
    """Options of the preprocessing.

    Attributes:
        size: side of the square crops in pixels.
        detector: landmark detector backend (``"auto"``, ``"dlib"``, ``"fan"``, ``"mediapipe"``).
        frames_format: ``"mp4"`` (``frames.mp4``) or ``"jpg"`` (``frames/%06d.jpg``).
        crop_scale: crop side over the landmark box's longer side.
        crop_shift: upward move of the crop centre, in landmark-box sides.
        crop_mode: ``"union"`` (the square around all per-frame boxes) or ``"median"``.
        smoothness: temporal smoothing weight of :func:`~morphface.fitting.fit_video`.
        fps: frame rate assumed for folders of frames (videos use their own).
        audio: extract frame-aligned audio features when the clip has an audio track.
        crf: H.264 quality of ``frames.mp4``.
        model: ``"default"`` (the narrow ICT face) or a model file for ``load_model``.
        chunk: frames decoded and processed at a time.
        detector_kwargs: extra arguments of :func:`~morphface.fitting.make_detector`.
    """

    size: int = 256
    detector: str = "auto"
    frames_format: str = "mp4"
    crop_scale: float = 1.8
    crop_shift: float = 0.1
    crop_mode: str = "union"
    smoothness: float = 4.0
    fps: float = 25.0
    audio: bool = True
    crf: int = 18
    model: str = "default"
    chunk: int = 32
    detector_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 16:
            raise ValueError(f"size must be an int >= 16; got {self.size!r}")
        if self.frames_format not in ("mp4", "jpg"):
            raise ValueError(f"frames_format must be 'mp4' or 'jpg'; got {self.frames_format!r}")
        if self.crop_mode not in ("union", "median"):
            raise ValueError(f"crop_mode must be 'union' or 'median'; got {self.crop_mode!r}")
        if not (self.crop_scale > 0 and self.fps > 0 and self.chunk >= 1):
            raise ValueError(f"crop_scale, fps and chunk must be positive; got {self.crop_scale}, {self.fps}, "
                             f"{self.chunk}")


    def cache_settings(self) -> dict:
        """The settings all clips of one cache share (module doc)."""
        return {"size": self.size, "crop_scale": float(self.crop_scale), "crop_shift": float(self.crop_shift),
                "crop_mode": self.crop_mode, "smoothness": float(self.smoothness), "fps": float(self.fps),
                "model": str(self.model), "frames_format": self.frames_format}


def _settings_from_meta(meta: dict) -> dict:
    """The settings a clip's ``meta.json`` reveals (caches written before ``cache_settings.json``)."""
    return {"size": meta["size"], "model": meta["model"]}


class ClipSource(NamedTuple):
    """One input clip: ``path`` (a video file or a folder of frames) and its cache names."""

    path: Path
    identity: str
    video: str
    clip: str

    def destination(self, cache: str | Path) -> Path:
        return Path(cache) / self.identity / self.video / self.clip


class PreprocessSummary(NamedTuple):
    """What a run did: clip folders written now, clip folders already complete (skipped),
    ``(source, "ErrorType: message")`` for each clip that failed, and ``table``, the markdown
    summary of every complete clip of the cache (also in ``CACHE/preprocess_summary.md``)."""

    written: list[Path]
    skipped: list[Path]
    failed: list[tuple[Path, str]]
    table: str = ""


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def discover_clips(video_root: str | Path) -> list[ClipSource]:
    """The clips of a ``<identity>/<video>/<clip>.mp4`` or ``<identity>/<video>/<clip>/*.jpg`` tree,
    sorted by path. Other files are ignored.

    Raises:
        FileNotFoundError: ``video_root`` is not a folder.
    """
    root = Path(video_root)
    if not root.is_dir():
        raise FileNotFoundError(f"video root {root} is not a folder")
    out = []
    for p in sorted(root.glob("*/*/*")):
        if p.name.startswith("."):
            continue
        ident, video = p.parent.parent.name, p.parent.name
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out.append(ClipSource(p, ident, video, p.stem))
        elif p.is_dir() and _frame_files(p):
            out.append(ClipSource(p, ident, video, p.name))
    return out


def _iter_frames(source: Path, chunk: int) -> Iterator[Tensor]:
    """``(n, 3, H, W)`` float chunks of a video file or a folder of frames."""
    if source.is_dir():
        from ..io import read_image

        files = _frame_files(source)
        if not files:
            raise ImageReadError(f"{source}: no image files ({', '.join(sorted(IMAGE_EXTS))}) in the folder")
        for i in range(0, len(files), chunk):
            block = [read_image(f) for f in files[i:i + chunk]]
            if any(b.shape != block[0].shape for b in block):
                raise ImageReadError(f"{source}: frames of different sizes")
            yield torch.stack(block)
    else:
        from ..io import iter_video

        yield from iter_video(source, chunk=chunk)


def _fps(source: Path, config: PreprocessConfig) -> tuple[float, bool]:
    """Frame rate and whether the clip has an audio track."""
    if source.is_dir():
        return float(config.fps), False
    from ..io import probe_video

    info = probe_video(source)
    return info.fps, info.has_audio


def _audio_features(source: Path, fps: float, num_frames: int) -> Tensor:
    from ..audio import frame_aligned_features, load_audio

    wave, sr = load_audio(source, 16000)
    if wave.numel() == 0:
        raise AudioReadError(f"{source}: the audio track is empty")
    return frame_aligned_features(wave, sr, fps, 2, n_frames=num_frames).float()


def preprocess_clip(source: ClipSource, cache: str | Path, config: PreprocessConfig, model=None, detector=None,
                    warn=None) -> Path:
    """Preprocess one clip into ``cache`` (steps in the module doc); skipped if already complete.

    Args:
        source: the input clip.
        cache: the cache root.
        config: options.
        model: the morphable model (default: ``load_cache_model(config.model)``).
        detector: a landmark detector (default: ``make_detector(config.detector)``).
        warn: ``warn(message)`` for non-fatal problems (an unreadable audio track); default stderr.

    Returns:
        The clip folder.

    Raises:
        ImageReadError, NoFaceError, FitError, ...: the clip cannot be processed; its partial
        folder is removed first.
    """
    from ..fitting import CropTransform, crop_box_from_landmarks, fit_video, smooth_crop_track
    from ..fitting.video import detect_video_landmarks, interpolate_missing, smooth_video_fit

    dest = source.destination(cache)
    if is_complete(dest):
        return dest
    model = model if model is not None else load_cache_model(config.model)
    if detector is None:
        from ..fitting import make_detector

        detector = make_detector(config.detector, **config.detector_kwargs)
    warn = warn or (lambda m: print(m, file=sys.stderr))
    path = source.path
    try:
        fps, has_audio = _fps(path, config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncatedVideoWarning)
            lms, found, (H, W) = detect_video_landmarks(_iter_frames(path, config.chunk), detector, config.chunk,
                                                        progress=False)
        truncated = None
        for w in caught:  # a truncated video becomes a warning of the run; other warnings pass on
            if issubclass(w.category, TruncatedVideoWarning):
                truncated = w.message
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        T_source = lms.shape[0]
        if truncated is not None:
            warn(f"{path}: truncated video: cached the {T_source} frames that decode, of the {truncated.expected} "
                 f"its header announces")
        if not bool(found.any()):
            raise NoFaceError(f"{path}: no face found in any of its {T_source} frames")
        runs = face_runs(found)
        start, stop = runs.leading, T_source - runs.trailing
        no_face = _no_face_record(runs, start)
        if runs.leading or runs.trailing:
            warn(f"{path}: no face in the first {runs.leading} and the last {runs.trailing} of its {T_source} "
                 f"frames: trimmed, cached frames {start}..{stop - 1}")
        if runs.interior:
            warn(f"{path}: no face in {len(runs.interior)} frame(s) between detections (source frames "
                 f"{_ranges(runs.interior)}): kept, landmarks interpolated from their neighbours")
        lms, found = lms[start:stop], found[start:stop]
        T = stop - start
        boxes = crop_box_from_landmarks(lms, scale=config.crop_scale, shift=config.crop_shift)
        boxes[~found] = float("nan")
        box = smooth_crop_track(boxes, mode=config.crop_mode)
        transform = CropTransform.from_box(box, config.size)
        crop_lms = transform.apply(interpolate_missing(lms, found))  # (T, 68, 2); the batch-1 map broadcasts
        S = config.size
        raw = fit_video(model, None, landmarks=crop_lms, image_size=(S, S), smoothness=0.0, progress=False,
                        name=str(path))
        fit = smooth_video_fit(model, raw, crop_lms, config.smoothness)
        fit.check_finite()
        stats = clip_statistics(crop_lms, found, raw, fit)

        prepare_clip_folder(dest)
        decoded, written = _write_frames(path, dest, transform, fps, config, start, stop)
        if decoded != T_source or written != T:
            raise ImageReadError(f"{path}: decoded {T_source} frames for detection but {decoded} for cropping")
        fit.save(dest / PARAMS_NAME)
        audio = False
        if has_audio and config.audio:
            try:
                save_audio_features(dest, _audio_features(path, fps, T_source)[start:stop])
                audio = True
            except AudioReadError as e:
                warn(f"{path}: audio skipped: {e}")
        write_meta(dest, {
            "fps": float(fps), "num_frames": int(T), "size": S, "crop_box": [float(v) for v in box.tolist()],
            "source": str(path), "model": config.model, "audio": audio, "version": CACHE_VERSION,
            "original_size": [int(H), int(W)], "detected_frames": int(found.sum()),
            "landmark_rmse": float(fit.residuals.mean()), "truncated": truncated is not None,
            **({"expected_frames": truncated.expected} if truncated is not None else {}),
            "source_frames": int(T_source), "source_start": int(start), "no_face": no_face, "stats": stats,
        })
    except Exception:
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _ranges(indices: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    parts: list[str] = []
    for i in indices:
        if parts and int(parts[-1].split("-")[-1]) == i - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ", ".join(parts)


def _no_face_record(runs, start: int) -> dict:
    """``meta.json``'s ``no_face``: counts, the interior frames in cached indexing, what was done."""
    interior = [i - start for i in runs.interior]
    handling = []
    if runs.leading or runs.trailing:
        handling.append(f"no face before the first / after the last detection: {runs.leading} / "
                        f"{runs.trailing} frame(s) trimmed")
    if interior:
        handling.append(f"{len(interior)} frame(s) between detections kept, landmarks interpolated")
    return {"leading": int(runs.leading), "trailing": int(runs.trailing), "interior": interior,
            "handling": "; ".join(handling) or "none: a face in every frame"}


def _finite_or_none(v: float) -> float | None:
    return None if v != v else float(v)  # NaN (too few frames) -> JSON null


def clip_statistics(landmarks: Tensor, found: Tensor, raw, fit) -> dict:
    """The ``stats`` of a clip's ``meta.json`` (module doc, step 6; definitions in
    :mod:`~morphface.data.clip_stats`).

    Args:
        landmarks: ``(T, L, 2)`` the detector's landmarks in crop pixels (interpolated where not found).
        found: ``(T,)`` frames with a detected face; only those count (RMSE) and only triplets of
            them (jitter).
        raw, fit: the clip's :class:`~morphface.fitting.FitResult` before and after temporal
            smoothing (``landmarks`` ``(T, L, 2)`` projected, ``residuals`` ``(T,)`` px).

    Returns:
        A JSON-ready dict; NaN values (fewer than 3 frames) are ``None``.
    """
    found = torch.as_tensor(found, dtype=torch.bool)
    pose_raw = pose_jitter(raw.euler_degrees, found)
    pose_fit = pose_jitter(fit.euler_degrees, found)
    triplets = int((found[2:] & found[1:-1] & found[:-2]).sum()) if found.numel() >= 3 else 0
    return {
        "fit_rmse_px": float(fit.residuals[found].mean()),
        "fit_rmse_raw_px": float(raw.residuals[found].mean()),
        "landmark_jitter_detector_px": _finite_or_none(landmark_jitter(landmarks, found)),
        "landmark_jitter_raw_fit_px": _finite_or_none(landmark_jitter(raw.landmarks, found)),
        "landmark_jitter_fit_px": _finite_or_none(landmark_jitter(fit.landmarks, found)),
        "pose_jitter_raw_fit_deg": _finite_or_none(rms(pose_raw)),
        "pose_jitter_fit_deg": _finite_or_none(rms(pose_fit)),
        "pose_jitter_raw_fit_deg_pyr": [_finite_or_none(v) for v in pose_raw.tolist()],
        "pose_jitter_fit_deg_pyr": [_finite_or_none(v) for v in pose_fit.tolist()],
        "jitter_triplets": triplets,
    }


def _write_frames(path: Path, dest: Path, transform, fps: float, config: PreprocessConfig, start: int,
                  stop: int) -> tuple[int, int]:
    """Crop source frames ``start..stop-1`` into the clip folder; returns (frames decoded, frames written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedVideoWarning)  # reported by the detection pass already
        return _crop_frames(path, dest, transform, fps, config, start, stop)


def _crop_frames(path: Path, dest: Path, transform, fps: float, config: PreprocessConfig, start: int,
                 stop: int) -> tuple[int, int]:
    from ..io import VideoWriter, write_image
    from .cache import FRAMES_DIR, FRAMES_VIDEO

    decoded = written = 0
    writer = VideoWriter(dest / FRAMES_VIDEO, fps, crf=config.crf) if config.frames_format == "mp4" else None
    try:
        for block in _iter_frames(path, config.chunk):
            n = block.shape[0]
            keep = block[max(start - decoded, 0):max(min(stop - decoded, n), 0)]
            decoded += n
            if keep.shape[0] == 0:
                continue
            crops = transform.crop(keep).clamp(0, 1)
            if writer is not None:
                writer.write(crops)
                written += crops.shape[0]
            else:
                for frame in crops:
                    write_image(dest / FRAMES_DIR / f"{written:06d}.jpg", frame, quality=95)
                    written += 1
    finally:
        if writer is not None:
            writer.close()
    return decoded, written


# ------------------------------------------------------------------------------------------ pool
_WORKER: dict = {}


def _build_tools(config: PreprocessConfig) -> tuple:
    from ..fitting import make_detector

    return load_cache_model(config.model), make_detector(config.detector, **config.detector_kwargs)


def _init_worker(config: PreprocessConfig) -> None:
    torch.set_num_threads(1)  # one clip per process: threads would only fight over the cores
    _WORKER["config"] = config
    _WORKER["model"], _WORKER["detector"] = _build_tools(config)


def _process(source: ClipSource, cache: str, config: PreprocessConfig, model, detector
             ) -> tuple[str, str, list[str]]:
    """Returns ``("ok", folder, warnings)`` or ``("error", "Type: message", warnings)``. An
    ``Exception`` is caught (a failing clip is logged and skipped); ``KeyboardInterrupt`` and other
    ``BaseException`` stop the run, leaving a half-written folder for the next run to redo."""
    notes: list[str] = []
    try:
        folder = preprocess_clip(source, cache, config, model, detector, warn=notes.append)
        return "ok", str(folder), notes
    except Exception as e:  # noqa: BLE001 - every failure of one clip is logged, the run goes on
        return "error", f"{type(e).__name__}: {e}", notes


def _run_in_worker(source: ClipSource, cache: str) -> tuple[str, str, list[str]]:
    return _process(source, cache, _WORKER["config"], _WORKER["model"], _WORKER["detector"])


def _log_error(cache: Path, source: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{source}\t{message}"
    with open(cache / ERROR_LOG, "a") as f:
        f.write(line + "\n")
    print(f"preprocess: {source}: {message}", file=sys.stderr)


def preprocess_tree(video_root: str | Path, cache: str | Path, config: PreprocessConfig | None = None,
                    workers: int = 1, progress: bool = True) -> PreprocessSummary:
    """Preprocess every clip of ``video_root`` into ``cache`` (module doc).

    Args:
        video_root: the input tree.
        cache: the output root (created).
        config: options (default :class:`PreprocessConfig`).
        workers: processes (1: in this process).
        progress: show a progress bar.

    Returns:
        A :class:`PreprocessSummary`. Failures and warnings are also appended to
        ``cache/preprocess_errors.log`` and printed to stderr.

    Raises:
        SettingsMismatchError: ``cache`` was written with other settings (module doc).
        NotADirectoryError: ``cache`` is an existing file.
        FileNotFoundError: ``video_root`` is not a folder.
    """
    from tqdm.auto import tqdm

    config = config or PreprocessConfig()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1; got {workers!r}")
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise NotADirectoryError(f"cache {cache} is an existing file; expected a folder (new, or a cache an "
                                 f"earlier preprocess run wrote)")
    sources = discover_clips(video_root)
    cache.mkdir(parents=True, exist_ok=True)
    check_cache_settings(cache, "preprocess", config.cache_settings(), from_meta=_settings_from_meta)
    skipped = [s.destination(cache) for s in sources if is_complete(s.destination(cache))]
    todo = [s for s in sources if not is_complete(s.destination(cache))]
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []

    def record(source: ClipSource, status: str, payload: str, notes: list[str]) -> None:
        for note in notes:
            _log_error(cache, source.path, f"warning: {note}")
        if status == "ok":
            written.append(Path(payload))
        else:
            failed.append((source.path, payload))
            _log_error(cache, source.path, payload)

    bar = tqdm(total=len(todo), desc="preprocess", unit="clip", disable=not progress)
    try:
        if todo and (workers == 1 or len(todo) == 1):
            model, detector = _build_tools(config)
            for s in todo:
                record(s, *_process(s, str(cache), config, model, detector))
                bar.update(1)
        elif todo:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                        initializer=_init_worker, initargs=(config,)) as pool:
                futures = {pool.submit(_run_in_worker, s, str(cache)): s for s in todo}
                for fut in cf.as_completed(futures):
                    record(futures[fut], *fut.result())
                    bar.update(1)
    finally:
        bar.close()
    table = write_summary(cache, failed, size=config.size)
    return PreprocessSummary(written=written, skipped=skipped, failed=failed, table=table)


def write_summary(cache: str | Path, failed: list[tuple[Path, str]] = (), size: int | None = None) -> str:
    """Rebuild the summary table (:func:`~morphface.data.clip_stats.summary_table`) of every complete
    clip of ``cache`` from its ``meta.json`` and write it atomically to ``cache/preprocess_summary.md``.

    Args:
        cache: the cache root.
        failed: ``(source, message)`` of the clips that failed in this run (listed under the table).
        size: the crop side, for the legend.

    Returns:
        The markdown text written. A clip whose ``meta.json`` cannot be read is listed with the failures.
    """
    cache = Path(cache)
    clips, bad = [], [(str(s), m) for s, m in failed]
    for meta_path in sorted(cache.glob("*/*/*/meta.json")):
        folder = meta_path.parent
        try:
            clips.append(("/".join(folder.relative_to(cache).parts), read_meta(folder)))
        except ValueError as e:
            bad.append((str(folder), f"unreadable meta.json: {e}"))
    text = summary_table(clips, bad, size=size)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(cache / SUMMARY_NAME, write)
    return text
