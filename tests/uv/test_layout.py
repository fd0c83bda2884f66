"""UV layouts: the model's own UVs, generated spherical unwraps (seams, no overlaps), the overlap check."""

from __future__ import annotations

import torch
import trimesh

from morphface.morphable.model import MorphableModel
from morphface.render import face_normals, rasterize
from morphface.uv import generate_uv_layout, model_uv_layout, uv_overlap, with_uv_layout
from morphface.uv.layout import UVLayout, unwrap_centre, uv_signed_areas

from .conftest import grid_model


def _without_uv(model: MorphableModel) -> MorphableModel:
    return MorphableModel(mean=model.mean, triangles=model.triangles, landmarks=model.landmarks, name="no-uv")


def _frontal_visible(model: MorphableModel, size: int = 512) -> torch.Tensor:
    """Triangles a frontal orthographic camera sees on the mean shape."""
    v = model.mean[None]
    span = v.abs().amax() * 1.05
    ndc = torch.stack([v[..., 0] / span, -v[..., 1] / span, -v[..., 2]], -1)
    frags = rasterize(ndc, model.triangles, (size, size), perspective=False)
    seen = torch.zeros(model.n_faces, dtype=torch.bool)
    seen[frags.pix_to_face[frags.mask]] = True
    return seen


def test_own_uvs_are_used(full_model):
    layout = model_uv_layout(full_model)
    assert not layout.generated
    assert layout.uv is full_model.uv and torch.equal(layout.uv_faces, full_model.triangles)
    assert uv_overlap(layout, size=256).texels == 0  # the ICT layout is one-to-one


def test_generated_layout_of_default_model_without_uvs(full_model):
    bare = _without_uv(full_model)
    layout = model_uv_layout(bare)
    assert layout.generated
    assert model_uv_layout(bare) is layout  # cached
    again = generate_uv_layout(bare.mean, bare.triangles)
    assert torch.equal(again.uv, layout.uv) and torch.equal(again.uv_faces, layout.uv_faces)  # deterministic
    assert layout.uv.shape == (bare.n_vertices, 2) and torch.equal(layout.uv_faces, bare.triangles)  # no seam
    assert float(layout.uv.min()) >= 0.0 and float(layout.uv.max()) <= 1.0
    # u grows toward the subject's left (+x), v upward, like the ICT layout
    lm = full_model.landmarks
    assert layout.uv[lm[45], 0] > layout.uv[lm[36], 0] and layout.uv[lm[27], 1] > layout.uv[lm[8], 1]
    front = _frontal_visible(bare)
    check = uv_overlap(layout, front, size=512)
    assert check.covered > 100_000 and check.texels == 0, check
    assert bool((uv_signed_areas(layout)[front] > 0).all())


def test_generated_layout_of_a_closed_head_has_a_seam_behind():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32) * torch.tensor([75.0, 100.0, 95.0])
    faces = torch.tensor(sphere.faces, dtype=torch.int64)
    layout = generate_uv_layout(verts, faces)
    V = verts.shape[0]
    assert layout.uv.shape[0] > V  # seam vertices have a second entry
    extra = layout.uv_faces >= V
    seam_vertices = torch.unique(faces[extra])
    centre = unwrap_centre(verts)
    # the seam runs behind the head (z below the centre), not across the face; the only other
    # second entries are at the poles (on the vertical axis through the centre)
    d = verts[seam_vertices] - centre
    off_axis = torch.hypot(d[:, 0], d[:, 2]) > 0.25 * d.norm(dim=1)
    assert int(off_axis.sum()) > 10
    assert bool((verts[seam_vertices[off_axis], 2] < centre[2]).all())
    check = uv_overlap(layout, size=512)
    assert check.texels == 0, check
    assert int((uv_signed_areas(layout) < 0).sum()) == 0
    # away from the poles every triangle keeps its corners' UVs together: none spans the texture
    span = layout.corner_uv()[..., 0].amax(1) - layout.corner_uv()[..., 0].amin(1)
    dc = verts[faces].mean(1) - centre
    away = torch.hypot(dc[:, 0], dc[:, 2]) > 0.25 * dc.norm(dim=1)
    assert float(span[away].max()) < 0.15  # a triangle straddling the seam would span ~1


def test_overlap_check_finds_overlaps_and_ignores_shared_edges():
    quad = grid_model(3)
    layout = model_uv_layout(quad)
    assert uv_overlap(layout, size=64).texels == 0  # neighbours share edges only
    uv = torch.tensor([[0.1, 0.1], [0.6, 0.1], [0.1, 0.6], [0.3, 0.3], [0.9, 0.3], [0.3, 0.9]])
    folded = UVLayout(uv=uv, uv_faces=torch.tensor([[0, 1, 2], [3, 4, 5]]))
    result = uv_overlap(folded, size=64)
    assert result.texels > 0 and set(result.faces.tolist()) == {0, 1}


def test_with_uv_layout_attaches_a_generated_layout(narrow_model):
    bare = _without_uv(narrow_model)
    model = with_uv_layout(bare)
    assert model.has_uv and model.uv.shape == (bare.n_vertices, 2)
    n = face_normals(bare.mean[None], bare.triangles)[0]
    assert n.shape[0] == model.triangles.shape[0]
