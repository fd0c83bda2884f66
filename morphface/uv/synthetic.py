"""Procedural face textures with known content: ground truth for unwrapping and frontalisation.

:func:`random_face_texture` paints a UV texture for the embedded model's layout (or any model with
UVs and the 68 landmarks) with

* a random skin tone (between a light and a dark reference tone),
* smooth variation: a low-frequency luminance/hue field (about 4 cycles across the face) and a
  finer mottling field (about 24 cycles), plus a few small dark spots (freckles, moles),
* darker eyebrows drawn along the brow landmarks (17-21, 22-26), slightly above them,
* reddish, darker lips filling the outer lip contour (48-59),
* dark lash lines along the upper eyelids (36-39, 42-45),
* a faint blush on each cheek,

all placed from the landmarks' UVs, so that a frontalisation has sharp, localised detail to
recover. Everything is drawn from ``generator``: the same seed gives the same texture.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..morphable.model import MorphableModel
from .paint import inside_polygon, segment_distance, soft_edge

__all__ = ["random_face_texture", "SyntheticFace", "synthetic_face", "shade_texture"]

_LIGHT = (0.86, 0.68, 0.58)
_DARK = (0.45, 0.30, 0.22)


@functools.lru_cache(maxsize=1)
def _default_landmark_uv() -> Tensor:
    from ..morphable import load_default_model

    model = load_default_model("narrow")
    return model.uv[model.landmarks].clone()


def _landmark_uv(model: MorphableModel | None) -> Tensor:
    if model is None:
        return _default_landmark_uv()
    if not model.has_uv or model.landmarks.numel() < 68 or bool((model.landmarks[:68] < 0).any()):
        raise ValueError(
            f"model {model.name!r} needs per-vertex UVs and all 68 landmarks to place the features"
        )
    if model.uv_faces.numel():
        raise ValueError(
            "random_face_texture places features from per-vertex UVs; this model's UVs are per corner"
        )
    return model.uv[model.landmarks[:68]].detach().float().cpu()


def _field(cycles: int, size: int, channels: int, g: torch.Generator) -> Tensor:
    """A smooth random field ``(channels, S, S)`` with unit-ish amplitude and ``cycles`` lobes per side."""
    coarse = torch.randn(1, channels, cycles + 1, cycles + 1, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0]


def random_face_texture(
    size: int = 256, generator: torch.Generator | None = None, model: MorphableModel | None = None
) -> Tensor:
    """A random procedural face albedo in the model's UV layout (module doc).

    Args:
        size: texture resolution ``S``.
        generator: a CPU ``torch.Generator`` (default: a fresh one seeded with 0).
        model: model whose per-vertex UVs and 68 landmarks place the features (default: the embedded
            ICT model).

    Returns:
        ``(3, S, S)`` float32 RGB in ``[0, 1]`` on the CPU.
    """
    if int(size) < 8:
        raise ValueError(f"size must be at least 8 texels; got {size}")
    S = int(size)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    lm = _landmark_uv(model)  # (68, 2) u right, v up
    c = (torch.arange(S, dtype=torch.float32) + 0.5) / S
    uv = torch.stack([c.expand(S, S), (1 - c)[:, None].expand(S, S)], -1).reshape(-1, 2)  # texel centres

    tone = torch.rand((), generator=g)
    skin = torch.lerp(torch.tensor(_LIGHT), torch.tensor(_DARK), tone)[:, None, None].expand(3, S, S)
    lum = 0.07 * _field(4, S, 1, g) + 0.025 * _field(24, S, 1, g)
    hue = 0.02 * _field(3, S, 3, g)
    tex = skin * (1 + lum) + hue

    # Freckles / moles: a few small dark spots anywhere on the face.
    n_spots = int(torch.randint(4, 10, (), generator=g))
    lo, hi = lm.amin(0), lm.amax(0)
    spots = lo + (hi - lo) * torch.rand(n_spots, 2, generator=g)
    d = torch.cdist(uv, spots).amin(-1)
    tex = tex * (1 - 0.35 * soft_edge(d, 0.003, 0.004).view(1, S, S))

    face_w = float(hi[0] - lo[0])
    hair = torch.tensor([0.16, 0.11, 0.08]) * (0.6 + 0.8 * torch.rand(3, generator=g))
    for ids in (list(range(17, 22)), list(range(22, 27))):
        brow = lm[ids] + torch.tensor([0.0, 0.012 * face_w])
        dist = segment_distance(uv, brow[:-1], brow[1:])
        alpha = (0.85 * soft_edge(dist, 0.018 * face_w, 0.012 * face_w)).view(1, S, S)
        tex = torch.lerp(tex, hair[:, None, None].expand(3, S, S), alpha)
    for ids in (list(range(36, 40)), list(range(42, 46))):
        lash = lm[ids]
        dist = segment_distance(uv, lash[:-1], lash[1:])
        tex = tex * (1 - 0.6 * soft_edge(dist, 0.004 * face_w, 0.006 * face_w)).view(1, S, S)

    lips = lm[48:60]
    inside = inside_polygon(uv, lips).to(torch.float32)
    edge = segment_distance(uv, lips, lips.roll(-1, 0))
    alpha = torch.where(inside > 0, torch.ones_like(edge), soft_edge(edge, 0.0, 0.01 * face_w)).view(1, S, S)
    lip_colour = (torch.tensor([0.80, 0.45, 0.48]) * (0.85 + 0.25 * torch.rand((), generator=g)))[
        :, None, None
    ]
    tex = torch.lerp(tex, tex * lip_colour / torch.tensor(_LIGHT)[:, None, None] * 0.95, 0.9 * alpha)

    for a, b in ((2, 31), (14, 35)):  # cheeks: between the jaw line and the nose wing
        centre = 0.5 * (lm[a] + lm[b])
        d = (uv - centre).norm(dim=-1)
        blush = 0.08 * soft_edge(d, 0.0, 0.12 * face_w).view(1, S, S)
        tex = tex + blush * torch.tensor([0.6, -0.3, -0.2])[:, None, None]
    return tex.clamp(0.0, 1.0).contiguous()


class SyntheticFace(NamedTuple):
    """A rendered face with known geometry, pose and texture (from :func:`synthetic_face`).

    Attributes:
        image: ``(1, 3, H, W)`` the render over a smooth random background, RGB in ``[0, 1]``.
        landmarks: ``(1, 68, 2)`` the model's landmark vertices projected, plus Gaussian noise, pixels.
        truth: the ground-truth :class:`~morphface.fitting.FitResult` (coefficients valid for the
            full and the narrow default model alike).
        texture: ``(1, 3, S, S)`` the albedo texture it was rendered with.
        background: ``(1, 3, H, W)`` the background alone.
    """

    image: Tensor
    landmarks: Tensor
    truth: object
    texture: Tensor
    background: Tensor


def shade_texture(texture: Tensor, model: MorphableModel, fit, light: Tensor, ambient: float = 0.45) -> Tensor:
    """``texture`` lit by a directional light fixed in the camera frame, for ``model`` in ``fit``'s pose.

    Each texel is multiplied by ``ambient + (1 - ambient) * max(0, n . light)``, ``n`` its unit normal
    in the camera frame (vertex normals interpolated): Lambertian shading, which the first-order model
    of :mod:`morphface.uv.shading` only approximates.

    Args:
        texture: ``(B|1, 3, S, S)`` in the model's layout.
        fit: the pose (:class:`~morphface.fitting.FitResult`).
        light: ``(3,)`` unit direction toward the light, camera frame (x right, y up, z to the viewer).

    Returns:
        ``(B, 3, S, S)``.
    """
    from .shading import camera_normal_map

    n = camera_normal_map(fit, model, texture.shape[-1]).to(texture)
    d = F.normalize(light.to(texture), dim=0)
    lambert = (n * d[None, :, None, None]).sum(1, keepdim=True).clamp(min=0)
    shade = torch.where(n.norm(dim=1, keepdim=True) > 0.5, ambient + (1 - ambient) * lambert, torch.ones_like(lambert))
    return texture * shade


def synthetic_face(
    yaw_degrees: float,
    image_size: int = 512,
    texture_size: int = 512,
    generator: torch.Generator | None = None,
    landmark_noise: float = 1.0,
    pitch_degrees: float = 0.0,
    light: Tensor | None = None,
) -> SyntheticFace:
    """A textured render of the embedded model (ears and neck included) at a given yaw.

    Identity, expression and a few mm of lateral offset come from
    :func:`~morphface.fitting.sample_fit` (face about 60% of the image height), the texture from
    :func:`random_face_texture`, the background is a smooth random colour field. No lighting: the
    texture is the image colour, so a perfect frontalisation reproduces the frontal render exactly.

    Args:
        yaw_degrees: head yaw (positive: nose toward the image's right).
        image_size: square image side, pixels.
        texture_size: texture resolution.
        generator: CPU generator for every random choice.
        landmark_noise: standard deviation of the landmark noise, pixels.
        pitch_degrees: head pitch.
        light: ``(3,)`` direction toward a light fixed in the camera frame: the render is shaded with
            :func:`shade_texture` (``texture`` stays the unlit albedo); ``None``: no lighting.
    """
    from ..fitting.synthetic import sample_fit
    from ..morphable import load_default_model
    from ..render import render_textured

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    model = load_default_model("full")
    texture = random_face_texture(texture_size, g)[None]
    truth = sample_fit(model, 1, image_size=(image_size, image_size), generator=g)
    truth.angles = torch.tensor([[math.radians(pitch_degrees), math.radians(yaw_degrees), 0.0]])
    background = (0.5 + 0.25 * _field(3, image_size, 3, g)).clamp(0.05, 0.95)[None]
    verts = truth.vertices(model)
    lit = texture if light is None else shade_texture(texture, model, truth, light)
    rendered = render_textured(verts, model.triangles, model.uv, None, lit, truth.camera)
    image = rendered.image * rendered.mask + background * (1 - rendered.mask)
    pix, _ = truth.camera.project(verts[:, model.landmarks])
    landmarks = pix + landmark_noise * torch.randn(pix.shape, generator=g)
    return SyntheticFace(
        image=image, landmarks=landmarks, truth=truth, texture=texture, background=background
    )
