"""Name -> factory registries for pipelines and datasets, so that a YAML config (and a checkpoint)
can name what to build.

A factory is called with the component's config dict and returns the object:
``factory(config: dict) -> pipeline`` / ``factory(config: dict) -> torch.utils.data.Dataset``.
It may be given as a callable or as a lazy ``"package.module:attribute[.attribute]"`` string, which is
imported only when the name is built. The lazy form is how lower layers are listed: pipelines and
datasets must not import ``morphface.train`` (layer order), so their built-in names live in the
``_BUILTIN_*`` tables below, and third-party code either calls :func:`register_pipeline` /
:func:`register_dataset` in a plugin module the user names explicitly (``morphface train --plugin
MODULE``, ``TrainConfig.imports`` in Python, ``load_checkpoint(..., plugins=[...])``), or registers a lazy
string at start-up. Names read from files (configs, checkpoints) are only looked up in these tables: a file
never names a module to import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "register_pipeline",
    "build_pipeline",
    "registered_pipelines",
    "register_dataset",
    "build_dataset",
    "registered_datasets",
    "import_modules",
    "UnknownNameError",
]

Factory = Callable[[dict[str, Any]], Any]


class UnknownNameError(KeyError):
    """No pipeline/dataset is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])

# Built-in names, resolved lazily so that importing morphface.train imports no pipeline.
_BUILTIN_PIPELINES: dict[str, str] = {
    "toy_gan": "morphface.train.toy:ToyGANPipeline.from_config",
    "headgan": "morphface.pipelines.headgan:HeadGAN.from_config",
    "ifaceuv": "morphface.pipelines.ifaceuv:IFaceUV.from_config",
    "x2face": "morphface.pipelines.x2face:X2Face.from_config",
    "kp3d": "morphface.pipelines.kp3d:KeypointGAN.from_config",
    "mmfa": "morphface.pipelines.mmfa:MMFA.from_config",
}
_BUILTIN_DATASETS: dict[str, str] = {
    "toy_shapes": "morphface.train.toy:ToyShapesDataset.from_config",
    "reenactment": "morphface.data.dataset:ReenactmentDataset.from_config",
}

_PIPELINES: dict[str, Factory | str] = dict(_BUILTIN_PIPELINES)
_DATASETS: dict[str, Factory | str] = dict(_BUILTIN_DATASETS)


def _register(table: dict, kind: str, name: str, factory: Factory | str, overwrite: bool) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string; got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise TypeError(f"a {kind} factory must be callable or a 'module:attribute' string; got {factory!r}")
    if name in table and table[name] is not factory and table[name] != factory and not overwrite:
        raise ValueError(f"{kind} {name!r} is already registered (to {table[name]!r}); pass overwrite=True "
                         f"to replace it")
    table[name] = factory


def _resolve(ref: Factory | str) -> Factory:
    if callable(ref):
        return ref
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _build(table: dict, kind: str, name: str, config: dict[str, Any] | None) -> Any:
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise UnknownNameError(f"unknown {kind} {name!r}; registered: {known} (register it with "
                               f"register_{kind}() in a plugin module passed with --plugin)")
    return _resolve(table[name])(dict(config or {}))


def register_pipeline(name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
    """Register a pipeline factory ``factory(config_dict) -> pipeline`` under ``name``.

    Raises:
        ValueError: ``name`` is taken by another factory and ``overwrite`` is False.
    """
    _register(_PIPELINES, "pipeline", name, factory, overwrite)


def build_pipeline(name: str, config: dict[str, Any] | None = None) -> Any:
    """Build the pipeline registered as ``name`` from its config dict.

    Raises:
        UnknownNameError: (a ``KeyError``) no pipeline of that name is registered.
    """
    return _build(_PIPELINES, "pipeline", name, config)


def registered_pipelines() -> list[str]:
    """Names of all registered pipelines (built-in ones included)."""
    return sorted(_PIPELINES)


def register_dataset(name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
    """Register a dataset factory ``factory(config_dict) -> Dataset`` (map-style) under ``name``."""
    _register(_DATASETS, "dataset", name, factory, overwrite)


def build_dataset(name: str, config: dict[str, Any] | None = None) -> Any:
    """Build the dataset registered as ``name`` from its config dict.

    Raises:
        UnknownNameError: (a ``KeyError``) no dataset of that name is registered.
    """
    return _build(_DATASETS, "dataset", name, config)


def registered_datasets() -> list[str]:
    """Names of all registered datasets (built-in ones included)."""
    return sorted(_DATASETS)


def import_modules(modules: Iterable[str]) -> None:
    """Import each module by dotted name (they register their pipelines/datasets on import).

    Raises:
        ImportError: with the module name, if one cannot be imported.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"cannot import {name!r} named as a plugin: "
                              f"{exc}") from exc
