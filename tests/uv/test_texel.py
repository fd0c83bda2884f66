"""Texel maps (texel -> triangle + barycentrics) and UV position / normal maps."""

from __future__ import annotations

import torch
import trimesh

from morphface.morphable.model import MorphableModel
from morphface.uv import model_uv_layout, normal_map, position_map, texel_map
from morphface.uv.texel import texel_centres

from .conftest import grid_model


def _point_in_triangles(p: torch.Tensor, tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentrics ``(P, F, 3)`` of points ``(P, 2)`` in triangles ``(F, 3, 2)`` and inside flags."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1 = b - a, c - a
    v2 = p[:, None] - a[None]
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    l1 = (v2[..., 0] * v1[:, 1] - v1[:, 0] * v2[..., 1]) / den
    l2 = (v0[:, 0] * v2[..., 1] - v2[..., 0] * v0[:, 1]) / den
    bary = torch.stack([1 - l1 - l2, l1, l2], -1)
    return bary, (bary >= -1e-9).all(-1)


def test_texel_map_is_exact_on_a_toy_mesh():
    model = grid_model(4, uv_box=(0.1, 0.2, 0.85, 0.9))
    S = 32
    tmap = texel_map(model, S)
    centres = texel_centres(S).reshape(-1, 2)
    layout = model_uv_layout(model)
    corners = layout.corner_uv().to(torch.float64)
    bary, inside = _point_in_triangles(centres, corners)
    covered = inside.any(1).view(S, S)
    # same coverage (texel centres exactly on the outer edge may go either way)
    u, v = centres[:, 0].view(S, S), centres[:, 1].view(S, S)
    on_border = (
        ((u - 0.1).abs() < 1e-9)
        | ((u - 0.85).abs() < 1e-9)
        | ((v - 0.2).abs() < 1e-9)
        | ((v - 0.9).abs() < 1e-9)
    )
    assert torch.equal(tmap.mask[~on_border], covered[~on_border])
    # the barycentrics reproduce each covered texel's centre, in the triangle the map names
    f = tmap.face.reshape(-1)[tmap.index]
    recon = (corners[f] * tmap.weights[..., None]).sum(1)
    assert torch.allclose(recon, centres[tmap.index], atol=1e-9)
    assert bool((tmap.weights >= -1e-9).all()) and torch.allclose(
        tmap.weights.sum(1), torch.ones(tmap.n_texels, dtype=torch.float64)
    )
    assert bool(inside[tmap.index, f].all())
    assert texel_map(model, S) is tmap and texel_map(model, 16) is not tmap  # cached per size


def test_position_map_equals_vertices_at_their_texel_centres():
    # vertices whose UVs sit exactly on texel centres: the map there is the vertex itself
    S, n = 16, 5
    c = (torch.arange(2, 2 + 3 * n, 3, dtype=torch.float64) + 0.5) / S  # texel centres 2.5, 5.5, ...
    model = grid_model(n)
    uv = torch.stack([c.expand(n, n), c[:, None].expand(n, n)], -1).reshape(-1, 2)
    model = MorphableModel(
        mean=model.mean + torch.randn_like(model.mean) * 3,
        triangles=model.triangles,
        uv=uv,
        id_basis=torch.randn(2, n * n, 3),
        name="bumpy",
    )
    coeffs = torch.tensor([[0.5, -1.0]])
    verts = model(coeffs)
    pmap = position_map(model, coeffs, size=S)
    cols = (uv[:, 0] * S - 0.5).round().long()
    rows = ((1 - uv[:, 1]) * S - 0.5).round().long()
    covered = pmap.mask[0, 0, rows, cols].bool()
    interior = ((uv > c[0] + 1e-9) & (uv < c[-1] - 1e-9)).all(1)
    # interior vertices are always covered; those on the layout's outer edge are covered where
    # the rasteriser's fill rule gives the edge to their triangle
    assert bool(covered[interior].all())
    got = pmap.values[0, :, rows, cols].T
    assert torch.allclose(got[covered], verts[0].to(got)[covered], atol=1e-4)
    assert float(pmap.mask.sum()) > 0 and float(pmap.values[0][:, ~pmap.mask[0, 0].bool()].abs().max()) == 0


def test_position_map_of_the_default_model_matches_brute_force(narrow_model):
    S = 128
    pmap = position_map(narrow_model, size=S)
    tmap = texel_map(narrow_model, S)
    g = torch.Generator().manual_seed(0)
    pick = tmap.index[torch.randint(tmap.n_texels, (200,), generator=g)]
    centres = texel_centres(S).reshape(-1, 2)[pick]
    corners = model_uv_layout(narrow_model).corner_uv().to(torch.float64)
    bary, inside = _point_in_triangles(centres, corners)
    f = inside.to(torch.int64).argmax(1)  # the ICT layout does not overlap: one triangle each
    b = bary[torch.arange(200), f]
    expected = (narrow_model.mean.double()[narrow_model.triangles[f]] * b[..., None]).sum(1)
    got = pmap.values[0].reshape(3, -1)[:, pick].T.double()
    assert torch.allclose(got, expected, atol=1e-3)


def test_normal_map_of_a_sphere_is_radial():
    sphere = trimesh.creation.icosphere(subdivisions=4)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32) * 80.0
    model = MorphableModel(mean=verts, triangles=torch.tensor(sphere.faces), name="sphere")
    nmap = normal_map(model, size=128)
    pmap = position_map(model, size=128)
    m = nmap.mask[0, 0].bool()
    n = nmap.values[0][:, m]
    radial = torch.nn.functional.normalize(pmap.values[0][:, m], dim=0)
    assert torch.allclose(n.norm(dim=0), torch.ones(n.shape[1]), atol=1e-5)
    assert float((n * radial).sum(0).min()) > 0.995
