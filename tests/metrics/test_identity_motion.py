"""CSIM with dlib embeddings on real photos; AED / APD / ARD on constructed parameters."""

import math

import pytest
import torch

from morphface.metrics import (
    FaceEmbedder,
    cosine_similarity,
    expression_distance,
    fit_frames,
    pose_distance,
    rotation_distance,
)


@pytest.fixture(scope="module")
def embedder():
    try:
        return FaceEmbedder()
    except Exception as e:  # noqa: BLE001 - dlib or its model files missing
        pytest.skip(f"dlib face embeddings unavailable: {e}")


def test_csim_is_one_for_the_same_photo_and_lower_for_other_people(embedder, testdata):
    from morphface.io import read_image

    a = read_image(testdata / "cc0_001_frontal_neutral_woman.jpg")
    b = read_image(testdata / "cc0_028_elderly_man.jpg")
    c = read_image(testdata / "cc0_006_frontal_expression_man.jpg")
    ea, eb, ec = embedder.embed(a), embedder.embed(b), embedder.embed(c)
    assert ea.shape == (128,)
    assert float(cosine_similarity(ea[None], ea[None])) == pytest.approx(1.0, abs=1e-9)
    # the same face at another resolution is still the same person
    small = torch.nn.functional.interpolate(a[None], size=(400, 400), mode="bilinear", antialias=True)[0]
    same = float(cosine_similarity(ea[None], embedder.embed(small)[None]))
    others = [float(cosine_similarity(ea[None], e[None])) for e in (eb, ec)]
    assert same > 0.99 and max(others) < same - 0.1, (same, others)
    # an explicit face box (e.g. from projected 3DMM landmarks) replaces detection
    assert embedder.embed(torch.zeros(3, 100, 100)) is None
    boxed = embedder.embed_batch(a[None], torch.tensor([[300.0, 250.0, 700.0, 700.0]]))
    assert boxed.shape == (1, 128) and bool(torch.isfinite(boxed).all())


def test_expression_and_pose_distances_on_constructed_parameters():
    exp_a = torch.zeros(2, 4)
    exp_b = torch.tensor([[0.4, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1]])
    assert expression_distance(exp_a, exp_b).tolist() == pytest.approx([0.1, 0.1])
    deg = math.pi / 180
    ang_a = torch.tensor([[0.0, 0.0, 0.0], [10 * deg, -20 * deg, 5 * deg]])
    ang_b = torch.tensor([[3 * deg, 0.0, 0.0], [10 * deg, -20 * deg, 5 * deg]])
    assert rotation_distance(ang_a, ang_b).tolist() == pytest.approx([1.0, 0.0], abs=1e-5)
    # the difference wraps: 179 deg vs -179 deg is 2 deg apart
    wrap = rotation_distance(torch.tensor([[179 * deg, 0, 0]]), torch.tensor([[-179 * deg, 0, 0]]))
    assert float(wrap) == pytest.approx(2 / 3, abs=1e-4)
    t_a = torch.tensor([[0.0, 0.0, -1000.0], [1.0, 2.0, -900.0]])
    t_b = torch.tensor([[6.0, 0.0, -1000.0], [1.0, 2.0, -900.0]])
    # mean of |[3 deg, 0, 0, 6 mm, 0, 0]| = 1.5
    assert pose_distance(ang_a, t_a, ang_b, t_b).tolist() == pytest.approx([1.5, 0.0], abs=1e-4)
    with pytest.raises(ValueError, match="equal shapes"):
        expression_distance(exp_a, exp_b[:1])


def test_fit_frames_fits_faces_and_skips_frames_without_one(testdata):
    from morphface import load_default_model
    from morphface.fitting import make_detector
    from morphface.io import read_image

    try:
        detector = make_detector("dlib")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"dlib detector unavailable: {e}")
    model = load_default_model("narrow")
    photo = read_image(testdata / "astronaut_eileen_collins.png")
    frames = torch.stack([photo, torch.zeros_like(photo)])
    fits = fit_frames(model, frames, detector)
    assert fits[1] is None and fits[0] is not None
    assert fits[0].exp_coeffs.shape == (1, 53) and float(fits[0].residuals[0]) < 5.0
    # fitting the same frame twice gives the same parameters: AED = ARD = 0
    again = fit_frames(model, frames[:1], detector)[0]
    assert float(expression_distance(fits[0].exp_coeffs, again.exp_coeffs)) == pytest.approx(0.0, abs=1e-6)
    assert float(rotation_distance(fits[0].angles, again.angles)) == pytest.approx(0.0, abs=1e-4)
