"""The ICT blendshape -> FACS AU map: table, scale, round trips on synthetic expressions, geometry."""

import pytest
import torch

from morphface.errors import InputShapeError, ModelFormatError
from morphface.fitting import sample_fit
from morphface.morphable import load_default_model
from morphface.morphable.facs import (
    FACS_AUS,
    ICT_AU_BLENDSHAPES,
    au_index,
    au_matrix,
    aus_to_expression,
    expression_to_aus,
)


@pytest.fixture(scope="module")
def model():
    return load_default_model("narrow")


def test_table_covers_the_17_openface_aus_with_disjoint_blendshapes(model):
    assert len(FACS_AUS) == 17 and set(ICT_AU_BLENDSHAPES) == set(FACS_AUS)
    shapes = [n for au in FACS_AUS for n in ICT_AU_BLENDSHAPES[au]]
    assert len(shapes) == len(set(shapes))  # each blendshape drives one AU
    M = au_matrix(model.exp_names)
    assert M.shape == (17, 53) and torch.allclose(M.sum(1), torch.full((17,), 5.0))
    names = model.exp_names
    exp = torch.zeros(1, 53)
    exp[0, names.index("mouthSmile_L")] = exp[0, names.index("mouthSmile_R")] = 1.0
    exp[0, names.index("jawOpen")] = 0.6
    exp[0, names.index("eyeBlink_L")] = 0.5  # one eye only: half the bilateral AU45
    aus = expression_to_aus(exp, names)[0]
    assert float(aus[au_index(12)]) == pytest.approx(5.0) and float(aus[au_index(26)]) == pytest.approx(3.0)
    assert float(aus[au_index(45)]) == pytest.approx(1.25) and int((aus > 0).sum()) == 3


def test_round_trip_on_synthetic_expressions(model):
    g = torch.Generator().manual_seed(0)
    exp = sample_fit(model, 64, (64, 64), generator=g).exp_coeffs  # the synthetic generator's expressions
    aus = expression_to_aus(exp, model.exp_names)
    assert aus.shape == (64, 17) and float(aus.min()) >= 0 and float(aus.max()) <= 5 and float(aus.max()) > 1
    back = aus_to_expression(aus, model.exp_names)
    assert torch.allclose(expression_to_aus(back, model.exp_names), aus, atol=1e-5)
    a = torch.rand(32, 17, generator=g) * 5
    assert torch.allclose(expression_to_aus(aus_to_expression(a, model.exp_names), model.exp_names), a, atol=1e-5)
    assert expression_to_aus(exp.double(), model.exp_names).dtype == torch.float64


def test_au12_raises_the_mouth_corners_and_au26_opens_the_jaw(model):
    lm = model.landmarks
    neutral = model(None, torch.zeros(1, 53))[0]
    smile = model(None, aus_to_expression(torch.eye(17)[au_index(12)][None] * 5, model.exp_names))[0]
    jaw = model(None, aus_to_expression(torch.eye(17)[au_index(26)][None] * 5, model.exp_names))[0]
    corners = lm[[48, 54]]
    assert bool((smile[corners, 1] - neutral[corners, 1] > 1.0).all())  # y up, millimetres
    assert float(jaw[lm[8], 1] - neutral[lm[8], 1]) < -5.0  # the chin drops


def test_models_without_the_ict_names_and_bad_shapes_raise(model):
    with pytest.raises(ModelFormatError, match="lack"):
        au_matrix([f"pc{i}" for i in range(10)])
    with pytest.raises(InputShapeError, match="17 AU"):
        aus_to_expression(torch.zeros(2, 16), model.exp_names)
    with pytest.raises(InputShapeError, match="53 expression"):
        expression_to_aus(torch.zeros(2, 52), model.exp_names)
    with pytest.raises(KeyError, match="AU3"):
        au_index(3)
