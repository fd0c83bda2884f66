"""A per-image robust skin-colour model: which colours look like this face's skin.

No trained skin detector: the colours of pixels (or texels) known to show the face define a robust
centre (median) and spread (scaled median absolute deviation) of luma and two chroma differences,
and a colour's distance is its largest per-channel z-score. Tolerant of beards and uneven light (the
spread grows with them); floors on the spread keep a very even face from making every shade an
outlier. Used to reject background and hair sampled onto a face (:mod:`morphface.uv.outliers`,
:func:`~morphface.fitting.refine_with_person_mask`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ColourModel", "luma_chroma", "fit_colour_model"]

_MAD_TO_STD = 1.4826
# Floors of the spread (colour units in [0, 1]).
_MIN_SPREAD = (0.03, 0.012, 0.012)


def luma_chroma(rgb: Tensor) -> Tensor:
    """``(..., 3)`` RGB in ``[0, 1]`` -> ``(..., 3)`` (Y, B - Y, R - Y), BT.601 luma."""
    y = rgb @ rgb.new_tensor([0.299, 0.587, 0.114])
    return torch.stack([y, rgb[..., 2] - y, rgb[..., 0] - y], dim=-1)


class ColourModel(NamedTuple):
    """Robust centre and spread of ``(Y, B - Y, R - Y)`` per image.

    Attributes:
        centre: ``(B, 1, 3)`` medians.
        spread: ``(B, 1, 3)`` scaled MADs (at least the floors).
        count: ``(B,)`` how many reference colours each image had.
    """

    centre: Tensor
    spread: Tensor
    count: Tensor

    def zscore(self, rgb: Tensor) -> Tensor:
        """``(B, N)`` largest per-channel distance, in spreads, of ``(B, N, 3)`` RGB colours."""
        return ((luma_chroma(rgb) - self.centre) / self.spread).abs().amax(-1)


def fit_colour_model(rgb: Tensor, reference: Tensor) -> ColourModel:
    """The skin-colour model of ``(B, N, 3)`` RGB colours whose ``(B, N)`` bool ``reference`` is True.

    An image without reference colours gets a NaN centre (every z-score NaN, so no comparison with it
    holds); check :attr:`ColourModel.count`.
    """
    col = luma_chroma(rgb)
    ref_col = torch.where(reference[..., None], col, torch.full_like(col, float("nan")))
    centre = torch.nanmedian(ref_col, dim=1, keepdim=True).values
    spread = _MAD_TO_STD * torch.nanmedian((ref_col - centre).abs(), dim=1, keepdim=True).values
    spread = torch.maximum(spread, spread.new_tensor(_MIN_SPREAD))
    return ColourModel(centre, spread, reference.sum(1))
