"""Keypoint deformations of the 3D-keypoint GAN (Hatakeyama et al. 2024, §3.1): from AUs and from audio.

* :class:`AUDeformationEstimator`: ``AU in [0, 5]^17`` is divided by 5 (``[0, 1]^17``); for every
  keypoint ``i`` two linear layers with a GELU between them give ``delta^AU_i in R^3``; the ``k``
  outputs are stacked to ``delta^AU`` ``(B, k, 3)``. The ``k`` small MLPs are evaluated at once with
  batched weights (``einsum``), not in a Python loop.
* :class:`AudioDeformationEstimator`: the paper's per-frame audio feature (DeepSpeech logits of
  adjacent chunks) is replaced by the library's frame-aligned MFCC features
  (:func:`morphface.audio.frame_aligned_features`: ``2k_a = 4`` parts of 27 values per video frame).
  Each frame's parts go through a small 1D CNN over the parts and a linear layer to a 32-D per-frame
  feature; the ``N = 8`` neighbouring frames' features are filtered by Audio2ExpressionNet-style
  self-attention (a 1D conv over the frames predicts one score per frame, a softmax over the frames
  weights them, the weighted sum is the filtered 32-D feature); per-keypoint linear + GELU + linear
  layers give ``delta^audio`` ``(B, k, 3)``.

Outputs start near zero (the last layers are initialised with small weights), so the keypoints start
at their canonical places (the deformation prior's minimum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputShapeError

__all__ = [
    "NUM_AUS",
    "AU_MAX",
    "PerKeypointMLP",
    "AUDeformationConfig",
    "AUDeformationEstimator",
    "AudioDeformationConfig",
    "AudioDeformationEstimator",
]

#: The 17 OpenFace intensity AUs the paper uses (see :mod:`morphface.morphable.facs` for the list).
NUM_AUS = 17
#: AU intensities are in [0, AU_MAX] (FACS A-E as 1-5).
AU_MAX = 5.0


class PerKeypointMLP(nn.Module):
    """``k`` independent MLPs ``Linear(in, hidden) -> GELU -> Linear(hidden, 3)``, one per keypoint.

    Args:
        in_features: length of the shared input vector.
        hidden: hidden width of each MLP.
        num_keypoints: ``k``.
        out_init_scale: scale of the last layer's initial weights (small: outputs start near 0).
    """

    def __init__(self, in_features: int, hidden: int, num_keypoints: int, out_init_scale: float = 0.01) -> None:
        super().__init__()
        k = num_keypoints
        self.w1 = nn.Parameter(torch.randn(k, in_features, hidden) / in_features ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(k, hidden))
        self.w2 = nn.Parameter(torch.randn(k, hidden, 3) * (out_init_scale / hidden ** 0.5))
        self.b2 = nn.Parameter(torch.zeros(k, 3))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features)`` -> ``(B, k, 3)``."""
        h = F.gelu(torch.einsum("bi,kih->bkh", x, self.w1.to(x.dtype)) + self.b1.to(x.dtype))
        return torch.einsum("bkh,kho->bko", h, self.w2.to(x.dtype)) + self.b2.to(x.dtype)


@dataclass(frozen=True)
class AUDeformationConfig:
    """Sizes of :class:`AUDeformationEstimator`.

    Attributes:
        num_keypoints: ``k``.
        num_aus: AU count (17).
        hidden: hidden width of each keypoint's two-layer MLP (64; the paper's is in its supplement).
    """

    num_keypoints: int = 20
    num_aus: int = NUM_AUS
    hidden: int = 64


class AUDeformationEstimator(nn.Module):
    """AU intensities -> ``delta^AU`` (module docstring)."""

    def __init__(self, config: AUDeformationConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AUDeformationConfig()
        self.mlp = PerKeypointMLP(cfg.num_aus, cfg.hidden, cfg.num_keypoints)

    def forward(self, aus: Tensor) -> Tensor:
        """Args:
            aus: ``(B, 17)`` AU intensities in [0, 5] (values outside are not clipped: edits may
                extrapolate).

        Returns:
            ``(B, k, 3)`` deformation in keypoint-space units.
        """
        n = self.config.num_aus
        if not isinstance(aus, Tensor) or aus.dim() != 2 or aus.shape[1] != n:
            shape = tuple(aus.shape) if isinstance(aus, Tensor) else type(aus).__name__
            raise InputShapeError(f"aus must have shape (B, {n}) (AU intensities in [0, 5]); got {shape}")
        return self.mlp(aus / AU_MAX)


@dataclass(frozen=True)
class AudioDeformationConfig:
    """Sizes of :class:`AudioDeformationEstimator`.

    Attributes:
        num_keypoints: ``k``.
        num_frames: ``N`` neighbouring video frames attended over (8).
        parts: audio parts per video frame (``2k_a = 4`` of :func:`~morphface.audio.frame_aligned_features`).
        feature_size: values per part (27: 13 MFCC + 13 deltas + log energy).
        conv_channels: channels of the per-frame 1D CNN over the parts (64).
        frame_dim: per-frame and filtered feature length (32, the paper's).
        hidden: hidden width of each keypoint's MLP (64).
    """

    num_keypoints: int = 20
    num_frames: int = 8
    parts: int = 4
    feature_size: int = 27
    conv_channels: int = 64
    frame_dim: int = 32
    hidden: int = 64


class AudioDeformationEstimator(nn.Module):
    """Audio windows of ``N`` frames -> ``delta^audio`` of the frame they surround (module docstring)."""

    def __init__(self, config: AudioDeformationConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AudioDeformationConfig()
        c = cfg.conv_channels
        self.frame_cnn = nn.Sequential(
            nn.Conv1d(cfg.feature_size, c, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(c, c, 3, padding=1), nn.LeakyReLU(0.02))
        self.frame_fc = nn.Linear(c * cfg.parts, cfg.frame_dim)
        # Audio2ExpressionNet's filter: conv over the frame sequence -> one attention score per frame.
        self.attention = nn.Sequential(
            nn.Conv1d(cfg.frame_dim, 16, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(16, 1, 3, padding=1))
        self.mlp = PerKeypointMLP(cfg.frame_dim, cfg.hidden, cfg.num_keypoints)

    @property
    def window_dim(self) -> int:
        """Flattened length of one frame's audio features (``parts * feature_size``, 108)."""
        return self.config.parts * self.config.feature_size

    def frame_features(self, windows: Tensor) -> Tensor:
        """Per-frame features ``(B, N, frame_dim)`` of audio windows ``(B, N, parts * feature_size)``."""
        cfg = self.config
        B, N = windows.shape[:2]
        x = windows.reshape(B * N, cfg.parts, cfg.feature_size).transpose(1, 2)  # (BN, D, parts)
        return self.frame_fc(self.frame_cnn(x).flatten(1)).reshape(B, N, cfg.frame_dim)

    def forward(self, windows: Tensor) -> Tensor:
        """Args:
            windows: ``(B, N, parts * feature_size)`` (or ``(B, N, parts, feature_size)``) frame-aligned
                audio features of the ``N`` frames around the target frame (e.g. ``t-4 .. t+3``).

        Returns:
            ``(B, k, 3)`` deformation in keypoint-space units.
        """
        cfg = self.config
        if isinstance(windows, Tensor) and windows.dim() == 4:
            windows = windows.flatten(2)
        want = (cfg.num_frames, self.window_dim)
        if not isinstance(windows, Tensor) or windows.dim() != 3 or tuple(windows.shape[1:]) != want:
            shape = tuple(windows.shape) if isinstance(windows, Tensor) else type(windows).__name__
            raise InputShapeError(f"audio windows must have shape (B, {want[0]}, {want[1]}) ({cfg.num_frames} "
                                  f"frames of {cfg.parts} x {cfg.feature_size} audio features); got {shape}")
        f = self.frame_features(windows)  # (B, N, F)
        scores = self.attention(f.transpose(1, 2))[:, 0]  # (B, N)
        weights = torch.softmax(scores.float(), dim=-1).to(f.dtype)
        filtered = (weights[:, :, None] * f).sum(dim=1)
        return self.mlp(filtered)
