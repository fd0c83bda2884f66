"""Checkpoint files: atomic writes, discovery, pruning and :func:`load_checkpoint`.

One checkpoint of step ``N`` is three files in ``OUTPUT_DIR/checkpoints/``:

``step_0000000N.safetensors``
    the weights: ``model.<network>.<state_dict key>`` for every network and
    ``ema.generator.<key>`` for the EMA generator; its safetensors metadata holds the pipeline's
    registry name and config so this one file is enough for :func:`load_checkpoint` (it also records the
    plugin modules the run imported, ``imports``, for the error message only: a checkpoint never decides
    which code runs).
``step_0000000N.state.safetensors``
    everything else needed to resume: optimiser and RNG tensors, with the rest of the optimiser,
    grad-scaler, sampler and RNG state as JSON in the metadata (:mod:`morphface.train.state`: no
    pickle anywhere, so loading a checkpoint cannot run code).
``step_0000000N.json``
    the small, human-readable record (step, epoch, world size, the full train config, the pipeline
    config, and the name and byte size of the two files above).

Each file is written to a temporary file in the same folder, flushed, ``fsync``-ed and moved into
place with ``os.replace`` (atomic on POSIX and Windows); the JSON record is written last and is the
commit marker. A checkpoint counts only when its JSON record parses and both files it names exist
with the recorded sizes, so a run killed at any instant leaves either a complete checkpoint or one
that is ignored. Pruning deletes the JSON record first for the same reason. Temporary files
(``.step_*.tmp-*``) left by a killed writer are ignored and removed by the next run.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..io import atomic_write

__all__ = [
    "CheckpointInfo",
    "CHECKPOINT_FORMAT",
    "atomic_write",
    "list_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "read_record",
    "remove_temp_files",
    "resolve_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "morphface.train.checkpoint/1"
_RECORD = re.compile(r"^step_(\d+)\.json$")
_TEMP = re.compile(r"^\..*\.tmp-")


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk.

    Attributes:
        step: the number of optimisation steps done when it was written.
        weights: path of the weights ``.safetensors`` file (what :func:`load_checkpoint` takes).
        state: path of the resume-state ``.state.safetensors`` file.
        record_path: path of the JSON record.
        record: the parsed JSON record.
    """

    step: int
    weights: Path
    state: Path
    record_path: Path
    record: dict[str, Any]


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> int:
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _write_json(path: Path, obj: Any) -> int:
    text = json.dumps(obj, indent=1, allow_nan=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_checkpoint(directory: str | Path, step: int, weights: dict[str, Tensor],
                     weights_meta: dict[str, str], state_tensors: dict[str, Tensor], state_json: Any,
                     record: dict[str, Any]) -> CheckpointInfo:
    """Write one checkpoint (three files, JSON record last) and return it.

    Args:
        directory: the checkpoints folder (created if missing).
        step: steps done.
        weights: ``model.*`` / ``ema.*`` tensors (CPU, contiguous, no shared storage).
        weights_meta: string metadata of the weights file.
        state_tensors: resume-state tensors.
        state_json: JSON tree of the resume state (tensor placeholders point into ``state_tensors``).
        record: extra fields of the JSON record.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step_{step:08d}"
    w_path, s_path, r_path = (directory / f"{stem}.safetensors", directory / f"{stem}.state.safetensors",
                              directory / f"{stem}.json")
    w_size = _save_safetensors(w_path, weights, weights_meta)
    s_size = _save_safetensors(s_path, state_tensors, {"state": json.dumps(state_json, allow_nan=False)})
    record = {"format": CHECKPOINT_FORMAT, "step": step, **record,
              "files": {"weights": {"name": w_path.name, "size": w_size},
                        "state": {"name": s_path.name, "size": s_size}}}
    _write_json(r_path, record)
    _fsync_dir(directory)
    return CheckpointInfo(step, w_path, s_path, r_path, record)


def read_record(path: str | Path) -> CheckpointInfo | None:
    """The checkpoint of a JSON record, or ``None`` (with a warning) if it or its files are incomplete."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        step = int(record["step"])
        files = record["files"]
        w_path = path.parent / files["weights"]["name"]
        s_path = path.parent / files["state"]["name"]
        ok = (record.get("format") == CHECKPOINT_FORMAT
              and w_path.stat().st_size == files["weights"]["size"]
              and s_path.stat().st_size == files["state"]["size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"ignoring incomplete or unreadable checkpoint record {path}: {exc}", stacklevel=3)
        return None
    if not ok:
        warnings.warn(f"ignoring checkpoint {path}: its files are missing or have the wrong size",
                      stacklevel=3)
        return None
    return CheckpointInfo(step, w_path, s_path, path, record)


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    """The complete checkpoints in ``directory`` (a checkpoints folder), oldest first. Temp files and
    records whose files are missing or truncated are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        if _RECORD.match(p.name):
            info = read_record(p)
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda i: i.step)


def _checkpoints_dir(path: Path) -> Path:
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def latest_checkpoint(path: str | Path) -> CheckpointInfo | None:
    """The newest complete checkpoint in a run folder or a checkpoints folder; ``None`` if there is none."""
    found = list_checkpoints(_checkpoints_dir(Path(path)))
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, keep_last: int) -> list[int]:
    """Delete all but the newest ``keep_last`` complete checkpoints (each record first); returns the
    deleted steps."""
    found = list_checkpoints(directory)
    deleted = []
    for info in found[: max(0, len(found) - keep_last)]:
        info.record_path.unlink(missing_ok=True)
        info.weights.unlink(missing_ok=True)
        info.state.unlink(missing_ok=True)
        deleted.append(info.step)
    return deleted


def remove_temp_files(directory: str | Path) -> list[Path]:
    """Delete temp files left in ``directory`` by an interrupted writer (call only when no writer runs)."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if _TEMP.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file meant by ``path``: a weights ``.safetensors``, a JSON record, or a run /
    checkpoints folder (its newest complete checkpoint).

    Raises:
        CheckpointError: nothing usable there.
    """
    path = Path(path)
    if path.is_dir():
        info = latest_checkpoint(path)
        if info is None:
            raise CheckpointError(f"expected a checkpoint in {path} (step_*.json + .safetensors); found none")
        return info.weights
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".json":
        info = read_record(path)
        if info is None:
            raise CheckpointError(f"checkpoint record {path} is incomplete (see the warning)")
        return info.weights
    if path.name.endswith(".state.safetensors"):
        raise CheckpointError(f"{path} is a resume-state file; pass the weights file "
                              f"{path.name.replace('.state.safetensors', '.safetensors')} instead")
    return path


def read_weights(path: str | Path,
                 device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of a weights file.

    Raises:
        CheckpointError: unreadable or not a morphface training checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a morphface training checkpoint: expected metadata format "
                              f"{CHECKPOINT_FORMAT!r}; found {meta.get('format')!r}")
    return tensors, meta


def split_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, dict[str, Tensor]]:
    """``{"model.generator.w": t}`` with prefix ``"model"`` -> ``{"generator": {"w": t}}``."""
    out: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        head, _, rest = key.partition(".")
        if head != prefix:
            continue
        net, _, param = rest.partition(".")
        out.setdefault(net, {})[param] = t
    return out


def load_network_state(net: torch.nn.Module, state: dict[str, Tensor], what: str,
                       strict: bool = True) -> None:
    """``net.load_state_dict(state)`` with a :class:`CheckpointError` naming ``what`` on a mismatch."""
    try:
        result = net.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not match {what}: {exc}") from exc
    if not strict and (result.missing_keys or result.unexpected_keys):
        warnings.warn(f"{what}: missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}",
                      stacklevel=3)


def load_checkpoint(path: str | Path, *, ema: bool = False, map_location: str | torch.device = "cpu",
                    strict: bool = True, plugins: Sequence[str] = ()) -> Any:
    """Rebuild a trained pipeline from a checkpoint written by the trainer.

    The pipeline is built by its registry name only. The checkpoint's ``imports`` metadata (the plugin
    modules the training run imported) is never imported: a file must not decide which code runs. A
    pipeline registered by a plugin is loaded by importing that plugin first, or by naming it in
    ``plugins`` (the caller's explicit opt-in).

    Args:
        path: a weights file ``step_*.safetensors``, its ``.json`` record, or a run / checkpoints folder
            (its newest complete checkpoint).
        ema: load the EMA weights into ``"generator"`` (the usual choice for inference).
        map_location: device of the returned pipeline's networks.
        strict: require the checkpoint keys to match the networks exactly.
        plugins: modules to import before building (they call ``register_pipeline``); chosen by the
            caller, never read from the file.

    Returns:
        The pipeline built from the registry name and config stored in the checkpoint, with trained
        weights, on ``map_location``, in eval mode.

    Raises:
        CheckpointError: no checkpoint, unreadable file, a pipeline name that is not registered, no EMA
            weights when ``ema``, or keys/shapes that do not match the pipeline.
    """
    from .protocol import pipeline_networks
    from .registry import build_pipeline, import_modules, registered_pipelines

    weights_path = resolve_checkpoint(path)
    tensors, meta = read_weights(weights_path, map_location)
    try:
        pipe_cfg = json.loads(meta["pipeline"])
        imports = json.loads(meta.get("imports", "[]"))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} has no readable pipeline config in its metadata: "
                              f"{exc}") from exc
    import_modules(plugins)
    pipe_name = pipe_cfg.get("name") if isinstance(pipe_cfg, dict) else None
    if pipe_name not in registered_pipelines():
        named = [str(m)[:80] for m in imports[:5]] if isinstance(imports, list) else []
        hint = (f"; it was trained with plugin module(s) {named}: import them yourself, or pass them as "
                "plugins=[...] if you trust them (the file's list is never imported)" if named else "")
        raise CheckpointError(f"{weights_path} holds a pipeline {str(pipe_name)[:80]!r} that is not registered "
                              f"(registered: {', '.join(registered_pipelines())}){hint}")
    pipeline = build_pipeline(pipe_name, pipe_cfg.get("config"))
    nets = pipeline_networks(pipeline)
    model = split_prefix(tensors, "model")
    missing = sorted(set(nets) - set(model))
    if missing:
        raise CheckpointError(f"{weights_path} has no weights for network(s) {missing}; it holds "
                              f"{sorted(model)}")
    for name, net in nets.items():
        load_network_state(net, model[name], f"network {name!r} of pipeline {pipe_cfg['name']!r}", strict)
    if ema:
        ema_state = split_prefix(tensors, "ema")
        if "generator" not in ema_state:
            raise CheckpointError(f"{weights_path} holds no EMA generator weights (trained with ema_decay 0)")
        load_network_state(nets["generator"], ema_state["generator"], "the EMA generator", strict)
    if isinstance(pipeline, torch.nn.Module):
        pipeline.to(map_location).eval()
    else:
        for net in nets.values():
            net.to(map_location).eval()
    return pipeline
