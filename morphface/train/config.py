"""Training configuration: dataclasses that load from and save to YAML.

A config file names the pipeline and the dataset (built through :mod:`morphface.train.registry`) and
sets the optimisation, checkpointing and logging knobs of :class:`~morphface.train.trainer.Trainer`::

    output_dir: runs/toy
    pipeline: {name: toy_gan, config: {channels: 16}}
    data: {name: toy_shapes, config: {size: 256, image_size: 32}}
    steps: 2000
    batch_size: 8          # per process: the global batch is batch_size * world size
    lr: 2.0e-4

Loading is strict: an unknown key raises :class:`ConfigError` naming the key (and the closest known
one), a value of the wrong type or out of range raises it naming the field, so that a typo never
silently falls back to a default. Relative paths (``output_dir``) are relative to the working
directory of the process, not to the YAML file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "ComponentConfig", "TrainConfig", "load_config", "save_config"]

AMP_MODES = ("off", "bf16", "fp16")


class ConfigError(ValueError):
    """A training config has an unknown field, a missing required field or a bad value."""


@dataclass
class ComponentConfig:
    """A registered component (pipeline or dataset) and the keyword config its factory receives.

    Attributes:
        name: name under which the factory is registered (``register_pipeline`` / ``register_dataset``).
        config: JSON-serialisable dict passed to the factory unchanged.
    """

    name: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything :class:`~morphface.train.trainer.Trainer` needs; every field is documented below.

    Attributes:
        output_dir: run folder; receives ``checkpoints/``, ``metrics.jsonl``, ``tb/`` (TensorBoard),
            ``images/`` and ``config.yaml``. Must be on a file system shared by all nodes to resume.
        pipeline: the trained pipeline (registry name + its config dict).
        data: the training dataset (registry name + its config dict); a map-style dataset.
        steps: total optimisation steps (one generator update and one discriminator update each).
        batch_size: samples per step **per process**; the global batch is ``batch_size * world_size``.
        num_workers: ``DataLoader`` worker processes per training process (0: load in the main process,
            needed for bit-exact resume when the dataset draws random numbers).
        lr: Adam learning rate of every network. 2e-4 is the setting of the HeadGAN and IFaceUV papers.
        betas: Adam ``(beta1, beta2)``. beta2 = 0.999 is the papers' setting; beta1 = 0.5 is the usual GAN
            choice (less momentum keeps the generator/discriminator game stable).
        network_lr: per-network learning-rate overrides, e.g. ``{discriminator: 4.0e-4}`` for TTUR.
        grad_clip: maximum L2 norm of each network's gradients (``clip_grad_norm_`` per optimiser, after
            AMP unscaling; the pre-clip norms are logged as ``grad_norm/<network>``); ``None`` or 0 = off.
        ema_decay: decay of an exponential moving average of the ``"generator"`` weights, updated after
            every generator step (typ. 0.999); 0 = no EMA.
        amp: mixed precision: ``"off"``, ``"bf16"`` (autocast to bfloat16, no loss scaling) or ``"fp16"``
            (autocast to float16 with a ``GradScaler``). CUDA only: ignored with a warning on CPU.
        compile: wrap every network in ``torch.compile`` (after DDP).
        checkpoint_every: write a checkpoint every this many steps (and always after the last step).
        keep_last: number of most recent checkpoints kept on disk (older ones are deleted).
        log_every: print a summary line (and flush TensorBoard scalars) every this many steps;
            ``metrics.jsonl`` gets every step regardless.
        image_every: log an image grid of ``pipeline.visuals`` every this many steps; 0 = never.
        num_visuals: samples (rows) in each image grid.
        seed: seed of parameter initialisation (identical on all ranks), data order and the training RNG
            streams (``seed + 1 + rank`` for torch, numpy and ``random``).
        deterministic: ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic and no cuDNN
            benchmark; with ``num_workers: 0`` a resumed run then repeats the uninterrupted run's losses.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` = ``cuda:LOCAL_RANK`` when CUDA is available,
            else CPU.
        find_unused_parameters: passed to ``DistributedDataParallel`` (set it when a step does not use every
            parameter of a network, e.g. an optional discriminator head).
        static_graph: passed to ``DistributedDataParallel`` (set it when the set of used parameters is
            the same every step; needed for some reentrant/checkpointed forwards).
        tensorboard: write TensorBoard event files under ``output_dir/tb`` (skipped with a warning when
            tensorboard is not installed).
        progress: show a tqdm progress bar on rank 0.
        imports: plugin modules imported before the pipeline and dataset are built, so that they can
            register themselves (``register_pipeline`` / ``register_dataset`` at import time). Set in Python
            or with ``morphface train --plugin MODULE``; a YAML file that names modules is refused
            (:func:`load_config`): files never decide which code runs.
    """

    output_dir: str
    pipeline: ComponentConfig
    data: ComponentConfig
    steps: int = 10_000
    batch_size: int = 8
    num_workers: int = 4
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    network_lr: dict[str, float] = field(default_factory=dict)
    grad_clip: float | None = None
    ema_decay: float = 0.0
    amp: str = "off"
    compile: bool = False
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 50
    image_every: int = 500
    num_visuals: int = 4
    seed: int = 0
    deterministic: bool = False
    device: str | None = None
    find_unused_parameters: bool = False
    static_graph: bool = False
    tensorboard: bool = True
    progress: bool = True
    imports: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Programmatic use: accept plain dicts for the two components.
        for comp in ("pipeline", "data"):
            if isinstance(getattr(self, comp), dict):
                setattr(self, comp, _from_dict(ComponentConfig, getattr(self, comp), f"{comp}."))
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field whose value is out of range."""
        checks = [
            ("steps", self.steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("lr", self.lr > 0, "> 0"),
            ("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1)"),
            ("grad_clip", self.grad_clip is None or self.grad_clip >= 0, "None or >= 0"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("amp", self.amp in AMP_MODES, f"one of {AMP_MODES}"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("keep_last", self.keep_last >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("image_every", self.image_every >= 0, ">= 0"),
            ("num_visuals", self.num_visuals >= 1, ">= 1"),
            ("network_lr", all(v > 0 for v in self.network_lr.values()), "positive learning rates"),
            ("output_dir", bool(str(self.output_dir)), "a non-empty path"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"train config field '{name}' must be {want}; got {getattr(self, name)!r}")
        for comp in ("pipeline", "data"):
            if not getattr(self, comp).name:
                raise ConfigError(f"train config field '{comp}.name' must be a registered name; got ''")
        try:
            json.dumps(self.pipeline.config)
            json.dumps(self.data.config)
        except TypeError as exc:
            raise ConfigError(f"pipeline.config and data.config must be JSON-serialisable: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from a plain dict (e.g. parsed YAML), strictly: see the module docstring."""
        return _from_dict(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-serialisable dict (tuples become lists) that :meth:`from_dict` reads back."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file (see :func:`load_config`)."""
        return load_config(path)

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (see :func:`save_config`)."""
        save_config(self, path)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path) -> TrainConfig:
    """Read a :class:`TrainConfig` from a YAML file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file is not a YAML mapping, has an unknown or missing field, a bad value, or
            names modules to import (``imports``; see :class:`TrainConfig`).
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a YAML config: it is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of config fields; got {type(data).__name__}")
    if data.get("imports"):
        raise ConfigError(f"{path} names modules to import ({str(data['imports'])[:200]}); a config file never "
                          "decides which code runs: pass plugins on the command line (morphface train CONFIG "
                          "--plugin MODULE) or set TrainConfig.imports in Python")
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (fields in declaration order)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "train config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' must be a mapping; got {type(data).__name__} ({data!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown field '{prefix}{key}' in {where}{hint}; known fields: "
                              f"{', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required field '{prefix}{name}' in {where}")
            continue
        kwargs[name] = _coerce(f"{prefix}{name}", data[name], hints[name])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a ComponentConfig or value check
        raise ConfigError(f"bad {where}: {exc}") from exc


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (the subset of types the config uses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"field '{name}': no allowed type fits {value!r}")
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, f"{name}.")
    if tp is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"field '{name}' must be a list of {len(args)} values; got {value!r}")
        return tuple(_coerce(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"field '{name}' must be a list; got {type(value).__name__} ({value!r})")
        return [_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"field '{name}' must be a mapping; got {type(value).__name__} ({value!r})")
        return {_coerce(f"{name} key", k, args[0]): _coerce(f"{name}.{k}", v, args[1])
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"field '{name}' must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"field '{name}' must be an integer; got {value!r}")
        return value
    if tp is float:
        # YAML reads "2e-4" (no dot) as a string: accept numeric strings for floats only.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"field '{name}' must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"field '{name}' must be a string; got {value!r}")
        return value
    raise ConfigError(f"field '{name}': unsupported type {tp}")  # pragma: no cover - config definition bug
