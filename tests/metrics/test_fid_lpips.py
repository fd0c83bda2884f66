"""The Frechet distance against closed forms; FID / LPIPS report unavailability instead of faking."""

import importlib.util

import numpy as np
import pytest
import torch

from morphface.errors import BackendUnavailableError, MorphfaceError
from morphface.metrics import fid_from_features, frechet_distance, inception_feature_extractor, lpips_metric


def _sqrtm_psd(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_of_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_general_gaussians():
    # closed form with the symmetric square root: Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    r = _sqrtm_psd(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * _sqrtm_psd(r @ s2 @ r))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_sampled_gaussian_features_approaches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    n, d = 20000, 4
    real = torch.randn(n, d, generator=g, dtype=torch.float64)
    fake = torch.randn(n, d, generator=g, dtype=torch.float64) * 2.0 + 1.0  # N(1, 4 I)
    expected = d * 1.0 + d * (1.0 - 2.0) ** 2  # |mu|^2 + sum (sqrt(1) - sqrt(4))^2 = 8
    assert fid_from_features(real, fake) == pytest.approx(expected, rel=0.03)


@pytest.mark.skipif(importlib.util.find_spec("pytorch_fid") is not None, reason="pytorch-fid is installed")
def test_fid_network_is_unavailable_without_pytorch_fid(tmp_path):
    with pytest.raises(BackendUnavailableError, match="pytorch-fid"):
        inception_feature_extractor(tmp_path / "weights.pth")


def test_lpips_is_unavailable_without_its_package_or_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty weights cache
    with pytest.raises(MorphfaceError, match="lpips|torchvision|weights"):
        lpips_metric()
    with pytest.raises(ValueError, match="net must be"):
        lpips_metric("resnet")


def test_frechet_distance_with_singular_covariances():
    # sqrtm of a singular product; diagonal closed form sum (sqrt(a) - sqrt(b))^2 = 1 + 1
    assert frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.diag([0.0, 1.0])) == \
        pytest.approx(2.0, abs=1e-6)
