"""Exponential moving average of a network's weights (the "EMA generator" of GAN training)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """A frozen copy of ``module`` whose parameters track ``p_ema <- decay * p_ema + (1 - decay) * p``.

    Floating-point buffers (e.g. spectral-norm vectors, batch-norm statistics) are copied, not averaged:
    they are estimates of the current weights' statistics, not parameters. The copy lives on the
    module's device and dtype, in eval mode with ``requires_grad=False``.

    Args:
        module: the (plain, unwrapped) network to track.
        decay: in [0, 1); typical 0.999 for a GAN generator.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1); got {decay}")
        self.decay = float(decay)
        self.source = module
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step from the source's current weights."""
        ema_params = list(self.module.parameters())
        src_params = list(self.source.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in src_params], 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), self.source.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged network's ``state_dict``."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load an averaged ``state_dict`` (strict)."""
        self.module.load_state_dict(state)
