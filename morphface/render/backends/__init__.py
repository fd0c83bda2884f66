"""Rasterisation backends behind one small interface (:class:`RasterBackend`).

========== ======================================================================================
name       what
========== ======================================================================================
cpu        numba z-buffer (compiled on first use); CPU tensors; the default on CPU
torch      pure PyTorch, any device; the reference the others are tested against
nvdiffrast NVIDIA's CUDA rasteriser; CUDA tensors; the default on CUDA when importable
pytorch3d  PyTorch3D's ``rasterize_meshes``; CPU or CUDA, when importable
========== ======================================================================================

``"auto"`` picks ``cpu`` for CPU tensors, ``nvdiffrast`` for CUDA tensors when it is importable and
``torch`` otherwise. Backend modules (and their optional dependencies, numba included) are imported
only when a backend is first used or probed.
"""

from __future__ import annotations

import importlib

import torch

from ...errors import BackendUnavailableError
from .base import RasterBackend, RasterInputs, ndc_to_screen

__all__ = ["RasterBackend", "RasterInputs", "ndc_to_screen", "BACKENDS", "get_backend", "available_backends",
           "resolve_backend"]

#: Registered backends: name -> (module under this package, class name).
BACKENDS: dict[str, tuple[str, str]] = {
    "cpu": ("cpu", "CpuBackend"),
    "torch": ("torchref", "TorchBackend"),
    "nvdiffrast": ("nvdiffrast_backend", "NvdiffrastBackend"),
    "pytorch3d": ("pytorch3d_backend", "Pytorch3dBackend"),
}

_INSTANCES: dict[str, RasterBackend] = {}


def get_backend(name: str) -> RasterBackend:
    """The (cached) backend instance called ``name``; it may still be unavailable here."""
    if name not in BACKENDS:
        raise ValueError(f"unknown rasterisation backend {name!r}; expected 'auto' or one of {sorted(BACKENDS)}")
    if name not in _INSTANCES:
        module, cls = BACKENDS[name]
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ImportError as e:
            raise BackendUnavailableError(f"backend {name!r} could not be imported ({e})") from e
        _INSTANCES[name] = getattr(mod, cls)()
    return _INSTANCES[name]


def _usable(name: str) -> bool:
    try:
        return get_backend(name).is_available()
    except BackendUnavailableError:
        return False


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine (``cpu`` and ``torch`` always can)."""
    return [name for name in BACKENDS if _usable(name)]


def resolve_backend(name: str, device: torch.device) -> RasterBackend:
    """The backend for ``name`` (or ``"auto"``) and tensors on ``device``.

    Raises:
        BackendUnavailableError: the named backend cannot run here or cannot take ``device``.
        ValueError: ``name`` is not a backend name.
    """
    if name == "auto":
        if device.type == "cpu" and _usable("cpu"):
            return get_backend("cpu")
        if device.type == "cuda" and _usable("nvdiffrast"):
            return get_backend("nvdiffrast")
        return get_backend("torch")
    backend = get_backend(name)
    if not backend.is_available():
        raise BackendUnavailableError(backend.unavailable_reason())
    if not backend.supports(device):
        raise BackendUnavailableError(f"backend {name!r} cannot take tensors on device {device}; "
                                      f"move them or use backend='auto'")
    return backend
