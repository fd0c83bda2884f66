"""Dense (MediaPipe 468-point) landmarks: the shipped table, estimating a table, fitting through one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphface import load_default_model
from morphface.errors import ModelFormatError
from morphface.fitting import (
    DenseCorrespondence,
    estimate_dense_correspondence,
    fit_dense_landmarks,
    load_dense_correspondence,
    rotation_error_degrees,
    sample_fit,
)
from morphface.fitting.dense import dense_correspondence_for


@pytest.fixture(scope="module")
def narrow():
    return load_default_model("narrow")


def test_shipped_table_fits_the_default_model(narrow):
    table = load_dense_correspondence()
    assert len(table) == 468 and bool((table.counts > 0).all())
    ids = table.vertex_ids(narrow)
    # the face region holds nearly every point (a few at the temples lie on the "full" region only)
    assert int((ids >= 0).sum()) >= 440
    assert float(table.spread.median()) < 3.0  # mm: the points are well defined across faces
    w = table.weights()
    assert w.shape == (468,) and bool(((w > 0) & (w <= 1)).all())
    assert dense_correspondence_for(narrow, 468) is table
    assert dense_correspondence_for(narrow, 68) is None


def test_fitting_projected_table_points_recovers_the_pose(narrow):
    table = load_dense_correspondence()
    truth = sample_fit(narrow, 4, max_yaw=60.0, generator=torch.Generator().manual_seed(3))
    ids = table.vertex_ids(narrow)
    pts, _ = truth.camera.project(truth.vertices(narrow)[:, ids.clamp(min=0)])
    pts = pts + 0.5 * torch.randn(pts.shape, generator=torch.Generator().manual_seed(0))
    fit = fit_dense_landmarks(narrow, pts, truth.image_size)
    err = rotation_error_degrees(fit.angles, truth.angles)
    assert float(err.max()) < 1.5, err
    assert float(fit.residuals.max()) < 1.5  # px; the noise is 0.5 px per coordinate


def test_estimate_recovers_the_vertices_that_made_the_points(narrow):
    truth = sample_fit(narrow, 3, max_yaw=5.0, max_pitch=5.0, max_roll=5.0, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([100, 2000, 3000, 4000, 5000])
    pts = truth.camera.project(truth.vertices(narrow)[:, ids])[0]
    table = estimate_dense_correspondence(narrow, truth, pts)
    assert torch.allclose(table.positions, narrow.mean[ids].float(), atol=1e-5)
    assert bool((table.counts == 3).all()) and float(table.spread.max()) < 1e-5
    assert torch.equal(table.vertex_ids(narrow), ids)
    # a list of fits gives the same table as one batch
    as_list = estimate_dense_correspondence(narrow, [truth[i:i + 1] for i in range(3)],
                                            [pts[i:i + 1] for i in range(3)])
    assert torch.allclose(as_list.positions, table.positions)
    # a point far from the face counts for nothing
    far = pts.clone()
    far[:, 0] = -1000.0
    assert int(estimate_dense_correspondence(narrow, truth, far).counts[0]) == 0
    with pytest.raises(ValueError, match="points must be"):
        estimate_dense_correspondence(narrow, truth, pts[:2])


def test_save_load_and_bad_files(tmp_path, narrow):
    table = DenseCorrespondence(narrow.mean[:10].float(), torch.linspace(0, 2, 10), torch.ones(10, dtype=torch.long),
                                narrow.name)
    table.save(tmp_path / "t.npz")
    back = load_dense_correspondence(tmp_path / "t.npz")
    assert torch.equal(back.positions, table.positions) and back.model_name == narrow.name
    with pytest.raises(ModelFormatError, match="not found"):
        load_dense_correspondence(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", positions=np.zeros((4, 2)), spread=np.zeros(4), counts=np.ones(4))
    with pytest.raises(ModelFormatError, match="expected positions"):
        load_dense_correspondence(tmp_path / "bad.npz")
    with pytest.raises(ModelFormatError, match="no dense-correspondence table"):
        fit_dense_landmarks(narrow, torch.zeros(1, 17, 2), (64, 64))


def test_fit_image_fits_dense_points_when_the_detector_gives_them(narrow):
    from morphface.fitting import fit_image
    from morphface.fitting.detectors import FaceDetection

    table = load_dense_correspondence()
    truth = sample_fit(narrow, 1, max_yaw=50.0, generator=torch.Generator().manual_seed(5))
    dense, _ = truth.camera.project(truth.vertices(narrow)[:, table.vertex_ids(narrow).clamp(min=0)])
    sparse, _ = truth.camera.project(truth.vertices(narrow)[:, narrow.landmarks])

    class Fake:
        def __init__(self, name, with_dense):
            self.name, self.with_dense = name, with_dense

        def detect(self, image):
            box = torch.cat([dense[0].amin(0), dense[0].amax(0)])
            extra = torch.zeros(10, 2)  # the iris points MediaPipe appends
            d = torch.cat([dense[0], extra]) if self.with_dense else None
            # the 68 points are 8 px off: only the dense fit finds the face where it is
            return [FaceDetection(box, sparse[0] + torch.tensor([8.0, 0.0]), 1.0, dense=d, backend="fake")]

    H, W = truth.image_size
    image = torch.zeros(3, H, W)
    fit = fit_image(narrow, image, detector=Fake("mediapipe", True))
    assert fit.landmarks.shape == (1, 468, 2) and float(fit.residuals[0]) < 1.0  # px, noise-free points
    assert float(rotation_error_degrees(fit.angles, truth.angles).max()) < 1.0
    # the photometric refinement keeps the dense points as its landmark term
    refined = fit_image(narrow, image, detector=Fake("mediapipe", True), photometric_steps=2)
    assert refined.landmarks.shape == (1, 468, 2)
    assert float((refined.landmarks - dense).norm(dim=-1).mean()) < 2.0
    off = fit_image(narrow, image, detector=Fake("mediapipe", True), dense=False)
    assert off.landmarks.shape == (1, 68, 2)
    with pytest.raises(ValueError, match="dense=True needs"):
        fit_image(narrow, image, detector=Fake("dlib", False), dense=True)
    assert fit_image(narrow, image, detector=Fake("dlib", False)).landmarks.shape == (1, 68, 2)
    with pytest.raises(ValueError, match="needs MediaPipe's dense points"):
        fit_image(narrow, image, detector=Fake("dlib", False), pose="regressed")
    rigid = fit_image(narrow, image, detector=Fake("mediapipe", True), pose="rigid")  # reaches the dense fit
    assert float(rotation_error_degrees(rigid.angles, fit.angles).max()) > 1.0  # (rigid is biased on odd faces)

    class Everyone:  # a segmenter that says every pixel is the person: the silhouette term is zero
        def segment(self, images):
            return torch.ones(images.shape[0], 1, *images.shape[-2:])

    kept = fit_image(narrow, image, detector=Fake("mediapipe", True), photometric_steps=2, segmenter=Everyone())
    assert torch.allclose(kept.angles, refined.angles, atol=1e-5)


def test_closest_surface_points_match_a_dense_sampling():
    from morphface.fitting.dense import closest_surface_points

    g = torch.Generator().manual_seed(0)
    verts = torch.rand(30, 3, generator=g, dtype=torch.float64) * 10
    tris = torch.randint(0, 30, (40, 3), generator=g)
    tris = tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])]
    q = torch.rand(50, 3, generator=g, dtype=torch.float64) * 12 - 1
    dist, tri, bary = closest_surface_points(q, verts, tris, candidates=tris.shape[0])
    # the reported point is on its triangle and at the reported distance
    near = (bary[..., None] * verts[tris[tri]]).sum(1)
    assert torch.allclose((near - q).norm(dim=-1), dist) and bool((bary >= -1e-9).all())
    # no point of a fine barycentric sampling of every triangle is nearer
    u = torch.linspace(0, 1, 41, dtype=torch.float64)
    a, b = torch.meshgrid(u, u, indexing="ij")
    keep = (a + b) <= 1
    w = torch.stack([1 - a[keep] - b[keep], a[keep], b[keep]], -1)  # (S, 3)
    samples = torch.einsum("sk,fkc->fsc", w, verts[tris]).reshape(-1, 3)
    assert bool((dist <= torch.cdist(q, samples).min(1).values + 1e-9).all())


def test_registration_recovers_a_canonical_mesh_made_from_the_model(narrow):
    from morphface.fitting.dense import CanonicalFaceMesh, register_dense_correspondence

    # a "canonical face" whose points are known model surface points: the shipped table's vertices of a
    # random identity, moved by a similarity; registration must find those vertices on the mean
    table = load_dense_correspondence()
    ids = table.vertex_ids(narrow)
    keep = ids >= 0
    ids = torch.where(keep, ids, torch.zeros_like(ids))
    ida = 0.8 * torch.randn(1, narrow.n_id, generator=torch.Generator().manual_seed(2))
    shape = narrow.identity(ida)[0].double()
    R = torch.linalg.matrix_exp(torch.tensor([[0, -0.1, 0.05], [0.1, 0, -0.08], [-0.05, 0.08, 0]],
                                             dtype=torch.float64))
    verts = 1.07 * shape[ids] @ R.T + torch.tensor([3.0, -20.0, 5.0], dtype=torch.float64)
    mesh = CanonicalFaceMesh(verts.float(), torch.zeros(0, 3, dtype=torch.long), torch.zeros(468))
    out = register_dense_correspondence(narrow, mesh, iterations=8)
    err = (out.positions.double() - narrow.mean[ids].double()).norm(dim=-1)[keep]
    assert float(err.median()) < 1.0 and float(out.spread[keep].median()) < 0.5, (err.median(), err.max())


def test_canonical_mesh_is_shipped_in_landmark_order():
    from morphface.fitting.dense import load_mediapipe_canonical

    mesh = load_mediapipe_canonical()
    v = mesh.vertices
    assert v.shape == (468, 3) and mesh.triangles.shape == (898, 3)
    # landmark 4 is the nose tip (most forward point on the midline), 152 the chin, 33/263 the eye corners
    assert abs(float(v[4, 0])) < 1e-4 and int(v[:, 2].argmax()) in (1, 4)
    assert int(v[:, 1].argmin()) == 152
    assert torch.allclose(v[33] * torch.tensor([-1.0, 1, 1]), v[263])
    assert int((mesh.procrustes_weights > 0).sum()) == 33
    with pytest.raises(ModelFormatError, match="canonical face mesh"):
        load_mediapipe_canonical("/nonexistent.npz")


def test_pbtxt_reader(tmp_path):
    from morphface.fitting.dense import read_mediapipe_geometry_pbtxt

    rng = np.random.default_rng(0)
    vb = rng.normal(size=(468, 5))
    text = "procrustes_landmark_basis { landmark_id: 4 weight: 0.07 }\ncanonical_mesh: {\n"
    text += "".join(f"  vertex_buffer: {x:.6f}\n" for x in vb.reshape(-1))
    text += "".join(f"  index_buffer: {i}\n" for i in (0, 1, 2, 2, 1, 3))
    (tmp_path / "g.pbtxt").write_text(text + "}\n")
    mesh = read_mediapipe_geometry_pbtxt(tmp_path / "g.pbtxt")
    np.testing.assert_allclose(mesh.vertices.numpy(), vb[:, :3] * 10, rtol=1e-5, atol=1e-5)
    assert mesh.triangles.tolist() == [[0, 1, 2], [2, 1, 3]]
    assert float(mesh.procrustes_weights[4]) == pytest.approx(0.07)
    (tmp_path / "bad.pbtxt").write_text(text.split("canonical_mesh")[0])
    with pytest.raises(ModelFormatError, match="468 vertex records"):
        read_mediapipe_geometry_pbtxt(tmp_path / "bad.pbtxt")
