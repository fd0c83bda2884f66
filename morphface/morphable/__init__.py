"""Morphable face models: the :class:`MorphableModel` module, the embedded default and loaders."""

from .default import default_model_path, load_default_model
from .loaders import MODEL_DIR_ENV, find_model, load_model
from .model import DEFAULT_SKIN_ALBEDO, MorphableModel

__all__ = ["MorphableModel", "load_default_model", "default_model_path", "load_model", "find_model",
           "MODEL_DIR_ENV", "DEFAULT_SKIN_ALBEDO"]
