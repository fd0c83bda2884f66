"""Losses of the audio-to-motion network (IFaceUV §3.5): MSE on expression and pose, plus continuity.

* ``expression``: mean over valid frames and coefficients of ``(pred - target)^2``.
* ``pose``: mean over valid frames and the 6 pose components of ``w_c (pred_c - target_c)^2`` with
  ``w = rotation_weight`` (per rad^2) for the three angles and ``translation_weight`` (per mm^2) for
  the translation. The default ``translation_weight = 1e-3`` makes a 1 mm error cost as much as a
  0.032 rad (1.8 degree) error, which keeps millimetres from swamping radians.
* ``expression_continuity`` / ``pose_continuity``: inter-frame continuity, the squared L2 norm of the
  temporal gradient of the *predictions*, ``mean_t ||p_{t+1} - p_t||^2`` averaged per component
  (pose components weighted as above), over pairs of consecutive valid frames.
* ``total``: ``expression_weight * expression + pose_weight * pose + expression_continuity_weight *
  expression_continuity + pose_continuity_weight * pose_continuity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .motion import POSE_SIZE, MotionPrediction

__all__ = ["MotionLossWeights", "continuity_loss", "audio_to_motion_losses"]


@dataclass(frozen=True)
class MotionLossWeights:
    """Weights of the audio-to-motion loss terms (module docstring)."""

    expression_weight: float = 1.0
    pose_weight: float = 1.0
    rotation_weight: float = 1.0
    translation_weight: float = 1e-3
    expression_continuity_weight: float = 0.1
    pose_continuity_weight: float = 0.1


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` ``(B, T)`` over entries where ``mask`` is True (all when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def continuity_loss(x: Tensor, mask: Tensor | None = None, weights: Tensor | None = None) -> Tensor:
    """Inter-frame continuity: mean over frame pairs and components of ``w_c (x[t+1, c] - x[t, c])^2``.

    Args:
        x: ``(B, T, C)`` predicted sequence.
        mask: optional ``(B, T)`` bool of valid frames; a pair counts when both frames are valid.
        weights: optional ``(C,)`` per-component weights.

    Returns:
        Scalar; 0 for ``T < 2``. A linear ramp of slope ``s`` per frame in every component gives ``s^2``
        (with unit weights).
    """
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, T, C); got {tuple(x.shape)}")
    if x.shape[1] < 2:
        return x.new_zeros(())
    sq = (x[:, 1:] - x[:, :-1]).square()
    if weights is not None:
        sq = sq * weights
    pair_mask = None if mask is None else mask[:, 1:] & mask[:, :-1]
    return _masked_mean(sq.mean(-1), pair_mask)


def _pose_weights(w: MotionLossWeights, like: Tensor) -> Tensor:
    values = [w.rotation_weight] * 3 + [w.translation_weight] * 3
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def audio_to_motion_losses(pred: MotionPrediction | tuple[Tensor, Tensor], expression: Tensor, pose: Tensor,
                           mask: Tensor | None = None,
                           weights: MotionLossWeights | None = None) -> dict[str, Tensor]:
    """All audio-to-motion losses.

    Args:
        pred: a :class:`MotionPrediction` (or ``(expression, pose)``) with ``(B, T, n_exp)``, ``(B, T, 6)``.
        expression: ``(B, T, n_exp)`` target expression coefficients.
        pose: ``(B, T, 6)`` target pose (radians, mm).
        mask: optional ``(B, T)`` bool, True on valid frames (False on padding).
        weights: loss weights.

    Returns:
        Dict of scalar tensors: ``expression``, ``pose`` (component-weighted), ``expression_continuity``,
        ``pose_continuity`` and their weighted sum ``total``.
    """
    w = weights or MotionLossWeights()
    pe, pp = pred[0], pred[1]
    if pe.shape != expression.shape or expression.ndim != 3:
        raise ValueError(f"predicted and target expression must both be (B, T, n_exp); got {tuple(pe.shape)} "
                         f"and {tuple(expression.shape)}")
    if pp.shape != pose.shape or pose.shape != (*expression.shape[:2], POSE_SIZE):
        raise ValueError(f"predicted and target pose must both be (B, T, {POSE_SIZE}) with the expression's "
                         f"(B, T) = {tuple(expression.shape[:2])}; got {tuple(pp.shape)} and "
                         f"{tuple(pose.shape)}")
    if mask is not None:
        if mask.shape != expression.shape[:2]:
            raise ValueError(f"mask must have shape (B, T) = {tuple(expression.shape[:2])}; "
                             f"got {tuple(mask.shape)}")
        mask = mask.to(device=pe.device, dtype=torch.bool)
    pw = _pose_weights(w, pp)
    out = {
        "expression": _masked_mean((pe - expression).square().mean(-1), mask),
        "pose": _masked_mean(((pp - pose).square() * pw).mean(-1), mask),
        "expression_continuity": continuity_loss(pe, mask),
        "pose_continuity": continuity_loss(pp, mask, pw),
    }
    out["total"] = (w.expression_weight * out["expression"] + w.pose_weight * out["pose"]
                    + w.expression_continuity_weight * out["expression_continuity"]
                    + w.pose_continuity_weight * out["pose_continuity"])
    return out
