"""Frame-aligned audio features: timing against brute-force references and an audible click."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morphface.audio.alignment import (
    DEFAULT_FLAT_SIZE,
    align_to_frames,
    frame_aligned_feature_size,
    frame_aligned_features,
)
from morphface.audio.features import MFCCConfig, audio_features


def brute_force_align(feats, rate, fps, n_frames, k, length, samples_per_part=2000):
    """Average the piecewise-constant, border-extended features on a dense time grid."""
    j_count = feats.shape[0]
    out = np.zeros((n_frames, 2 * k, feats.shape[1]))
    for t in range(n_frames):
        for p in range(2 * k):
            start = t / fps + (p - k) * length
            times = start + (np.arange(samples_per_part) + 0.5) / samples_per_part * length
            idx = np.clip(np.floor(times * rate + 0.5).astype(int), 0, j_count - 1)
            out[t, p] = feats[idx].mean(0)
    return out


@pytest.mark.parametrize("fps,k,length", [(25.0, 2, None), (30.0, 3, 1 / 30), (24.0, 1, 0.004)])
def test_matches_dense_average(fps, k, length):
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((57, 3))
    rate = 100.0
    n_frames = 15
    got = align_to_frames(torch.from_numpy(feats), rate, fps, n_frames, k, part_duration=length).numpy()
    ref = brute_force_align(feats, rate, fps, n_frames, k, 1 / (2 * fps) if length is None else length)
    assert got.shape == (n_frames, 2 * k, 3)
    np.testing.assert_allclose(got, ref, atol=5e-3)  # the dense grid's own resolution


def test_edges_repeat_the_border_and_constants_pass_through():
    feats = torch.arange(20, dtype=torch.float64)[:, None].repeat(1, 2)  # value = frame index
    out = align_to_frames(feats, 100.0, 25.0, n_frames=10, k=2)  # parts of 20 ms = 2 feature frames
    # Frame 0's first part [-40, -20) ms lies before the audio: it is the first feature frame.
    assert torch.equal(out[0, 0], feats[0])
    # Past the end (audio is 0.2 s; frame 9 ends at 0.4 s) everything is the last feature frame.
    assert torch.equal(out[9], feats[-1].expand(4, 2))
    # Part k of frame 2 covers [80, 100) ms = feature cells u in [8.5, 10.5): frames 8 (half), 9, 10 (half).
    assert float(out[2, 2, 0]) == pytest.approx((0.5 * 8 + 9 + 0.5 * 10) / 2)
    const = align_to_frames(torch.full((7, 4), 3.25), 100.0, 25.0, n_frames=12, k=2)
    assert torch.allclose(const, torch.full_like(const, 3.25))


@pytest.mark.parametrize("fps,clicks", [(25.0, (0.53, 0.99, 1.01, 1.47)), (30.0, (0.21, 0.7, 1.62))])
def test_click_peaks_in_its_frame(fps, clicks):
    sr, k = 16000, 2
    rng = np.random.default_rng(3)
    for t0 in clicks:
        wave = 1e-3 * rng.standard_normal(2 * sr)
        wave[int(round(t0 * sr))] += 0.9
        feats = frame_aligned_features(torch.from_numpy(wave).float(), sr, fps, k)
        assert feats.shape == (round(2 * fps), 2 * k, 27)
        # The two central parts cover the frame's own interval [(t - 1/2) / fps, (t + 1/2) / fps).
        energy = feats[:, k - 1: k + 1, -1].mean(1)
        assert int(energy.argmax()) == round(t0 * fps), (fps, t0)
        # Within that frame the click is in the part that contains t0.
        n = round(t0 * fps)
        part = k if t0 * fps >= n else k - 1
        assert int(feats[n, :, -1].argmax()) == part


def test_shapes_defaults_flatten_and_batch():
    sr, fps = 16000, 25.0
    wave = torch.randn(2, int(1.3 * sr), generator=torch.Generator().manual_seed(0)) * 0.1
    out = frame_aligned_features(wave, sr, fps)
    n = round(1.3 * fps)
    assert out.shape == (2, n, 4, 27)
    flat = frame_aligned_features(wave, sr, fps, flatten=True)
    assert flat.shape == (2, n, DEFAULT_FLAT_SIZE) and DEFAULT_FLAT_SIZE == 108 == frame_aligned_feature_size()
    torch.testing.assert_close(flat, out.flatten(-2))
    torch.testing.assert_close(out[1], frame_aligned_features(wave[1], sr, fps), rtol=1e-4, atol=1e-4)
    assert frame_aligned_features(wave[0], sr, fps, n_frames=40).shape == (40, 4, 27)
    cfg = MFCCConfig(n_mfcc=20, use_deltas=False)
    assert frame_aligned_features(wave[0], sr, fps, k=3, config=cfg).shape == (n, 6, 21)
    assert frame_aligned_feature_size(3, cfg) == 126
    # dtype follows the input.
    assert frame_aligned_features(wave[0].double(), sr, fps).dtype == torch.float64


def test_long_sequences_keep_precision():
    # 10 minutes of features with a large offset: the running sum must not swamp the part averages.
    feats = 1000.0 + torch.sin(torch.arange(60000, dtype=torch.float32) / 7.0)[:, None]
    out = align_to_frames(feats, 100.0, 25.0, n_frames=15000, k=1, part_duration=0.01)
    # Part 1 of frame t is [t / 25, t / 25 + 10 ms): the second half of feature cell 4t, the first of 4t + 1.
    t = torch.arange(15000)
    expected = 0.5 * (feats[4 * t, 0].double() + feats[4 * t + 1, 0].double())
    torch.testing.assert_close(out[:, 1, 0].double(), expected, rtol=0, atol=1.5e-4)  # float32 output rounding


def test_bad_inputs():
    wave = torch.zeros(16000)
    with pytest.raises(ValueError, match="fps"):
        frame_aligned_features(wave, 16000, 0.0)
    with pytest.raises(ValueError, match="k must"):
        frame_aligned_features(wave, 16000, 25.0, k=0)
    with pytest.raises(ValueError, match="part_duration"):
        frame_aligned_features(wave, 16000, 25.0, part_duration=-1.0)
    with pytest.raises(ValueError, match="n_frames"):
        align_to_frames(torch.zeros(5, 3), 100.0, 25.0, n_frames=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., J, D\)"):
        align_to_frames(torch.zeros(5), 100.0, 25.0, n_frames=3)
    assert math.isfinite(float(audio_features(wave, 16000).sum()))
