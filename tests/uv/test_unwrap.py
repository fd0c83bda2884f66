"""unwrap: colours into UV space with z-buffer visibility, confidence, differentiability."""

from __future__ import annotations

import pytest
import torch

from morphface.uv import render_uv_texture, texel_map, unwrap
from morphface.uv.synthetic import synthetic_face

from .conftest import camera_fit, grid_model, merge_models


def _smooth_texture(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=True
    ).clamp(0, 1)


@pytest.fixture(scope="module")
def occlusion_scene():
    """A large quad at z = 0 and, 60 mm in front of it, a small one that hides its middle."""
    back = grid_model(9, size=80.0, z=0.0, uv_box=(0.02, 0.02, 0.48, 0.98))
    front = grid_model(5, size=30.0, z=60.0, uv_box=(0.52, 0.3, 0.98, 0.7))
    model = merge_models(back, front)
    fit = camera_fit(model, image_size=(96, 96), distance=400.0, focal=300.0)
    texture = _smooth_texture(64)
    image = render_uv_texture(texture, model, fit.camera).image
    return model, fit, texture, image


def test_occluded_texels_are_masked(occlusion_scene):
    model, fit, texture, image = occlusion_scene
    S = 64
    result = unwrap(image, fit, model, size=S, edge_margin=0.0)
    tmap = texel_map(model, S)
    points = (model.mean[tmap.vertex_ids].double() * tmap.weights[..., None]).sum(1)  # (N, 3)
    valid = tmap.gather(result.mask)[0, :, 0] > 0.5
    on_back = points[:, 2].abs() < 1e-6
    # the front quad (half-width 15 mm at depth 340 mm) hides |x|, |y| < 17.6 mm of the back one
    half = points[:, :2].abs().amax(1)
    hidden = on_back & (half < 16.5)
    clear = on_back & (half > 19.0) & (half < 39.0)
    assert int(hidden.sum()) > 50 and int(clear.sum()) > 200
    assert not bool(valid[hidden].any())
    assert bool(valid[clear].all())
    # the front quad is visible wherever its texels project at least a pixel inside its outline
    assert bool(valid[~on_back & (half < 13.0)].all())
    # seen texels carry the texture's colours (bilinear resampling twice: a small error)
    err = tmap.gather((result.texture - texture).abs().amax(1, keepdim=True))[0, :, 0]
    inner = clear | (~on_back & (half < 13.0))
    assert float(err[inner].mean()) < 0.01 and float(err[inner].max()) < 0.06
    # facing the camera squarely: confidence 1 on the front quad's texels
    conf = tmap.gather(result.confidence)[0, :, 0]
    assert float(conf[~on_back & (half < 13.0)].min()) > 0.97
    assert float(result.confidence[result.mask == 0].abs().max()) == 0.0


def test_edge_band_distrusts_texels_next_to_an_occluder_but_not_a_rim_facing_the_camera(occlusion_scene):
    model, fit, _, image = occlusion_scene
    S = 64
    tmap = texel_map(model, S)
    points = (model.mean[tmap.vertex_ids].double() * tmap.weights[..., None]).sum(1)
    plain = tmap.gather(unwrap(image, fit, model, size=S, edge_margin=0.0).mask)[0, :, 0] > 0.5
    banded = tmap.gather(unwrap(image, fit, model, size=S, edge_margin=0.1).mask)[0, :, 0] > 0.5
    on_back = points[:, 2].abs() < 1e-6
    half = points[:, :2].abs().amax(1)
    near_occluder = on_back & (half > 18.0) & (half < 20.0)
    assert bool(plain[near_occluder].all()) and not bool(banded[near_occluder].any())
    # the back quad's own rim faces the camera: the mesh merely ends there, nothing is hidden
    rim = on_back & (half > 38.0)
    assert bool(banded[rim].all())


def test_unwrap_is_differentiable_wrt_the_image():
    model = grid_model(3, size=40.0)
    fit = camera_fit(model, image_size=(8, 8), distance=300.0, focal=48.0, dtype=torch.float64)
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def f(img):
        return unwrap(img, fit, model, size=6, edge_margin=0.0).texture

    assert float(unwrap(image, fit, model, size=6).mask.sum()) > 10
    # fast mode (a random projection of the Jacobian): each evaluation rasterises a z-buffer
    assert torch.autograd.gradcheck(f, (image,), eps=1e-6, atol=1e-6, fast_mode=True)
    # for a fixed geometry the texture is linear in the image, so its Jacobian is the same everywhere
    other = torch.rand_like(image)
    assert torch.allclose(f(2 * image.detach() - 3 * other), 2 * f(image.detach()) - 3 * f(other), atol=1e-12)


def test_batch_matches_single_images(narrow_model):
    faces = [synthetic_face(yaw, 128, 64, torch.Generator().manual_seed(yaw + 5)) for yaw in (20, -35)]
    images = torch.cat([f.image for f in faces])
    from morphface.fitting.result import FitResult

    fits = FitResult.cat([f.truth for f in faces])
    both = unwrap(images, fits, narrow_model, size=64)
    for b, f in enumerate(faces):
        one = unwrap(f.image, f.truth, narrow_model, size=64)
        for x, y in zip(both, one):
            assert torch.allclose(x[b : b + 1], y, atol=1e-6)
    # a turned face shows less of itself
    assert float(both.mask[1].mean()) < float(both.mask[0].mean())


def test_bad_inputs_raise(narrow_model):
    face = synthetic_face(0, 64, 32)
    with pytest.raises(ValueError, match="pixels but the fit is for"):
        unwrap(face.image[..., :32, :32], face.truth, narrow_model, size=32)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        unwrap(face.image[:, :2], face.truth, narrow_model, size=32)


def test_foreground_mask_drops_texels_on_the_background_and_scales_confidence(narrow_model):
    face = synthetic_face(30, 128, 64, torch.Generator().manual_seed(2))
    plain = unwrap(face.image, face.truth, narrow_model, size=64)
    ones = unwrap(face.image, face.truth, narrow_model, size=64, foreground=torch.ones(1, 1, 128, 128))
    for x, y in zip(plain, ones):
        assert torch.equal(x, y)
    # the left half of the picture is "background": texels that land there are not sampled
    fg = torch.ones(1, 1, 128, 128)
    fg[..., :64] = 0.0
    half = unwrap(face.image, face.truth, narrow_model, size=64, foreground=fg)
    pix = face.truth.camera.project(face.truth.vertices(narrow_model))[0][0]
    assert float(pix[:, 0].min()) < 60 and float(pix[:, 0].max()) > 68  # the face spans both halves
    assert 0 < float(half.mask.sum()) < float(plain.mask.sum())
    assert torch.equal(half.mask * plain.mask, half.mask)  # nothing new becomes valid
    # a probability between the two levels scales the confidence linearly
    mid = unwrap(face.image, face.truth, narrow_model, size=64, foreground=torch.full((1, 1, 128, 128), 0.7))
    assert torch.allclose(mid.confidence, 0.5 * plain.confidence, atol=1e-6)
    with pytest.raises(ValueError, match="foreground must have shape"):
        unwrap(face.image, face.truth, narrow_model, size=64, foreground=torch.ones(1, 128, 128))
