"""Choosing the VGG perceptual loss of a pipeline from its config, never faking it silently.

``perceptual`` modes:

* ``"auto"`` (default): the loss is on when ImageNet VGG19 weights are found (``vgg_weights`` if set,
  else torchvision's cache file :func:`morphface.nets.default_vgg19_path`), and **off** with a warning
  otherwise (the pipeline then trains with its pixel losses only).
* ``"on"``: the weights are required (:class:`~morphface.errors.WeightsNotFoundError` otherwise).
* ``"off"``: no perceptual term.
* ``"random"``: a randomly initialised VGG19 (``pretrained=False``), with a warning; only for tests and
  debugging, since random features are not a perceptual metric.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import WeightsNotFoundError
from ..nets import VGGPerceptualLoss, default_vgg19_path

__all__ = ["PERCEPTUAL_MODES", "build_perceptual_loss"]

PERCEPTUAL_MODES = ("auto", "on", "off", "random")


def perceptual_mode(value: str | bool) -> str:
    """``value`` as one of :data:`PERCEPTUAL_MODES`: YAML 1.1 reads an unquoted ``on``/``off``/``yes``/``no``
    as a boolean, so ``True`` means ``"on"`` and ``False`` ``"off"``; other values are returned unchanged
    (and refused by the validation)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def build_perceptual_loss(mode: str, vgg_weights: str | None, owner: str) -> VGGPerceptualLoss | None:
    """The perceptual loss module for ``mode`` (module docstring), or ``None`` when it is off.

    Args:
        mode: one of :data:`PERCEPTUAL_MODES`.
        vgg_weights: path of torchvision's ``vgg19-dcbb9e9d.pth``; ``None`` looks in torch hub's cache.
        owner: the pipeline's name, for the warnings.

    Raises:
        ValueError: unknown mode, or ``vgg_weights`` given with ``mode="random"``/``"off"``.
        WeightsNotFoundError: ``mode="on"`` and no weights file.
    """
    mode = perceptual_mode(mode)
    if mode not in PERCEPTUAL_MODES:
        raise ValueError(f"perceptual must be one of {PERCEPTUAL_MODES}; got {mode!r}")
    if mode in ("off", "random") and vgg_weights is not None:
        raise ValueError(f"vgg_weights={vgg_weights!r} was given but perceptual={mode!r} does not use it")
    if mode == "off":
        return None
    if mode == "random":
        warnings.warn(f"{owner}: perceptual='random' uses a randomly initialised VGG19; its 'perceptual' "
                      "loss is not a perceptual metric (use only for tests)", stacklevel=3)
        return VGGPerceptualLoss(pretrained=False)
    path = Path(vgg_weights) if vgg_weights is not None else default_vgg19_path()
    if not path.is_file():
        if mode == "on":
            raise WeightsNotFoundError(f"{owner}: perceptual='on' needs ImageNet VGG19 weights at {path} "
                                       "(torchvision's vgg19-dcbb9e9d.pth); set vgg_weights or use "
                                       "perceptual='auto'")
        warnings.warn(f"{owner}: VGG19 weights not found at {path}: the perceptual (VGG) loss is OFF and the "
                      "pipeline trains with its pixel/adversarial losses only. Put torchvision's "
                      "vgg19-dcbb9e9d.pth there or set vgg_weights to enable it.", stacklevel=3)
        return None
    return VGGPerceptualLoss(weights=path)
