"""The clip cache: one folder per clip, written by ``morphface preprocess`` / ``morphface synth`` and
read by :class:`~morphface.data.dataset.ReenactmentDataset`.

Layout: ``<root>/<identity>/<video>/<clip>/`` holding

* ``frames.mp4`` (H.264, the cropped square frames at the clip's fps) or ``frames/000000.jpg ...``;
* ``params.safetensors``: a :class:`~morphface.fitting.FitResult` for all ``T`` frames in the
  cropped frames' pixel coordinates (identity rows identical, ``camera_kind="perspective"``);
* ``audio.safetensors`` (optional): ``{"features": (T, 2k, D) float32}`` frame-aligned audio;
* ``meta.json``: ``{"fps", "num_frames", "size", "crop_box", "source", "model", "audio",
  "version"}`` (plus ``"ground_truth": true`` for synthetic clips). ``morphface preprocess`` adds
  ``original_size``, ``detected_frames``, ``landmark_rmse``, ``truncated`` (``expected_frames``),
  ``source_frames`` and ``source_start`` (cached frame ``i`` is source frame ``source_start + i``),
  ``no_face`` (frames without a face: ``leading`` / ``trailing`` counts trimmed, ``interior``
  cached indices kept with interpolated landmarks, ``handling``) and ``stats`` (fit error and
  jitter, :mod:`morphface.data.preprocess`); ``CACHE/preprocess_summary.md`` tabulates them.

The root also holds ``cache_settings.json``: which command wrote the cache and with which
settings (:func:`check_cache_settings`), so that a later run with other settings (another crop
size, say) is refused instead of mixing two incompatible sets of clips.

**A clip folder is complete iff ``meta.json`` exists**; it is written last, atomically (a temporary
file renamed with ``os.replace``), so a writer killed at any moment leaves either a complete clip
or a folder without ``meta.json``, which :func:`prepare_clip_folder` deletes before redoing it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ImageReadError, SettingsMismatchError

__all__ = [
    "CACHE_VERSION",
    "META_NAME",
    "SETTINGS_NAME",
    "check_cache_settings",
    "PARAMS_NAME",
    "FRAMES_VIDEO",
    "FRAMES_DIR",
    "AUDIO_NAME",
    "ClipRecord",
    "write_meta",
    "read_meta",
    "is_complete",
    "prepare_clip_folder",
    "find_clips",
    "read_clip_frames",
    "write_clip_frames",
    "save_audio_features",
    "load_audio_features",
    "load_cache_model",
]

CACHE_VERSION = 1
META_NAME = "meta.json"
PARAMS_NAME = "params.safetensors"
FRAMES_VIDEO = "frames.mp4"
FRAMES_DIR = "frames"
AUDIO_NAME = "audio.safetensors"
SETTINGS_NAME = "cache_settings.json"
_REQUIRED_META = ("fps", "num_frames", "size", "crop_box", "source", "model", "audio", "version")


@dataclass(frozen=True)
class ClipRecord:
    """A complete clip of the cache.

    Attributes:
        path: the clip folder.
        identity, video, clip: the three folder names under the root.
        meta: the parsed ``meta.json``.
    """

    path: Path
    identity: str
    video: str
    clip: str
    meta: dict

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])


def write_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` atomically (temporary file + ``os.replace``); call it last.

    Raises:
        ValueError: a required key (module doc) is missing.
    """
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"meta.json needs the keys {list(_REQUIRED_META)}; missing {missing}")
    folder = Path(folder)
    fd, tmp = tempfile.mkstemp(prefix=".meta.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is meant to be shared
        os.replace(tmp, folder / META_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / META_NAME


def read_meta(folder: str | Path) -> dict:
    """Parse a clip's ``meta.json``.

    Raises:
        ValueError: unreadable JSON, a missing key, or an unknown version.
    """
    path = Path(folder) / META_NAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable clip meta.json ({e})") from e
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (expected {list(_REQUIRED_META)})")
    if int(meta["version"]) != CACHE_VERSION:
        raise ValueError(f"{path}: cache version {meta['version']}, this morphface reads version {CACHE_VERSION}")
    return meta


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _settings_text(settings: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={settings.get(k, '(not set)')!r}" for k in keys)


def check_cache_settings(root: str | Path, writer: str, settings: dict[str, Any],
                         from_meta: Callable[[dict], dict] | None = None) -> Path:
    """Record the settings a cache root is written with, or refuse a run with other settings.

    The first run writes ``root/cache_settings.json`` (``{"writer", "settings"}``); a later run
    with the same writer and settings passes (it resumes), anything else raises. A cache written
    before this file existed is checked against the ``meta.json`` of one of its complete clips
    through ``from_meta(meta) -> {setting: value}`` (the settings a clip's metadata reveals), and
    the file is then written.

    Args:
        root: the cache root (must exist).
        writer: the command writing it (``"synth"``, ``"preprocess"``).
        settings: JSON-serialisable settings that all clips of the cache must share.
        from_meta: see above.

    Returns:
        The settings file.

    Raises:
        SettingsMismatchError: the root was written by another command or with other settings.
    """
    root = Path(root)
    path = root / SETTINGS_NAME
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the file
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            old_writer, old = stored["writer"], dict(stored["settings"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SettingsMismatchError(f"{path}: unreadable cache settings ({type(e).__name__}: {e}); expected "
                                        f'{{"writer": ..., "settings": {{...}}}}') from e
        keys = set(old) | set(settings)
        where = f"{root} was written by `{old_writer}` with"
    else:
        old_writer, old = writer, {}
        first = next(iter(sorted(root.glob(f"*/*/*/{META_NAME}"))), None)
        if first is not None and from_meta is not None:
            try:
                old = from_meta(json.loads(first.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                old = {}
        keys = set(old)  # only what the clips' metadata reveals
        where = f"{root} holds clips written with"
    if old_writer != writer:
        raise SettingsMismatchError(f"{root} was written by `{old_writer}`, not `{writer}`; write into another "
                                    f"folder")
    missing = object()
    differ = sorted(k for k in keys if old.get(k, missing) != settings.get(k, missing))
    if differ:
        raise SettingsMismatchError(
            f"{where} {_settings_text(old, differ)}; this run asks for {_settings_text(settings, differ)}: "
            f"use another output folder (or the same settings to resume)")
    if not path.is_file():
        _write_json_atomic(path, {"writer": writer, "settings": settings})
    return path


def is_complete(folder: str | Path) -> bool:
    """Whether the clip folder is complete (its ``meta.json`` exists)."""
    return (Path(folder) / META_NAME).is_file()


def prepare_clip_folder(folder: str | Path) -> Path:
    """Make an empty folder for a clip about to be written, deleting a half-written one.

    Raises:
        FileExistsError: the clip is already complete (callers skip complete clips).
    """
    folder = Path(folder)
    if is_complete(folder):
        raise FileExistsError(f"{folder} is a complete clip (it has {META_NAME}); delete it to redo it")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def find_clips(root: str | Path) -> list[ClipRecord]:
    """All complete clips ``root/<identity>/<video>/<clip>/meta.json``, sorted by path.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"clip cache root {root} is not a folder")
    records = []
    for meta_path in sorted(root.glob(f"*/*/*/{META_NAME}")):
        folder = meta_path.parent
        rel = folder.relative_to(root).parts
        records.append(ClipRecord(path=folder, identity=rel[0], video=rel[1], clip=rel[2], meta=read_meta(folder)))
    return records


def write_clip_frames(folder: str | Path, frames: Tensor, fps: float, fmt: str = "mp4", crf: int = 18) -> None:
    """Write ``(T, 3, H, W)`` frames in [0, 1] as ``frames.mp4`` (``fmt="mp4"``) or ``frames/%06d.jpg``."""
    from ..io import write_image, write_video

    folder = Path(folder)
    if fmt == "mp4":
        write_video(folder / FRAMES_VIDEO, frames, fps, crf=crf)
    elif fmt == "jpg":
        for i, frame in enumerate(frames):
            write_image(folder / FRAMES_DIR / f"{i:06d}.jpg", frame, quality=95)
    else:
        raise ValueError(f"fmt must be 'mp4' or 'jpg'; got {fmt!r}")


def read_clip_frames(folder: str | Path, indices: list[int] | None = None) -> Tensor:
    """Decoded frames of a clip as ``(N, 3, H, W)`` **uint8** (4x less memory than float).

    Args:
        folder: the clip folder (``frames.mp4`` or ``frames/*.jpg``).
        indices: frames to return (JPEG folders read only those; a video is decoded whole, then
            indexed). ``None``: all.

    Raises:
        ImageReadError: no frames, or a file that cannot be decoded.
    """
    folder = Path(folder)
    video = folder / FRAMES_VIDEO
    if video.is_file():
        import imageio.v3 as iio

        try:
            array = np.asarray(iio.imread(video, plugin="FFMPEG"))[..., :3]
        except Exception as e:  # noqa: BLE001 - every ffmpeg/imageio failure
            raise ImageReadError(f"cannot decode {video}: {e}") from e
        frames = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
        return frames if indices is None else frames[torch.as_tensor(indices, dtype=torch.long)]
    files = sorted((folder / FRAMES_DIR).glob("*.jpg")) if (folder / FRAMES_DIR).is_dir() else []
    if not files:
        raise ImageReadError(f"clip {folder} has neither {FRAMES_VIDEO} nor {FRAMES_DIR}/*.jpg")
    from ..io import image_to_uint8, read_image

    chosen = files if indices is None else [files[i] for i in indices]
    return torch.stack([torch.from_numpy(image_to_uint8(read_image(f))).permute(2, 0, 1) for f in chosen])


def save_audio_features(folder: str | Path, features: Tensor) -> None:
    """Write ``audio.safetensors`` with ``features`` ``(T, 2k, D)`` float32."""
    from safetensors.torch import save_file

    if not isinstance(features, Tensor) or features.dim() != 3:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"audio features must be (T, 2k, D); got {shape}")
    save_file({"features": features.detach().float().cpu().contiguous()}, str(Path(folder) / AUDIO_NAME))


def load_audio_features(folder: str | Path) -> Tensor | None:
    """``(T, 2k, D)`` float32 audio features of a clip, or ``None`` when it has none."""
    from safetensors.torch import load_file

    path = Path(folder) / AUDIO_NAME
    if not path.is_file():
        return None
    return load_file(str(path))["features"]


def load_cache_model(spec: str):
    """The morphable model a cache's ``meta["model"]`` names: ``"default"`` is
    ``load_default_model("narrow")``; anything else is a model file for ``load_model``."""
    from ..morphable import load_default_model, load_model

    return load_default_model("narrow") if spec == "default" else load_model(spec)
