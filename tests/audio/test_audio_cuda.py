"""The audio stack on a CUDA device gives the CPU results (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from morphface.audio import (
    AudioToMotion,
    AudioToMotionConfig,
    audio_features,
    audio_to_motion_losses,
    frame_aligned_features,
    train_audio_to_motion,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)"),
]


def test_features_on_cuda_match_cpu():
    wave = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cpu = audio_features(wave, 16000)
    gpu = audio_features(wave.cuda(), 16000)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-8)
    aligned = frame_aligned_features(wave.cuda().float(), 16000, 25.0, flatten=True)
    torch.testing.assert_close(aligned.cpu(), frame_aligned_features(wave.float(), 16000, 25.0, flatten=True),
                               rtol=1e-4, atol=1e-3)


def test_audio_to_motion_trains_on_cuda():
    torch.manual_seed(0)
    x = torch.randn(4, 10, 12)
    e, p = torch.sigmoid(x[..., :5]), torch.tanh(x[..., 5:11])
    model = AudioToMotion(AudioToMotionConfig(in_features=12, n_exp=5, hidden_size=16, num_layers=1)).cuda()
    history = train_audio_to_motion(model, (x, e, p), steps=20, lr=1e-2, batch_size=4)
    assert history.total[-1] < history.total[0]
    out = model(x.cuda())
    assert out.pose.device.type == "cuda"
    losses = audio_to_motion_losses(out, e.cuda(), p.cuda())
    assert losses["total"].device.type == "cuda"
