"""frontalize end to end on rendered faces, its placement and options; holes, blending, warping."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from morphface.errors import FitError
from morphface.render import rasterize, render_textured
from morphface.uv import (
    CompositeConfig,
    FitConfig,
    FrontalizeConfig,
    TextureConfig,
    ViewConfig,
    fill_holes,
    frontal_fit,
    frontalize,
    laplacian_blend,
    model_uv_layout,
    uv_overlap,
)
from morphface.uv.frontalize import _hair_over_forehead, _photo_weight, _under_layer, warp_surroundings
from morphface.uv.holes import CAP_VERTEX_SET
from morphface.uv.mesh import boundary_loops
from morphface.uv.synthetic import random_face_texture, synthetic_face


def _face_psnr(image, truth_fit, face, full, narrow, texture):
    """PSNR of ``image`` against the true frontal render, over the face region (eroded 2 px)."""
    front = frontal_fit(truth_fit, face)
    cam = front.camera
    truth = render_textured(front.vertices(full), full.triangles, full.uv, None, texture, cam).image
    region = (
        rasterize(cam.to_ndc(front.vertices(narrow)), narrow.triangles, cam.image_size).mask[:, None].float()
    )
    region = -F.max_pool2d(-region, 5, 1, 2)

    def psnr(x):
        mse = (((x - truth) ** 2).mean(1, keepdim=True) * region).sum() / region.sum()
        return 10 * math.log10(1.0 / float(mse))

    return psnr, region


def test_frontalize_a_rendered_face_beats_the_mean_colour_baseline(narrow_model, full_model):
    scene = synthetic_face(30, 256, 256, torch.Generator().manual_seed(7))
    config = FrontalizeConfig(texture=TextureConfig(size=256))
    result = frontalize(scene.image, landmarks=scene.landmarks, config=config)
    assert result.image.shape == scene.image.shape and bool(torch.isfinite(result.image).all())
    assert result.texture.shape == (1, 3, 256, 256)
    assert abs(float(result.fit.euler_degrees[0, 1]) - 30) < 5
    psnr, region = _face_psnr(
        result.image, scene.truth, fill_holes(narrow_model), full_model, narrow_model, scene.texture
    )
    seen = (
        rasterize(
            scene.truth.camera.to_ndc(scene.truth.vertices(narrow_model)), narrow_model.triangles, (256, 256)
        )
        .mask[:, None]
        .float()
    )
    mean_colour = (scene.image * seen).sum((2, 3), keepdim=True) / seen.sum()
    ours, baseline = psnr(result.image), psnr(mean_colour.expand_as(result.image))
    assert ours > 22.0 and ours > baseline + 3.0, (ours, baseline)


def test_frontal_fit_placement_and_options(narrow_model):
    scene = synthetic_face(40, 128, 64, torch.Generator().manual_seed(2))
    truth = scene.truth
    truth.exp_coeffs[:, 0] = 0.5
    face = fill_holes(narrow_model)
    front = frontal_fit(truth, face)
    assert float(front.angles.abs().max()) == 0 and torch.equal(front.exp_coeffs, truth.exp_coeffs)
    # box placement: same image box centre and the same depth of the face centroid
    box = [
        0.5 * (p.amin(1) + p.amax(1))
        for p in (
            truth.camera.project(truth.vertices(face))[0],
            front.camera.project(front.vertices(face))[0],
        )
    ]
    assert float((box[0] - box[1]).abs().max()) < 0.5
    depth = [
        (f.vertices(face) @ f.rotation.transpose(1, 2) + f.translation[:, None]).mean(1)[:, 2]
        for f in (truth, front)
    ]
    assert abs(float(depth[0] - depth[1])) < 1e-3
    origin = frontal_fit(truth, face, placement="origin", neutral_expression=True)
    assert torch.equal(origin.translation, truth.translation) and float(origin.exp_coeffs.abs().max()) == 0
    big = frontal_fit(truth, face, output_size=(256, 256))
    assert big.image_size == (256, 256)
    p_small = front.camera.project(front.vertices(face))[0]
    p_big = big.camera.project(big.vertices(face))[0]
    assert torch.allclose(p_big, 2 * p_small, atol=1e-2)
    with pytest.raises(ValueError, match="aspect ratio"):
        frontal_fit(truth, face, output_size=(256, 128))


def test_frontalize_options_and_intermediates():
    scene = synthetic_face(-25, 128, 64, torch.Generator().manual_seed(4))
    config = FrontalizeConfig(
        texture=TextureConfig(size=64), view=ViewConfig(output_size=192, neutral_expression=True)
    )
    result = frontalize(scene.image[0], landmarks=scene.landmarks[0], config=config, return_intermediates=True)
    assert result.image.shape == (1, 3, 192, 192) and result.face_mask.shape == (1, 1, 192, 192)
    assert float(result.frontal_fit.exp_coeffs.abs().max()) == 0
    assert {
        "overlay",
        "unwrapped",
        "confidence",
        "visibility",
        "source",
        "render",
        "render_mask",
        "background",
    } <= set(result.intermediates)
    assert (
        float(result.face_mask.max()) == pytest.approx(1.0, abs=1e-4) and float(result.face_mask.min()) >= 0
    )


def test_photo_weight_follows_the_angle_the_head_turns(narrow_model):
    face = fill_holes(narrow_model)
    for yaw, want in ((0, 1.0), (5, 1.0), (11.5, 0.5), (20, 0.0), (-40, 0.0)):
        truth = synthetic_face(yaw, 128, 64, torch.Generator().manual_seed(2)).truth
        got = float(_photo_weight(truth, frontal_fit(truth, face), (8.0, 15.0)))
        assert got == pytest.approx(want, abs=1e-3), (yaw, got)


def test_a_nearly_frontal_photo_keeps_what_covers_the_face():
    # a dark lock of hair over one cheek of a frontal face: completion would replace it with the mirrored
    # cheek; a face that is not turned keeps it, so the photo comes back as it was
    scene = synthetic_face(0, 256, 128, torch.Generator().manual_seed(6))
    image = scene.image.clone()
    lock = (slice(None), slice(None), slice(120, 150), slice(150, 170))
    image[lock] = torch.tensor([0.25, 0.15, 0.1]).view(1, 3, 1, 1)
    config = FrontalizeConfig(fit=FitConfig(segmenter=None), texture=TextureConfig(size=128))
    kept = frontalize(image, landmarks=scene.landmarks, config=config).image
    no_keep = replace(config, texture=replace(config.texture, keep_photo=None))
    replaced = frontalize(image, landmarks=scene.landmarks, config=no_keep).image
    core = (slice(None), slice(None), slice(124, 146), slice(154, 166))  # off the lock's resampled edges
    err_kept, err_replaced = (float((x - image)[core].abs().mean()) for x in (kept, replaced))
    assert err_kept < 0.03 and err_replaced > 3 * err_kept, (err_kept, err_replaced)


def test_an_image_frontalises_the_same_alone_or_in_a_batch():
    a = synthetic_face(0, 128, 64, torch.Generator().manual_seed(1))
    b = synthetic_face(40, 128, 64, torch.Generator().manual_seed(2))
    kw = dict(config=FrontalizeConfig(fit=FitConfig(segmenter=None), texture=TextureConfig(size=64)))
    both = frontalize(torch.cat([a.image, b.image]), landmarks=torch.cat([a.landmarks, b.landmarks]), **kw)
    for i, scene in enumerate((a, b)):
        alone = frontalize(scene.image, landmarks=scene.landmarks, **kw)
        # float32 LM solves of a batch and of one face differ by ~3e-6 rad; a mask edge moves by ~1e-4
        assert torch.allclose(both.image[i], alone.image[0], atol=1e-3)
        assert torch.allclose(both.face_mask[i], alone.face_mask[0], atol=1e-3)


def test_a_failed_fit_is_a_named_error():
    scene = synthetic_face(0, 128, 64, torch.Generator().manual_seed(5))
    nonsense = torch.rand(1, 68, 2, generator=torch.Generator().manual_seed(0)) * 128
    small = FrontalizeConfig(texture=TextureConfig(size=64))
    with pytest.raises(FitError, match="reprojection RMSE"):
        frontalize(scene.image, landmarks=nonsense, config=small)
    with pytest.raises(ValueError, match="landmarks are for 2 images"):
        frontalize(scene.image, landmarks=torch.cat([scene.landmarks] * 2), config=small)


def test_fill_holes_closes_the_eyes_and_mouth(narrow_model):
    capped = fill_holes(narrow_model)
    assert fill_holes(narrow_model) is capped
    assert len(boundary_loops(narrow_model.triangles)) == 4 and len(boundary_loops(capped.triangles)) == 1
    caps = capped.vertex_set(CAP_VERTEX_SET)
    assert caps.tolist() == list(range(narrow_model.n_vertices, narrow_model.n_vertices + 3))
    assert torch.equal(capped.mean[: narrow_model.n_vertices], narrow_model.mean)
    # the caps follow expressions as the mean of their rim
    exp = torch.zeros(1, narrow_model.n_exp)
    exp[0, narrow_model.exp_names.index("jawOpen")] = 1.0
    verts = capped(None, exp)[0]
    for loop in boundary_loops(narrow_model.triangles)[1:]:
        centre = verts[caps]
        assert float((centre - verts[loop].mean(0)).norm(dim=1).min()) < 1e-4
    layout = model_uv_layout(capped)
    assert uv_overlap(layout, size=256).texels == 0
    assert bool((layout.uv >= 0).all() and (layout.uv <= 1).all())


def test_laplacian_blend_extremes_and_seam():
    g = torch.Generator().manual_seed(0)
    fg, bg = torch.rand(1, 3, 70, 90, generator=g), torch.rand(1, 3, 70, 90, generator=g)
    ones, zeros = torch.ones(1, 1, 70, 90), torch.zeros(1, 1, 70, 90)
    assert torch.allclose(laplacian_blend(fg, bg, ones), fg, atol=1e-5)
    assert torch.allclose(laplacian_blend(fg, bg, zeros), bg, atol=1e-5)
    half = torch.zeros(1, 1, 70, 90)
    half[..., :45] = 1
    out = laplacian_blend(torch.full_like(fg, 0.2), torch.full_like(bg, 0.8), half)
    assert float(out[..., :10].mean()) == pytest.approx(0.2, abs=0.02)
    assert float(out[..., -10:].mean()) == pytest.approx(0.8, abs=0.02)
    assert bool((out[..., 1:] - out[..., :-1] >= -1e-6).all())  # a monotone ramp, no ringing


def test_warp_surroundings_moves_the_outline_and_keeps_the_distance():
    H = W = 96
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    image = torch.stack([xx / W, yy / H, torch.zeros_like(xx)])[None]
    old = (((xx - 40) ** 2 + (yy - 48) ** 2) < 15**2).float()[None, None]
    new = (((xx - 50) ** 2 + (yy - 48) ** 2) < 15**2).float()[None, None]
    same = warp_surroundings(image, old, old)
    outside = old.expand_as(image) == 0
    assert torch.allclose(same[outside], image[outside], atol=1e-5)  # nothing moves outside the face
    # inside, the face's own pixels are drawn from a little inside the outline (never outside it)
    assert torch.allclose(same[..., 48, 40], image[..., 48, 40], atol=2e-3)
    warped = warp_surroundings(image, old, new)
    # just outside the new outline: what was just outside the old one (shifted by -10 px in x)
    assert float(warped[0, 0, 48, 65]) == pytest.approx((65.5 - 10) / W, abs=0.01)
    # far away: untouched
    assert torch.allclose(warped[..., :, :4], image[..., :, :4], atol=1e-5)
    assert torch.allclose(warped[..., :4, :], image[..., :4, :], atol=1e-5)


def _skin_square(size: int, g: torch.Generator):
    """A render of plain skin ``(1, 3, size, size)`` (slight noise), its colour and a mask 8 px inside."""
    skin = torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1)
    face = (skin + 0.005 * torch.randn(1, 3, size, size, generator=g)).clamp(0, 1)
    mask = torch.zeros(1, 1, size, size)
    mask[..., 8 : size - 8, 8 : size - 8] = 1
    return face, skin, mask


def test_the_blend_mixes_the_face_with_old_skin_but_not_with_old_eyes():
    g = torch.Generator().manual_seed(0)
    H = W = 64
    face, skin, mask = _skin_square(H, g)
    old = (skin * 0.95 + 0.005 * torch.randn(1, 3, H, W, generator=g)).clamp(0, 1)  # old skin, a bit darker
    eye = torch.zeros(1, 1, H, W, dtype=torch.bool)
    eye[..., 20:26, 40:52] = True
    old = torch.where(eye, torch.tensor([0.15, 0.12, 0.1]).view(1, 3, 1, 1), old)
    hair = torch.zeros_like(eye)
    hair[..., 2:6, 2:6] = True  # the same dark colour outside the face stays: it is the surroundings
    old = torch.where(hair, torch.tensor([0.15, 0.12, 0.1]).view(1, 3, 1, 1), old)
    under = _under_layer(face, old, mask)
    assert torch.equal(under[..., 2:6, 2:6], old[..., 2:6, 2:6])  # outside the mask: untouched
    assert torch.allclose(under[eye.expand(1, 3, H, W)], face[eye.expand(1, 3, H, W)])  # the old eye: replaced
    skin_px = (mask > 0.5) & ~eye
    assert torch.allclose(under[skin_px.expand(1, 3, H, W)], old[skin_px.expand(1, 3, H, W)])  # old skin: kept


def test_random_face_texture_is_deterministic_and_has_features(narrow_model):
    a = random_face_texture(128, torch.Generator().manual_seed(3))
    b = random_face_texture(128, torch.Generator().manual_seed(3))
    c = random_face_texture(128, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 128, 128) and float(a.min()) >= 0 and float(a.max()) <= 1
    uv = narrow_model.uv[narrow_model.landmarks]

    def at(k):
        u, v = uv[k]
        return a[:, int((1 - v) * 128), int(u * 128)]

    skin = at(28)  # the nose bridge
    brow = a[:, int((1 - uv[19, 1] - 0.01) * 128), int(uv[19, 0] * 128)]
    assert float(brow.mean()) < float(skin.mean()) - 0.15  # dark brows
    lip = at(51)
    assert float(lip[1] / lip[0]) < float(skin[1] / skin[0]) - 0.03  # lips redder (less green) than skin
    assert float(lip.mean()) < float(skin.mean())


@pytest.mark.cuda
def test_frontalize_on_cuda_matches_cpu():
    scene = synthetic_face(25, 128, 64, torch.Generator().manual_seed(6))
    small = FrontalizeConfig(texture=TextureConfig(size=64))
    cpu = frontalize(scene.image, landmarks=scene.landmarks, config=small)
    gpu = frontalize(scene.image.cuda(), landmarks=scene.landmarks.cuda(), config=small)
    assert gpu.image.device.type == "cuda" and gpu.texture.device.type == "cuda"
    # different rasteriser backends and float reductions: compare loosely
    assert float((gpu.image.cpu() - cpu.image).abs().mean()) < 0.01


def test_frontalize_fits_dense_points_when_the_detector_gives_them(narrow_model):
    from morphface.fitting import load_dense_correspondence
    from morphface.fitting.detectors import FaceDetection, LandmarkDetector

    scene = synthetic_face(35, 128, 64, torch.Generator().manual_seed(6))
    ids = load_dense_correspondence().vertex_ids(narrow_model)
    dense = scene.truth.camera.project(scene.truth.vertices(narrow_model)[:, ids.clamp(min=0)])[0][0]
    # the 68 points are deliberately off: only a fit of the dense points can recover the pose
    wrong68 = scene.landmarks[0] + torch.tensor([6.0, 0.0])

    class Fake(LandmarkDetector):
        name = "mediapipe"

        def _detect_rgb(self, rgb):
            box = torch.cat([dense.amin(0), dense.amax(0)])
            return [FaceDetection(box, wrong68, 1.0, dense=torch.cat([dense, torch.zeros(10, 2)]), backend="fake")]

    small = FrontalizeConfig(texture=TextureConfig(size=64))
    result = frontalize(scene.image, detector=Fake(), config=small)
    assert abs(float(result.fit.euler_degrees[0, 1]) - 35) < 2
    assert result.fit.landmarks.shape == (1, 468, 2) and float(result.fit.residuals[0]) < 0.5
    sparse = frontalize(scene.image, detector=Fake(), config=replace(small, fit=FitConfig(dense=False)))
    assert sparse.fit.landmarks.shape == (1, 68, 2)
    with pytest.raises(ValueError, match="dense=True needs"):
        frontalize(scene.image, landmarks=scene.landmarks, config=replace(small, fit=FitConfig(dense=True)))


def test_frontalize_uses_a_person_mask_and_ignores_one_that_misses_the_face():
    import numpy as np

    from morphface.fitting import PersonSegmenter

    class Columns(PersonSegmenter):
        """Person in the columns ``[lo, hi)`` of the image."""

        def __init__(self, lo: float, hi: float):
            self.lo, self.hi = lo, hi

        def _segment_rgb(self, rgb):
            out = np.zeros(rgb.shape[:2], np.float32)
            W = rgb.shape[1]
            out[:, int(self.lo * W) : int(self.hi * W)] = 1.0
            return out

    scene = synthetic_face(30, 128, 64, torch.Generator().manual_seed(6))
    def run(segmenter):
        config = FrontalizeConfig(fit=FitConfig(segmenter=segmenter), texture=TextureConfig(size=64))
        return frontalize(scene.image, landmarks=scene.landmarks, config=config, return_intermediates=True)

    plain = run(None)
    everyone = run(Columns(0.0, 1.0))
    assert torch.equal(plain.intermediates["visibility"], everyone.intermediates["visibility"])
    # a mask over the middle three quarters drops the texels that fall outside it
    middle = run(Columns(0.45, 1.0))
    assert float(middle.intermediates["visibility"].sum()) < float(plain.intermediates["visibility"].sum())
    # a mask that misses the face (a segmentation that failed) is ignored
    missed = run(Columns(0.95, 1.0))
    assert torch.equal(plain.intermediates["visibility"], missed.intermediates["visibility"])
    with pytest.raises(ValueError, match="segmenter must be"):
        FitConfig(segmenter=42)


def test_hair_over_the_forehead_stays_in_front_of_the_frontal_face():
    H = W = 96
    render, _, mask = _skin_square(H, torch.Generator().manual_seed(0))
    region = torch.zeros(1, 1, H, W)
    region[..., :40, :] = 1  # above the brows, trusted by the flow
    photo = render.clone()
    hair = torch.tensor([0.15, 0.1, 0.08]).view(1, 3, 1, 1)
    pale = torch.tensor([0.98, 0.98, 0.95]).view(1, 3, 1, 1)
    photo[..., 10:30, 10:40] = hair  # a fringe over the forehead
    photo[..., 60:80, 10:40] = hair  # the same colour below the brows (a beard, an eye): not hair over the forehead
    photo[..., 10:30, 60:80] = pale  # a highlight: not darker than the skin
    photo[..., 34:35, 60:61] = hair  # a speck
    occ = _hair_over_forehead(render, photo, mask, region, width=80.0)
    assert occ.shape == (1, 1, H, W)
    assert float(occ[..., 12:28, 12:38].min()) > 0.9
    assert float(occ[..., 60:80, 10:40].max()) == 0.0
    assert float(occ[..., 10:30, 60:80].max()) < 1e-3
    assert float(occ[..., 32:37, 58:63].max()) < 1e-3
    assert float(occ[..., 50:, :].max()) == 0.0 and float(occ[..., :, 90:].max()) == 0.0


def _chin_and_neck_scene(neck_cols: tuple[int, int], size: int = 120):
    """A face disc (centre (40, 45), radius 25) with its 17 jaw points along the lower half, blue
    background and a skin-coloured neck in ``neck_cols`` from row 60 down."""
    H = W = size
    theta = math.pi - math.pi * torch.arange(17) / 16
    jaw = torch.stack([40 + 25 * torch.cos(theta), 45 + 25 * torch.sin(theta)], -1)[None]
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    face = (((xx - 40) ** 2 + (yy - 45) ** 2) < 25**2).float()[None, None]
    person = face.clone()
    person[..., 60:, neck_cols[0] : neck_cols[1]] = 1.0
    blue, skin, neck = (torch.tensor(c).view(1, 3, 1, 1) for c in ([0.2, 0.3, 0.8], [0.9, 0.7, 0.6], [0.7, 0.5, 0.4]))
    image = torch.lerp(torch.lerp(blue.expand(1, 3, H, W), neck.expand(1, 3, H, W), person), skin, face)
    return image, person, face, jaw


def test_the_gap_between_a_frontal_chin_and_the_neck_beside_it_is_painted_with_the_neck():
    from morphface.uv.frontalize import _neck_under_chin

    image, person, face, jaw = _chin_and_neck_scene((50, 90))
    out, alpha = _neck_under_chin(image, image, person, face, jaw, width=50.0)
    assert out.shape == image.shape and alpha.shape == face.shape
    neck = torch.tensor([0.7, 0.5, 0.4])
    # right under the chin, left of the neck: background before, the neck's colour now
    assert float((image[0, :, 76, 47] - neck).abs().max()) > 0.3
    assert float((out[0, :, 76, 47] - neck).abs().max()) < 0.02
    assert float(alpha[0, 0, 76, 47]) > 0.99
    # the face, the neck itself and background away from the gap are untouched
    for y, x in [(45, 40), (100, 70), (100, 10), (30, 100), (90, 20)]:
        assert torch.equal(out[0, :, y, x], image[0, :, y, x]), (y, x)
    # a neck 16% of the face width beside the chin: painted part way (the fill fades in from 10% to 20%)
    image, person, face, jaw = _chin_and_neck_scene((33, 63))
    _, alpha = _neck_under_chin(image, image, person, face, jaw, width=50.0)
    t = (8 / 50 - 0.1) / 0.1
    assert float(alpha.max()) == pytest.approx(t * t * (3 - 2 * t), abs=1e-4)
    # a neck right under the chin (a frontal photo) and no neck near the chin change nothing
    for cols in [(25, 55), (110, 120)]:
        image, person, face, jaw = _chin_and_neck_scene(cols)
        out, alpha = _neck_under_chin(image, image, person, face, jaw, width=50.0)
        assert torch.equal(out, image) and float(alpha.max()) == 0.0, cols


def test_a_turned_head_with_hair_behind_it_comes_back_with_an_evener_outline():
    import numpy as np

    from morphface.fitting import PersonSegmenter

    scene = synthetic_face(40, 160, 64, torch.Generator().manual_seed(3))
    head = (scene.image - scene.background).abs().amax(1, keepdim=True) > 1e-4
    H, W = head.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    cols = torch.nonzero(head[0, 0].any(0)).flatten()
    rows = torch.nonzero(head[0, 0].any(1)).flatten()
    cy = float(rows.float().mean())
    # The back of the head: dark hair beyond the head's left side (the nose points right), a fifth of its width.
    x0, wd = float(cols[0]), float(cols[-1] - cols[0])
    hair = ((((xx - x0 - 0.25 * wd) / (0.45 * wd)) ** 2 + ((yy - cy + 0.15 * wd) / (0.6 * wd)) ** 2) < 1)[None, None]
    hair &= ~head & (yy < cy + 0.2 * wd)
    dark = torch.tensor([0.08, 0.06, 0.05]).view(1, 3, 1, 1)
    image = torch.where(hair, dark, scene.image)

    class Given(PersonSegmenter):
        def _segment_rgb(self, rgb):
            return (head | hair)[0, 0].float().numpy().astype(np.float32)

    configs = [
        FrontalizeConfig(
            fit=FitConfig(segmenter=Given()),
            texture=TextureConfig(size=64),
            composite=CompositeConfig(even_outline=flag),
        )
        for flag in (False, True)
    ]
    results = [frontalize(image, landmarks=scene.landmarks, config=config) for config in configs]

    def dark_beyond_face(r):
        """Dark pixels left and right of the frontal face's box, over the rows of the face's upper half."""
        m = r.face_mask[0, 0] > 0.5
        fc = torch.nonzero(m.any(0)).flatten()
        fr = torch.nonzero(m.any(1)).flatten()
        band = slice(int(fr[0]), int((fr[0] + fr[-1]) // 2))
        is_dark = (r.image[0, :, band] < 0.15).all(0)
        return int(is_dark[:, : int(fc[0])].sum()), int(is_dark[:, int(fc[-1]) + 1 :].sum())

    (l0, r0), (l1, r1) = (dark_beyond_face(r) for r in results)
    assert l0 > 3 * max(r0, 1)  # without: the hair stays on the back of the head's side
    assert l1 < 0.6 * l0 and r1 == r0 == 0  # with: narrower; a bare side cannot be given hair
    # the face itself is the same (its middle; the blend mixes the surroundings' low frequencies near its edge)
    m = results[0].face_mask[0, 0] > 0.5
    fc, fr = torch.nonzero(m.any(0)).flatten(), torch.nonzero(m.any(1)).flatten()
    qy, qx = int(fr[-1] - fr[0]) // 4, int(fc[-1] - fc[0]) // 4
    middle = (..., slice(int(fr[0]) + qy, int(fr[-1]) - qy), slice(int(fc[0]) + qx, int(fc[-1]) - qx))
    assert float((results[0].image[middle] - results[1].image[middle]).abs().max()) < 1e-3


def test_frontalize_config_checks_its_fields_by_name():
    for make, match in [
        (lambda: TextureConfig(mirror="mirror"), "TextureConfig.mirror"),
        (lambda: TextureConfig(size=0), "TextureConfig.size"),
        (lambda: TextureConfig(keep_photo=(15.0, 8.0)), "TextureConfig.keep_photo"),
        (lambda: ViewConfig(placement="centre"), "ViewConfig.placement"),
        (lambda: ViewConfig(output_size=(0, 64)), "ViewConfig.output_size"),
        (lambda: FitConfig(photometric_steps=-1), "FitConfig.photometric_steps"),
        (lambda: FitConfig(max_fit_error=0.0), "FitConfig.max_fit_error"),
        (lambda: CompositeConfig(outline_margin=-0.1), "CompositeConfig.outline_margin"),
        (lambda: FrontalizeConfig(texture=ViewConfig()), "FrontalizeConfig.texture must be a TextureConfig"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()
    assert TextureConfig(keep_photo=[5, 10]).keep_photo == (5.0, 10.0)
    assert ViewConfig(output_size=[96, 64]).size_for(48, 32) == (96, 64)
    assert ViewConfig(output_size=96).size_for(48, 32) == (96, 64)


def test_a_frontalizer_stage_can_be_swapped():
    from morphface.uv import Frontalizer

    scene = synthetic_face(30, 128, 64, torch.Generator().manual_seed(4))
    config = FrontalizeConfig(fit=FitConfig(segmenter=None), texture=TextureConfig(size=64))
    stages = Frontalizer(config=config)
    assert torch.equal(
        stages(scene.image, landmarks=scene.landmarks).image,
        frontalize(scene.image, landmarks=scene.landmarks, config=config).image,
    )

    class Grey(Frontalizer):
        def complete(self, texels, face):
            done = super().complete(texels, face)
            return done._replace(texture=torch.full_like(done.texture, 0.5))

    grey = Grey(config=replace(config, texture=replace(config.texture, relight=False)))(
        scene.image, landmarks=scene.landmarks, return_intermediates=True
    )
    assert float((grey.texture - 0.5).abs().max()) == 0.0
    inside = grey.intermediates["render_mask"] > 0.5
    assert float((grey.intermediates["render"] - 0.5).abs().amax(1, keepdim=True)[inside].max()) < 1e-4
