import copy
import math

import pytest
import torch

from morphface import MorphableModel, load_default_model
from morphface.camera import PerspectiveCamera, WeakPerspectiveCamera, euler_to_matrix
from morphface.errors import FitError
from morphface.fitting.accuracy import aligned_vertex_error, rotation_error_degrees, similarity_align
from morphface.fitting.landmark_fit import fit_landmarks
from morphface.fitting.result import FitResult
from morphface.fitting.synthetic import sample_fit


@pytest.fixture(scope="module")
def narrow():
    return load_default_model("narrow")


def _scene(model, B, seed, **kw):
    gt = sample_fit(model, B, generator=torch.Generator().manual_seed(seed), **kw)
    verts = gt.vertices(model)
    clean, _ = gt.camera.project(verts[:, model.landmarks])
    return gt, verts, clean


def test_noise_free_synthetic_fit_is_exact(narrow, device):
    """20 identity modes, no expression, no noise (136 equations, 26 unknowns: well-posed): exact recovery.
    Runs on ``--device`` (the fit follows the device of the landmarks and the model)."""
    gt, verts, clean = _scene(narrow, 8, 1, max_yaw=40)
    gt.exp_coeffs.zero_()
    gt.id_coeffs[:, 20:] = 0
    verts = gt.vertices(narrow)
    clean, _ = gt.camera.project(verts[:, narrow.landmarks])
    model = narrow if device.type == "cpu" else copy.deepcopy(narrow).to(device)
    r = fit_landmarks(model, clean.to(device), gt.image_size, n_id=20, n_exp=0, landmark_sigma=0.01)
    assert r.id_coeffs.device.type == device.type
    r = r.to("cpu")
    torch.testing.assert_close(r.id_coeffs, gt.id_coeffs[:, :20], atol=0.05, rtol=0)
    assert r.residuals.max() < 0.05
    assert rotation_error_degrees(r.angles, gt.angles).max() < 0.5


def test_synthetic_accuracy_targets(narrow):
    """Reduced version of bench/fit_accuracy.py: yaw +-60, pitch +-30, 1 px landmark noise, 256^2."""
    gt, verts, clean = _scene(narrow, 48, 2)
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    r = fit_landmarks(narrow, noisy, gt.image_size)
    rot = rotation_error_degrees(r.angles, gt.angles)
    assert rot.median() <= 1.5
    rmse_clean = ((r.landmarks - clean) ** 2).sum(-1).mean(1).sqrt()
    assert rmse_clean.median() <= 1.0 + 0.1  # 48 samples: a little slack for sampling noise around 0.9
    e_fit = aligned_vertex_error(r.vertices(narrow), verts)
    e_mean = aligned_vertex_error(narrow.mean.expand_as(verts), verts)
    assert (e_fit / e_mean).median() <= 0.6
    assert r.history[-1] <= r.history[0]


def test_weak_perspective_recovers_orthographic_scene(narrow):
    B = 6
    g = torch.Generator().manual_seed(4)
    ida = torch.randn(B, 20, generator=g)  # well-posed: 20 identity modes, no expression
    angles = (torch.rand(B, 3, generator=g) - 0.5) * torch.tensor([0.6, 1.2, 0.3])
    cam = WeakPerspectiveCamera(image_size=(256, 256), scale=torch.full((B,), 0.9), R=euler_to_matrix(angles),
                                translation=torch.tensor([[120.0, 130.0]]).expand(B, 2))
    pix, _ = cam.project(narrow(ida)[:, narrow.landmarks])
    r = fit_landmarks(narrow, pix, (256, 256), camera="weak_perspective", n_id=20, n_exp=0, landmark_sigma=0.01)
    assert r.camera_kind == "weak_perspective"
    assert r.residuals.max() < 0.05
    assert rotation_error_degrees(r.angles, angles).max() < 0.2
    torch.testing.assert_close(r.focal, torch.full((B,), 0.9), atol=0.005, rtol=0)
    torch.testing.assert_close(r.id_coeffs, ida, atol=0.05, rtol=0)
    # the result's camera reproduces its landmarks
    proj, _ = r.camera.project(r.vertices(narrow)[:, narrow.landmarks])
    torch.testing.assert_close(proj, r.landmarks, atol=1e-3, rtol=0)


def test_blendshape_weights_stay_in_unit_box(narrow):
    gt, verts, clean = _scene(narrow, 8, 5)
    r = fit_landmarks(narrow, clean + 3 * torch.randn_like(clean), gt.image_size, exp_reg=0.01)
    assert r.exp_coeffs.min() >= 0 and r.exp_coeffs.max() <= 1


def test_result_camera_reproduces_landmarks(narrow):
    gt, verts, clean = _scene(narrow, 4, 6)
    r = fit_landmarks(narrow, clean, gt.image_size)
    proj, _ = r.camera.project(r.vertices(narrow)[:, narrow.landmarks])
    torch.testing.assert_close(proj, r.landmarks, atol=1e-2, rtol=0)
    assert isinstance(r.camera, PerspectiveCamera)
    assert r.euler_degrees.shape == (4, 3)
    torch.testing.assert_close(r.euler_degrees, r.angles * 180 / math.pi)


def test_float64_and_weights_and_missing_landmarks(narrow):
    gt, verts, clean = _scene(narrow, 2, 7)
    w = torch.ones(68)
    w[:17] = 0.0  # ignore the jaw
    r = fit_landmarks(narrow, clean.double(), gt.image_size, weights=w)
    assert r.id_coeffs.dtype == torch.float64
    # a model whose crop lost some landmark vertices: those are ignored
    keep = torch.ones(narrow.n_vertices, dtype=torch.bool)
    keep[narrow.landmarks[:3]] = False
    cropped = narrow.subset(keep)
    assert (cropped.landmarks == -1).sum() == 3
    r2 = fit_landmarks(cropped, clean, gt.image_size)
    assert torch.isfinite(r2.residuals).all()


@pytest.mark.parametrize("bad, match", [
    (torch.full((1, 68, 2), float("nan")), "NaN"),
    (torch.zeros(1, 10, 2), "expected 68 landmarks"),
    (torch.zeros(68), r"\(B, L, 2\)"),
])
def test_bad_landmarks(narrow, bad, match):
    with pytest.raises(ValueError, match=match):
        fit_landmarks(narrow, bad, (256, 256))


def test_model_without_landmarks_needs_vertex_ids():
    m = MorphableModel(mean=torch.randn(10, 3), triangles=[[0, 1, 2]])
    with pytest.raises(ValueError, match="vertex_ids"):
        fit_landmarks(m, torch.zeros(1, 10, 2), (64, 64))


def test_fit_result_save_load_index(tmp_path, narrow):
    gt, verts, clean = _scene(narrow, 3, 8)
    r = fit_landmarks(narrow, clean, gt.image_size)
    r.save(tmp_path / "fit.safetensors")
    r2 = FitResult.load(tmp_path / "fit.safetensors")
    torch.testing.assert_close(r2.id_coeffs, r.id_coeffs)
    assert r2.image_size == r.image_size and r2.history == pytest.approx(r.history)
    one = r[1]
    assert one.batch_size == 1 and one.image_size == r.image_size
    both = FitResult.cat([r[0], r[2]])
    torch.testing.assert_close(both.angles, r.angles[[0, 2]])
    with pytest.raises(FitError):
        FitResult.load(tmp_path / "missing.safetensors")
    bad = FitResult(id_coeffs=torch.tensor([[float("nan")]]), exp_coeffs=torch.zeros(1, 0), angles=torch.zeros(1, 3),
                    translation=torch.zeros(1, 3), focal=torch.ones(1), image_size=(8, 8))
    with pytest.raises(FitError, match="id_coeffs"):
        bad.check_finite()


def test_similarity_align_recovers_transform():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    R = euler_to_matrix(torch.tensor([[0.1, 0.5, -0.2], [1.0, 0.2, 0.3]], dtype=torch.float64))
    b = 1.7 * a @ R.transpose(1, 2) + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(similarity_align(a, b), b)
    assert aligned_vertex_error(a, b).max() < 1e-9


def test_depth_column_and_fixed_angles():
    from morphface import load_default_model
    from morphface.fitting import rotation_error_degrees, sample_fit
    from morphface.fitting.landmark_fit import fit_landmarks

    narrow = load_default_model("narrow")
    gt = sample_fit(narrow, 6, max_pitch=40.0, generator=torch.Generator().manual_seed(4))
    ids = torch.arange(0, 6000, 17)
    v = gt.vertices(narrow)[:, ids]
    pix, _ = gt.camera.project(v)
    depth_mm = -(v @ gt.rotation.transpose(1, 2) + gt.translation[:, None])[..., 2]
    # a relative depth in pixels (any offset), as MediaPipe gives it
    depth_px = (depth_mm - depth_mm.mean(1, keepdim=True) + 7.0) * gt.focal[:, None] / depth_mm.mean(1, keepdim=True)
    pts = torch.cat([pix, depth_px[..., None]], -1)
    with_depth = fit_landmarks(narrow, pts, gt.image_size, vertex_ids=ids, depth_weight=2.0)
    assert float(rotation_error_degrees(with_depth.angles, gt.angles).max()) < 1.0
    # depths that contradict the points (a flattened face) pull the fit away: the column is used
    flat = torch.cat([pix, 0.2 * depth_px[..., None]], -1)
    off = fit_landmarks(narrow, flat, gt.image_size, vertex_ids=ids, depth_weight=5.0)
    assert float(rotation_error_degrees(off.angles, gt.angles).mean()) > 1.0
    # a given rotation is kept exactly; the rest still fits the points
    wrong = gt.angles + torch.tensor([0.05, -0.05, 0.02])
    fixed = fit_landmarks(narrow, pix, gt.image_size, vertex_ids=ids, angles=wrong)
    assert torch.allclose(fixed.angles, wrong, atol=1e-5)
    free = fit_landmarks(narrow, pix, gt.image_size, vertex_ids=ids)
    assert bool((fixed.residuals > free.residuals).all())
