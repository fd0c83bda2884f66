"""First-order shading: recovered from a shaded unwrap, and relighting in frontalize under a camera-fixed light."""

from __future__ import annotations

import math

import torch

from morphface.fitting.result import FitResult
from morphface.uv import FrontalizeConfig, TextureConfig, UnwrapResult, frontalize, texel_map
from morphface.uv.shading import camera_normal_map, fit_texel_shading, texel_shading
from morphface.uv.synthetic import synthetic_face


def test_shading_coefficients_are_recovered_from_a_shaded_even_face(narrow_model):
    S = 64
    fit = FitResult(
        id_coeffs=torch.zeros(1, narrow_model.n_id), exp_coeffs=torch.zeros(1, narrow_model.n_exp),
        angles=torch.tensor([[0.0, math.radians(30.0), 0.0]]), translation=torch.tensor([[0.0, 0.0, -600.0]]),
        focal=torch.tensor([800.0]), image_size=(256, 256),
    )
    normals = camera_normal_map(fit, narrow_model, S)
    truth = torch.tensor([[0.55, -0.12, 0.08, 0.2]])
    luma = (torch.cat([torch.ones_like(normals[:, :1]), normals], 1) * truth[:, :, None, None]).sum(1, keepdim=True)
    assert float(luma[normals.norm(dim=1, keepdim=True) > 0.5].min()) > 0.1  # positive: a valid linear shading
    inside = texel_map(narrow_model, S).mask[None, None].float()
    tex = (luma * torch.tensor([1.0, 0.8, 0.7]).view(1, 3, 1, 1) / 0.8485) * inside  # luma of (1, .8, .7) = .8485
    u = UnwrapResult(tex, 0.9 * inside, inside)
    got = fit_texel_shading(u, normals, narrow_model, ridge=0.0)
    # the same shading up to scale: compare the normalised maps
    a, b = texel_shading(got, normals, inside, floor=0.0), texel_shading(truth, normals, inside, floor=0.0)
    assert float(((a - b).abs() * inside).max()) < 1e-3
    # too few usable texels: a flat, finite fallback
    none = fit_texel_shading(UnwrapResult(tex, 0 * inside, 0 * inside), normals, narrow_model)
    assert torch.isfinite(none).all() and float(none[0, 1:].abs().max()) == 0


def test_relighting_matches_the_frontal_face_under_the_same_light():
    light = torch.tensor([-0.5, 0.4, 0.77])
    scene = synthetic_face(40.0, 192, 128, torch.Generator().manual_seed(2), light=light, landmark_noise=0.0)
    from morphface import load_default_model
    from morphface.render import rasterize, render_textured
    from morphface.uv import fill_holes, frontal_fit
    from morphface.uv.synthetic import shade_texture

    full, narrow = load_default_model("full"), load_default_model("narrow")
    front = frontal_fit(scene.truth, fill_holes(narrow))
    truth = render_textured(front.vertices(full), full.triangles, full.uv, None,
                            shade_texture(scene.texture, full, front, light), front.camera).image
    region = rasterize(front.camera.to_ndc(front.vertices(narrow)), narrow.triangles, (192, 192)).mask[:, None]
    region = (-torch.nn.functional.max_pool2d(-region.float(), 5, 1, 2)) > 0.5

    def err(relight):
        config = FrontalizeConfig(texture=TextureConfig(size=128, relight=relight))
        out = frontalize(scene.image, landmarks=scene.landmarks, config=config)
        return float(((out.image - truth).abs().mean(1, keepdim=True))[region].mean())

    plain, relit = err(False), err(True)
    assert relit < 0.75 * plain, (plain, relit)


def test_camera_normals_of_a_frontal_pose_are_the_model_normals_and_skin_mask_excludes_eyes_and_mouth(narrow_model):
    from morphface.render import region_vertex_mask
    from morphface.uv import normal_map
    from morphface.uv.shading import skin_texel_mask

    fit = FitResult(
        id_coeffs=torch.zeros(1, narrow_model.n_id), exp_coeffs=torch.zeros(1, narrow_model.n_exp),
        angles=torch.zeros(1, 3), translation=torch.tensor([[0.0, 0.0, -600.0]]),
        focal=torch.tensor([800.0]), image_size=(256, 256),
    )
    n = camera_normal_map(fit, narrow_model, 32)
    assert torch.allclose(n, normal_map(narrow_model, size=32, verts=fit.vertices(narrow_model)).values, atol=1e-6)
    turned = FitResult(**{**fit.__dict__, "angles": torch.tensor([[0.0, math.radians(90.0), 0.0]])})
    n90 = camera_normal_map(turned, narrow_model, 32)
    inside = n.norm(dim=1) > 0.5
    # a 90-degree yaw maps the model's +z normal to the camera's +x
    assert torch.allclose(n90[:, 0][inside], n[:, 2][inside], atol=1e-5)
    skin = skin_texel_mask(narrow_model, 64)
    tmap = texel_map(narrow_model, 64)
    not_skin = ~region_vertex_mask(narrow_model, "skin")[tmap.vertex_ids].all(-1)
    assert float(tmap.gather(skin)[0, not_skin, 0].max()) == 0 and float(tmap.gather(skin)[0, ~not_skin, 0].min()) == 1
