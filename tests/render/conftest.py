"""Fixtures shared by the rendering tests (the numba cache directory is set in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from morphface.render import available_backends

#: Backends that must agree pixel for pixel and can run on this machine's CPU.
CPU_BACKENDS = [b for b in ("cpu", "torch") if b in available_backends()]


@pytest.fixture(params=CPU_BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(params=[True, False], ids=["fused", "torchpath"])
def fused(request, monkeypatch) -> bool:
    """Run a test with the fused CPU kernels of the differentiable stage on, then off."""
    import morphface.render.rasterizer as r

    monkeypatch.setattr(r, "FUSED_CPU", request.param)
    return request.param


def grid_mesh(n: int = 9, size: float = 1.0, depth: float = 10.0, dtype=torch.float64):
    """A flat ``n x n``-vertex grid in NDC covering ``[-size, size]^2`` at constant ``depth``."""
    u = torch.linspace(-size, size, n, dtype=dtype)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    verts = torch.stack([xx, yy, torch.full_like(xx, depth)], -1).reshape(1, -1, 3)
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return verts, faces
