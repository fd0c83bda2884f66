"""IFaceUV's audio-to-motion network (§3.5): an LSTM from per-frame audio features to 3DMM motion.

Input: the per-video-frame audio features ``(B, T, D)`` of
:func:`morphface.audio.alignment.frame_aligned_features` (flattened; ``D = 108`` by default; a
``(B, T, 2k, D')`` tensor is flattened to ``(B, T, 2k D')``). Output, per frame: 3DMM expression
coefficients ``(B, T, n_exp)`` (53 ICT blendshape weights by default) and the head pose
``(B, T, 6)``: Euler angles ``(pitch, yaw, roll)`` in radians (composition of
:mod:`morphface.camera`) followed by a translation ``(tx, ty, tz)`` in millimetres.

Architecture: input standardisation (fixed buffers, see :meth:`AudioToMotion.set_normalization`)
-> ``num_layers`` stacked LSTM (optionally bidirectional) -> linear head -> de-standardisation with
the target statistics. The head starts at zero, so an untrained model predicts the mean motion of
its training data. Because all statistics are buffers, a checkpoint (:func:`save_audio_to_motion`)
carries them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .alignment import DEFAULT_FLAT_SIZE

__all__ = [
    "POSE_SIZE",
    "AudioToMotionConfig",
    "MotionPrediction",
    "AudioToMotion",
    "save_audio_to_motion",
    "load_audio_to_motion",
]

#: Pose layout: pitch, yaw, roll (radians), tx, ty, tz (mm).
POSE_SIZE = 6


@dataclass(frozen=True)
class AudioToMotionConfig:
    """Size of an :class:`AudioToMotion` network.

    Attributes:
        in_features: per-frame audio feature size ``D`` (108 = 2k x 27 for the default features, k = 2).
        n_exp: number of expression coefficients (53 for the default ICT model).
        hidden_size: LSTM hidden units per direction.
        num_layers: stacked LSTM layers.
        bidirectional: also read the sequence backwards (offline use; no streaming).
        dropout: dropout between LSTM layers (ignored with one layer).
    """

    in_features: int = DEFAULT_FLAT_SIZE
    n_exp: int = 53
    hidden_size: int = 256
    num_layers: int = 2
    bidirectional: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_features", "n_exp", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AudioToMotionConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AudioToMotionConfig field(s) {sorted(unknown)}; expected a subset of "
                             f"{sorted(known)}")
        return cls(**d)


class MotionPrediction(NamedTuple):
    """Output of :class:`AudioToMotion`.

    Attributes:
        expression: ``(B, T, n_exp)`` expression coefficients.
        pose: ``(B, T, 6)`` pitch, yaw, roll (radians) and tx, ty, tz (mm).
        state: the LSTM's final ``(h, c)``, each ``(num_layers * directions, B, hidden_size)``; pass
            it back as ``state`` to continue a stream chunk by chunk (unidirectional models).
    """

    expression: Tensor
    pose: Tensor
    state: tuple[Tensor, Tensor]


def _stats(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean and std over all (valid) frames of ``x`` ``(B, T, C)``; near-constant channels get std 1."""
    # On the CPU in float64: one-off, exact enough for long datasets, and MPS has no float64.
    x = x.detach().to("cpu", torch.float64)
    mask = None if mask is None else mask.detach().to("cpu")
    if mask is None:
        flat = x.reshape(-1, x.shape[-1])
    else:
        flat = x[mask.to(torch.bool)]
    if flat.shape[0] == 0:
        raise ValueError("cannot compute normalisation statistics from zero valid frames")
    mean = flat.mean(0)
    std = flat.std(0, unbiased=False)
    # A channel that never moves (an unused blendshape) must not be amplified by 1 / ~0.
    std = torch.where(std > 1e-6 * (1.0 + mean.abs()), std, torch.ones_like(std))
    return mean, std


class AudioToMotion(nn.Module):
    """LSTM from audio features ``(B, T, D)`` to expression ``(B, T, n_exp)`` and pose ``(B, T, 6)``."""

    def __init__(self, config: AudioToMotionConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AudioToMotionConfig()
        self.lstm = nn.LSTM(c.in_features, c.hidden_size, num_layers=c.num_layers, batch_first=True,
                            bidirectional=c.bidirectional, dropout=c.dropout if c.num_layers > 1 else 0.0)
        directions = 2 if c.bidirectional else 1
        self.head = nn.Linear(c.hidden_size * directions, c.n_exp + POSE_SIZE)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        out = c.n_exp + POSE_SIZE
        self.register_buffer("input_mean", torch.zeros(c.in_features))
        self.register_buffer("input_std", torch.ones(c.in_features))
        self.register_buffer("target_mean", torch.zeros(out))
        self.register_buffer("target_std", torch.ones(out))

    @torch.no_grad()
    def set_normalization(self, features: Tensor | None = None, expression: Tensor | None = None,
                          pose: Tensor | None = None, mask: Tensor | None = None) -> None:
        """Set the input / target standardisation from training data (statistics over all frames).

        Args:
            features: ``(B, T, D)`` audio features, or ``None`` to keep the input statistics.
            expression: ``(B, T, n_exp)`` and ``pose``: ``(B, T, 6)``; both or neither.
            mask: optional ``(B, T)`` bool, True on valid (non-padding) frames.
        """
        c = self.config
        if features is not None:
            features = self._flatten_features(features)
            mean, std = _stats(features, mask)
            self.input_mean.copy_(mean)
            self.input_std.copy_(std)
        if (expression is None) != (pose is None):
            raise ValueError("pass both expression and pose (or neither) to set the target statistics")
        if expression is not None:
            pose_shape = (*expression.shape[:2], POSE_SIZE)
            if expression.ndim != 3 or expression.shape[-1] != c.n_exp or pose.shape != pose_shape:
                raise ValueError(f"expected expression (B, T, {c.n_exp}) and pose (B, T, {POSE_SIZE}); got "
                                 f"{tuple(expression.shape)} and {tuple(pose.shape)}")
            mean, std = _stats(torch.cat([expression, pose], -1), mask)
            self.target_mean.copy_(mean)
            self.target_std.copy_(std)

    def _flatten_features(self, features: Tensor) -> Tensor:
        if isinstance(features, Tensor) and features.ndim == 4:
            features = features.flatten(-2)
        d = self.config.in_features
        if not isinstance(features, Tensor) or features.ndim != 3 or features.shape[-1] != d:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features must have shape (B, T, {self.config.in_features}) (or (B, T, 2k, D) "
                             f"with 2k*D = {self.config.in_features}); got {shape}")
        return features

    def forward(self, features: Tensor, state: tuple[Tensor, Tensor] | None = None) -> MotionPrediction:
        """Predict motion for every frame.

        Args:
            features: ``(B, T, D)`` (or ``(B, T, 2k, D')``) per-frame audio features.
            state: optional LSTM ``(h, c)`` from a previous chunk.

        Returns:
            :class:`MotionPrediction` with expression ``(B, T, n_exp)``, pose ``(B, T, 6)``
            (radians, mm) and the final LSTM state.
        """
        x = self._flatten_features(features)
        x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        hidden, new_state = self.lstm(x, state)
        y = self.head(hidden) * self.target_std.to(x.dtype) + self.target_mean.to(x.dtype)
        n_exp = self.config.n_exp
        return MotionPrediction(y[..., :n_exp], y[..., n_exp:], new_state)


def save_audio_to_motion(model: AudioToMotion, path: str | os.PathLike) -> None:
    """Write weights, normalisation buffers and config to one safetensors file (config in its metadata)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "morphface.AudioToMotion",
                                          "config": json.dumps(model.config.to_dict())})


def load_audio_to_motion(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AudioToMotion:
    """Rebuild an :class:`AudioToMotion` saved by :func:`save_audio_to_motion`.

    Raises:
        CheckpointError: missing file, not such a checkpoint, or weights that do not fit the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"expected an AudioToMotion checkpoint at {str(path)!r}; no such file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"expected a safetensors file at {str(path)!r}; could not read it: "
                              f"{exc}") from exc
    if meta.get("format") != "morphface.AudioToMotion" or "config" not in meta:
        raise CheckpointError(f"expected metadata format 'morphface.AudioToMotion' with a config in "
                              f"{str(path)!r}; found format {meta.get('format')!r}")
    try:
        model = AudioToMotion(AudioToMotionConfig.from_dict(json.loads(meta["config"])))
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"the weights in {str(path)!r} do not match their config: {exc}") from exc
    return model.to(map_location)
