"""reject_colour_outliers: grazing texels unlike the skin, with a squarer mirror, are dropped; nothing else."""

from __future__ import annotations

import torch

from morphface.render import region_vertex_mask
from morphface.uv import UnwrapResult, reject_colour_outliers, texel_map


def _unwrap(model, S=64):
    """A skin-coloured unwrap seen squarely on the subject's left (x > 0) and grazing on the right."""
    tmap = texel_map(model, S)
    n = tmap.n_texels
    skin = region_vertex_mask(model, "skin")[tmap.vertex_ids].all(-1)
    x = (model.mean[tmap.vertex_ids] * tmap.weights[..., None].to(model.mean)).sum(1)[:, 0]
    g = torch.Generator().manual_seed(0)
    colour = torch.tensor([0.80, 0.60, 0.50]) + 0.01 * torch.randn(1, n, 3, generator=g)
    conf = torch.where(x > 5.0, 0.9, torch.where(x < -5.0, 0.2, 0.6)).float()[None, :, None]
    tex = tmap.scatter(colour)
    return tmap, skin, x, UnwrapResult(tex, tmap.scatter(conf), tmap.scatter(torch.ones(1, n, 1)))


def _with_background(tmap, u, where):
    col = torch.where(where[None, :, None], torch.tensor([0.95, 0.97, 1.0]), tmap.gather(u.texture))
    return UnwrapResult(tmap.scatter(col), u.confidence, u.mask)


def test_grazing_background_with_a_square_mirror_is_rejected_and_nothing_else(narrow_model):
    tmap, skin, x, u = _unwrap(narrow_model)
    idx = torch.arange(tmap.n_texels)
    background = idx % 7 == 0  # a scattered seventh, on both sides
    u = _with_background(tmap, u, background)
    # grow=0: the scattered texels' noisy neighbours are not their fringes (the growth has its own test)
    out, rejected = reject_colour_outliers(u, narrow_model, grow=0.0)
    got = tmap.gather(rejected.float())[0, :, 0] > 0.5
    # grazing skin texels (x < -5 mm) whose mirror lies on the square side; the mirror is found through
    # the model's symmetry map, so allow the odd texel near the middle or a chart seam either way
    want = background & (x < -5.0) & skin
    assert int((got & ~want).sum()) <= 0.02 * int(want.sum()) and int((want & ~got).sum()) <= 0.05 * int(want.sum())
    assert not bool(got[x > 0].any())  # square texels are never rejected
    assert bool((tmap.gather(out.mask)[0, got] == 0).all()) and bool((tmap.gather(out.confidence)[0, got] == 0).all())
    assert torch.equal(tmap.gather(out.texture)[0, ~got], tmap.gather(u.texture)[0, ~got])


def test_nothing_is_rejected_without_a_better_mirror_or_a_reference(narrow_model):
    tmap, _, _, u = _unwrap(narrow_model)
    out, rejected = reject_colour_outliers(u, narrow_model)  # an even face
    assert not bool(rejected.any()) and torch.equal(out.mask, u.mask)
    # both sides grazing: an outlier has no squarer mirror to take its place, so it is kept
    both = UnwrapResult(u.texture, u.confidence.clamp(max=0.2), u.mask)
    both = _with_background(tmap, both, torch.arange(tmap.n_texels) % 7 == 0)
    flat = UnwrapResult(both.texture, torch.where(u.confidence > 0.5, u.confidence, both.confidence), both.mask)
    _, rejected = reject_colour_outliers(both, narrow_model)
    assert not bool(rejected.any())
    assert bool(reject_colour_outliers(flat, narrow_model)[1].any())


def _square_unwrap(model, S=64):
    """An even skin-coloured unwrap seen squarely (confidence 0.9) everywhere."""
    tmap, skin, x, u = _unwrap(model, S)
    return tmap, skin, x, UnwrapResult(u.texture, u.mask * 0.9, u.mask)


def _paint(tmap, u, where, colour):
    col = torch.where(where[None, :, None], torch.tensor(colour), tmap.gather(u.texture))
    return UnwrapResult(tmap.scatter(col), u.confidence, u.mask)


def _texel_points(model, tmap):
    return (model.mean[tmap.vertex_ids] * tmap.weights[..., None].to(model.mean)).sum(1)


def _forehead(model, p):
    """Texels above the highest eyebrow landmark and between the outer eye corners (mean shape)."""
    lm = model.landmarks
    return (p[:, 1] > model.mean[lm[17:27], 1].max()) & (p[:, 0].abs() < model.mean[lm[[36, 45]], 0].abs().max())


def test_hair_over_one_cheek_is_rejected_at_any_angle_but_not_on_both_or_in_small_spots(narrow_model):
    tmap, skin, x, u = _square_unwrap(narrow_model)
    p = _texel_points(narrow_model, tmap)
    y = p[:, 1]
    # a dark-brown lock over the subject's left cheek, seen squarely: its mirror is clean skin
    lock = (x > 25) & (x < 55) & (y > -30) & (y < 10)
    out, rejected = reject_colour_outliers(_paint(tmap, u, lock, [0.25, 0.15, 0.10]), narrow_model)
    got = tmap.gather(rejected.float())[0, :, 0] > 0.5
    want = lock & skin
    assert int((want & ~got).sum()) <= 0.15 * int(want.sum())  # the patch's rim may survive the opening
    assert int((got & ~want).sum()) == 0
    assert torch.equal(tmap.gather(out.mask)[0, got, 0], torch.zeros(int(got.sum())))
    # the same colour on both cheeks (a beard) has no clean mirror: kept
    beard = lock | ((x < -25) & (x > -55) & (y > -30) & (y < 10))
    _, rejected = reject_colour_outliers(_paint(tmap, u, beard, [0.25, 0.15, 0.10]), narrow_model)
    assert not bool(rejected.any())
    # a mole (one texel, ~3 mm) on one cheek is smaller than min_patch: kept
    d = (p[:, :2] - torch.tensor([40.0, -10.0])).norm(dim=-1)
    mole = d == d.min()
    _, rejected = reject_colour_outliers(_paint(tmap, u, mole, [0.25, 0.15, 0.10]), narrow_model)
    assert not bool(rejected.any())
    # without the one-sided rule a squarely seen lock stays
    _, rejected = reject_colour_outliers(_paint(tmap, u, lock, [0.25, 0.15, 0.10]), narrow_model, one_sided=False)
    assert not bool(rejected.any())


def test_one_raised_eyebrow_is_not_taken_for_hair(narrow_model):
    tmap, skin, x, u = _square_unwrap(narrow_model)
    lm = narrow_model.mean[narrow_model.landmarks[22:27]]  # the subject's left brow (+x)
    p = _texel_points(narrow_model, tmap)
    from morphface.render.regions import _segment_distance

    brow = _segment_distance(p[:, :2], lm[:-1, :2], lm[1:, :2]).amin(-1) < 4.0
    _, rejected = reject_colour_outliers(_paint(tmap, u, brow, [0.20, 0.14, 0.10]), narrow_model)
    assert not bool(rejected.any())


def test_grazing_outlier_on_the_symmetry_line_is_rejected(narrow_model):
    tmap, skin, x, u = _square_unwrap(narrow_model)
    # the middle of the face seen at a grazing angle, the rest squarely (the reference skin)
    grazing = UnwrapResult(u.texture, tmap.scatter(torch.where(x.abs() < 10, 0.2, 0.9)[None, :, None]), u.mask)
    line = x.abs() < 2.0
    out, rejected = reject_colour_outliers(_paint(tmap, grazing, line, [0.95, 0.97, 1.0]), narrow_model, grow=0.0)
    got = tmap.gather(rejected.float())[0, :, 0] > 0.5
    assert bool(got.any()) and int((got & ~(x.abs() < 4.0)).sum()) == 0
    # only below the brows (the nose ridge): on the forehead the line stays
    brow_top = float(narrow_model.mean[narrow_model.landmarks[17:27], 1].max())
    y = _texel_points(narrow_model, tmap)[:, 1]
    assert int((line & (y > brow_top + 1)).sum()) > 4 and int((got & (y > brow_top)).sum()) == 0
    # seen squarely, the same line is kept (a frontal face's nose ridge)
    _, rejected = reject_colour_outliers(_paint(tmap, u, line, [0.95, 0.97, 1.0]), narrow_model)
    assert not bool(rejected.any())


def test_hair_framing_the_face_on_both_sides_is_rejected_but_not_a_beard_or_an_inner_patch(narrow_model):
    # at 128 texels the fringe's thin ends at the temples are wider than the opening (min_patch)
    tmap, skin, x, u = _square_unwrap(narrow_model, S=128)
    p = _texel_points(narrow_model, tmap)
    y = p[:, 1]
    top = float(p[:, 1].max())
    dark = [0.25, 0.15, 0.10]
    # a fringe across the whole top of the forehead, from the layout's border down 15 mm: both sides
    fringe = y > top - 15
    kw = dict(one_sided=False, grow=0.0)
    everywhere = reject_colour_outliers(_paint(tmap, u, fringe, dark), narrow_model, keep_fringe=False, **kw)[1]
    everywhere = tmap.gather(everywhere.float())[0, :, 0] > 0.5
    want = fringe & skin
    assert int((want & ~everywhere).sum()) <= 0.1 * int(want.sum()) and int((everywhere & ~want).sum()) == 0
    # by default it goes at the temples, as before, and stays on the forehead itself (nothing better
    # shows the skin under it)
    forehead = _forehead(narrow_model, p)
    assert int((fringe & forehead).sum()) > 20 and int((fringe & ~forehead).sum()) > 20
    out, rejected = reject_colour_outliers(_paint(tmap, u, fringe, dark), narrow_model, **kw)
    got = tmap.gather(rejected.float())[0, :, 0] > 0.5
    assert torch.equal(got, everywhere & ~forehead)
    assert not bool(reject_colour_outliers(_paint(tmap, u, fringe, dark), narrow_model, one_sided=False,
                                           framing_hair=False)[1].any())
    # a beard on both sides below the nose tip reaches the border too, and stays
    tip = float(narrow_model.mean[narrow_model.landmarks[30], 1])
    beard = (y < tip - 15) & (x.abs() > 20)
    assert not bool(reject_colour_outliers(_paint(tmap, u, beard, dark), narrow_model)[1].any())
    # a dark patch in the middle of the forehead that does not reach the border stays
    inner = (p[:, :2] - torch.tensor([0.0, top - 30.0])).norm(dim=-1) < 6
    assert int(inner.sum()) > 4
    assert not bool(reject_colour_outliers(_paint(tmap, u, inner, dark), narrow_model, one_sided=False)[1].any())


def test_a_lock_hanging_from_the_temple_goes_but_a_beard_joined_to_the_hair_stays(narrow_model):
    tmap, skin, x, u = _square_unwrap(narrow_model, S=128)
    p = _texel_points(narrow_model, tmap)
    y = p[:, 1]
    top = float(y.max())
    tip = float(narrow_model.mean[narrow_model.landmarks[30], 1])
    dark = [0.25, 0.15, 0.10]
    side = float(x.max())
    fringe = y > top - 15
    # both temples' hair, down the face's sides to a little below the nose tip: mostly above the tip
    temples = (x.abs() > side - 12) & (y > tip - 15)
    hair = fringe | temples
    kw = dict(one_sided=False, grow=0.0)
    got = tmap.gather(reject_colour_outliers(_paint(tmap, u, hair, dark), narrow_model, **kw)[1].float())[0, :, 0]
    below = temples & (y < tip) & skin
    assert int(below.sum()) > 10
    assert float(got[below].mean()) > 0.9  # the hanging part goes with the hair above it
    # a beard along the jaws, joined to the fringe by sideburns down the temples: the patch lies mostly
    # below the nose tip, so its part below stays (the hair above it still goes). (A beard over most of
    # the skin would make dark the skin colour itself.)
    beard = (y < tip - 5) & (x.abs() > 30)
    joined = fringe | temples | beard
    assert int((joined & (y > tip)).sum()) < 0.5 * int(joined.sum())
    got = tmap.gather(reject_colour_outliers(_paint(tmap, u, joined, dark), narrow_model, **kw)[1].float())[0, :, 0]
    assert float(got[(beard & skin & (y < tip - 20))].mean()) < 0.05
    # (by default the fringe on the forehead itself stays; the rest goes as it does without keep_fringe)
    every = reject_colour_outliers(_paint(tmap, u, joined, dark), narrow_model, keep_fringe=False, **kw)[1]
    every = tmap.gather(every.float())[0, :, 0] > 0.5
    assert float(every[fringe & skin].float().mean()) > 0.9
    assert torch.equal(got > 0.5, every & ~_forehead(narrow_model, p))


def test_the_fringe_of_a_rejected_patch_goes_with_it(narrow_model):
    from morphface.fitting.skin import fit_colour_model

    S = 128
    tmap, skin, x, u = _square_unwrap(narrow_model, S=S)
    p = _texel_points(narrow_model, tmap)
    y = p[:, 1]
    skin_rgb, dark = torch.tensor([0.80, 0.60, 0.50]), torch.tensor([0.25, 0.15, 0.10])
    # a lock over one cheek, and around it a 2 mm rim of half-mixed colour (blur, antialiasing), whose
    # distance from the skin lies between grow_threshold (2.5) and threshold (3.5)
    box = torch.maximum((x - 40).abs() - 15, (y + 10).abs() - 20)
    lock, rim = box < 0, (box >= 0) & (box < 2)
    model = fit_colour_model(tmap.gather(u.texture), tmap.gather(u.mask)[..., 0] > 0.5)
    mix = [skin_rgb + t * (dark - skin_rgb) for t in torch.linspace(0, 1, 201)]
    z = model.zscore(torch.stack(mix)[None])[0]
    t = int(((z - 3.0).abs()).argmin())
    assert 2.7 < float(z[t]) < 3.3
    painted = _paint(tmap, _paint(tmap, u, lock, dark.tolist()), rim, mix[t].tolist())

    def rejected(**kw):
        return tmap.gather(reject_colour_outliers(painted, narrow_model, **kw)[1].float())[0, :, 0] > 0.5

    want_rim = rim & skin
    without = rejected(grow=0.0)
    assert int((without & want_rim).sum()) == 0  # the rim alone is no outlier
    got = rejected()
    assert int((want_rim & ~got).sum()) <= 0.05 * int(want_rim.sum())
    # the growth stops at clean skin: at most the odd noisy texel beyond the rim
    assert int((got & ~(lock | rim)).sum()) <= 0.05 * int(want_rim.sum())
