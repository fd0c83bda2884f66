"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, only with locally available weights.

LPIPS needs the ``lpips`` package (its calibrated linear heads ship inside it) and the ImageNet weights
of its torchvision backbone (AlexNet by default), which torchvision caches as
``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``. :func:`lpips_metric` checks both *before*
building anything, so nothing is ever downloaded; a missing piece raises a named error whose message
the evaluation reports as "unavailable: <reason>". No substitute network is used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..errors import BackendUnavailableError, WeightsNotFoundError

__all__ = ["LPIPS_BACKBONE_FILES", "lpips_metric"]

#: torchvision weight files the ``lpips`` backbones load (torch hub checkpoint names)
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                        "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_metric(net: str = "alex", device: str | torch.device = "cpu") -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS as ``(pred, target) -> (B,)`` distances for ``(B, 3, H, W)`` images in [0, 1].

    Args:
        net: backbone, ``"alex"`` (the usual choice), ``"vgg"`` or ``"squeeze"``.
        device: where the network runs.

    Raises:
        BackendUnavailableError: the ``lpips`` package (or torchvision, which it needs) is not installed.
        WeightsNotFoundError: the backbone's torchvision weights are not in torch hub's cache.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONE_FILES)}; got {net!r}")
    for pkg in ("lpips", "torchvision"):
        if importlib.util.find_spec(pkg) is None:
            raise BackendUnavailableError(f"LPIPS needs the {pkg!r} package, which is not installed")
    path = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]
    if not path.is_file():
        raise WeightsNotFoundError(f"LPIPS-{net} needs torchvision's ImageNet backbone weights at {path} "
                                   "(not downloaded automatically)")
    import lpips

    model = lpips.LPIPS(net=net, verbose=False).to(device).eval()

    @torch.no_grad()
    def distance(pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f"pred and target must both be (B, 3, H, W); got {tuple(pred.shape)}, "
                             f"{tuple(target.shape)}")
        a = pred.to(device, torch.float32) * 2 - 1  # lpips takes [-1, 1]
        b = target.to(device, torch.float32) * 2 - 1
        return model(a, b).flatten().double().cpu()

    return distance
