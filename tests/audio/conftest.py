"""Session fixtures: media files the audio tests write themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .media import ffmpeg, write_wav


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio_media")


@pytest.fixture(scope="session")
def sine_mp4(media_dir) -> Path:
    """2 s of a 440 Hz sine (44.1 kHz stereo WAV, AAC in the MP4) muxed with 50 grey frames at 25 fps."""
    sr = 44100
    t = np.arange(2 * sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    wav = media_dir / "tone.wav"
    write_wav(wav, np.stack([tone, tone], 1), sr)
    out = media_dir / "tone.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=2", "-i", str(wav),
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-shortest", str(out))
    return out


@pytest.fixture(scope="session")
def silent_mp4(media_dir) -> Path:
    """A 1 s video with no audio stream."""
    out = media_dir / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(out))
    return out


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (restored afterwards).

    The training tests step a tiny LSTM hundreds of times; with several threads on a shared 2-core
    machine the per-op thread synchronisation costs ~20x the arithmetic. Results are unchanged.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
