"""reject_colour_outliers: grazing texels unlike the skin are dropped, nothing else is."""

from __future__ import annotations

import torch

from morphface.render import region_vertex_mask
from morphface.uv import UnwrapResult, reject_colour_outliers, texel_map


def _unwrap(model, S=64):
    tmap = texel_map(model, S)
    n = tmap.n_texels
    skin_v = region_vertex_mask(model, "skin")
    skin = skin_v[tmap.vertex_ids].all(-1)
    g = torch.Generator().manual_seed(0)
    colour = torch.tensor([0.80, 0.60, 0.50]) + 0.01 * torch.randn(1, n, 3, generator=g)
    conf = torch.where(torch.arange(n) % 2 == 0, 0.9, 0.2)[None, :, None]  # every other texel grazing
    tex = tmap.scatter(colour)
    return tmap, skin, UnwrapResult(tex, tmap.scatter(conf), tmap.scatter(torch.ones(1, n, 1)))


def test_grazing_background_on_skin_is_rejected_and_nothing_else(narrow_model):
    tmap, skin, u = _unwrap(narrow_model)
    n = tmap.n_texels
    idx = torch.arange(n)
    background = (idx % 7 == 0)[None, :, None]  # a scattered tenth, grazing and square alike
    col = torch.where(background, torch.tensor([0.95, 0.97, 1.0]), tmap.gather(u.texture))
    u = UnwrapResult(tmap.scatter(col), u.confidence, u.mask)
    out, rejected = reject_colour_outliers(u, narrow_model)
    got = tmap.gather(rejected.float())[0, :, 0] > 0.5
    want = background[0, :, 0] & (idx % 2 == 1) & skin  # grazing skin texels only
    assert torch.equal(got, want)
    assert bool((tmap.gather(out.mask)[0, got] == 0).all()) and bool((tmap.gather(out.confidence)[0, got] == 0).all())
    kept = ~got
    assert torch.equal(tmap.gather(out.texture)[0, kept], tmap.gather(u.texture)[0, kept])


def test_an_even_face_and_too_few_references_change_nothing(narrow_model):
    tmap, _, u = _unwrap(narrow_model)
    out, rejected = reject_colour_outliers(u, narrow_model)
    assert not bool(rejected.any()) and torch.equal(out.mask, u.mask)
    # nothing seen squarely: no skin colour to compare with, so nothing is rejected
    grazing = UnwrapResult(u.texture * 0, u.confidence.clamp(max=0.2), u.mask)
    _, rejected = reject_colour_outliers(grazing, narrow_model)
    assert not bool(rejected.any())
