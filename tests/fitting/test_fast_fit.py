"""The fused CPU solver (``morphface.fitting._fast_fit``) against the torch solver it replaces.

The fused solver computes in float64, so it is compared with the torch solver run on float64 inputs
(the same algorithm, the same precision): results agree to float32 output rounding. The torch solver
on float32 inputs is itself only float32-accurate: on most faces it agrees with float64 to ~1e-5 deg,
but where a Levenberg-Marquardt accept/reject test is decided by rounding its path changes (seen up
to ~0.06 deg and ~0.6 mm on 468-point fits), so only its typical agreement is checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morphface import load_default_model
from morphface.fitting import fit_dense_landmarks, fit_landmarks, sample_fit
from morphface.fitting._fast_fit import fast_path_problem, landmark_rows
from morphface.fitting.dense import load_dense_correspondence


@pytest.fixture(scope="module")
def narrow():
    return load_default_model("narrow")


def _points68(model, B, seed):
    gt = sample_fit(model, B, generator=torch.Generator().manual_seed(seed))
    pts, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    return gt, pts + torch.randn(pts.shape, generator=torch.Generator().manual_seed(seed + 1))


def _points468(model, B, seed):
    """MediaPipe-like points: the table's vertices projected, with a relative depth column in pixels."""
    ids = load_dense_correspondence().vertex_ids(model).clamp(min=0)
    gt = sample_fit(model, B, generator=torch.Generator().manual_seed(seed))
    v = gt.vertices(model)[:, ids]
    pix, _ = gt.camera.project(v)
    depth = -(v @ gt.rotation.transpose(1, 2) + gt.translation[:, None])[..., 2]
    depth_px = (depth - depth.mean(1, keepdim=True) + 7.0) * gt.focal[:, None] / depth.mean(1, keepdim=True)
    pts = torch.cat([pix, depth_px[..., None]], -1)
    return gt, pts + torch.randn(pts.shape, generator=torch.Generator().manual_seed(seed + 1))


def _max_differences(model, a, b):
    """Largest angle (deg), vertex (mm), translation and landmark (px) differences of two fits."""
    ang = float((a.angles.double() - b.angles.double()).abs().max()) * 180 / math.pi
    vert = float((a.vertices(model).double() - b.vertices(model).double()).norm(dim=-1).max())
    trans = float((a.translation.double() - b.translation.double()).abs().max())
    lms = float((a.landmarks.double() - b.landmarks.double()).abs().max())
    return ang, vert, trans, lms


def _assert_same_fit(model, fused, ref):
    ang, vert, trans, lms = _max_differences(model, fused, ref)
    assert ang < 1e-4 and vert < 1e-3 and trans < 1e-2 and lms < 1e-3, (ang, vert, trans, lms)
    torch.testing.assert_close(fused.residuals.double(), ref.residuals.double(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.focal.double(), ref.focal.double(), atol=1e-3, rtol=1e-6)
    np.testing.assert_allclose(fused.history, ref.history, rtol=1e-5)


@pytest.mark.parametrize("camera", ["perspective", "weak_perspective"])
def test_68_points_match_the_torch_solver(narrow, camera):
    gt, pts = _points68(narrow, 4, 0)
    fused = fit_landmarks(narrow, pts, gt.image_size, camera=camera, backend="numba")
    assert fused.angles.dtype == torch.float32 and fused.camera_kind == camera
    ref = fit_landmarks(narrow, pts.double(), gt.image_size, camera=camera, backend="torch")
    _assert_same_fit(narrow, fused, ref)
    # "auto" picks the fused solver for this call
    auto = fit_landmarks(narrow, pts, gt.image_size, camera=camera)
    assert torch.equal(auto.angles, fused.angles) and torch.equal(auto.exp_coeffs, fused.exp_coeffs)
    # the float32 torch solver agrees to float32 accuracy on typical faces
    ref32 = fit_landmarks(narrow, pts, gt.image_size, camera=camera, backend="torch")
    d = ((fused.angles - ref32.angles).abs().amax(1) * 180 / math.pi)
    assert float(d.median()) < 1e-3


def test_468_points_with_depth_match_the_torch_solver(narrow):
    gt, pts = _points468(narrow, 3, 5)
    fused = fit_dense_landmarks(narrow, pts, gt.image_size, backend="numba")
    ref = fit_dense_landmarks(narrow, pts.double(), gt.image_size, backend="torch")
    _assert_same_fit(narrow, fused, ref)
    # without the depth column (2D points)
    _assert_same_fit(narrow, fit_dense_landmarks(narrow, pts[..., :2], gt.image_size, backend="numba"),
                     fit_dense_landmarks(narrow, pts[..., :2].double(), gt.image_size, backend="torch"))


def _perturbed_angles(gt, seed: int) -> torch.Tensor:
    """``(B, 3)`` radians: the true angles off by ~3 deg per image, so the fixed rotation is not the one
    a free fit would find."""
    return gt.angles + 0.05 * torch.randn(gt.angles.shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("camera", ["perspective", "weak_perspective"])
def test_fixed_angles_68_points_match_the_torch_solver(narrow, camera):
    gt, pts = _points68(narrow, 3, 23)
    angles = _perturbed_angles(gt, 24)
    fused = fit_landmarks(narrow, pts, gt.image_size, camera=camera, angles=angles, backend="numba")
    ref = fit_landmarks(narrow, pts.double(), gt.image_size, camera=camera, angles=angles.double(), backend="torch")
    _assert_same_fit(narrow, fused, ref)
    # the rotation is kept: the output angles are the given ones
    torch.testing.assert_close(fused.angles.double(), angles.double(), atol=1e-6, rtol=0)
    # "auto" takes the fused solver; each face alone gives its batch row (the same arithmetic)
    auto = fit_landmarks(narrow, pts, gt.image_size, camera=camera, angles=angles)
    assert torch.equal(auto.exp_coeffs, fused.exp_coeffs) and torch.equal(auto.translation, fused.translation)
    for i in range(3):
        one = fit_landmarks(narrow, pts[i:i + 1], gt.image_size, camera=camera, angles=angles[i:i + 1])
        assert torch.equal(one.id_coeffs, fused.id_coeffs[i:i + 1]) and torch.equal(one.angles, fused.angles[i:i + 1])
    # one row of angles for the whole batch
    shared = fit_landmarks(narrow, pts, gt.image_size, camera=camera, angles=angles[:1], backend="numba")
    _assert_same_fit(narrow, shared, fit_landmarks(narrow, pts.double(), gt.image_size, camera=camera,
                                                   angles=angles[:1].double(), backend="torch"))


def test_fixed_angles_468_points_through_rigid_pose(narrow):
    gt, pts = _points468(narrow, 3, 29)
    pts2 = pts[..., :2]
    # the second fit of pose="rigid" keeps the first fit's angles: the same angles into both solvers
    rigid = fit_dense_landmarks(narrow, pts2, gt.image_size, pose="rigid")
    first = fit_dense_landmarks(narrow, pts2, gt.image_size, n_id=1, n_exp=0)
    assert torch.equal(rigid.angles, first.angles)
    ref = fit_dense_landmarks(narrow, pts2.double(), gt.image_size, angles=first.angles.double(), backend="torch")
    _assert_same_fit(narrow, rigid, ref)
    # end to end against torch in float64 (the first fits differ by float32 output rounding)
    rigid_ref = fit_dense_landmarks(narrow, pts2.double(), gt.image_size, pose="rigid", backend="torch")
    ang, vert, _, _ = _max_differences(narrow, rigid, rigid_ref)
    assert ang < 1e-4 and vert < 1e-2, (ang, vert)
    # per-image angles, batch and single, through the angles keyword (one call, fused)
    angles = _perturbed_angles(gt, 30)
    batch = fit_dense_landmarks(narrow, pts2, gt.image_size, angles=angles, backend="numba")
    _assert_same_fit(narrow, batch, fit_dense_landmarks(narrow, pts2.double(), gt.image_size, angles=angles.double(),
                                                        backend="torch"))
    for i in range(3):
        one = fit_dense_landmarks(narrow, pts2[i:i + 1], gt.image_size, angles=angles[i:i + 1])
        assert torch.equal(one.exp_coeffs, batch.exp_coeffs[i:i + 1])
        assert torch.equal(one.translation, batch.translation[i:i + 1])


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # the torch solver's history
def test_fixed_angles_that_need_torch_stay_on_torch(narrow):
    gt, pts = _points68(narrow, 2, 31)
    angles = gt.angles.clone().requires_grad_(True)
    assert "autograd" in fast_path_problem(pts, narrow, None, None, "perspective", None, False, angles)
    r = fit_landmarks(narrow, pts, gt.image_size, angles=angles)
    assert r.translation.requires_grad
    with pytest.raises(ValueError, match="angles must have shape"):
        fit_landmarks(narrow, pts, gt.image_size, angles=torch.zeros(3, 3))


def test_single_faces_equal_their_batch_rows(narrow):
    gt, pts = _points468(narrow, 3, 7)
    batch = fit_dense_landmarks(narrow, pts, gt.image_size)
    for i in range(3):
        one = fit_dense_landmarks(narrow, pts[i:i + 1], gt.image_size)
        # the same float64 arithmetic face by face: identical
        assert torch.equal(one.angles, batch.angles[i:i + 1]) and torch.equal(one.id_coeffs, batch.id_coeffs[i:i + 1])


def test_options_reach_the_fused_solver(narrow):
    gt, pts = _points68(narrow, 2, 11)
    kw = dict(n_id=40, n_exp=20, landmark_sigma=1.5, exp_reg=0.5, iterations=3, pose_steps=1, gn_steps=5,
              weights=torch.linspace(0.5, 1.5, 68), focal=torch.tensor([900.0, 1100.0]))
    fused = fit_landmarks(narrow, pts, gt.image_size, backend="numba", **kw)
    ref = fit_landmarks(narrow, pts.double(), gt.image_size, backend="torch", **kw)
    assert fused.id_coeffs.shape == (2, 40) and fused.exp_coeffs.shape == (2, 20)
    _assert_same_fit(narrow, fused, ref)
    # blendshape weights stay in the box
    assert float(fused.exp_coeffs.min()) >= 0.0 and float(fused.exp_coeffs.max()) <= 1.0
    # missing landmarks (-1 vertex ids) are ignored as in torch
    ids = narrow.landmarks.clone()
    ids[:5] = -1
    _assert_same_fit(narrow, fit_landmarks(narrow, pts, gt.image_size, vertex_ids=ids, backend="numba"),
                     fit_landmarks(narrow, pts.double(), gt.image_size, vertex_ids=ids, backend="torch"))


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # the torch solver's history
def test_calls_the_fused_solver_cannot_take_stay_on_torch(narrow):
    gt, pts = _points68(narrow, 2, 13)
    # float64 landmarks: the torch solver in float64, bit for bit
    r64 = fit_landmarks(narrow, pts.double(), gt.image_size)
    assert r64.angles.dtype == torch.float64
    assert torch.equal(r64.angles, fit_landmarks(narrow, pts.double(), gt.image_size, backend="torch").angles)
    # autograd: a tensor that requires grad keeps the fit in torch (its outputs stay in the graph)
    r = fit_landmarks(narrow, pts.clone().requires_grad_(True), gt.image_size)
    assert r.angles.requires_grad
    # per-image weights, a fixed identity, a shared identity
    for kw in (dict(weights=torch.rand(2, 68) + 0.5), dict(id_coeffs=torch.zeros(1, narrow.n_id)),
               dict(shared_identity=True)):
        auto = fit_landmarks(narrow, pts, gt.image_size, **kw)
        ref = fit_landmarks(narrow, pts, gt.image_size, backend="torch", **kw)
        assert torch.equal(auto.angles, ref.angles), kw
        with pytest.raises(ValueError, match="backend='numba' cannot"):
            fit_landmarks(narrow, pts, gt.image_size, backend="numba", **kw)
    with pytest.raises(ValueError, match="backend must be"):
        fit_landmarks(narrow, pts, gt.image_size, backend="jax")
    why = fast_path_problem(pts, narrow, None, None, "perspective", None, False, None)
    assert why is None
    assert "float64" in fast_path_problem(pts.double(), narrow, None, None, "perspective", None, False, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_stay_on_torch(narrow):
    gt, pts = _points68(narrow, 1, 17)
    assert "CPU" in fast_path_problem(pts.cuda(), narrow, None, None, "perspective", None, False, None)


def test_landmark_rows_are_cached_until_the_model_changes(narrow):
    import copy

    model = copy.deepcopy(narrow)
    ids = model.landmarks
    w = np.ones(68)
    a = landmark_rows(model, ids, w, 10, 5)
    assert landmark_rows(model, ids, w, 10, 5) is a
    assert landmark_rows(model, ids, 2 * w, 10, 5) is not a  # other weights: other Gram pieces
    # the pieces are what they claim: C_xy + C_yx and the weighted mean
    B = a.basis
    Cxy = np.einsum("l,lk,lj->kj", w, B[0], B[1])
    np.testing.assert_allclose(a.gram[3], Cxy + Cxy.T, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(a.wmean, B.mean(1), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        model.mean.add_(1.0)  # in place: the rows must follow
    b = landmark_rows(model, ids, w, 10, 5)
    assert b is not a
    np.testing.assert_allclose(b.mean, a.mean + 1.0)


def test_kernel_pieces_match_their_torch_counterparts():
    from morphface.camera import axis_angle_to_matrix
    from morphface.fitting._fast_fit import _cho_solve, _nearest_rotation, _rot_from_axis_angle
    from morphface.fitting.landmark_fit import _nearest_rotation as nearest_torch

    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 30))
    b = rng.normal(size=(30, 2))
    spd = A @ A.T + np.eye(30)
    np.testing.assert_allclose(_cho_solve(spd, b), np.linalg.solve(spd, b), rtol=1e-9, atol=1e-12)
    sym = A + A.T  # indefinite: the LU fallback
    np.testing.assert_allclose(_cho_solve(sym, b), np.linalg.solve(sym, b), rtol=1e-8, atol=1e-10)
    for M in (rng.normal(size=(3, 3)), np.diag([1.0, 1.0, -1.0]) @ rng.normal(size=(3, 3))):
        np.testing.assert_allclose(_nearest_rotation(M), nearest_torch(torch.from_numpy(M)[None])[0].numpy(),
                                   atol=1e-12)
    for v in (np.array([0.3, -0.2, 0.5]), np.array([2e-4, -3e-4, 1e-4])):  # Rodrigues and series branches
        np.testing.assert_allclose(_rot_from_axis_angle(v), axis_angle_to_matrix(torch.from_numpy(v)).numpy(),
                                   atol=1e-15)


def test_pose_only_and_tiny_shape_spaces(narrow):
    gt, pts = _points68(narrow, 2, 19)
    for n_id, n_exp in ((1, 0), (0, 3)):
        fused = fit_landmarks(narrow, pts, gt.image_size, n_id=n_id, n_exp=n_exp, backend="numba")
        assert fused.id_coeffs.shape == (2, n_id) and fused.exp_coeffs.shape == (2, n_exp)
        ref = fit_landmarks(narrow, pts.double(), gt.image_size, n_id=n_id, n_exp=n_exp, backend="torch")
        _assert_same_fit(narrow, fused, ref)
    # no shape modes at all (the mean face posed; the torch solver cannot reshape its empty basis)
    pose_only = fit_landmarks(narrow, pts, gt.image_size, n_id=0, n_exp=0, backend="numba")
    assert pose_only.id_coeffs.shape == (2, 0) and float(pose_only.residuals.max()) < 10.0
