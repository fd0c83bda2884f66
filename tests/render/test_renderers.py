"""Renderers on top of the primitives: NCC, normals, depth, regions, textures, compositing."""

from __future__ import annotations

import pytest
import torch
from scipy import ndimage

from morphface.camera import PerspectiveCamera, WeakPerspectiveCamera
from morphface.render import (
    composite,
    face_normals,
    face_region_labels,
    ncc_code,
    render_depth,
    render_ncc,
    render_normals,
    render_region_mask,
    render_textured,
    vertex_normals,
)

SIZE = (128, 128)


@pytest.fixture(scope="module")
def frontal_camera():
    # 900 mm away, the ~290 mm tall model fills most of a 128 px image.
    return PerspectiveCamera(image_size=SIZE, focal=torch.tensor([360.0]), t=torch.tensor([[0.0, 20.0, -900.0]]))


def _icosphere():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    return torch.tensor(s.vertices, dtype=torch.float64)[None], torch.tensor(s.faces, dtype=torch.int64)


def test_ncc_code_is_min_max_normalised_mean_shape_and_cached(default_model):
    code = ncc_code(default_model)
    assert code.shape == (default_model.n_vertices, 3)
    torch.testing.assert_close(code.amin(0), torch.zeros(3))
    torch.testing.assert_close(code.amax(0), torch.ones(3))
    assert ncc_code(default_model) is code


@pytest.mark.parametrize("mode", ["triangle", "vertex"])
def test_frontal_ncc_is_mirror_symmetric_and_one_centred_blob(default_model, frontal_camera, backend, mode):
    out = render_ncc(default_model, default_model.mean[None], frontal_camera, mode=mode, backend=backend)
    img, mask = out.image[0], out.mask[0, 0] > 0.5
    assert out.image.shape == (1, 3, *SIZE) and out.mask.shape == (1, 1, *SIZE)
    assert float(img.min()) >= 0 and float(img.max()) <= 1 and bool((img[:, ~mask] == 0).all())
    # Mirror symmetry: flipping the image left-right mirrors x, i.e. maps the x code to 1 - x.
    flipped, fmask = img.flip(-1), mask.flip(-1)
    iou = float((mask & fmask).sum()) / float((mask | fmask).sum())
    assert iou > 0.985
    both = mask & fmask
    mirrored = torch.stack([1 - flipped[0], flipped[1], flipped[2]])
    diff = (img - mirrored).abs()[:, both]
    assert float(diff.mean()) < 0.01
    assert float(diff.quantile(0.95)) < (0.03 if mode == "triangle" else 0.02)
    # A single connected blob (eye holes and the mouth slit are inside it), centred horizontally.
    labels, n = ndimage.label(mask.numpy())
    assert n == 1
    cy, cx = ndimage.center_of_mass(mask.numpy())
    assert abs(cx - (SIZE[1] - 1) / 2) < 1.0
    assert abs(cy - (SIZE[0] - 1) / 2) < 0.12 * SIZE[0]
    assert 0.15 < float(mask.float().mean()) < 0.7


def test_ncc_triangle_mode_is_constant_per_triangle(default_model, frontal_camera):
    out = render_ncc(default_model, default_model.mean[None], frontal_camera, mode="triangle")
    from morphface.render.ncc import ncc_face_code

    fc = ncc_face_code(default_model)
    from morphface.render._camera import rasterize_with_camera

    fr = rasterize_with_camera(default_model.mean[None], default_model.triangles, frontal_camera)
    expect = fc[fr.pix_to_face[0].clamp(min=0)].permute(2, 0, 1) * fr.mask[0]
    torch.testing.assert_close(out.image[0], expect)


def test_face_and_vertex_normals_of_a_sphere_point_outward():
    verts, faces = _icosphere()
    vn = vertex_normals(verts, faces)
    torch.testing.assert_close(vn.norm(dim=-1), torch.ones(1, verts.shape[1], dtype=torch.float64))
    assert float((vn * verts).sum(-1).min()) > 0.995  # ~ radial, outward
    fn = face_normals(verts, faces)
    centroids = verts[:, faces].mean(2)
    assert float((fn * centroids).sum(-1).min()) > 0.98
    # Area weighting: a vertex shared by a large and a tiny triangle follows the large one.
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0.01], [0.01, 0, 0.01]]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 4, 3]])
    n0 = vertex_normals(v, f)[0, 0]
    assert float(n0[2]) > 0.99


def test_normal_map_of_a_frontal_plane_and_sphere(backend):
    cam = PerspectiveCamera(image_size=(32, 32), focal=torch.tensor([64.0], dtype=torch.float64),
                            t=torch.tensor([[0.0, 0.0, -10.0]], dtype=torch.float64))
    verts, faces = _icosphere()
    out = render_normals(verts, faces, cam, encode=False, backend=backend)
    m = out.mask[0, 0] > 0
    n = out.image[0][:, m]
    torch.testing.assert_close(n.norm(dim=0), torch.ones(n.shape[1], dtype=torch.float64))
    assert float(n[2].min()) > 0.0  # visible sphere normals face the camera (+z toward the viewer)
    # Camera-frame x is image right and y is image up.
    right, top = out.image[0, :, 16, 20], out.image[0, :, 11, 16]  # sphere radius ~6.5 px
    assert float(right[0]) > 0.5 and float(top[1]) > 0.5
    enc = render_normals(verts, faces, cam, backend=backend)
    torch.testing.assert_close(enc.image[0][:, m], (n + 1) / 2)


def test_depth_map_of_a_plane(backend):
    cam = WeakPerspectiveCamera(image_size=(16, 16), scale=torch.tensor([4.0]))
    verts = torch.tensor([[[-3.0, -3.0, -7.0], [3.0, -3.0, -7.0], [0.0, 3.0, -7.0]]])
    out = render_depth(verts, torch.tensor([[0, 1, 2]]), cam, backend=backend)
    m = out.mask[0, 0] > 0
    assert bool(m.any()) and torch.allclose(out.image[0, 0][m], torch.tensor(7.0))
    norm = render_depth(verts, torch.tensor([[0, 1, 2]]), cam, normalize=True, backend=backend)
    assert bool((norm.image[0, 0][m] == 1).all()) and bool((norm.image[0, 0][~m] == 0).all())


def test_face_regions_of_the_default_model(default_model, frontal_camera, backend):
    labels = face_region_labels(default_model)
    assert set(labels) == {"eyes", "left_eye", "right_eye", "mouth", "skin"}
    V = default_model.n_vertices
    for mask in labels.values():
        assert mask.shape == (V,) and mask.dtype == torch.bool
    assert int(labels["left_eye"].sum()) == int(labels["right_eye"].sum()) > 50
    assert int(labels["mouth"].sum()) > 200
    assert torch.equal(labels["skin"], ~(labels["eyes"] | labels["mouth"]))
    mean = default_model.mean
    assert float(mean[labels["left_eye"], 0].mean()) > 20 > -20 > float(mean[labels["right_eye"], 0].mean())
    assert float(mean[labels["mouth"], 1].mean()) < float(mean[labels["eyes"], 1].mean()) - 40

    verts = mean[None]
    face = render_ncc(default_model, verts, frontal_camera, backend=backend).mask
    masks = {k: render_region_mask(verts, default_model.triangles, frontal_camera, labels[k], backend=backend)
             for k in ("eyes", "mouth", "skin")}
    for k, m in masks.items():
        assert m.shape == (1, 1, *SIZE) and int(m.sum()) > 20, k
        assert bool((m <= face).all())
    assert bool(((masks["eyes"] + masks["mouth"] + masks["skin"]) <= 1).all())
    rows = lambda m: float(m[0, 0].nonzero()[:, 0].float().mean())  # noqa: E731
    assert rows(masks["mouth"]) > rows(masks["eyes"]) + 10  # the mouth is below the eyes (rows grow down)


def test_textured_square_reproduces_the_texture_exactly(backend):
    """A square filling the image, UV (0,0) at its bottom-left corner: render == texture."""
    H, W = 12, 16
    cam = WeakPerspectiveCamera(image_size=(H, W), scale=torch.tensor([1.0], dtype=torch.float64),
                                translation=torch.tensor([[W / 2, H / 2]], dtype=torch.float64))
    verts = torch.tensor([[[-W / 2, -H / 2, 0.0], [W / 2, -H / 2, 0.0], [W / 2, H / 2, 0.0], [-W / 2, H / 2, 0.0]]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    tex = torch.rand(1, 3, H, W, dtype=torch.float64, requires_grad=True)
    out = render_textured(verts, faces, uv, None, tex, cam, backend=backend)
    assert bool((out.mask == 1).all())
    torch.testing.assert_close(out.image, tex)
    # Per-corner UV table (a layout with seams) gives the same, and gradients reach the texture.
    table = torch.cat([uv, uv])
    out2 = render_textured(verts, faces, table, faces + 4, tex, cam, backend=backend)
    torch.testing.assert_close(out2.image, tex)
    (g,) = torch.autograd.grad(out2.image.sum(), tex)
    torch.testing.assert_close(g, torch.ones_like(g))
    with pytest.raises(ValueError, match="uv_faces"):
        render_textured(verts, faces, table, faces[:1], tex, cam, backend=backend)


def test_composite():
    fg = torch.rand(2, 3, 4, 5)
    mask = (torch.rand(2, 1, 4, 5) > 0.5).float()
    bg = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(composite(fg, mask, bg), fg * mask + bg * (1 - mask))
    white = composite(fg * mask, mask, torch.tensor([1.0, 1.0, 1.0]))
    assert bool((white[(mask == 0).expand_as(white)] == 1).all())
    torch.testing.assert_close(composite(fg, mask.bool(), 0.5), fg * mask + 0.5 * (1 - mask))
    with pytest.raises(ValueError, match="mask"):
        composite(fg, mask[:, :, :3], bg)
    with pytest.raises(ValueError, match="colour"):
        composite(fg, mask, torch.ones(4))
