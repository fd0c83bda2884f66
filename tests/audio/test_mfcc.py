"""MFCC, deltas and log energy against an independent numpy/scipy implementation and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from morphface.audio.features import (
    DEFAULT_FEATURE_SIZE,
    MFCCConfig,
    audio_features,
    dct_matrix,
    deltas,
    feature_size,
    frame_count,
    log_energy,
    log_mel_spectrogram,
    mel_center_frequencies,
    mel_filterbank,
    mfcc,
)


def _mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _imel(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def textbook_filterbank(n_fft, sr, n_mels, f_min, f_max):
    """Triangular filters H_m(f) written out case by case (loops on purpose: an independent reference)."""
    pts = _imel(np.linspace(_mel(f_min), _mel(f_max), n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(1, n_mels + 1):
        lo, c, hi = pts[m - 1], pts[m], pts[m + 1]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo <= f <= c:
                fb[k, m - 1] = (f - lo) / (c - lo)
            elif c < f <= hi:
                fb[k, m - 1] = (hi - f) / (hi - c)
    return fb


def reference(x, sr, cfg: MFCCConfig):
    """numpy/scipy MFCC, log energy and deltas following the textbook steps."""
    win, hop, n_fft = cfg.win_length(sr), cfg.hop_length(sr), cfg.fft_size(sr)
    f_max = sr / 2 if cfg.f_max is None else cfg.f_max
    y = np.concatenate([x[:1], x[1:] - cfg.preemphasis * x[:-1]])
    yp = np.pad(y, n_fft // 2)
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    w = np.zeros(n_fft)
    off = (n_fft - win) // 2
    w[off:off + win] = hann
    frames = np.stack([yp[j * hop: j * hop + n_fft] * w for j in range(1 + len(x) // hop)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    fb = textbook_filterbank(n_fft, sr, cfg.n_mels, cfg.f_min, f_max)
    logmel = np.log(np.maximum(power @ fb, cfg.log_floor))
    cep = scipy.fft.dct(logmel, type=2, norm="ortho", axis=1)[:, : cfg.n_mfcc]
    energy = np.log(np.maximum((frames ** 2).sum(1), cfg.log_floor))
    return logmel, cep, energy


def reference_deltas(c, width):
    t = c.shape[0]
    out = np.zeros_like(c)
    denom = 2 * sum(n * n for n in range(1, width + 1))
    for i in range(t):
        for n in range(1, width + 1):
            out[i] += n * (c[min(i + n, t - 1)] - c[max(i - n, 0)])
    return out / denom


@pytest.fixture(scope="module")
def speechlike():
    rng = np.random.default_rng(1)
    sr = 16000
    t = np.arange(int(0.5 * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    return x, sr


def test_filterbank_matches_textbook():
    for n_fft, sr, n_mels, f_min, f_max in [(512, 16000, 40, 20.0, 8000.0), (1024, 44100, 26, 0.0, 11000.0)]:
        ours = mel_filterbank(n_fft, sr, n_mels, f_min, f_max, dtype=torch.float64).numpy()
        np.testing.assert_allclose(ours, textbook_filterbank(n_fft, sr, n_mels, f_min, f_max), atol=1e-12)


def test_dct_matrix_is_scipy_ortho_dct():
    x = np.random.default_rng(0).standard_normal((5, 40))
    d = dct_matrix(40, 13, dtype=torch.float64).numpy()
    np.testing.assert_allclose(x @ d.T, scipy.fft.dct(x, type=2, norm="ortho", axis=1)[:, :13], atol=1e-12)


@pytest.mark.parametrize("cfg", [MFCCConfig(), MFCCConfig(window_s=0.02, hop_s=0.005, n_mels=26, n_mfcc=20,
                                                          f_min=0.0, f_max=6000.0, preemphasis=0.0)])
def test_mfcc_and_energy_match_numpy_reference(speechlike, cfg):
    x, sr = speechlike
    logmel_ref, cep_ref, energy_ref = reference(x, sr, cfg)
    xt = torch.from_numpy(x)
    assert mfcc(xt, sr, cfg).shape == (frame_count(len(x), sr, cfg), cfg.n_mfcc) == cep_ref.shape
    np.testing.assert_allclose(log_mel_spectrogram(xt, sr, cfg).numpy(), logmel_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mfcc(xt, sr, cfg).numpy(), cep_ref, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(log_energy(xt, sr, cfg).numpy(), energy_ref, rtol=1e-9, atol=1e-9)
    feats = audio_features(xt, sr, cfg).numpy()
    assert feats.shape[-1] == feature_size(cfg) == 2 * cfg.n_mfcc + 1
    np.testing.assert_allclose(feats[:, : cfg.n_mfcc], cep_ref, atol=1e-8)
    np.testing.assert_allclose(feats[:, cfg.n_mfcc: 2 * cfg.n_mfcc], reference_deltas(cep_ref, 2), atol=1e-8)
    np.testing.assert_allclose(feats[:, -1], energy_ref, atol=1e-9)
    # float32 follows the float64 result to single precision.
    f32 = audio_features(xt.float(), sr, cfg)
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), feats, rtol=1e-3, atol=2e-3)


def test_sine_peaks_in_its_mel_band():
    sr, cfg = 16000, MFCCConfig()
    centres = mel_center_frequencies(cfg.n_mels, cfg.f_min, sr / 2, dtype=torch.float64)
    t = torch.arange(sr // 2, dtype=torch.float64) / sr
    for band in (5, 12, 20, 33):
        f0 = float(centres[band])
        logmel = log_mel_spectrogram(0.5 * torch.sin(2 * math.pi * f0 * t), sr, cfg)
        assert int(logmel[5:-5].mean(0).argmax()) == band, f0
    # Between two centres the peak is one of the two neighbours.
    f0 = 0.5 * float(centres[17] + centres[18])
    logmel = log_mel_spectrogram(0.5 * torch.sin(2 * math.pi * f0 * t), sr, cfg)
    assert int(logmel[5:-5].mean(0).argmax()) in (17, 18)


def test_deltas_closed_forms():
    t = torch.arange(30, dtype=torch.float64)
    ramp = torch.stack([2.5 * t + 1.0, -0.75 * t], -1)  # (T, 2)
    d = deltas(ramp, width=2)
    torch.testing.assert_close(d[2:-2], torch.tensor([2.5, -0.75], dtype=torch.float64).expand(26, 2))
    # Edges repeat the first/last frame (HTK): d_0 = (1*(c1-c0) + 2*(c2-c0)) / 10 = 5 s / 10.
    assert float(d[0, 0]) == pytest.approx(2.5 * 5 / 10)
    np.testing.assert_allclose(d.numpy(), reference_deltas(ramp.numpy(), 2), atol=1e-12)
    np.testing.assert_allclose(deltas(ramp, width=3).numpy(), reference_deltas(ramp.numpy(), 3), atol=1e-12)
    # Any time dimension, batched.
    batched = ramp.T[None].repeat(3, 1, 1)  # (3, 2, T)
    torch.testing.assert_close(deltas(batched, dim=-1), d.T[None].expand(3, 2, 30))
    # Constant sequences have zero deltas.
    assert float(deltas(torch.ones(10, 4)).abs().max()) == 0.0


def test_frames_are_centred_on_hop_multiples():
    sr, cfg = 16000, MFCCConfig()
    hop = cfg.hop_length(sr)
    for sample in (8000, 8070, 8095, 12345):  # away from half-hop ties
        x = torch.zeros(sr)
        x[sample] = 1.0
        assert int(log_energy(x, sr, cfg).argmax()) == round(sample / hop)


def test_batched_equals_single_and_default_sizes(speechlike):
    x, sr = speechlike
    xt = torch.from_numpy(x).float()
    batch = torch.stack([xt, 0.5 * xt.flip(0), torch.zeros_like(xt)]).view(3, 1, -1)
    out = audio_features(batch, sr)
    assert out.shape == (3, 1, frame_count(len(x), sr), DEFAULT_FEATURE_SIZE)
    assert DEFAULT_FEATURE_SIZE == 27
    for i in range(3):
        torch.testing.assert_close(out[i, 0], audio_features(batch[i, 0], sr), rtol=1e-5, atol=1e-4)
    # Silence hits the log floor instead of -inf.
    assert bool(torch.isfinite(out).all())
    assert float(out[2, 0, :, -1].max()) == pytest.approx(math.log(1e-10), rel=1e-5)


def test_mfcc_gradcheck_float64():
    cfg = MFCCConfig(window_s=0.016, hop_s=0.008, n_mels=6, n_mfcc=4, f_min=0.0)
    x = (0.3 * torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.2)
    x.requires_grad_(True)
    # fast_mode checks random projections of the Jacobian (the full one costs ~100 evaluations).
    assert torch.autograd.gradcheck(lambda w: audio_features(w, 1000, cfg), (x,), eps=1e-6, atol=1e-5,
                                    fast_mode=True)


def test_bad_inputs():
    with pytest.raises(ValueError, match="floating-point"):
        mfcc(torch.zeros(100, dtype=torch.int16), 16000)
    with pytest.raises(ValueError, match=r"\(\.\.\., T\)"):
        mfcc(torch.zeros(0), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        mfcc(torch.zeros(100), 0)
    with pytest.raises(ValueError, match="n_mfcc"):
        MFCCConfig(n_mfcc=50, n_mels=40)
    with pytest.raises(ValueError, match="n_fft"):
        mfcc(torch.zeros(1000), 16000, MFCCConfig(n_fft=128))
    with pytest.raises(ValueError, match="f_max"):
        mfcc(torch.zeros(1000), 16000, MFCCConfig(f_max=9000.0))
