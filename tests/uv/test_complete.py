"""Texture completion (mirror, albedo model, push-pull) and multi-view fusion."""

from __future__ import annotations

import torch

from morphface.morphable.model import MorphableModel
from morphface.uv import (
    SOURCE_ALBEDO,
    SOURCE_FILL,
    SOURCE_MIRROR,
    SOURCE_SEEN,
    UnwrapResult,
    complete_texture,
    fuse_unwraps,
    mirror_fill,
    position_map,
    push_pull_fill,
    symmetry_map,
    texel_map,
    unwrap,
)
from morphface.uv.synthetic import synthetic_face

from .conftest import grid_model


def _half_seen(texture: torch.Tensor, keep_left: bool = True) -> UnwrapResult:
    S = texture.shape[-1]
    cols = torch.arange(S)
    seen = (cols < S // 2) if keep_left else (cols >= S // 2)
    mask = seen.to(texture.dtype).expand(1, 1, S, S).clone()
    return UnwrapResult(texture=texture * mask, confidence=mask.clone(), mask=mask)


def test_mirror_fill_is_exact_on_a_symmetric_texture():
    model = grid_model(7, size=60.0)  # symmetric in x, u linear in x with u(-x) = 1 - u(x)
    S = 32
    g = torch.Generator().manual_seed(0)
    half = torch.rand(1, 3, S, S // 2, generator=g)
    texture = torch.cat([half, half.flip(-1)], dim=-1)  # texel (r, c) == texel (r, S - 1 - c)
    filled, mirrored = mirror_fill(_half_seen(texture), model, mode="fill")
    assert torch.allclose(filled.texture, texture, atol=1e-6)
    assert bool((filled.mask == 1).all())
    assert bool(mirrored[..., S // 2 :].all()) and not bool(mirrored[..., : S // 2].any())


def test_symmetry_map_of_the_default_model(full_model):
    sym = symmetry_map(full_model)
    mean = full_model.mean
    assert float((mean[sym] * torch.tensor([-1.0, 1.0, 1.0]) - mean).norm(dim=1).max()) < 0.1  # mm
    assert float((sym[sym] == torch.arange(full_model.n_vertices)).float().mean()) > 0.99


def test_mirror_fill_on_the_default_model(narrow_model):
    S = 128
    pos = position_map(narrow_model, size=S)
    x, y, z = pos.values[0]
    # a smooth texture that depends on |x| only: the face's own symmetry
    texture = torch.stack([0.5 + 0.3 * torch.cos(x.abs() / 20), 0.5 + 0.2 * torch.sin(y / 30), 0.4 + z / 400])
    texture = (texture * pos.mask[0]).clamp(0, 1)[None]
    filled, mirrored = mirror_fill(_half_seen(texture), narrow_model, mode="fill")
    region = mirrored[0, 0] & pos.mask[0, 0].bool()
    assert int(region.sum()) > 3000
    err = (filled.texture - texture).abs()[0][:, region]
    assert float(err.mean()) < 0.01


def test_completion_leaves_no_holes_and_no_nan(narrow_model):
    face = synthetic_face(60, 128, 128, torch.Generator().manual_seed(3))
    seen = unwrap(face.image, face.truth, narrow_model, size=128)
    done = complete_texture(seen, narrow_model)
    assert bool(torch.isfinite(done.texture).all())
    assert float(done.texture.min()) >= 0.0 and float(done.texture.max()) <= 1.0
    codes = set(torch.unique(done.source).tolist())
    assert {SOURCE_SEEN, SOURCE_MIRROR, SOURCE_FILL} <= codes
    # the filled texels are plausible skin, not black
    assert float(done.texture[0][:, texel_map(narrow_model, 128).mask].mean()) > 0.2
    # nothing seen at all: still finite, a constant skin tone
    empty = UnwrapResult(*(torch.zeros_like(t) for t in seen))
    blank = complete_texture(empty, narrow_model)
    assert bool(torch.isfinite(blank.texture).all())
    assert float(blank.texture.std(dim=(2, 3)).max()) < 1e-6 and float(blank.texture.mean()) > 0.3


def test_push_pull_keeps_known_texels_and_fills_smoothly():
    g = torch.Generator().manual_seed(1)
    weight = (torch.rand(2, 1, 37, 53, generator=g) > 0.7).float()
    constant = torch.full((2, 3, 37, 53), 0.25)
    assert torch.allclose(push_pull_fill(constant * weight, weight), constant, atol=1e-6)
    ramp = torch.linspace(0, 1, 53).expand(2, 3, 37, 53).contiguous()
    out = push_pull_fill(ramp * weight, weight)
    assert torch.equal(out[weight.expand_as(out) > 0], ramp[weight.expand_as(out) > 0])
    assert float((out - ramp).abs().max()) < 0.2 and bool(torch.isfinite(out).all())


def test_texels_seen_edge_on_do_not_colour_the_hole_around_them():
    model = grid_model(7, size=60.0)
    S = 64
    skin = torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1).expand(1, 3, S, S)
    seen = _half_seen(skin.clone())  # the right half is a hole
    specks = torch.zeros(1, 1, S, S, dtype=torch.bool)
    specks[..., 40:42, 48:50] = True  # background sampled edge-on, deep in the hole
    tex = torch.where(specks, torch.tensor([0.95, 0.97, 1.0]).view(1, 3, 1, 1), seen.texture)

    def completed(conf: float) -> torch.Tensor:
        c = torch.where(specks, torch.tensor(conf), seen.confidence)
        # Not feathered: that would mix the specks (next to a large hole) with the fill whatever their confidence.
        unwrapped = UnwrapResult(tex, c, torch.maximum(seen.mask, specks.float()))
        return complete_texture(unwrapped, model, mirror=None, feather=0.0)

    edge_on, square = completed(0.02), completed(0.9)
    near = (slice(None), slice(None), slice(34, 48), slice(42, 56))
    # seen squarely, the specks are trusted and colour their surroundings; seen edge-on, they are filled over
    assert float((square.texture - skin)[near].abs().max()) > 0.1
    assert float((edge_on.texture - skin)[near].abs().max()) < 1e-3
    assert bool((edge_on.source[specks[:, :1]] == SOURCE_FILL).all())
    assert bool((square.source[specks[:, :1]] == SOURCE_SEEN).all())


def test_skin_at_the_edge_of_a_large_hole_fades_into_the_fill():
    model = grid_model(7, size=60.0)
    S = 256
    skin = torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1).expand(1, 3, S, S).clone()
    skin[..., S // 2 - 3 : S // 2] = torch.tensor([0.98, 0.9, 0.85]).view(1, 3, 1, 1)  # a highlight along the hole
    seen = _half_seen(skin)  # the right half is a hole
    small = torch.zeros(1, 1, S, S)
    small[..., 60:62, 40:42] = 1  # and a hole of 2 x 2 texels deep in the seen half
    seen = UnwrapResult(seen.texture * (1 - small), seen.confidence * (1 - small), seen.mask * (1 - small))
    hard = complete_texture(seen, model, mirror=None, feather=0.0).texture
    soft = complete_texture(seen, model, mirror=None).texture
    rows = slice(100, 156)
    band = (..., rows, slice(S // 2 - 12, S // 2 + 12))
    step = lambda t: float((t[band][..., 1:] - t[band][..., :-1]).abs().amax())  # noqa: E731
    # the highlight next to the hole is mixed with the fill (kept as it was without feathering), and the
    # steepest step across the band is lower
    edge = (..., rows, S // 2 - 1)
    assert torch.allclose(hard[edge], skin[edge], atol=1e-6)
    assert float((soft[edge] - skin[edge]).abs().amax(1).amin()) > 0.04
    assert step(soft) < 0.8 * step(hard)
    # skin away from the large hole, and around the small one, is kept as it was
    assert torch.equal(soft[..., : S // 2 - 12], hard[..., : S // 2 - 12])
    assert torch.equal(soft[..., 50:72, 30:52], hard[..., 50:72, 30:52])
    assert float((soft[..., 100:156, :S // 2 - 12] - skin[..., 100:156, :S // 2 - 12]).abs().max()) == 0.0


def test_albedo_model_fills_unseen_texels():
    base = grid_model(5, size=40.0)
    albedo = torch.rand(base.n_vertices, 3, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    model = MorphableModel(
        mean=base.mean, triangles=base.triangles, uv=base.uv, albedo_mean=albedo, name="albedo"
    )
    S = 32
    from morphface.uv import texel_attributes

    alb_tex = texel_attributes(albedo[None], texel_map(model, S))
    seen = _half_seen(alb_tex * 0.5)  # the photo shows the albedo at half brightness
    done = complete_texture(seen, model, mirror=None)
    right = done.source[0, 0] == SOURCE_ALBEDO
    assert int(right.sum()) > 100
    assert torch.allclose(done.texture[0][:, right], 0.5 * alb_tex[0][:, right], atol=1e-5)


def test_fusion_prefers_the_more_confident_view():
    S = 8
    red, blue = torch.zeros(1, 3, S, S), torch.zeros(1, 3, S, S)
    red[:, 0], blue[:, 2] = 1.0, 1.0
    m_a = torch.ones(1, 1, S, S)
    m_b = torch.ones(1, 1, S, S)
    m_b[..., :2] = 0  # view b misses two columns
    a = UnwrapResult(red, torch.full((1, 1, S, S), 0.9), m_a)
    b = UnwrapResult(blue * m_b, torch.full((1, 1, S, S), 0.2) * m_b, m_b)
    fused = fuse_unwraps([a, b])
    assert fused.texture.shape == (1, 3, S, S)
    assert bool((fused.texture[:, 0] > 0.9).all()) and bool((fused.texture[:, 2] < 0.1).all())
    assert torch.allclose(fused.texture[..., :2], red[..., :2])
    swapped = fuse_unwraps(
        [a._replace(confidence=a.confidence * 0.2 / 0.9), b._replace(confidence=b.confidence * 4.5)]
    )
    assert bool((swapped.texture[:, 2, :, 2:] > 0.9).all())
    nothing = UnwrapResult(red, torch.zeros(1, 1, S, S), torch.zeros(1, 1, S, S))
    assert float(fuse_unwraps([nothing, nothing]).mask.sum()) == 0


def test_fusing_two_views_of_one_face_covers_more_and_errs_less(narrow_model):
    views = [synthetic_face(yaw, 160, 128, torch.Generator().manual_seed(11)) for yaw in (-40, 40)]
    unwraps = [unwrap(v.image, v.truth, narrow_model, size=128) for v in views]
    fused = fuse_unwraps(unwraps)
    truth = torch.nn.functional.interpolate(
        views[0].texture, size=(128, 128), mode="bilinear", antialias=True
    )
    assert float(fused.mask.sum()) > 1.3 * max(float(u.mask.sum()) for u in unwraps)
    both = (unwraps[0].mask * unwraps[1].mask)[0, 0] > 0
    err = {
        k: float((t - truth).abs()[0][:, both].mean())
        for k, t in (("a", unwraps[0].texture), ("b", unwraps[1].texture), ("fused", fused.texture))
    }
    assert err["fused"] <= max(err["a"], err["b"]) and err["fused"] < 0.03, err


def test_mirror_colour_shift_is_limited_more_in_hue_than_in_brightness():
    from morphface.uv.complete import _limit_shift

    def luma_chroma(x):
        r, g, b = x.unbind(1)
        y = 0.299 * r + 0.587 * g + 0.114 * b
        return torch.stack([y, b - y, r - y], 1)

    small = torch.tensor([0.05, 0.04, 0.03]).view(1, 3, 1, 1)
    assert torch.allclose(_limit_shift(small), small, atol=1e-6)  # within both limits: unchanged
    grey = torch.full((1, 3, 1, 1), 0.5)  # a pure brightness shift: luma clamped to 0.3, stays grey
    assert torch.allclose(_limit_shift(grey), torch.full_like(grey, 0.3), atol=1e-6)
    tint = torch.tensor([0.3, -0.1, -0.2]).view(1, 3, 1, 1)  # mostly hue
    out = luma_chroma(_limit_shift(tint))[0, :, 0, 0]
    want = luma_chroma(tint)[0, :, 0, 0]
    assert torch.allclose(out[0], want[0], atol=1e-6)  # luma within its limit is kept
    assert float(out[1:].abs().max()) <= 0.06 + 1e-6
