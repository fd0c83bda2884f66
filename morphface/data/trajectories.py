"""Smooth random head motion and facial expression over time, for synthetic talking heads.

Every signal is a deterministic function of a ``torch.Generator``:

* :func:`smooth_signal`: a sum of a few sinusoids with random frequencies (log-uniform in a band),
  phases and amplitudes that sum to one, so the signal is smooth (band-limited) and bounded in
  ``[-1, 1]`` by construction, with no clipping;
* :func:`blink_signal`: eye blinks as a Poisson process (about one every three seconds), each a
  ~0.2 s bump of the blink blendshape;
* :func:`head_trajectory`: Euler angles (yaw within +-30 degrees, pitch +-15, roll +-10 by default)
  and a small translation (mm), each an offset plus a slow oscillation;
* :func:`expression_trajectory`: ARKit-style blendshape weights in ``[0, 1]``: ``jawOpen`` at
  speech rate (2-5 Hz bursts), smiles, brow raises, lip funnel/pucker, blinks, and a few random
  other blendshapes at low weight for variety.

Frequencies are in Hz, so the motion looks the same at any frame rate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..morphable import MorphableModel

__all__ = ["smooth_signal", "blink_signal", "head_trajectory", "expression_trajectory", "HeadTrajectory"]


def _check(num_frames: int, fps: float) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1; got {num_frames!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0; got {fps!r}")


def smooth_signal(num_frames: int, fps: float, low_hz: float, high_hz: float, components: int = 3,
                  generator: torch.Generator | None = None) -> Tensor:
    """A smooth random signal in ``[-1, 1]``: ``sum_i a_i sin(2 pi f_i t + phi_i)`` with ``sum a_i = 1``.

    Args:
        num_frames: number of samples ``T`` (frame ``j`` at time ``j / fps`` seconds).
        fps: samples per second.
        low_hz, high_hz: the band the frequencies are drawn from (log-uniform).
        components: number of sinusoids.
        generator: random source.

    Returns:
        ``(T,)`` float32.
    """
    _check(num_frames, fps)
    if not 0 < low_hz <= high_hz:
        raise ValueError(f"need 0 < low_hz <= high_hz; got {low_hz}, {high_hz}")
    g = generator
    t = torch.arange(num_frames, dtype=torch.float64) / fps
    u = torch.rand(components, generator=g, dtype=torch.float64)
    freq = torch.exp(math.log(low_hz) + u * (math.log(high_hz) - math.log(low_hz)))
    phase = torch.rand(components, generator=g, dtype=torch.float64) * 2 * math.pi
    amp = torch.rand(components, generator=g, dtype=torch.float64) + 0.1
    amp = amp / amp.sum()
    return (amp[:, None] * torch.sin(2 * math.pi * freq[:, None] * t[None] + phase[:, None])).sum(0).float()


def blink_signal(num_frames: int, fps: float, rate_hz: float = 0.3, duration_s: float = 0.2,
                 generator: torch.Generator | None = None) -> Tensor:
    """Blinks in ``[0, 1]``: Gaussian bumps at Poisson-process times (``rate_hz`` per second).

    Returns:
        ``(T,)`` float32; 1 at the middle of each blink, about 0 between blinks.
    """
    _check(num_frames, fps)
    g = generator
    duration = num_frames / fps
    count = int(torch.poisson(torch.tensor([rate_hz * duration + 1e-6]), generator=g).item())
    times = torch.rand(count, generator=g, dtype=torch.float64) * duration
    t = torch.arange(num_frames, dtype=torch.float64) / fps
    sigma = duration_s / 4
    bumps = torch.exp(-0.5 * ((t[None] - times[:, None]) / sigma) ** 2)
    return bumps.amax(0).float() if count else torch.zeros(num_frames)


class HeadTrajectory(NamedTuple):
    """Head pose over time: ``angles (T, 3)`` pitch, yaw, roll in radians; ``translation (T, 3)`` mm
    offsets to add to the camera translation."""

    angles: Tensor
    translation: Tensor


def head_trajectory(num_frames: int, fps: float, max_degrees: tuple[float, float, float] = (15.0, 30.0, 10.0),
                    max_shift_mm: tuple[float, float, float] = (5.0, 5.0, 15.0),
                    generator: torch.Generator | None = None) -> HeadTrajectory:
    """Random smooth head motion, bounded by ``max_degrees`` (pitch, yaw, roll) and ``max_shift_mm``.

    Each angle is ``max * (0.4 offset + 0.6 smooth_signal)`` with a per-clip ``offset`` in
    ``[-1, 1]`` and a 0.08-0.6 Hz oscillation: a head that mostly faces one way and moves around it.
    """
    _check(num_frames, fps)
    g = generator
    out = []
    for limit in (*max_degrees, *max_shift_mm):
        offset = float(torch.rand((), generator=g)) * 2 - 1
        out.append(limit * (0.4 * offset + 0.6 * smooth_signal(num_frames, fps, 0.08, 0.6, 3, g)))
    angles = torch.stack(out[:3], dim=-1) * (math.pi / 180)
    return HeadTrajectory(angles=angles, translation=torch.stack(out[3:], dim=-1))


def _names(model: MorphableModel) -> dict[str, int]:
    if model.exp_kind != "blendshape" or not model.exp_names:
        raise ValueError(f"expression_trajectory needs a blendshape model with named expressions (the ICT "
                         f"default); model {model.name!r} has exp_kind={model.exp_kind!r}")
    return {n: i for i, n in enumerate(model.exp_names)}


def expression_trajectory(model: MorphableModel, num_frames: int, fps: float,
                          generator: torch.Generator | None = None) -> Tensor:
    """Random blendshape weights over time (module doc), ``(T, K_exp)`` float32 in ``[0, 1]``.

    Blendshapes the model lacks are skipped. Left/right pairs move together (with a small
    asymmetry), as they mostly do in speech.
    """
    _check(num_frames, fps)
    g = generator
    idx = _names(model)
    T = num_frames
    exp = torch.zeros(T, model.n_exp)

    def rand() -> float:
        return float(torch.rand((), generator=g))

    def put(names: tuple[str, ...], values: Tensor) -> None:
        for n in names:
            if n in idx:
                asym = 1.0 + 0.15 * (rand() * 2 - 1) if len(names) > 1 else 1.0
                exp[:, idx[n]] = (values * asym).clamp(0, 1)

    # speech: syllable-rate jaw motion, gated by slower phrase-level on/off
    syllables = 0.5 + 0.5 * smooth_signal(T, fps, 2.0, 5.0, 3, g)
    phrases = (smooth_signal(T, fps, 0.2, 0.6, 2, g) * 2 + 0.6).clamp(0, 1)
    put(("jawOpen",), (0.15 + 0.55 * rand()) * syllables * phrases)
    put(("mouthSmile_L", "mouthSmile_R"), (0.8 * rand()) * (0.5 + 0.5 * smooth_signal(T, fps, 0.1, 0.5, 2, g)))
    put(("browInnerUp_L", "browInnerUp_R"), (0.6 * rand()) * (0.5 + 0.5 * smooth_signal(T, fps, 0.2, 1.0, 2, g)))
    put(("browOuterUp_L", "browOuterUp_R"), (0.4 * rand()) * (0.5 + 0.5 * smooth_signal(T, fps, 0.2, 1.0, 2, g)))
    lips = smooth_signal(T, fps, 0.5, 2.0, 2, g)
    put(("mouthFunnel",), 0.5 * rand() * lips.clamp(min=0))
    put(("mouthPucker",), 0.5 * rand() * (-lips).clamp(min=0))
    put(("eyeBlink_L", "eyeBlink_R"), blink_signal(T, fps, generator=g))
    # a few other blendshapes at low weight, for variety
    controlled = {"jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L",
                  "browOuterUp_R", "mouthFunnel", "mouthPucker", "eyeBlink_L", "eyeBlink_R"}
    others = [i for n, i in idx.items() if n not in controlled]
    pick = torch.randperm(len(others), generator=g)[:3]
    for j in pick.tolist():
        exp[:, others[j]] = 0.3 * rand() * (0.5 + 0.5 * smooth_signal(T, fps, 0.1, 1.0, 2, g))
    return exp
