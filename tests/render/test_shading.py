"""SH shading: the basis is Deep3DFaceRecon's (orthogonality, transcription), and the renderer's modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morphface.camera import PerspectiveCamera
from morphface.render import ambient_sh, render_shaded, sh_basis, sh_shading, vertex_normals


def _fibonacci_sphere(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + 5 ** 0.5) * k
    r = (1 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


def _deep3d_color(texture, norm, gamma):
    """Deep3DFaceRecon's compute_color, without its init_lit offset, written out with numpy."""
    a = [np.pi, 2 * np.pi / np.sqrt(3.0), 2 * np.pi / np.sqrt(8.0)]
    c = [1 / np.sqrt(4 * np.pi), np.sqrt(3.0) / np.sqrt(4 * np.pi), 3 * np.sqrt(5.0) / np.sqrt(12 * np.pi)]
    g = gamma.reshape(gamma.shape[0], 3, 9).transpose(0, 2, 1)  # (B, 9, 3)
    x, y, z = norm[..., :1], norm[..., 1:2], norm[..., 2:]
    Y = np.concatenate([a[0] * c[0] * np.ones_like(x), -a[1] * c[1] * y, a[1] * c[1] * z, -a[1] * c[1] * x,
                        a[2] * c[2] * x * y, -a[2] * c[2] * y * z, 0.5 * a[2] * c[2] / np.sqrt(3.0) * (3 * z ** 2 - 1),
                        -a[2] * c[2] * x * z, 0.5 * a[2] * c[2] * (x ** 2 - y ** 2)], axis=-1)
    return np.concatenate([Y @ g[..., :1], Y @ g[..., 1:2], Y @ g[..., 2:]], axis=-1) * texture


def test_sh_basis_is_orthogonal_with_band_scales():
    """Y_k / a_l are orthonormal real spherical harmonics (quadrature over the sphere)."""
    n = _fibonacci_sphere(20000)
    Y = sh_basis(n)
    gram = Y.T @ Y * (4 * math.pi / n.shape[0])
    a = torch.tensor([math.pi] + [2 * math.pi / math.sqrt(3)] * 3 + [2 * math.pi / math.sqrt(8)] * 5,
                     dtype=torch.float64)
    torch.testing.assert_close(gram, torch.diag(a * a), atol=2e-3, rtol=1e-3)


def test_sh_shading_matches_deep3dfacerecon_layout():
    B, N = 2, 50
    normals = torch.nn.functional.normalize(torch.randn(B, N, 3, dtype=torch.float64), dim=-1)
    gamma = torch.randn(B, 27, dtype=torch.float64) * 0.3
    albedo = torch.rand(B, N, 3, dtype=torch.float64)
    ref = _deep3d_color(albedo.numpy(), normals.numpy(), gamma.numpy())
    torch.testing.assert_close(sh_shading(normals, gamma, albedo), torch.from_numpy(ref))
    torch.testing.assert_close(sh_shading(normals, gamma.view(B, 3, 9), albedo), torch.from_numpy(ref))
    # Per-pixel layout (B, H, W, 3) and batch-1 coefficients broadcast.
    pix = normals.view(B, 5, 10, 3)
    torch.testing.assert_close(sh_shading(pix, gamma[:1]).view(B, N, 3)[1], sh_shading(normals, gamma[:1])[1])
    with pytest.raises(ValueError, match="27"):
        sh_shading(normals, gamma[:, :26])


def test_ambient_light_is_uniform():
    n = _fibonacci_sphere(100)[None]
    irr = sh_shading(n, ambient_sh(1, dtype=torch.float64))
    torch.testing.assert_close(irr, torch.full_like(irr, 0.8 * math.pi / math.sqrt(4 * math.pi)))


@pytest.fixture(scope="module")
def face_scene(default_model):
    cam = PerspectiveCamera(image_size=(64, 64), focal=torch.tensor([180.0]), t=torch.tensor([[0.0, 20.0, -900.0]]))
    return default_model, default_model.mean[None], cam


def test_render_shaded_vertex_and_pixel_modes(face_scene, backend):
    model, verts, cam = face_scene
    albedo = model.albedo(batch_size=1)
    sh = ambient_sh(1)
    sh[0, [2, 11, 20]] = 0.4  # light from the camera's side (+z)
    gouraud = render_shaded(verts, model.triangles, cam, sh, albedo=albedo, backend=backend)
    phong = render_shaded(verts, model.triangles, cam, sh, albedo=albedo, per_pixel=True, backend=backend)
    m = gouraud.mask[0, 0] > 0
    assert gouraud.image.shape == (1, 3, 64, 64) and bool(m.any())
    assert float(gouraud.image.min()) >= 0 and float(gouraud.image.max()) <= 1
    assert bool((gouraud.image[0][:, ~m] == 0).all())
    # Both shade the same surface with the same light: close on average, not identical.
    assert float((gouraud.image - phong.image).abs()[0][:, m].mean()) < 0.02
    # Ambient only, white albedo: every covered pixel is 0.8 * pi / sqrt(4 pi).
    flat = render_shaded(verts, model.triangles, cam, ambient_sh(1), albedo=torch.ones_like(albedo), backend=backend)
    level = 0.8 * math.pi / math.sqrt(4 * math.pi)
    torch.testing.assert_close(flat.image[0][:, m], torch.full_like(flat.image[0][:, m], level))


def test_render_shaded_gradients_reach_light_albedo_vertices_and_texture(face_scene, backend):
    model, verts, cam = face_scene
    sh = (ambient_sh(1) + 0.05 * torch.randn(1, 27)).requires_grad_()
    albedo = model.albedo(batch_size=1).clone().requires_grad_()
    v = verts.clone().requires_grad_()
    out = render_shaded(v, model.triangles, cam, sh, albedo=albedo, clamp=False, backend=backend)
    g_sh, g_alb, g_v = torch.autograd.grad(out.image.sum(), (sh, albedo, v))
    for g in (g_sh, g_alb, g_v):
        assert bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    uv, uv_faces = model.face_uvs()
    tex = torch.full((1, 3, 32, 32), 0.5, requires_grad=True)
    out = render_shaded(verts, model.triangles, cam, sh.detach(), texture=tex, uv=uv, backend=backend)
    (g_tex,) = torch.autograd.grad(out.image.sum(), tex)
    assert float(g_tex.abs().sum()) > 0
    with pytest.raises(ValueError, match="exactly one"):
        render_shaded(verts, model.triangles, cam, sh, backend=backend)


def test_vertex_normals_face_the_frontal_camera(face_scene):
    model, verts, _ = face_scene
    n = vertex_normals(verts, model.triangles)[0]
    nose = int(model.landmarks[30])
    assert float(n[nose, 2]) > 0.7  # the nose tip normal points toward +z (the camera)
