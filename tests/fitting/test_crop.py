"""morphface.fitting.crop: crop boxes, the crop similarity, resampling and paste-back."""

from __future__ import annotations

import pytest
import torch

from morphface.errors import NoFaceError
from morphface.fitting.crop import CropTransform, crop_box_from_landmarks, smooth_crop_track, square_box


def _ramp(H: int, W: int, dtype=torch.float64) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """An image whose value at each pixel centre (j + .5, i + .5) is a*x + b*y + c; bilinear
    resampling reproduces such a linear function exactly (away from the border)."""
    a, b, c = 0.01, -0.02, 3.0
    ys = torch.arange(H, dtype=dtype) + 0.5
    xs = torch.arange(W, dtype=dtype) + 0.5
    img = a * xs[None, :] + b * ys[:, None] + c
    return img[None], (a, b, c)


def _crop_centres(size: int, dtype=torch.float64) -> torch.Tensor:
    c = torch.arange(size, dtype=dtype) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)


def test_from_box_maps_box_onto_crop_and_inverse_is_exact():
    box = torch.tensor([[100.0, 50.0, 300.0, 250.0], [10.0, 20.0, 50.0, 40.0]], dtype=torch.float64)
    T = CropTransform.from_box(box, size=256)
    corners = torch.stack([box[:, :2], box[:, 2:]], dim=1)
    # box 0 is square: its corners go to the crop's corners
    assert torch.allclose(T.apply(corners)[0], torch.tensor([[0.0, 0.0], [256.0, 256.0]], dtype=torch.float64))
    # box 1 is 40 x 20: squared around its centre (30, 30) -> side 40
    assert torch.allclose(T.box[1], torch.tensor([10.0, 10.0, 50.0, 50.0], dtype=torch.float64))
    pts = torch.rand(2, 68, 3, dtype=torch.float64) * 400
    assert torch.allclose(T.inverse(T.apply(pts)), pts, atol=1e-12, rtol=0)
    assert torch.allclose(T.apply(pts)[..., 2], pts[..., 2] * T.scale[:, None])  # depth column scaled


def test_crop_samples_the_right_pixels_exactly():
    img, (a, b, c) = _ramp(120, 160)
    T = CropTransform.from_box(torch.tensor([30.0, 20.0, 90.0, 80.0], dtype=torch.float64), size=48)  # 0.8x
    out = T.crop(img)
    assert out.shape == (1, 48, 48) and out.dtype == torch.float64
    src = T.inverse(_crop_centres(48))
    expect = (a * src[:, 0] + b * src[:, 1] + c).reshape(48, 48)
    assert torch.allclose(out[0], expect, atol=1e-12)


def test_downscaling_crop_with_antialias_keeps_positions():
    img, (a, b, c) = _ramp(400, 400)
    box = torch.tensor([100.0, 80.0, 300.0, 280.0], dtype=torch.float64)
    for size in (50, 37):  # 4x and 5.4x reductions
        T = CropTransform.from_box(box, size=size)
        out = T.crop(img, antialias=True)
        src = T.inverse(_crop_centres(size))
        expect = (a * src[:, 0] + b * src[:, 1] + c).reshape(size, size)
        assert torch.allclose(out[0], expect, atol=1e-9)  # a linear ramp survives the area average exactly
    # and the low-pass works: a pixel-scale checkerboard averages out instead of aliasing
    checker = ((torch.arange(400)[:, None] + torch.arange(400)[None, :]) % 2).double()[None]
    T = CropTransform.from_box(box, size=37)
    assert float((T.crop(checker, antialias=True) - 0.5).abs().max()) < 0.05
    assert float((T.crop(checker, antialias=False) - 0.5).abs().max()) > 0.2


def test_known_point_lands_on_expected_crop_pixel():
    H, W = 300, 400
    u0, v0 = 231.3, 142.8  # sub-pixel position of a blob in the original image
    ys = torch.arange(H, dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(W, dtype=torch.float64)[None, :] + 0.5
    img = torch.exp(-((xs - u0) ** 2 + (ys - v0) ** 2) / (2 * 6.0**2)).expand(3, H, W)
    T = CropTransform.from_box(torch.tensor([150.0, 60.0, 330.0, 240.0], dtype=torch.float64), size=90)
    out = T.crop(img)[0]
    w = out / out.sum()
    centre = _crop_centres(90).reshape(90, 90, 2)
    found = (w[..., None] * centre).sum(dim=(0, 1))
    expect = T.apply(torch.tensor([[u0, v0]], dtype=torch.float64))[0]
    assert torch.allclose(found, expect, atol=0.02)


def test_padding_modes_outside_the_image():
    img = torch.full((1, 3, 10, 10), 0.25)
    T = CropTransform.from_box(torch.tensor([-10.0, -10.0, 20.0, 20.0]), size=30)
    assert torch.allclose(T.crop(img, padding="border"), torch.full((1, 3, 30, 30), 0.25))
    const = T.crop(img, padding=1.0)
    assert torch.allclose(const[..., 0, 0], torch.ones(1, 3))
    assert torch.allclose(const[..., 15, 15], torch.full((1, 3), 0.25))
    assert float(T.crop(img, padding="zeros")[..., 0, 0].abs().max()) == 0.0
    with pytest.raises(ValueError, match="padding"):
        T.crop(img, padding="wrap")


def test_uncrop_and_paste_back():
    img, (a, b, c) = _ramp(64, 80)
    T = CropTransform.from_box(torch.tensor([20.0, 10.0, 52.0, 42.0], dtype=torch.float64), size=64)
    crop = T.crop(img)
    back, cover = T.uncrop(crop, (64, 80))
    assert back.shape == (1, 64, 80) and cover.shape == (1, 64, 80)
    inner = (slice(12, 40), slice(22, 50))  # pixels well inside the crop square
    assert torch.allclose(back[0][inner], img[0][inner], atol=1e-9)
    assert torch.all(cover[0][inner] == 1) and float(cover[0, 0, 0]) == 0.0 and float(cover[0, 63, 79]) == 0.0
    # paste a constant crop back: inside it replaces the image, outside the image is untouched
    pasted = T.paste_back(torch.zeros_like(crop), img)
    assert torch.allclose(pasted[0][inner], torch.zeros(28, 28, dtype=torch.float64))
    assert torch.equal(pasted[0, :, :15], img[0, :, :15])
    # with a mask, only the masked half of the crop is pasted
    mask = torch.zeros(1, 64, 64, dtype=torch.float64)
    mask[:, :, :32] = 1
    half = T.paste_back(torch.zeros_like(crop), img, mask=mask)
    assert torch.allclose(half[0, 20, 25], torch.tensor(0.0, dtype=torch.float64))  # left half of the box
    assert torch.allclose(half[0, 20, 45], img[0, 20, 45])  # right half keeps the original


def test_batches_broadcast_and_one_image_many_crops():
    imgs = torch.rand(4, 3, 40, 50)
    one = CropTransform.from_box(torch.tensor([5.0, 5.0, 35.0, 35.0]), size=16)
    assert one.crop(imgs).shape == (4, 3, 16, 16)
    many = CropTransform.from_box(torch.tensor([[5.0, 5.0, 35.0, 35.0], [0.0, 0.0, 20.0, 20.0]]), size=16)
    both = many.crop(imgs[0])
    assert both.shape == (2, 3, 16, 16)
    assert torch.allclose(both[0], one.crop(imgs[0]))
    with pytest.raises(ValueError, match="batch"):
        many.crop(imgs)


def test_crop_is_differentiable_gradcheck():
    torch.manual_seed(0)
    img = torch.rand(1, 1, 8, 9, dtype=torch.float64, requires_grad=True)
    # "Irregular" values keep every sample away from pixel centres, where bilinear sampling has
    # kinks that finite differences cannot check.
    offset = torch.tensor([[-1.2345, 0.6789]], dtype=torch.float64, requires_grad=True)
    for s, size in ((0.7731, 6), (0.3917, 3)):  # plain bilinear, and the area-averaged path (k = 2)
        scale = torch.tensor([s], dtype=torch.float64, requires_grad=True)

        def f(img, scale, offset, size=size):
            return CropTransform(scale=scale, offset=offset, size=size).crop(img, padding=0.5)

        assert torch.autograd.gradcheck(f, (img, scale, offset))


def test_dtype_and_device_follow_input():
    T = CropTransform.from_box(torch.tensor([0.0, 0.0, 10.0, 10.0]), size=8)
    out = T.crop(torch.rand(3, 12, 12, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert T.to(torch.float64).scale.dtype == torch.float64
    m = T.matrix()
    p = torch.tensor([[3.0, 4.0]])
    assert torch.allclose((m[0, :2, :2] @ p[0] + m[0, :2, 2])[None], T.apply(p))


def test_crop_box_from_landmarks_rule():
    lm = torch.tensor([[100.0, 200.0], [180.0, 200.0], [140.0, 300.0], [120.0, 250.0]])  # box 80 x 100
    box = crop_box_from_landmarks(lm, scale=1.8, shift=0.1)
    side = 1.8 * 100
    centre = torch.tensor([140.0, 250.0 - 0.1 * 100])
    assert torch.allclose(box, torch.cat([centre - side / 2, centre + side / 2]))
    # batched, with a depth column
    lm3 = torch.cat([lm, torch.zeros(4, 1)], dim=-1)[None].expand(3, 4, 3)
    assert torch.allclose(crop_box_from_landmarks(lm3), crop_box_from_landmarks(lm).expand(3, 4))
    # may extend past the image unless keep_inside
    near_edge = lm - torch.tensor([90.0, 180.0])
    free = crop_box_from_landmarks(near_edge)
    assert float(free[0]) < 0 and float(free[1]) < 0
    inside = crop_box_from_landmarks(near_edge, image_size=(480, 640), keep_inside=True)
    assert torch.allclose(inside[:2], torch.zeros(2)) and torch.allclose(inside[2:] - inside[:2], free[2:] - free[:2])
    with pytest.raises(ValueError, match=r"\(N, 2\|3\)"):
        crop_box_from_landmarks(torch.zeros(68))


def test_smooth_crop_track_contains_every_frame_box():
    torch.manual_seed(1)
    T = 50
    t = torch.linspace(0, 6.28, T)
    centres = torch.stack([200 + 30 * torch.sin(t), 150 + 10 * torch.cos(2 * t)], dim=-1) + torch.randn(T, 2)
    sides = 120 + 8 * torch.rand(T, 1)
    boxes = square_box(torch.cat([centres - sides / 2, centres + sides / 2], dim=-1))
    boxes[7] = float("nan")  # a frame without detection is ignored
    box = smooth_crop_track(boxes)
    assert box.shape == (4,)
    assert float(box[2] - box[0]) == pytest.approx(float(box[3] - box[1]))  # square
    ok = torch.isfinite(boxes).all(-1)
    assert bool((box[:2] <= boxes[ok, :2]).all() and (box[2:] >= boxes[ok, 2:]).all())
    med = smooth_crop_track(boxes, mode="median")
    assert float(med[2] - med[0]) == pytest.approx(float((boxes[ok, 2] - boxes[ok, 0]).median()))
    with pytest.raises(NoFaceError):
        smooth_crop_track(torch.full((3, 4), float("nan")))
