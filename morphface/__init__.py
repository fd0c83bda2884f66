"""morphface: 3D morphable face models in PyTorch.

Layers (imports flow downward only): ``cli`` > ``train`` > ``pipelines`` > ``data``/``metrics`` >
``nets``/``audio`` > ``uv`` > ``fitting`` > ``render`` > ``morphable``/``camera``.
"""

from . import io
from .errors import (
    BackendUnavailableError,
    FitError,
    ImageReadError,
    ModelFormatError,
    MorphfaceError,
    NoFaceError,
)
from .morphable import MorphableModel, load_default_model, load_model

__version__ = "0.1.0"

__all__ = [
    "MorphableModel",
    "load_default_model",
    "load_model",
    "MorphfaceError",
    "ModelFormatError",
    "NoFaceError",
    "ImageReadError",
    "FitError",
    "BackendUnavailableError",
    "frontalize",
    "io",
    "__version__",
]


def __getattr__(name: str):
    # Heavy layers load on first use, so that ``import morphface`` stays light.
    if name == "frontalize":
        from .uv.frontalize import frontalize

        return frontalize
    raise AttributeError(f"module 'morphface' has no attribute {name!r}")
