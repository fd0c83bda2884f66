"""Decoding audio tracks and reading video timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphface.audio import count_video_frames, load_audio, video_audio_features, video_frame_rate
from morphface.errors import AudioReadError, ImageReadError, MorphfaceError

from .media import REAL_CLIP, write_wav


def _amplitude(wave: np.ndarray, sample_rate: int, freq: float) -> float:
    """Amplitude of the ``freq`` component of a whole-second signal (exact FFT bin)."""
    spectrum = np.abs(np.fft.rfft(wave)) * 2 / len(wave)
    return float(spectrum[int(round(freq * len(wave) / sample_rate))])


def test_wav_at_native_rate_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    samples = 0.3 * rng.standard_normal(4000)
    written = write_wav(tmp_path / "x.wav", samples, 16000)
    wave, sr = load_audio(tmp_path / "x.wav", 16000)
    assert sr == 16000 and wave.dtype == torch.float32 and wave.shape == (4000,)
    # ffmpeg converts s16 to float by dividing by 32768.
    np.testing.assert_allclose(wave.numpy(), written / 32768.0, rtol=0, atol=1e-7)


def test_stereo_is_averaged_and_resampled(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)
    write_wav(tmp_path / "st.wav", np.stack([left, right], 1), sr)
    wave, out_sr = load_audio(tmp_path / "st.wav", 16000)
    assert out_sr == 16000 and abs(wave.shape[0] - 16000) <= 2
    w = wave.numpy()[:16000]
    # The mean of the channels: half of each channel's amplitude.
    assert _amplitude(w, 16000, 440) == pytest.approx(0.25, abs=3e-3)
    assert _amplitude(w, 16000, 1000) == pytest.approx(0.125, abs=3e-3)
    assert float(wave.abs().max()) <= 1.0


def test_audio_track_of_synthetic_mp4(sine_mp4):
    wave, sr = load_audio(sine_mp4, 16000)
    assert sr == 16000
    assert abs(wave.shape[0] / sr - 2.0) < 0.05  # AAC priming/padding is trimmed to within a frame
    mid = wave.numpy()[4000:20000]  # one second away from the codec's ramp-in
    assert _amplitude(mid, 16000, 440) == pytest.approx(0.5, abs=0.03)
    assert video_frame_rate(sine_mp4) == pytest.approx(25.0)
    assert count_video_frames(sine_mp4) == 50
    feats = video_audio_features(sine_mp4)
    assert feats.shape == (50, 4, 27) and bool(torch.isfinite(feats).all())


def test_video_without_audio_raises(silent_mp4):
    with pytest.raises(AudioReadError, match="no|none"):
        load_audio(silent_mp4)
    with pytest.raises(AudioReadError):
        video_audio_features(silent_mp4)
    # It is still a readable video.
    assert video_frame_rate(silent_mp4) == pytest.approx(25.0)


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(AudioReadError, match="no file"):
        load_audio(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(AudioReadError):
        load_audio(tmp_path / "junk.mp4")
    write_wav(tmp_path / "a.wav", np.zeros(800), 8000)
    with pytest.raises(ImageReadError, match="video stream"):
        video_frame_rate(tmp_path / "a.wav")
    with pytest.raises(ImageReadError):
        count_video_frames(tmp_path / "a.wav")
    assert issubclass(AudioReadError, MorphfaceError)


def test_bad_arguments(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(800), 8000)
    for bad in (0, -16000, 16000.0, True):
        with pytest.raises(ValueError, match="sample_rate"):
            load_audio(tmp_path / "a.wav", bad)
    with pytest.raises(ValueError, match="stream"):
        load_audio(tmp_path / "a.wav", 8000, stream=-1)
    with pytest.raises(AudioReadError, match="#1"):
        load_audio(tmp_path / "a.wav", 8000, stream=1)


@pytest.mark.skipif(not REAL_CLIP.is_file(), reason=f"real test clip not found at {REAL_CLIP}")
def test_real_clip_has_audio_and_one_feature_per_frame():
    # The clip carries an AAC 44.1 kHz stereo speech track (checked with ffmpeg -i).
    wave, sr = load_audio(REAL_CLIP, 16000)
    assert abs(wave.shape[0] / sr - 7.01) < 0.05
    assert float(wave.abs().max()) > 0.1  # speech, not silence
    n = count_video_frames(REAL_CLIP)
    assert n == 175 and video_frame_rate(REAL_CLIP) == pytest.approx(25.0)
    feats = video_audio_features(REAL_CLIP, flatten=True)
    assert feats.shape == (n, 108)
    assert bool(torch.isfinite(feats).all())
    # Speech varies: the per-frame energy (last channel of each part) is not constant.
    assert float(feats.view(n, 4, 27)[..., -1].std()) > 0.5
