"""The audio-to-motion LSTM: shapes, streaming, losses (closed forms), training on a synthetic mapping."""

from __future__ import annotations

import math

import pytest
import torch

from morphface.audio.motion import (
    AudioToMotion,
    AudioToMotionConfig,
    MotionPrediction,
    load_audio_to_motion,
    save_audio_to_motion,
)
from morphface.audio.motion_losses import MotionLossWeights, audio_to_motion_losses, continuity_loss
from morphface.audio.motion_train import collate_motion, train_audio_to_motion
from morphface.errors import CheckpointError, TrainingDivergedError

POSE_SCALE = torch.tensor([0.2, 0.3, 0.1, 5.0, 5.0, 20.0])  # radians, radians, radians, mm, mm, mm
POSE_OFFSET = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -500.0])


def synthetic(n, t, d=8, n_exp=5, seed=0):
    """Smooth audio-like features and motion that is a fixed smooth function of them."""
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(t, dtype=torch.float32)
    freq = torch.rand(n, 1, d, generator=g) * 0.4 + 0.05
    phase = torch.rand(n, 1, d, generator=g) * 2 * math.pi
    x = 2.0 * torch.sin(time[None, :, None] * freq + phase) + 1.0
    g_map = torch.Generator().manual_seed(1234)  # the mapping is the same for every split
    a = torch.randn(d, n_exp, generator=g_map) / math.sqrt(d)
    b = torch.randn(d, 6, generator=g_map) / math.sqrt(d)
    expression = torch.sigmoid(2.0 * x @ a)
    pose = torch.tanh(x @ b) * POSE_SCALE + POSE_OFFSET
    return x, expression, pose


def test_default_model_shapes_and_size():
    model = AudioToMotion()
    c = model.config
    assert (c.in_features, c.n_exp, c.hidden_size, c.num_layers, c.bidirectional) == (108, 53, 256, 2, False)
    n_params = sum(p.numel() for p in model.parameters())
    # LSTM: 4 gates x (in + hidden + 2 biases) x hidden per layer; head: 256 -> 59.
    lstm = 4 * 256 * (108 + 256 + 2) + 4 * 256 * (256 + 256 + 2)
    assert n_params == lstm + 256 * 59 + 59 == 916283
    feats = torch.randn(2, 7, 4, 27)  # (B, T, 2k, D) is flattened
    with torch.no_grad():
        out = model(feats)
    assert isinstance(out, MotionPrediction)
    assert out.expression.shape == (2, 7, 53) and out.pose.shape == (2, 7, 6)
    assert out.state[0].shape == (2, 2, 256)
    # The zero-initialised head predicts the target mean.
    assert float(out.expression.abs().max()) == 0.0 and float(out.pose.abs().max()) == 0.0


def test_bidirectional_and_dtype():
    cfg = AudioToMotionConfig(in_features=10, n_exp=4, hidden_size=16, num_layers=3, bidirectional=True)
    model = AudioToMotion(cfg).double()
    out = model(torch.randn(3, 9, 10, dtype=torch.float64))
    assert out.expression.shape == (3, 9, 4) and out.pose.dtype == torch.float64


def test_streaming_in_chunks_equals_whole_sequence(single_thread):
    torch.manual_seed(0)
    model = AudioToMotion(AudioToMotionConfig(in_features=6, n_exp=3, hidden_size=12, num_layers=2))
    torch.nn.init.normal_(model.head.weight)
    x = torch.randn(2, 20, 6)
    whole = model(x)
    first = model(x[:, :8])
    second = model(x[:, 8:], state=first.state)
    torch.testing.assert_close(torch.cat([first.pose, second.pose], 1), whole.pose)
    torch.testing.assert_close(torch.cat([first.expression, second.expression], 1), whole.expression)


def test_normalization_and_bad_shapes():
    x, e, p = synthetic(4, 10)
    model = AudioToMotion(AudioToMotionConfig(in_features=8, n_exp=5, hidden_size=8, num_layers=1))
    e[..., 0] = 0.3  # a channel that never moves keeps std 1 instead of 1 / 0
    model.set_normalization(x, e, p)
    out = model(x)
    torch.testing.assert_close(out.pose, p.mean((0, 1)).expand_as(p), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.expression, e.mean((0, 1)).expand_as(e))
    assert float(model.target_std[0]) == 1.0
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        model(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="both"):
        model.set_normalization(x, e, None)
    with pytest.raises(ValueError, match="num_layers"):
        AudioToMotionConfig(num_layers=0)


def test_losses_closed_forms():
    b, t, n_exp = 2, 5, 3
    e = torch.randn(b, t, n_exp, generator=torch.Generator().manual_seed(0))
    p = torch.randn(b, t, 6, generator=torch.Generator().manual_seed(1))
    zero = audio_to_motion_losses((e, p), e, p, weights=MotionLossWeights(0, 0, 1, 1, 0, 0))
    assert float(zero["expression"]) == 0.0 and float(zero["pose"]) == 0.0 and float(zero["total"]) == 0.0
    # Offsets: expression +0.5 everywhere, rotation +0.1 rad, translation +10 mm.
    shift = torch.tensor([0.1, 0.1, 0.1, 10.0, 10.0, 10.0])
    w = MotionLossWeights(expression_weight=2.0, pose_weight=3.0, translation_weight=1e-3,
                          expression_continuity_weight=5.0, pose_continuity_weight=7.0)
    losses = audio_to_motion_losses((e + 0.5, p + shift), e, p, weights=w)
    assert float(losses["expression"]) == pytest.approx(0.25)
    assert float(losses["pose"]) == pytest.approx((3 * 0.01 + 3 * 100 * 1e-3) / 6)
    # A ramp of slope s per frame has continuity s^2 (pose components weighted).
    ramp = torch.arange(t, dtype=torch.float32)[None, :, None]
    e_ramp = (0.2 * ramp).expand(b, t, n_exp)
    p_ramp = (ramp * torch.tensor([0.1, 0.1, 0.1, 2.0, 2.0, 2.0])).expand(b, t, 6)
    cont = audio_to_motion_losses((e_ramp, p_ramp), e, p, weights=w)
    assert float(cont["expression_continuity"]) == pytest.approx(0.04)
    assert float(cont["pose_continuity"]) == pytest.approx((3 * 0.01 + 3 * 4.0 * 1e-3) / 6)
    expected_total = (2.0 * cont["expression"] + 3.0 * cont["pose"] + 5.0 * cont["expression_continuity"]
                      + 7.0 * cont["pose_continuity"])
    torch.testing.assert_close(cont["total"], expected_total)
    assert float(continuity_loss(torch.randn(2, 1, 3))) == 0.0


def test_mask_ignores_padding():
    x, e, p = synthetic(3, 8)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 3:] = False
    pred_e, pred_p = e + 0.1, p.clone()
    base = audio_to_motion_losses((pred_e, pred_p), e, p, mask)
    garbage_e, garbage_p = pred_e.clone(), pred_p.clone()
    garbage_e[~mask] = 1e6
    garbage_p[~mask] = -1e6
    noisy = audio_to_motion_losses((garbage_e, garbage_p), e, p, mask)
    for key in base:
        torch.testing.assert_close(noisy[key], base[key])
    assert float(base["expression"]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="mask"):
        audio_to_motion_losses((pred_e, pred_p), e, p, mask[:, :4])
    with pytest.raises(ValueError, match="pose"):
        audio_to_motion_losses((pred_e, pred_p[..., :3]), e, p)


@pytest.mark.slow
def test_training_fits_a_synthetic_mapping(single_thread):
    torch.manual_seed(0)
    x, e, p = synthetic(16, 24)
    model = AudioToMotion(AudioToMotionConfig(in_features=8, n_exp=5, hidden_size=32, num_layers=1))
    weights = MotionLossWeights(expression_continuity_weight=0.0, pose_continuity_weight=0.0)
    model.eval()  # the loop trains in train mode and restores the caller's mode
    history = train_audio_to_motion(model, (x, e, p), steps=200, lr=1e-2, batch_size=8, weights=weights)
    first, last = history.total[0], sum(history.total[-10:]) / 10
    assert len(history.total) == 200 and set(history.terms) == {"expression", "pose", "expression_continuity",
                                                                 "pose_continuity"}
    assert last < first / 30, (first, last)
    assert not model.training
    # It learnt the mapping, not the sequences: held-out sequences from the same mapping fit too.
    xv, ev, pv = synthetic(4, 24, seed=7)
    with torch.no_grad():
        held_out = audio_to_motion_losses(model(xv), ev, pv, weights=weights)["total"]
    assert float(held_out) < first / 10


def test_training_on_a_variable_length_dataset_with_continuity(single_thread):
    x, e, p = synthetic(6, 20)
    lengths = [20, 12, 17, 9, 20, 14]
    items = [{"features": x[i, :n], "expression": e[i, :n], "pose": p[i, :n]} for i, n in enumerate(lengths)]
    batch = collate_motion(items[:3])
    assert batch.features.shape == (3, 20, 8) and batch.mask.sum(1).tolist() == [20, 12, 17]
    torch.manual_seed(0)
    model = AudioToMotion(AudioToMotionConfig(in_features=8, n_exp=5, hidden_size=16, num_layers=2,
                                              bidirectional=True))
    history = train_audio_to_motion(model, items, steps=40, lr=1e-2, batch_size=4)
    assert sum(history.total[-5:]) / 5 < 0.5 * history.total[0]
    assert all(math.isfinite(v) for v in history.total)


def test_divergence_raises():
    x, e, p = synthetic(2, 6)
    x[0, 3, 2] = float("nan")
    model = AudioToMotion(AudioToMotionConfig(in_features=8, n_exp=5, hidden_size=4, num_layers=1))
    with pytest.raises(TrainingDivergedError, match="step 0"):
        train_audio_to_motion(model, (x, e, p), steps=3, fit_normalization=False)


def test_checkpoint_round_trip(tmp_path):
    x, e, p = synthetic(2, 6)
    cfg = AudioToMotionConfig(in_features=8, n_exp=5, hidden_size=6, num_layers=2)
    model = AudioToMotion(cfg)
    torch.nn.init.normal_(model.head.weight)
    model.set_normalization(x, e, p)
    save_audio_to_motion(model, tmp_path / "a2m.safetensors")
    loaded = load_audio_to_motion(tmp_path / "a2m.safetensors")
    assert loaded.config == cfg
    torch.testing.assert_close(loaded(x).pose, model(x).pose, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no such file"):
        load_audio_to_motion(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_audio_to_motion(tmp_path / "junk.safetensors")
