"""Cross-check against librosa (optional; skipped when it is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphface.audio.features import MFCCConfig, audio_features, log_mel_spectrogram, mel_filterbank, mfcc

librosa = pytest.importorskip("librosa", reason="librosa (optional audio backend) is not installed")

pytestmark = pytest.mark.slow  # librosa's first call compiles numba code (~10-20 s)


@pytest.fixture(scope="module")
def signal():
    rng = np.random.default_rng(5)
    sr = 16000
    t = np.arange(sr // 2) / sr
    x = 0.3 * np.sin(2 * np.pi * 300 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t) + 0.02 * rng.standard_normal(t.size)
    return x, sr


def test_filterbank_equals_librosa_htk():
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=8000.0, htk=True, norm=None)
    ours = mel_filterbank(512, 16000, 40, 20.0, 8000.0, dtype=torch.float64).numpy().T
    np.testing.assert_allclose(ours, ref, atol=1e-6)  # librosa builds the filters in float32


def test_mel_mfcc_and_deltas_equal_librosa(signal):
    x, sr = signal
    cfg = MFCCConfig()
    # librosa's own pre-emphasis treats the first sample differently; apply ours by hand.
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    mel_ref = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=160, win_length=400, window="hann",
                                             center=True, pad_mode="constant", power=2.0, n_mels=40, fmin=20.0,
                                             fmax=8000.0, htk=True, norm=None, dtype=np.float64)
    logmel = log_mel_spectrogram(torch.from_numpy(x), sr, cfg).numpy()
    np.testing.assert_allclose(logmel.T, np.log(mel_ref), rtol=1e-6, atol=1e-6)
    mfcc_ref = librosa.feature.mfcc(S=np.log(mel_ref), n_mfcc=13, dct_type=2, norm="ortho")
    ours = mfcc(torch.from_numpy(x), sr, cfg).numpy()
    np.testing.assert_allclose(ours.T, mfcc_ref, rtol=1e-6, atol=1e-5)
    delta_ref = librosa.feature.delta(ours.T, width=5, order=1, axis=-1, mode="nearest")
    feats = audio_features(torch.from_numpy(x), sr, cfg).numpy()
    np.testing.assert_allclose(feats[:, 13:26].T, delta_ref, atol=1e-8)
