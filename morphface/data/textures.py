"""Procedural face albedo textures in a model's UV layout, for the synthetic talking-head generator.

A texture is painted in texel space from the UV positions of the model's 68 iBUG landmarks, so it
fits any model with per-vertex UVs and landmarks (the embedded ICT layout in particular):

* skin: a random tone between light and dark skin (linear RGB), with low-frequency multiplicative
  blotches and reddish cheeks;
* lips: the polygon of the outer lip landmarks (48-59), reddened and darkened, with a soft edge;
* brows: thick soft strokes along the brow landmarks (17-21, 22-26) in the hair colour;
* eye lines: thin dark strokes along the eye contours (36-41, 42-47), the lashes that make a
  rendered eye read as an eye (to people and to landmark detectors);
* hair: the part of the layout above a wavy hairline a little above the brows (one face in ten
  is bald).

Everything is drawn from one ``torch.Generator``, so a texture is a deterministic function of the
generator's seed. (``morphface.uv.synthetic.random_face_texture`` paints another kind of face for
the frontalisation benchmarks: freckles, blush and lash lines, no hair; this one has hair and eye
lines because the synthetic frames must look enough like faces for a landmark detector to fit
them. Both paint with :mod:`morphface.uv.paint`.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..morphable import MorphableModel
from ..uv.paint import inside_polygon, segment_distance, soft_edge

__all__ = ["procedural_face_texture", "smooth_noise"]

# Linear-RGB skin albedo at the light and the dark end of the range a texture is drawn from.
_SKIN_LIGHT = (0.82, 0.62, 0.52)
_SKIN_DARK = (0.28, 0.17, 0.11)
# Hair colours (linear RGB): black, dark brown, brown, auburn, blond, grey.
_HAIR = ((0.03, 0.025, 0.02), (0.09, 0.05, 0.03), (0.2, 0.12, 0.06), (0.3, 0.11, 0.05),
         (0.55, 0.42, 0.22), (0.5, 0.5, 0.5))

_BROW_R, _BROW_L = list(range(17, 22)), list(range(22, 27))
_EYE_R, _EYE_L = list(range(36, 42)) + [36], list(range(42, 48)) + [42]
_OUTER_LIPS = list(range(48, 60))


def smooth_noise(shape: tuple[int, int], cells: int, generator: torch.Generator | None = None,
                 channels: int = 1) -> Tensor:
    """Band-limited noise: a ``cells x cells`` grid of N(0, 1) values upsampled bicubically.

    Args:
        shape: ``(H, W)`` of the output.
        cells: grid resolution (features about ``H / cells`` pixels wide).
        generator: random source.
        channels: number of independent channels.

    Returns:
        ``(channels, H, W)`` float32, roughly zero-mean, unit scale.
    """
    if cells < 2:
        raise ValueError(f"cells must be >= 2; got {cells}")
    grid = torch.randn(1, channels, cells, cells, generator=generator)
    return F.interpolate(grid, size=shape, mode="bicubic", align_corners=True)[0]


def _texel_uv(model: MorphableModel, size: int) -> Tensor:
    """``(68, 2)`` texel coordinates (x right, y down, pixel units) of the landmark vertices."""
    if not model.has_uv or not model.has_landmarks:
        raise ValueError(f"a procedural face texture needs a model with UVs and 68 landmarks; model "
                         f"{model.name!r} has uv={model.has_uv}, landmarks={model.landmarks.numel()}")
    if model.uv_faces.numel():
        raise ValueError("procedural_face_texture needs per-vertex UVs (a layout without seams); this model "
                         "has a per-corner UV table")
    lm = model.landmarks
    if lm.numel() != 68 or bool((lm[17:68] < 0).any()):
        raise ValueError(f"landmarks 17-67 (brows, eyes, lips) must exist; got {lm.numel()} ids with "
                         f"{int((lm < 0).sum())} missing")
    uv = model.uv[lm.clamp(min=0)].detach().float().cpu()
    return torch.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], dim=-1)


def procedural_face_texture(model: MorphableModel, size: int = 256,
                            generator: torch.Generator | None = None) -> Tensor:
    """A random face albedo texture in ``model``'s UV layout (painting rules in the module doc).

    Args:
        model: a model with per-vertex UVs (v up) and the 68 iBUG landmarks (brows, eyes, lips).
        size: texture side in texels.
        generator: random source; the texture is a deterministic function of its state.

    Returns:
        ``(3, size, size)`` float32 linear RGB in ``[0, 1]``; row 0 is ``v = 1`` (the top of the
        layout), as :func:`morphface.render.sample_texture` expects.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 texels; got {size}")
    g = generator
    S = size
    lm = _texel_uv(model, S)
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32) + 0.5,
                            torch.arange(S, dtype=torch.float32) + 0.5, indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (S*S, 2)

    def _polyline(line: Tensor) -> Tensor:
        return segment_distance(pts, line[:-1], line[1:])

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    # skin tone and blotches
    t = float(rand(()))
    skin = torch.tensor(_SKIN_LIGHT) * (1 - t) + torch.tensor(_SKIN_DARK) * t
    skin = skin * (1 + 0.06 * (rand(3) * 2 - 1))
    tex = skin[:, None, None] * (1 + 0.07 * smooth_noise((S, S), 6, g)) * (1 + 0.03 * smooth_noise((S, S), 24, g))
    tex = tex.expand(3, S, S).clone()

    eye_r, eye_l = lm[_EYE_R[:-1]].mean(0), lm[_EYE_L[:-1]].mean(0)
    iod = float((eye_l - eye_r).norm())  # texel distance between the eye centres: the painting unit
    mouth = lm[_OUTER_LIPS]
    flat = tex.reshape(3, -1)

    def paint(weight: Tensor, colour: Tensor) -> None:
        flat.mul_(1 - weight[None]).add_(weight[None] * colour[:, None])

    # cheeks: a reddish tint below each eye
    for eye in (eye_r, eye_l):
        centre = eye + torch.tensor([0.0, 0.55 * iod])
        w = 0.12 * float(rand(())) * torch.exp(-((pts - centre) ** 2).sum(-1) / (2 * (0.25 * iod) ** 2))
        paint(w, skin * torch.tensor([1.15, 0.8, 0.8]))

    # hair: above a wavy line a little above the brows (one in ten is bald)
    hair = torch.tensor(_HAIR[int(rand(()) * len(_HAIR)) % len(_HAIR)]) * (0.85 + 0.3 * rand(()))
    bald = float(rand(())) < 0.1
    brow_top = float(lm[17:27, 1].min())
    line = brow_top - (0.2 + 0.3 * float(rand(()))) * iod
    phase, amp = 2 * math.pi * float(rand(())), (0.03 + 0.06 * float(rand(()))) * iod
    wave = line + amp * torch.sin(pts[:, 0] / S * 2 * math.pi * 2 + phase)
    if not bald:
        hair_w = ((wave - pts[:, 1]) / (0.06 * iod)).clamp(0, 1)  # 1 above the line, a soft edge
        hair_tex = hair[:, None] * (1 + 0.15 * smooth_noise((S, S), 32, g).reshape(1, -1))
        flat.mul_(1 - hair_w[None]).add_(hair_w[None] * hair_tex.clamp(0, 1))

    # brows
    brow_colour = hair * 0.8
    thickness = (0.06 + 0.05 * float(rand(()))) * iod
    for ids in (_BROW_R, _BROW_L):
        d = _polyline(lm[ids])
        paint(0.9 * soft_edge(d, 0.5 * thickness, 0.5 * thickness), brow_colour)

    # eye lines (lashes)
    for ids in (_EYE_R, _EYE_L):
        d = _polyline(lm[ids])
        paint(0.85 * soft_edge(d, 0.025 * iod, 0.03 * iod), torch.tensor([0.03, 0.025, 0.02]))

    # lips: inside the outer lip polygon, feathered by the distance to its outline
    inside = inside_polygon(pts, mouth)
    d = _polyline(torch.cat([mouth, mouth[:1]]))
    lip_w = torch.where(inside, torch.ones_like(d), soft_edge(d, 0.0, 0.04 * iod))
    lip_colour = skin * torch.tensor([0.85, 0.5, 0.5]) * (0.7 + 0.3 * float(rand(())))
    paint(0.85 * lip_w, lip_colour)

    return tex.clamp(0.0, 1.0)
