"""A small stand-alone training loop for :class:`~morphface.audio.motion.AudioToMotion`.

It is meant for fitting the audio-to-motion LSTM on pre-computed sequences (audio features and the
3DMM motion fitted to the same video); distributed / checkpointed training belongs to
``morphface.train``. Data is either three (or four) tensors of equal-length sequences or a
``torch.utils.data.Dataset`` of variable-length sequences, padded per batch with a validity mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import TrainingDivergedError
from .motion import POSE_SIZE, AudioToMotion
from .motion_losses import MotionLossWeights, audio_to_motion_losses

__all__ = ["MotionBatch", "TrainHistory", "collate_motion", "train_audio_to_motion"]


class MotionBatch(NamedTuple):
    """A batch of sequences: features ``(B, T, D)``, expression ``(B, T, n_exp)``, pose ``(B, T, 6)``,
    mask ``(B, T)`` bool (True on real frames, False on padding)."""

    features: Tensor
    expression: Tensor
    pose: Tensor
    mask: Tensor


class TrainHistory(NamedTuple):
    """Per-step loss values (floats) of :func:`train_audio_to_motion`, one list per loss term."""

    total: list[float]
    terms: dict[str, list[float]]


def _item_tensors(item) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(item, Mapping):
        try:
            item = (item["features"], item["expression"], item["pose"])
        except KeyError as exc:
            raise ValueError(f"a dataset item dict needs keys 'features', 'expression', 'pose'; "
                             f"missing {exc}") from exc
    if not isinstance(item, Sequence) or len(item) < 3:
        raise ValueError("a dataset item must be (features (T, D), expression (T, n_exp), pose (T, 6)) or "
                         f"a dict with those keys; got {type(item).__name__}")
    f, e, p = (torch.as_tensor(x) for x in item[:3])
    if f.ndim == 3:
        f = f.flatten(-2)
    if f.ndim != 2 or e.ndim != 2 or p.shape != (e.shape[0], POSE_SIZE) or f.shape[0] != e.shape[0]:
        raise ValueError(f"expected features (T, D), expression (T, n_exp), pose (T, {POSE_SIZE}) with one "
                         f"T; got {tuple(f.shape)}, {tuple(e.shape)}, {tuple(p.shape)}")
    return f, e, p


def collate_motion(items: Sequence) -> MotionBatch:
    """Pad variable-length ``(features, expression, pose)`` items (tuples or dicts) into a batch."""
    triples = [_item_tensors(it) for it in items]
    t_max = max(f.shape[0] for f, _, _ in triples)
    b = len(triples)

    def pad(idx: int) -> Tensor:
        first = triples[0][idx]
        out = first.new_zeros((b, t_max, first.shape[-1]))
        for i, tr in enumerate(triples):
            out[i, : tr[idx].shape[0]] = tr[idx]
        return out

    mask = torch.zeros(b, t_max, dtype=torch.bool)
    for i, (f, _, _) in enumerate(triples):
        mask[i, : f.shape[0]] = True
    return MotionBatch(pad(0), pad(1), pad(2), mask)


def _tensor_data(data: Sequence[Tensor]) -> MotionBatch:
    if len(data) not in (3, 4):
        raise ValueError(f"tensor data must be (features, expression, pose[, mask]); got {len(data)} tensors")
    f, e, p = data[0], data[1], data[2]
    if f.ndim == 4:
        f = f.flatten(-2)
    if f.ndim != 3 or e.ndim != 3 or p.shape != (*e.shape[:2], POSE_SIZE) or f.shape[:2] != e.shape[:2]:
        raise ValueError(f"expected features (N, T, D), expression (N, T, n_exp), pose (N, T, {POSE_SIZE}); "
                         f"got {tuple(f.shape)}, {tuple(e.shape)}, {tuple(p.shape)}")
    if len(data) == 4:
        mask = data[3].to(torch.bool)
    else:
        mask = torch.ones(f.shape[:2], dtype=torch.bool, device=f.device)
    if mask.shape != f.shape[:2]:
        raise ValueError(f"mask must have shape (N, T) = {tuple(f.shape[:2])}; got {tuple(mask.shape)}")
    return MotionBatch(f, e, p, mask)


def train_audio_to_motion(model: AudioToMotion, data, steps: int = 500, lr: float = 1e-3, *,
                          batch_size: int = 8, weights: MotionLossWeights | None = None,
                          fit_normalization: bool = True, grad_clip: float | None = 1.0, seed: int = 0,
                          stats_items: int = 256) -> TrainHistory:
    """Fit ``model`` with Adam on audio-feature / motion sequences.

    Args:
        model: the network; trained in place on its own device and dtype.
        data: ``(features (N, T, D), expression (N, T, n_exp), pose (N, T, 6)[, mask (N, T)])`` tensors,
            or a ``Dataset`` whose items are ``(features (T, D), expression (T, n_exp), pose (T, 6))`` (or
            dicts with those keys), lengths may differ.
        steps: optimiser steps.
        lr: Adam learning rate.
        batch_size: sequences per step.
        weights: loss weights (:class:`MotionLossWeights`).
        fit_normalization: first set the model's input / target standardisation from the data (from at
            most ``stats_items`` dataset items).
        grad_clip: max global gradient norm, ``None`` for no clipping.
        seed: seed of the batch sampling.

    Returns:
        :class:`TrainHistory` with the loss terms of every step.

    Raises:
        TrainingDivergedError: a loss became NaN or infinite.
    """
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and lr > 0; got {steps}, {batch_size}, {lr}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator().manual_seed(seed)

    if isinstance(data, (tuple, list)) and all(isinstance(x, Tensor) for x in data):
        tensors = _tensor_data(data)
        n = tensors.features.shape[0]

        def next_batch() -> MotionBatch:
            idx = torch.randperm(n, generator=gen)[: min(batch_size, n)].to(tensors.features.device)
            return MotionBatch(*(x.index_select(0, idx) for x in tensors))

        stats = tensors
    else:
        from torch.utils.data import DataLoader

        if len(data) == 0:
            raise ValueError("the dataset is empty")
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate_motion,
                            generator=gen)
        iterator = iter(loader)

        def next_batch() -> MotionBatch:
            nonlocal iterator
            try:
                return next(iterator)
            except StopIteration:
                iterator = iter(loader)
                return next(iterator)

        stats = None
        if fit_normalization:
            pick = torch.randperm(len(data), generator=gen)[:stats_items].tolist()
            stats = collate_motion([data[i] for i in pick])

    if fit_normalization:
        model.set_normalization(stats.features.to(device, dtype), stats.expression.to(device, dtype),
                                stats.pose.to(device, dtype), stats.mask.to(device))

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = TrainHistory([], {})
    was_training = model.training
    model.train()
    try:
        for step in range(steps):
            batch = MotionBatch(*(x.to(device) if i == 3 else x.to(device, dtype) for i, x in
                                  enumerate(next_batch())))
            losses = audio_to_motion_losses(model(batch.features), batch.expression, batch.pose, batch.mask,
                                            weights)
            total = losses["total"]
            if not bool(torch.isfinite(total)):
                raise TrainingDivergedError(f"audio-to-motion loss became {float(total.detach())} at step {step} "
                                            f"(expected a finite value); lower lr (now {lr})")
            opt.zero_grad(set_to_none=True)
            total.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            history.total.append(float(total.detach()))
            for k, v in losses.items():
                if k != "total":
                    history.terms.setdefault(k, []).append(float(v.detach()))
    finally:
        model.train(was_training)
    return history
