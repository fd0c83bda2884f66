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
