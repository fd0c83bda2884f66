"""Frechet Inception Distance: the distance formula, and an Inception feature hook that needs local weights.

The Frechet distance between Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)`` (Dowson & Landau 1982; FID,
Heusel et al. 2017) is ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. :func:`frechet_distance`
computes it like pytorch-fid (``scipy.linalg.sqrtm`` of ``S1 S2``, a small diagonal offset when the
product is singular, the real part when round-off leaves an imaginary one).

FID itself compares the statistics of 2048-D pool features of the FID Inception network (pytorch-fid's
port of the TensorFlow graph). Its weights (``pt_inception-2015-12-05-6726825d.pth``) cannot be
downloaded here and are never downloaded silently: :func:`inception_feature_extractor` builds the network
only when the ``pytorch-fid`` package is importable and the weights file is present, and otherwise raises
:class:`~morphface.errors.BackendUnavailableError` / :class:`~morphface.errors.WeightsNotFoundError` with
the reason, which evaluation reports as "unavailable".
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendUnavailableError, WeightsNotFoundError

__all__ = ["FID_WEIGHTS_NAME", "frechet_distance", "feature_statistics", "fid_from_features",
           "default_inception_weights", "inception_feature_extractor"]

#: file name under which pytorch-fid caches its FID Inception weights in torch hub's checkpoints folder
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, ``N - 1``, as pytorch-fid) of ``(N, D)``
    features."""
    f = features.detach().cpu().double().numpy() if isinstance(features, Tensor) else np.asarray(features,
                                                                                                 np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2; got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` (module docstring).

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` covariances.
        eps: diagonal offset added to both covariances when ``S1 S2`` is singular.

    Raises:
        ValueError: mismatched shapes, or an imaginary part of the square root larger than round-off.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"need mu (D,) and sigma (D, D) of equal sizes; got {mu1.shape}, {s1.shape}, "
                         f"{mu2.shape}, {s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # a singular product (fewer samples than dimensions) is expected; the offset below handles it
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(S1 S2) has an imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_from_features(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """Frechet distance between the Gaussian fits of two ``(N, D)`` feature sets."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def default_inception_weights() -> Path:
    """Where pytorch-fid caches its weights: ``<torch hub "
      "dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME


@contextlib.contextmanager
def _hub_dir_with(weights: Path) -> Iterator[None]:
    """Point torch hub at a temporary folder whose checkpoint cache holds ``weights`` under pytorch-fid's
    file name, so that pytorch-fid loads that file instead of downloading (restored afterwards)."""
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        os.symlink(weights.resolve(), Path(tmp) / "checkpoints" / FID_WEIGHTS_NAME)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


def inception_feature_extractor(weights: str | os.PathLike | None = None,
                                device: str | torch.device = "cpu") -> Callable[[Tensor], Tensor]:
    """The FID Inception network as ``images (B, 3, H, W) in [0, 1] -> (B, 2048)`` pool features.

    Args:
        weights: path of ``pt_inception-2015-12-05-6726825d.pth``; ``None``:
            :func:`default_inception_weights`.
        device: where the network runs.

    Raises:
        BackendUnavailableError: the ``pytorch-fid`` package (the network definition) is not installed.
        WeightsNotFoundError: the weights file is missing.
    """
    if importlib.util.find_spec("pytorch_fid") is None:
        raise BackendUnavailableError("FID needs the FID Inception network of the 'pytorch-fid' package, "
                                      "which is not installed (pip install pytorch-fid, plus its weights "
                                      "file)")
    path = Path(weights) if weights is not None else default_inception_weights()
    if not path.is_file():
        raise WeightsNotFoundError(f"FID Inception weights not found at {path}: put pytorch-fid's "
                                   f"{FID_WEIGHTS_NAME} there or pass its path")
    from pytorch_fid.inception import InceptionV3

    with _hub_dir_with(path):
        net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    net = net.to(device).eval()

    @torch.no_grad()
    def extract(images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1]; got {tuple(images.shape)}")
        return net(images.to(device, torch.float32))[0].flatten(1)

    return extract
