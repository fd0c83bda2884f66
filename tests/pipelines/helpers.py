"""Synthetic batches of the data contract for the pipeline tests: rendered faces with known parameters."""

from __future__ import annotations

import math

import torch

from morphface.fitting import FitResult, sample_fit
from morphface.pipelines import ParamLayout, motion_windows, mouth_boxes
from morphface.pipelines.conditioning import render_driving_ncc, render_ncc_params
from morphface.render import ambient_sh, composite, render_shaded

S = 64  # image size of the tests
K = 2  # previous frames
W = 13  # motion window radius (the contract's)


def render_faces(model, fit: FitResult, background: torch.Tensor | None = None) -> torch.Tensor:
    """Grey Lambertian renders of fitted faces over a background, ``(B, 3, H, W)`` in [0, 1]."""
    B = fit.batch_size
    verts = fit.vertices(model)
    sh = ambient_sh(B, level=0.5).reshape(B, 3, 9)
    sh[:, :, 2] = 0.5  # light toward the camera: shows the shape
    out = render_shaded(verts, model.triangles, fit.camera, sh.reshape(B, 27),
                        albedo=torch.full((B, model.n_vertices, 3), 0.8))
    bg = background if background is not None else torch.full((B, 3, *fit.image_size), 0.2)
    return composite(out.image.clamp(0, 1), out.mask, bg)


def sequence_fit(model, T: int = 6, seed: int = 0) -> FitResult:
    """A ``T``-frame clip of one identity whose expression and pose move smoothly."""
    g = torch.Generator().manual_seed(seed)
    start = sample_fit(model, 1, (S, S), max_yaw=20, max_pitch=10, max_roll=5, generator=g)
    end = sample_fit(model, 1, (S, S), max_yaw=20, max_pitch=10, max_roll=5, generator=g)
    a = torch.linspace(0, 1, T)[:, None]
    return FitResult(id_coeffs=start.id_coeffs.expand(T, -1).clone(),
                     exp_coeffs=start.exp_coeffs * (1 - a) + end.exp_coeffs * a,
                     angles=start.angles * (1 - a) + end.angles * a,
                     translation=start.translation * (1 - a) + end.translation * a,
                     focal=start.focal.expand(T).clone(), image_size=(S, S), camera_kind="perspective")


def make_batch(model, B: int = 2, seed: int = 0, rendered: bool = False,
               uv: bool = False) -> dict[str, torch.Tensor]:
    """A batch of the data contract from ``B`` synthetic clips (source frame 0, driving frame 3).

    Args:
        rendered: include the NCC renders (otherwise the pipelines render them from the parameters).
        uv: include random ``source_uv``/``driving_uv`` (4, 32, 32) maps (stand-ins for unwrapped textures).
    """
    layout = ParamLayout.of(model)
    g = torch.Generator().manual_seed(seed + 1000)
    srcs, drvs, sp, dp, sm, dm = [], [], [], [], [], []
    for b in range(B):
        fit = sequence_fit(model, T=6, seed=seed * 100 + b)
        params = layout.pack(fit)
        motion = layout.motion(params)
        bg = torch.rand(1, 3, 1, 1, generator=g).expand(1, 3, S, S) * 0.5
        frames = render_faces(model, fit, bg.expand(fit.batch_size, -1, -1, -1))
        srcs.append(frames[0])
        drvs.append(frames[3])
        sp.append(params[0])
        dp.append(params[3])
        sm.append(motion_windows(motion, W, torch.tensor([0]))[0])
        dm.append(motion_windows(motion, W, torch.tensor([3]))[0])
    batch = {"source": torch.stack(srcs), "driving": torch.stack(drvs), "source_params": torch.stack(sp),
             "driving_params": torch.stack(dp), "source_motion": torch.stack(sm),
             "driving_motion": torch.stack(dm), "audio": torch.randn(B, 4 * 27, generator=g),
             "has_audio": torch.ones(B),
             "clip_index": torch.arange(B), "source_index": torch.zeros(B, dtype=torch.long),
             "driving_index": torch.full((B,), 3, dtype=torch.long)}
    fit_d = layout.unpack(batch["driving_params"], (S, S))
    batch["mouth_box"] = mouth_boxes(fit_d, model)
    if rendered:
        ncc, mask = render_ncc_params(model, layout, batch["source_params"], S)
        batch["source_ncc"], batch["source_mask"] = ncc, mask
        batch["driving_ncc"], batch["driving_mask"] = render_driving_ncc(
            model, layout, batch["driving_params"], batch["driving_motion"], K, S)
    if uv:
        batch["source_uv"] = torch.rand(B, 4, 32, 32, generator=g)
        batch["driving_uv"] = torch.rand(B, 4, 32, 32, generator=g)
    return batch


def degrees(x: torch.Tensor) -> torch.Tensor:
    return x * (180.0 / math.pi)
