"""Random smooth backgrounds for synthetic frames: colour gradients plus blurred colour noise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .textures import smooth_noise

__all__ = ["random_background"]


def random_background(image_size: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """A linear gradient between two random, partly desaturated colours in a random direction, plus
    blurred noise
    (a random 3-10 cell grid upsampled bicubically) and a little fine grain.

    Args:
        image_size: ``(H, W)`` pixels.
        generator: random source (the image is a deterministic function of its state).

    Returns:
        ``(3, H, W)`` float32 RGB in ``[0, 1]``.
    """
    H, W = (int(s) for s in image_size)
    if H < 1 or W < 1:
        raise ValueError(f"image_size must be positive; got {image_size}")
    g = generator
    c0, c1 = torch.rand(3, generator=g), torch.rand(3, generator=g)
    # pull the colours toward their grey a random amount: most real backgrounds are muted
    keep = 0.3 + 0.7 * torch.rand(2, 1, generator=g)
    c0, c1 = (c * k + c.mean() * (1 - k) for c, k in zip((c0, c1), keep))
    angle = float(torch.rand((), generator=g)) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    ramp = ((xs * math.cos(angle) + ys * math.sin(angle)) / math.sqrt(2) + 1) / 2  # in [0, 1]
    image = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp
    cells = 3 + int(torch.randint(0, 8, (), generator=g))
    strength = 0.05 + 0.2 * float(torch.rand((), generator=g))
    noise = smooth_noise((H, W), cells, g, channels=3)
    noise = 0.5 * noise + 0.5 * noise.mean(0, keepdim=True)  # partly luminance, partly colour
    image = image + strength * noise
    image = image + 0.01 * torch.randn(3, H, W, generator=g)
    return image.clamp(0.0, 1.0)
