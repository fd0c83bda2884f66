import copy

import pytest
import torch

from morphface import load_default_model
from morphface.errors import FitError
from morphface.fitting.accuracy import aligned_vertex_error
from morphface.fitting.landmark_fit import fit_landmarks
from morphface.fitting.photometric import fit_photometric, mesh_edges, render_fit
from morphface.fitting.synthetic import sample_fit
from morphface.render import ambient_sh


@pytest.fixture(scope="module")
def narrow():
    return load_default_model("narrow")


def _rendered_scene(model, B, size, seed):
    g = torch.Generator().manual_seed(seed)
    gt = sample_fit(model, B, image_size=(size, size), max_yaw=40, generator=g)
    phase = torch.rand(B, 1, 1, generator=g) * 6
    alb = torch.tensor([0.7, 0.5, 0.4]) + 0.08 * torch.sin(model.mean[None, :, :1] / 30 + phase)
    gt.vertex_albedo = alb.clamp(0, 1)
    sh = ambient_sh(B).reshape(B, 3, 9)
    sh[:, :, 1:4] += torch.randn(B, 1, 3, generator=g) * 0.2
    gt.sh = sh.reshape(B, 27)
    img, mask = render_fit(model, gt)
    img = img + (1 - mask) * torch.rand(B, 3, 1, 1, generator=g) * 0.5
    verts = gt.vertices(model)
    clean, _ = gt.camera.project(verts[:, model.landmarks])
    noisy = clean + torch.randn(clean.shape, generator=g)
    return gt, img, verts, noisy


@pytest.mark.slow
def test_photometric_improves_on_landmark_fit(narrow):
    """Rendered faces with known parameters: the photometric refinement lowers the vertex error."""
    gt, img, verts, noisy = _rendered_scene(narrow, 3, 160, 0)
    init = fit_landmarks(narrow, noisy, gt.image_size)
    res = fit_photometric(narrow, img, init=init, steps=60)
    e0 = aligned_vertex_error(init.vertices(narrow), verts)
    e1 = aligned_vertex_error(res.vertices(narrow), verts)
    assert e1.mean() < e0.mean()
    assert res.history[-1] < res.history[0]
    assert res.vertex_albedo.shape == (3, narrow.n_vertices, 3) and res.sh.shape == (3, 27)
    # the rendered fit reproduces the image in the face region better than the initial fit's render
    out, mask = render_fit(narrow, res)
    assert ((out - img).abs() * mask).sum() / mask.sum() < 0.05
    overlay = res.render_overlay(narrow, img, mode="albedo")
    assert overlay.shape == img.shape and 0 <= overlay.min() and overlay.max() <= 1


def test_photometric_from_landmarks_is_finite_and_stops_early(narrow, device):
    """Runs on ``--device``: the fit, its renders and its overlays follow the device of the inputs."""
    gt, img, verts, noisy = _rendered_scene(narrow, 1, 96, 1)
    model = narrow if device.type == "cpu" else copy.deepcopy(narrow).to(device)
    img, noisy = img.to(device), noisy.to(device)
    res = fit_photometric(model, img, landmarks=noisy, steps=200, tol=1e-2, patience=3)
    assert len(res.history) < 200 and res.id_coeffs.device.type == device.type
    res.check_finite()
    for mode in ("shaded", "ncc"):
        assert res.render_overlay(model, img, mode=mode).shape == img.shape


def test_photometric_bad_inputs(narrow):
    gt, img, verts, noisy = _rendered_scene(narrow, 1, 64, 2)
    with pytest.raises(ValueError, match="init .* or landmarks"):
        fit_photometric(narrow, img)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        fit_photometric(narrow, img[:, :2], landmarks=noisy)
    bad = img.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_photometric(narrow, bad, landmarks=noisy)
    weak = fit_landmarks(narrow, noisy, (64, 64), camera="weak_perspective")
    with pytest.raises(ValueError, match="perspective"):
        fit_photometric(narrow, img, init=weak)
    init = fit_landmarks(narrow, noisy, (64, 64))
    init.translation = init.translation * float("nan")
    with pytest.raises(FitError):
        fit_photometric(narrow, img, init=init, steps=5)


def test_mesh_edges():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    torch.testing.assert_close(mesh_edges(faces), torch.tensor([[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]))


def test_outside_distance_matches_brute_force():
    from morphface.fitting.photometric import outside_distance

    g = torch.Generator().manual_seed(0)
    person = (torch.rand(2, 1, 12, 15, generator=g) > 0.8).float()
    person[1] = 0.0  # no person: no term
    d = outside_distance(person)
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(15.0), indexing="ij")
    on = person[0, 0] > 0.5
    pts = torch.stack([ys[on], xs[on]], dim=1)
    brute = torch.cdist(torch.stack([ys, xs], dim=-1).reshape(-1, 2), pts).amin(1).reshape(12, 15)
    assert torch.allclose(d[0, 0], brute, atol=1e-5)
    assert float(d[1].abs().max()) == 0.0


def test_silhouette_term_moves_the_pose_back_onto_the_person(narrow):
    """Biased landmarks: the whole face shifted 12 px right. The person mask (the true face's render)
    says where the face is; with it the refinement moves the face back, without it the face stays."""
    gt, img, verts, _ = _rendered_scene(narrow, 1, 112, 2)
    _, person = render_fit(narrow, gt)
    clean, _ = gt.camera.project(verts[:, narrow.landmarks])
    biased = clean + torch.tensor([12.0, 0.0])
    init = fit_landmarks(narrow, biased, gt.image_size)
    true_centre = gt.camera.project(verts)[0].mean(1)

    def centre_error(fit):
        return float((fit.camera.project(fit.vertices(narrow))[0].mean(1) - true_centre).norm())

    plain, rep0 = fit_photometric(narrow, img, init=init, steps=60, fit_identity=False, return_report=True)
    fit, rep = fit_photometric(narrow, img, init=init, steps=60, fit_identity=False, person_mask=person,
                               w_silhouette=2e-2, return_report=True)
    assert centre_error(init) > 10.0
    assert centre_error(plain) > 9.0  # landmarks and a free albedo hold the biased pose
    assert centre_error(fit) < 0.6 * centre_error(init)
    assert float(rep.outside_after[0]) < 0.5 * float(rep.outside_before[0])
    assert float(rep.translation_change_mm[0]) > 1.0 and rep.steps <= 60
    assert bool(torch.isnan(rep0.outside_before).all())  # no mask, no silhouette numbers
    assert float(rep.landmark_rmse_after[0]) > float(rep.landmark_rmse_before[0])  # it left the biased points


def test_photometric_report_on_a_converged_fit(narrow):
    """Starting at the truth, the refinement stops early and reports (almost) no change."""
    gt, img, verts, _ = _rendered_scene(narrow, 1, 96, 3)
    clean, _ = gt.camera.project(verts[:, narrow.landmarks])
    init = fit_landmarks(narrow, clean, gt.image_size)
    _, rep = fit_photometric(narrow, img, init=init, steps=150, fit_identity=False, return_report=True)
    assert rep.converged and rep.steps < 150
    assert float(rep.rotation_change_deg[0]) < 1.0
    with pytest.raises(ValueError, match="person_mask"):
        fit_photometric(narrow, img, init=init, steps=1, person_mask=torch.ones(1, 1, 5, 5))


def test_rotation_prior_keeps_a_trusted_start_rotation(narrow):
    """Landmarks from a head turned 8 deg further than the start: without the prior the refinement turns
    toward them, with a stiff prior it keeps the start's rotation."""
    gt, img, verts, _ = _rendered_scene(narrow, 1, 96, 4)
    turned = gt.detach()
    turned.angles = gt.angles + torch.tensor([[0.0, 0.14, 0.0]])
    lms, _ = turned.camera.project(turned.vertices(narrow)[:, narrow.landmarks])
    init = fit_landmarks(narrow, gt.camera.project(verts[:, narrow.landmarks])[0], gt.image_size)
    kw = dict(init=init, landmarks=lms, steps=25, fit_identity=False, return_report=True, tol=0.0)
    _, free = fit_photometric(narrow, img, **kw)
    _, held = fit_photometric(narrow, img, w_rotation=100.0, **kw)
    assert float(free.rotation_change_deg[0]) > 1.0
    assert float(held.rotation_change_deg[0]) < 0.3 * float(free.rotation_change_deg[0])
