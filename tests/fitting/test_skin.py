"""The robust skin-colour model: closed forms for luma/chroma, centre, spread and z-scores."""

from __future__ import annotations

import torch

from morphface.fitting.skin import fit_colour_model, luma_chroma


def test_luma_chroma_closed_form():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    want = torch.tensor([[0.299, -0.299, 0.701], [0.5, 0.0, 0.0]])
    assert torch.allclose(luma_chroma(rgb), want, atol=1e-6)


def test_colour_model_is_robust_and_scores_in_spreads():
    g = torch.Generator().manual_seed(0)
    skin = torch.tensor([0.8, 0.6, 0.5]) + 0.02 * torch.randn(1, 1000, 3, generator=g)
    hair = torch.tensor([0.2, 0.15, 0.1]).expand(1, 200, 3)  # 17 % outliers among the references
    colours = torch.cat([skin, hair], dim=1)
    model = fit_colour_model(colours, torch.ones(1, 1200, dtype=torch.bool))
    assert torch.allclose(model.centre[0, 0], luma_chroma(torch.tensor([0.8, 0.6, 0.5])), atol=0.01)
    assert int(model.count) == 1200
    z = model.zscore(colours)[0]
    assert float(z[:1000].median()) < 1.5 and float(z[1000:].min()) > 10
    # the spread never falls below its floors: an even face does not make every shade an outlier
    flat = fit_colour_model(torch.full((1, 50, 3), 0.5), torch.ones(1, 50, dtype=torch.bool))
    assert torch.allclose(flat.spread[0, 0], torch.tensor([0.03, 0.012, 0.012]))
    # no reference colours: NaN centre, so no z-score compares true
    none = fit_colour_model(colours, torch.zeros(1, 1200, dtype=torch.bool))
    assert int(none.count) == 0 and not bool((none.zscore(colours) > 0).any())
