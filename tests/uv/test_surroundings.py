import math

import pytest
import torch
import torch.nn.functional as F

from morphface.uv.surroundings import even_head_outline, resample_source


def _grid(H: int, W: int):
    return torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")


def _head_scene(hair_x: float, H: int = 200, W: int = 200, body: bool = False):
    """A face ellipse (centre (100, 110), semi-axes 30 x 40) and hair: a disc of radius 60 centred at
    ``(hair_x, 100)``; with ``body``, shoulders from row 165 down across the whole width."""
    yy, xx = _grid(H, W)
    face = ((((xx - 100) / 30) ** 2 + ((yy - 110) / 40) ** 2) < 1).float()[None, None]
    person = torch.maximum(face, (((xx - hair_x) ** 2 + (yy - 100) ** 2) < 60**2).float()[None, None])
    if body:
        person[..., 165:, :] = 1.0
    return person, face, torch.tensor([[100.0, 110.0]])


def _moved(mask, at):
    H, W = mask.shape[-2:]
    grid = torch.stack([at[..., 0] * 2 / W - 1, at[..., 1] * 2 / H - 1], -1)
    return F.grid_sample(mask, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _extent_on_row(mask, row: int, start: int, step: int) -> int:
    """Pixels from column ``start`` (exclusive) along ``step`` until the mask drops below 1/2."""
    x, n = start + step, 0
    while 0 <= x < mask.shape[-1] and float(mask[0, 0, row, x]) >= 0.5:
        x, n = x + step, n + 1
    return n


def test_a_head_with_hair_on_one_side_is_evened_toward_the_mean_of_its_sides():
    person, face, centre = _head_scene(hair_x=85.0)
    # beyond the face along its middle row: 45 px of hair on the left, 15 on the right
    assert _extent_on_row(person, 110, 70, -1) == pytest.approx(45, abs=1)
    assert _extent_on_row(person, 110, 129, 1) == pytest.approx(15, abs=1)
    at = even_head_outline(person, face, centre, torch.tensor([60.0]))
    assert at.shape == (1, 200, 200, 2)
    moved = _moved(person, at)
    # the wider side goes to the mean, 30 px (the outline is averaged over 14 degrees of angle); by
    # default the narrower one stays as it is
    assert _extent_on_row(moved, 110, 70, -1) == pytest.approx(30, abs=3)
    assert _extent_on_row(moved, 110, 129, 1) == _extent_on_row(person, 110, 129, 1)
    # allowed to widen, it goes to the mean too
    widened = _moved(person, even_head_outline(person, face, centre, torch.tensor([60.0]), limits=(0.5, 2.0)))
    assert _extent_on_row(widened, 110, 129, 1) == pytest.approx(30, abs=3)
    q = torch.stack(_grid(200, 200)[::-1], -1)[None]
    # the face does not move, nor does the photo far from the head
    inside = face[0, 0] > 0.5
    assert float((at[0][inside] - q[0][inside]).norm(dim=-1).max()) < 0.05  # the outline: a few hundredths
    assert torch.equal(at[0, 80:140, 80:120], q[0, 80:140, 80:120])
    assert torch.equal(at[0, :, :5], q[0, :, :5]) and torch.equal(at[0, :5], q[0, :5])
    # no fold: along the middle row, the source moves monotonically
    assert bool((at[0, 110, 1:, 0] - at[0, 110, :-1, 0] > 0).all())


def test_the_new_extent_stays_within_its_limits_and_follows_the_strength():
    person, face, centre = _head_scene(hair_x=75.0)  # 55 px of hair on the left, 5 on the right
    moved = _moved(person, even_head_outline(person, face, centre, torch.tensor([60.0]), limits=(0.5, 2.0)))
    # the mean (30) is more than twice the right side's 5 px: that side only doubles
    assert _extent_on_row(moved, 110, 129, 1) == pytest.approx(10, abs=2)
    assert _extent_on_row(moved, 110, 70, -1) == pytest.approx(30, abs=3)
    q = torch.stack(_grid(200, 200)[::-1], -1)[None]
    assert torch.equal(even_head_outline(person, face, centre, torch.tensor([60.0]), strength=0.0), q)
    half = _moved(person, even_head_outline(person, face, centre, torch.tensor([60.0]), strength=0.5))
    assert _extent_on_row(half, 110, 70, -1) == pytest.approx((55 + 30) / 2, abs=3)


def test_a_symmetric_head_and_the_shoulders_below_it_stay_where_they_are():
    person, face, centre = _head_scene(hair_x=100.0, body=True)
    at = even_head_outline(person, face, centre, torch.tensor([60.0]))
    q = torch.stack(_grid(200, 200)[::-1], -1)[None]
    assert float((at - q).norm(dim=-1).max()) < 0.5
    # one-sided hair: the head is evened, the shoulders (rays pointing down) are not
    person, face, centre = _head_scene(hair_x=85.0, body=True)
    at = even_head_outline(person, face, centre, torch.tensor([60.0]))
    assert float((at - q).norm(dim=-1)[0, 110, :60].max()) > 5.0
    down = torch.atan2(q[0, ..., 1] - 110, (q[0, ..., 0] - 100).abs()) > math.radians(50)
    assert torch.equal(at[0][down], q[0][down])


def test_a_head_cut_by_the_image_border_is_left_alone():
    person, face, centre = _head_scene(hair_x=40.0)  # the hair leaves the image on the left
    q = torch.stack(_grid(200, 200)[::-1], -1)[None]
    at = even_head_outline(person, face, centre, torch.tensor([60.0]))
    assert torch.equal(at[0, 100:121], q[0, 100:121])


def test_bad_shapes_are_value_errors():
    person, face, centre = _head_scene(hair_x=85.0)
    with pytest.raises(ValueError, match="person and head"):
        even_head_outline(person[0], face[0], centre, torch.tensor([60.0]))
    with pytest.raises(ValueError, match="bins must be even"):
        even_head_outline(person, face, centre, torch.tensor([60.0]), bins=91)


def test_resample_source_composes_two_maps():
    H, W = 8, 10
    yy, xx = _grid(H, W)
    q = torch.stack([xx, yy], -1)[None]
    shifted = q + torch.tensor([2.0, 1.0])  # output -> input: (x + 2, y + 1)
    at = q + torch.tensor([1.0, 0.0])  # output -> output: one pixel to the right
    out = resample_source(shifted, at)
    assert torch.allclose(out[0, 2:6, 2:7], (q + torch.tensor([3.0, 1.0]))[0, 2:6, 2:7], atol=1e-5)
    assert torch.allclose(resample_source(shifted, q), shifted, atol=1e-5)
