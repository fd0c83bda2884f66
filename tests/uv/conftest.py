"""Shared helpers for the UV-layer tests: small models with known geometry and UVs."""

from __future__ import annotations

import math

import pytest
import torch

from morphface import load_default_model
from morphface.fitting.result import FitResult
from morphface.morphable.model import MorphableModel


def grid_model(
    n: int = 5,
    size: float = 40.0,
    z: float = 0.0,
    uv_box=(0.0, 0.0, 1.0, 1.0),
    name: str = "grid",
    bump: float = 0.0,
) -> MorphableModel:
    """An ``n x n``-vertex square in the x-y plane (``size`` mm wide, facing +z) with per-vertex UVs
    spanning ``uv_box`` (u0, v0, u1, v1): u grows with x, v with y. ``bump`` adds a smooth z bulge."""
    t = torch.linspace(-0.5, 0.5, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    zz = z + bump * torch.cos(math.pi * xx) * torch.cos(math.pi * yy)
    mean = torch.stack([xx * size, yy * size, zz], -1).reshape(-1, 3)
    u0, v0, u1, v1 = uv_box
    uv = torch.stack([u0 + (xx + 0.5) * (u1 - u0), v0 + (yy + 0.5) * (v1 - v0)], -1).reshape(-1, 2)
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    # counter-clockwise seen from +z (x right, y up)
    tri = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return MorphableModel(mean=mean, triangles=tri, uv=uv, name=name)


def merge_models(*models: MorphableModel) -> MorphableModel:
    """One model made of several per-vertex-UV models side by side."""
    means, tris, uvs, off = [], [], [], 0
    for m in models:
        means.append(m.mean)
        tris.append(m.triangles + off)
        uvs.append(m.uv)
        off += m.n_vertices
    return MorphableModel(mean=torch.cat(means), triangles=torch.cat(tris), uv=torch.cat(uvs), name="merged")


def camera_fit(
    model: MorphableModel,
    image_size=(64, 64),
    distance: float = 400.0,
    focal: float = 300.0,
    dtype=torch.float32,
) -> FitResult:
    """A frontal perspective camera ``distance`` mm in front of the model origin."""
    return FitResult(
        id_coeffs=torch.zeros(1, model.n_id, dtype=dtype),
        exp_coeffs=torch.zeros(1, model.n_exp, dtype=dtype),
        angles=torch.zeros(1, 3, dtype=dtype),
        translation=torch.tensor([[0.0, 0.0, -distance]], dtype=dtype),
        focal=torch.tensor([focal], dtype=dtype),
        image_size=image_size,
    )


@pytest.fixture(scope="session")
def narrow_model() -> MorphableModel:
    return load_default_model("narrow")


@pytest.fixture(scope="session")
def full_model() -> MorphableModel:
    return load_default_model("full")
