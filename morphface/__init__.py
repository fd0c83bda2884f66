"""morphface: 3D morphable face models in PyTorch.

Layers (imports flow downward only): ``cli`` > ``train`` > ``pipelines`` > ``data``/``metrics`` >
``nets``/``audio`` > ``uv`` > ``fitting`` > ``render`` > ``morphable``/``camera``.
"""

from .errors import (
    BackendUnavailableError,
    FitError,
    ImageReadError,
    ModelFormatError,
    MorphfaceError,
    NoFaceError,
)
from . import io
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
    "__version__",
]
