"""interpolate / sample_texture: values, conventions and gradients (float64 gradcheck, finite differences)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from morphface.render import interpolate, rasterize, sample_texture

# A tiny two-triangle mesh whose pixel centres stay well away from the edges under the small
# perturbations gradcheck makes (visibility is piecewise constant and has no gradient).
VERTS = torch.tensor([[[-0.83, -0.71, 9.0], [0.77, -0.62, 11.0], [-0.69, 0.81, 13.0], [0.74, 0.79, 10.0]]],
                     dtype=torch.float64)
FACES = torch.tensor([[0, 1, 2], [1, 3, 2]])
SIZE = (5, 6)


@pytest.mark.parametrize("perspective", [True, False])
@pytest.mark.parametrize("batch", [1, 2])
def test_interpolate_gradcheck_attrs_and_positions(fused, perspective, batch):
    attrs = torch.rand(batch, 4, 2, dtype=torch.float64, requires_grad=True)
    verts = torch.cat([VERTS, VERTS * torch.tensor([0.7, 0.8, 1.2], dtype=torch.float64)])[:batch]
    verts = verts.requires_grad_()

    def f(v, a):
        fr = rasterize(v, FACES, SIZE, perspective=perspective)
        return interpolate(a, FACES, fr), fr.depth, fr.bary

    out, _, _ = f(verts, attrs)
    assert int((out.abs().sum(-1) > 0).sum()) >= 12 * batch  # several covered pixels
    assert gradcheck(f, (verts, attrs), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("perspective", [True, False])
def test_fused_cpu_kernels_match_the_torch_path(default_model, monkeypatch, perspective):
    """Values and gradients of the fused CPU path equal the PyTorch path's (float32 and float64)."""
    import morphface.render.rasterizer as r
    from morphface.camera import PerspectiveCamera, WeakPerspectiveCamera, euler_to_matrix

    R = euler_to_matrix(torch.tensor([[0.1, 0.6, 0.0], [-0.2, -0.3, 0.1]]))
    cam = (PerspectiveCamera(image_size=(48, 40), focal=torch.tensor([150.0]), R=R)
           if perspective else WeakPerspectiveCamera(image_size=(48, 40), scale=torch.tensor([0.15]), R=R))
    faces = default_model.triangles
    for dtype in (torch.float32, torch.float64):
        ndc0 = cam.to(dtype=dtype).to_ndc(default_model.mean[None].to(dtype))
        attrs0 = torch.rand(2, default_model.n_vertices, 3, dtype=dtype)
        w = torch.rand(2, 48, 40, 3, dtype=dtype)
        results = []
        for flag in (True, False):
            monkeypatch.setattr(r, "FUSED_CPU", flag)
            ndc, attrs = ndc0.clone().requires_grad_(), attrs0.clone().requires_grad_()
            fr = rasterize(ndc, faces, (48, 40), perspective=perspective)
            out = interpolate(attrs, faces, fr)
            loss = (out * w).sum() + (fr.depth * w[..., 0]).sum() + (fr.bary * w).sum()
            results.append((fr.bary, fr.depth, out, *torch.autograd.grad(loss, (ndc, attrs))))
        for a, b in zip(*results):
            assert a.dtype == dtype
            # Relative to the tensor's scale: the fused kernels compute in float64, the PyTorch path
            # in the input dtype, whose rounding shows on sub-pixel triangles and in long sums.
            a, b = a.detach(), b.detach()
            tol = 1e-3 if dtype == torch.float32 else 1e-10  # measured: 1.4e-4 and 6e-14
            assert float((a - b).abs().max()) <= tol * float(b.abs().max())
        assert int(results[0][0].ne(0).any(-1).sum()) > 600


def test_interpolate_values_batch_and_shared_attrs(backend):
    verts = torch.cat([VERTS, VERTS * torch.tensor([0.6, 0.6, 1.0], dtype=torch.float64)])
    fr = rasterize(verts, FACES, SIZE, backend=backend)
    attrs = torch.rand(2, 4, 3, dtype=torch.float64)
    out = interpolate(attrs, FACES, fr)
    for b in range(2):
        for i, j in fr.mask[b].nonzero().tolist():
            f = int(fr.pix_to_face[b, i, j])
            expect = (fr.bary[b, i, j, :, None] * attrs[b, FACES[f]]).sum(0)
            torch.testing.assert_close(out[b, i, j], expect)
    assert bool((out[~fr.mask] == 0).all())
    shared = interpolate(attrs[:1], FACES, fr)
    torch.testing.assert_close(shared[0], out[0])
    torch.testing.assert_close(interpolate(attrs[0], FACES, fr), shared)  # (N, C) broadcasts too
    # Linear attributes (the vertices' own NDC x) are reproduced exactly at pixel centres
    # (orthographic: screen-linear barycentrics).
    fr_o = rasterize(verts, FACES, SIZE, perspective=False, backend=backend)
    x = interpolate(verts[..., :1], FACES, fr_o)[..., 0]
    cols = (2 * torch.arange(SIZE[1], dtype=torch.float64) + 1) / SIZE[1] - 1
    torch.testing.assert_close(x[fr_o.mask], cols.expand(2, *SIZE)[fr_o.mask])
    with pytest.raises(ValueError, match="batch"):
        interpolate(torch.rand(3, 4, 3), FACES, fr)


def test_moving_a_vertex_changes_the_image_as_the_gradient_predicts(backend):
    """Directional finite difference of a rendered attribute image's interior vs autograd."""
    H, W = 32, 32
    verts = torch.tensor([[[-0.9, -0.8, 8.0], [0.85, -0.7, 12.0], [0.0, 0.9, 10.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    attrs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.3, 0.2]]], dtype=torch.float64)
    direction = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.7, -0.4, 1.5]]], dtype=torch.float64)
    weights = torch.rand(1, H, W, 2, dtype=torch.float64)

    def render(v):
        fr = rasterize(v, faces, (H, W), perspective=True, backend=backend)
        return interpolate(attrs, faces, fr), fr.mask

    img, mask = render(verts)
    # Interior pixels: covered in the base and both perturbed renders (no visibility change).
    h = 1e-4
    img_p, mask_p = render(verts + h * direction)
    img_m, mask_m = render(verts - h * direction)
    interior = (mask & mask_p & mask_m)[..., None]
    assert int(interior.sum()) > 200
    v = verts.clone().requires_grad_()
    loss = (render(v)[0] * weights * interior).sum()
    (grad,) = torch.autograd.grad(loss, v)
    predicted = (grad * direction).sum()
    fd = ((img_p - img_m) / (2 * h) * weights * interior).sum()
    assert float(predicted) == pytest.approx(float(fd), rel=1e-6)
    assert abs(float(fd)) > 1e-3


def test_sample_texture_gradcheck():
    tex = torch.rand(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    # Keep away from texel centres, where bilinear interpolation has a kink.
    uv = (torch.rand(2, 4, 3, 2, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert gradcheck(lambda t, u: sample_texture(t, u), (tex, uv), eps=1e-6, atol=1e-7)


def test_sample_texture_uv_convention_v_up():
    """Texel (r, c) is read back exactly at u = (c + 0.5) / Wt, v = 1 - (r + 0.5) / Ht."""
    Ht, Wt = 4, 6
    tex = torch.arange(Ht * Wt, dtype=torch.float64).view(1, 1, Ht, Wt)
    r, c = torch.meshgrid(torch.arange(Ht, dtype=torch.float64), torch.arange(Wt, dtype=torch.float64), indexing="ij")
    uv = torch.stack([(c + 0.5) / Wt, 1 - (r + 0.5) / Ht], -1)[None]
    torch.testing.assert_close(sample_texture(tex, uv), tex)
    # The bottom-left corner region (v ~ 0) reads the last row; masked pixels are zero.
    corner = torch.tensor([[[[0.01, 0.01]]]], dtype=torch.float64)
    assert float(sample_texture(tex, corner)) == float(tex[0, 0, -1, 0])
    mask = torch.zeros(1, Ht, Wt, dtype=torch.bool)
    mask[0, 1, 2] = True
    out = sample_texture(tex, uv, mask=mask)
    assert float(out.sum()) == float(tex[0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"\(B, H, W, 2\)"):
        sample_texture(tex, uv[..., :1])


def test_interpolate_rejects_ids_outside_the_tables(fused):
    fr = rasterize(VERTS, FACES, SIZE)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        interpolate(torch.rand(1, 3, 2, dtype=torch.float64), FACES, fr)  # vertex 3 has no attribute
    with pytest.raises(ValueError, match="pix_to_face ids"):
        interpolate(torch.rand(1, 4, 2, dtype=torch.float64), FACES[:1], fr)  # fragments of 2 faces
