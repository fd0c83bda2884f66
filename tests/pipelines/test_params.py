"""Parameter vectors, motion windows, transfer, crops and the on-the-fly conditioning renders."""

import pytest
import torch

from morphface.fitting import CropTransform, sample_fit
from morphface.pipelines import ParamLayout, crop_fit, motion_windows, rescale_fit, transfer_motion
from morphface.pipelines.conditioning import (
    crop_boxes,
    render_driving_ncc,
    render_ncc_params,
    reorder_newest_first,
)

from .helpers import S, sequence_fit


@pytest.fixture(scope="module")
def layout(narrow_model):
    return ParamLayout.of(narrow_model)


def test_layout_sizes_match_the_contract(layout):
    # default model: 100 identity modes, 53 blendshapes
    assert (layout.dim, layout.motion_dim, layout.code_dim) == (100 + 53 + 7, 53 + 6, 53 + 7)


def test_pack_unpack_round_trip(narrow_model, layout):
    fit = sample_fit(narrow_model, 3, (S, S), generator=torch.Generator().manual_seed(0))
    p = layout.pack(fit)
    assert p.shape == (3, layout.dim)
    back = layout.unpack(p, (S, S))
    for name in ("id_coeffs", "exp_coeffs", "angles", "translation", "focal", "principal_point"):
        assert torch.equal(getattr(back, name), getattr(fit, name)), name
    m = layout.motion(p)
    assert torch.equal(m, torch.cat([fit.exp_coeffs, fit.angles, fit.translation], 1))
    assert torch.equal(layout.with_motion(p, m), p)
    code = layout.code(p)
    assert torch.equal(layout.from_code(p[:1], code[1:]), torch.cat([p[:1, :100].expand(2, -1), code[1:]], 1))
    with pytest.raises(ValueError, match=r"\(B, 160\)"):
        layout.check(torch.zeros(2, 7))


def test_motion_windows_are_clamped_at_the_clip_ends():
    motion = torch.arange(5.0)[:, None].expand(5, 2)
    w = motion_windows(motion, 2, torch.tensor([0, 2, 4]))
    assert w.shape == (3, 5, 2)
    assert w[:, :, 0].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [2, 3, 4, 4, 4]]


def test_transfer_keeps_source_identity_and_takes_driving_motion(narrow_model):
    src = sequence_fit(narrow_model, T=1, seed=1)
    drv = sequence_fit(narrow_model, T=4, seed=2)
    out = transfer_motion(src, drv)
    assert torch.equal(out.id_coeffs, src.id_coeffs.expand(4, -1))
    assert torch.equal(out.exp_coeffs, drv.exp_coeffs) and torch.equal(out.angles, drv.angles)
    rel = transfer_motion(src, drv, relative=True)
    assert torch.allclose(rel.angles[0], src.angles[0])  # frame 0 of the driving clip = the source's pose
    assert torch.allclose(rel.angles - rel.angles[:1], drv.angles - drv.angles[:1], atol=1e-6)
    with pytest.raises(ValueError, match="same image size"):
        transfer_motion(src, rescale_fit(drv, 2 * S))


def test_rescale_and_crop_fit_are_exact_pixel_maps(narrow_model):
    fit = sample_fit(narrow_model, 2, (S, S), generator=torch.Generator().manual_seed(3))
    verts = fit.vertices(narrow_model)
    pix, _ = fit.camera.project(verts)
    big = rescale_fit(fit, 4 * S)
    assert torch.allclose(big.camera.project(verts)[0], pix * 4, atol=1e-3)
    crop = CropTransform.from_box(torch.tensor([[5.0, 8.0, 45.0, 48.0], [0.0, 0.0, 64.0, 64.0]]), size=32)
    cf = crop_fit(fit, crop)
    assert cf.image_size == (32, 32)
    assert torch.allclose(cf.camera.project(verts)[0], crop.apply(pix), atol=1e-3)


def test_crop_boxes_of_pixel_aligned_boxes_are_exact_subimages():
    img = torch.rand(2, 3, 16, 16)
    boxes = torch.tensor([[2.0, 3.0, 10.0, 11.0], [0.0, 0.0, 16.0, 16.0]])
    out = crop_boxes(img, boxes, 8)
    assert torch.allclose(out[0], img[0, :, 3:11, 2:10], atol=1e-6)
    assert torch.allclose(crop_boxes(img, boxes, 16)[1], img[1], atol=1e-6)


def test_reorder_newest_first():
    x = torch.arange(3.0).repeat_interleave(3)[None, :, None, None].expand(1, 9, 2, 2)
    assert reorder_newest_first(x)[0, :, 0, 0].tolist() == [2, 2, 2, 1, 1, 1, 0, 0, 0]


def test_driving_ncc_from_motion_windows_renders_the_previous_frames(narrow_model, layout):
    fit = sequence_fit(narrow_model, T=6, seed=4)
    params = layout.pack(fit)
    motion = layout.motion(params)
    t = torch.tensor([3, 0])
    ncc, mask = render_driving_ncc(narrow_model, layout, params[t], motion_windows(motion, 13, t), 2, S)
    assert ncc.shape == (2, 9, S, S) and mask.shape == (2, 1, S, S)
    frames, fmask = render_ncc_params(narrow_model, layout, params, S)
    # blocks are [t-2, t-1, t], clamped at the clip start
    assert torch.equal(ncc[0], torch.cat([frames[1], frames[2], frames[3]]))
    assert torch.equal(ncc[1], torch.cat([frames[0], frames[0], frames[0]]))
    assert torch.equal(mask[0], fmask[3])
    assert 0 < float(mask.mean()) < 1
