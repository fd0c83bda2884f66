"""Helpers that write the media files the audio tests use (stdlib ``wave`` + the bundled ffmpeg)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

REAL_CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "liveportrait_d20_talking.mp4"


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Write ``(T,)`` or ``(T, C)`` float samples in [-1, 1] as 16-bit PCM; return the int16 data written."""
    data = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1 if data.ndim == 1 else data.shape[1])
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(data.tobytes())
    return data


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *args]
    subprocess.run(cmd, check=True, capture_output=True)
