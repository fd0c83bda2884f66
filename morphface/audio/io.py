"""Reading audio tracks and video timing with the ffmpeg binary bundled by ``imageio-ffmpeg``.

Audio is decoded by running ``ffmpeg`` as a subprocess that writes mono 32-bit float PCM
(``f32le``) at the requested sample rate to a pipe: the file can be any container ffmpeg reads
(wav, mp3, m4a, mp4, mkv, ...). Several channels are mixed down to one by ffmpeg's resampler with
its rematrix normalised to a gain of 1 (``rematrix_maxval=1``): stereo becomes ``(L + R) / 2``
rather than ffmpeg's default ``(L + R) / sqrt(2)``, which can clip. No system ffmpeg is needed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import AudioReadError, ImageReadError

__all__ = ["load_audio", "video_frame_rate", "count_video_frames"]


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _existing_file(path: str | os.PathLike, error: type[Exception]) -> str:
    p = Path(path)
    if not p.is_file():
        raise error(f"expected an existing media file; found no file at {str(p)!r}")
    return str(p)


def _tail(message: str, limit: int = 400) -> str:
    """The end of an ffmpeg error (its version banner is long and says nothing about the failure)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else "..." + message[-limit:]


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, stream: int = 0) -> tuple[Tensor, int]:
    """Decode the audio track of a video or audio file to a mono waveform.

    Args:
        path: any file ffmpeg can read (wav, mp3, m4a, mp4, ...).
        sample_rate: output rate in Hz (resampled by ffmpeg when the file's rate differs).
        stream: which audio stream of the file (0 = the first).

    Returns:
        ``(waveform, sample_rate)``: ``waveform`` is ``(T,)`` float32 in ``[-1, 1]`` (stereo
        channels averaged), ``sample_rate`` the int rate it is sampled at.

    Raises:
        AudioReadError: the file is missing, has no audio stream ``stream``, or cannot be decoded.
        ValueError: ``sample_rate`` or ``stream`` is not a positive / non-negative int.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz); got {sample_rate!r}")
    if isinstance(stream, bool) or not isinstance(stream, int) or stream < 0:
        raise ValueError(f"stream must be a non-negative int; got {stream!r}")
    src = _existing_file(path, AudioReadError)
    cmd = [
        _ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", src, "-map", f"0:a:{stream}", "-vn", "-sn", "-dn",
        "-af", f"aresample=osr={sample_rate}:ochl=mono:rematrix_maxval=1.0",
        "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if "matches no streams" in err:
            raise AudioReadError(f"expected an audio stream #{stream} in {src!r}; the file has none "
                                 f"(a video without sound?)")
        raise AudioReadError(f"ffmpeg could not decode the audio of {src!r} (exit code {proc.returncode}): "
                             f"{_tail(err)}")
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    if samples.size == 0:
        raise AudioReadError(f"expected audio samples in {src!r}; its audio stream #{stream} decoded to "
                             f"0 samples")
    # Lossy codecs overshoot full scale slightly; the API promises [-1, 1].
    wave = torch.from_numpy(samples.astype(np.float32)).clamp_(-1.0, 1.0)
    return wave, sample_rate


def video_frame_rate(path: str | os.PathLike) -> float:
    """Frame rate of a video file in frames per second, from ffmpeg's stream metadata.

    Raises:
        ImageReadError: the file is missing, is not a video, or its frame rate is unknown.
    """
    import imageio_ffmpeg

    src = _existing_file(path, ImageReadError)
    gen = imageio_ffmpeg.read_frames(src)
    try:
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise ImageReadError(f"expected a video stream in {src!r}; ffmpeg could not read one: "
                             f"{_tail(str(exc))}") from exc
    finally:
        gen.close()
    fps = float(meta.get("fps") or 0.0)
    if not np.isfinite(fps) or fps <= 0:
        raise ImageReadError(f"expected a positive frame rate in the metadata of {src!r}; found {fps}")
    return fps


def count_video_frames(path: str | os.PathLike) -> int:
    """Number of video frames in a file, counted by decoding it (exact, not estimated from the duration).

    Raises:
        ImageReadError: the file is missing or has no readable video stream.
    """
    import imageio_ffmpeg

    src = _existing_file(path, ImageReadError)
    try:
        n, _ = imageio_ffmpeg.count_frames_and_secs(src)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageReadError(f"expected a video stream in {src!r}; ffmpeg could not count its frames: "
                             f"{_tail(str(exc))}") from exc
    if n <= 0:
        raise ImageReadError(f"expected at least one video frame in {src!r}; found {n}")
    return int(n)
