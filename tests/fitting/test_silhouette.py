"""Silhouette refinement with a person mask: contour extraction and a synthetic profile with wrong nose landmarks."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from morphface import load_default_model
from morphface.fitting import fit_landmarks, occluding_contour, refine_with_person_mask
from morphface.render import rasterize, vertex_normals
from morphface.uv import fill_holes
from morphface.uv.synthetic import synthetic_face


@pytest.fixture(scope="module")
def profile():
    face = fill_holes(load_default_model("narrow"))
    full = load_default_model("full")
    scene = synthetic_face(60.0, 384, 256, torch.Generator().manual_seed(3), landmark_noise=0.0)
    cam = scene.truth.camera
    mask = rasterize(cam.to_ndc(scene.truth.vertices(full)), full.triangles, (384, 384)).mask
    return face, scene, mask[:, None].float()  # the true head's coverage: a perfect person mask


def test_occluding_contour_is_where_the_surface_turns_away(profile):
    face, scene, _ = profile
    (c,) = occluding_contour(face, scene.truth)
    assert c.vertex_ids.numel() > 50
    verts = scene.truth.vertices(face)
    n = vertex_normals(verts, face.triangles)[0, c.vertex_ids]
    view = scene.truth.camera.view_directions(verts)[0, c.vertex_ids]
    assert float((n * view).sum(-1).abs().median()) < 0.3  # seen edge-on
    # at 60 degrees the nose is on the contour and its outward normal points the way the nose does
    nose = face.mean[c.vertex_ids, 2] > face.mean[:, 2].max() - 15
    assert bool(nose.any()) and float(c.normals[nose, 0].median()) > 0.5
    assert torch.allclose(c.normals.norm(dim=-1), torch.ones(c.normals.shape[0]), atol=1e-4)


def _wrong_profile_landmarks(face, truth, degrees=10.0):
    """True landmarks, except nose and mouth (27-35, 48-67) where a face turned ``degrees`` further has
    them: in front of the real profile, on the background, as a detector does with an unusual nose."""
    wrong = replace(truth, angles=truth.angles + torch.tensor([[0.0, math.radians(degrees), 0.0]]))
    pix = truth.camera.project(truth.vertices(face)[:, face.landmarks])[0]
    pix_wrong = wrong.camera.project(wrong.vertices(face)[:, face.landmarks])[0]
    bad = torch.zeros(68, dtype=torch.bool)
    bad[27:36] = True
    bad[48:68] = True
    return torch.where(bad[None, :, None], pix_wrong, pix), bad


def test_a_profile_fitted_onto_the_background_is_pulled_back_inside_the_person(profile):
    face, scene, mask = profile
    truth = scene.truth
    lms, bad = _wrong_profile_landmarks(face, truth)
    fit = fit_landmarks(face, lms, (384, 384))
    refined = refine_with_person_mask(face, lms, fit, mask, tolerance=0.0)  # a perfect mask
    true_pix = truth.camera.project(truth.vertices(face))[0]

    def error(f):  # pixel error of the nose and mouth landmark vertices
        pix = f.camera.project(f.vertices(face))[0]
        return float((pix - true_pix).norm(dim=-1)[0, face.landmarks[bad]].mean())

    from scipy.ndimage import distance_transform_edt

    dist = torch.from_numpy(distance_transform_edt(mask[0, 0].numpy() < 0.5))

    def outside(f):  # contour vertices more than 2 px out on the background
        (c,) = occluding_contour(face, f)
        xi, yi = c.pixels[:, 0].long().clamp(0, 383), c.pixels[:, 1].long().clamp(0, 383)
        return int((dist[yi, xi] > 2).sum())

    assert outside(scene.truth) == 0
    assert outside(fit) > 20 and outside(refined) < 0.2 * outside(fit)
    assert error(refined) < 0.7 * error(fit), (error(fit), error(refined))
    assert refined.landmarks.shape == (1, 68, 2) and torch.isfinite(refined.residuals).all()


def test_a_fit_inside_the_mask_is_left_alone_and_bad_masks_raise(profile):
    face, scene, mask = profile
    lms = scene.landmarks
    fit = fit_landmarks(face, lms, (384, 384))
    everywhere = torch.ones_like(mask)
    same = refine_with_person_mask(face, lms, fit, everywhere)
    assert torch.equal(same.angles, fit.angles) and torch.equal(same.id_coeffs, fit.id_coeffs)
    with pytest.raises(ValueError, match="foreground must have shape"):
        refine_with_person_mask(face, lms, fit, mask[0])


def test_an_unsure_or_slightly_short_mask_moves_nothing(profile):
    face, scene, mask = profile
    lms, _ = _wrong_profile_landmarks(face, scene.truth)
    fit = fit_landmarks(face, lms, (384, 384))
    # the same background, but the segmentation only half sure of it (0.4): no target
    unsure = torch.where(mask > 0.5, mask, torch.full_like(mask, 0.4))
    same = refine_with_person_mask(face, lms, fit, unsure)
    assert torch.equal(same.angles, fit.angles)
    # a tolerance larger than the error: no target either
    same = refine_with_person_mask(face, lms, fit, mask, tolerance=0.5)
    assert torch.equal(same.angles, fit.angles)
