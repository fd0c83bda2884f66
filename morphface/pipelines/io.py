"""Loading trained pipelines from checkpoints, without importing :mod:`morphface.train`.

The trainer's checkpoint (:mod:`morphface.train.checkpoint`, format ``morphface.train.checkpoint/1``) is
read directly, since pipelines sit below ``train`` in the layer order. Its weights file
``step_N.safetensors`` is self-contained: tensors ``model.<network>.<state key>`` (and
``ema.generator.<state key>`` with an EMA), and string metadata ``format``, ``pipeline`` (JSON
``{"name": ..., "config": {...}}``) and ``imports``. The JSON record ``step_N.json`` beside it names the
weights file. :func:`save_pipeline` writes the same weights format (for users training with
:meth:`~morphface.pipelines.base.Reenactor.training_step` in their own loop).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .base import Reenactor

__all__ = ["CHECKPOINT_FORMAT", "PIPELINES", "load_pipeline", "save_pipeline", "resolve_weights"]

#: the trainer's checkpoint format string (``morphface.train.checkpoint.CHECKPOINT_FORMAT``)
CHECKPOINT_FORMAT = "morphface.train.checkpoint/1"
_RECORD = re.compile(r"^step_(\d+)\.json$")


def _pipeline_classes() -> dict[str, type[Reenactor]]:
    from .headgan import HeadGAN
    from .ifaceuv import IFaceUV
    from .kp3d import KeypointGAN
    from .mmfa import MMFA
    from .x2face import X2Face

    return {"headgan": HeadGAN, "ifaceuv": IFaceUV, "kp3d": KeypointGAN, "mmfa": MMFA, "x2face": X2Face}


#: registry names of the pipelines this module can load
PIPELINES = ("headgan", "ifaceuv", "kp3d", "mmfa", "x2face")


def _from_record(record_path: Path) -> Path:
    try:
        record = json.loads(record_path.read_text())
        weights = record_path.parent / record["files"]["weights"]["name"]
        size = int(record["files"]["weights"]["size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{record_path} is not a readable checkpoint record: {exc}") from exc
    if not weights.is_file() or weights.stat().st_size != size:
        raise CheckpointError(f"checkpoint record {record_path} names {weights.name} ({size} bytes), which "
                              "is missing or of another size")
    return weights


def resolve_weights(path: str | Path) -> Path:
    """The weights file meant by ``path``: a weights ``.safetensors``, a ``step_N.json`` record, or a run /
    checkpoints folder (its newest complete checkpoint).

    Raises:
        CheckpointError: nothing usable there.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        records = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := _RECORD.match(p.name))),
                         reverse=True)
        for _, record in records:
            try:
                return _from_record(record)
            except CheckpointError:
                continue  # an incomplete (interrupted) checkpoint: fall back to an older one
        raise CheckpointError(f"expected a checkpoint in {path} (step_*.json + step_*.safetensors); found "
                              "none")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".json":
        return _from_record(path)
    if path.name.endswith(".state.safetensors"):
        raise CheckpointError(f"{path} is a resume-state file; pass the weights file "
                              f"{path.name.replace('.state.safetensors', '.safetensors')}")
    return path


def load_pipeline(checkpoint: str | Path, *, ema: bool | None = None,
                  map_location: str | torch.device = "cpu", strict: bool = True) -> Reenactor:
    """Rebuild a trained HeadGAN / IFaceUV / X2Face pipeline from a checkpoint.

    Args:
        checkpoint: a weights file ``step_N.safetensors`` (written by ``morphface train`` or
            :func:`save_pipeline`), its ``step_N.json`` record, or a run / checkpoints folder.
        ema: load the EMA generator weights; ``None`` (default): when the checkpoint has them (the usual
            choice for inference); ``True`` requires them.
        map_location: device of the returned pipeline.
        strict: require the checkpoint's keys to match the networks exactly.

    Returns:
        The pipeline in eval mode on ``map_location``.

    Raises:
        CheckpointError: missing/unreadable file, another kind of checkpoint, no EMA weights with
            ``ema=True``, or weights that do not fit the rebuilt networks.
    """
    from safetensors import SafetensorError, safe_open

    path = resolve_weights(checkpoint)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a morphface checkpoint: expected metadata format "
                              f"{CHECKPOINT_FORMAT!r}; found {meta.get('format')!r}")
    try:
        spec = json.loads(meta["pipeline"])
        name, config = spec["name"], spec["config"]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has no readable pipeline name/config in its metadata: {exc}") from exc
    classes = _pipeline_classes()
    if name not in classes:
        raise CheckpointError(f"{path} holds a {name!r} pipeline; load_pipeline reads {sorted(classes)} (use "
                              "morphface.train.load_checkpoint for other pipelines)")
    try:
        pipeline = classes[name].from_config(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the {name!r} pipeline from its stored config: "
                              f"{exc}") from exc
    groups: dict[str, dict[str, dict[str, torch.Tensor]]] = {"model": {}, "ema": {}}
    for key, t in tensors.items():
        head, _, rest = key.partition(".")
        net, _, param = rest.partition(".")
        if head in groups:
            groups[head].setdefault(net, {})[param] = t
    missing = sorted(set(pipeline.nets) - set(groups["model"]))
    if missing:
        raise CheckpointError(f"{path} has no weights for network(s) {missing}; it holds "
                              f"{sorted(groups['model'])}")
    use_ema = ("generator" in groups["ema"]) if ema is None else ema
    if use_ema and "generator" not in groups["ema"]:
        raise CheckpointError(f"{path} holds no EMA generator weights (trained with ema_decay 0)")
    for net_name, net in pipeline.nets.items():
        use = "ema" if (use_ema and net_name == "generator") else "model"
        state = groups[use][net_name]
        _load_state(net, state, f"network {net_name!r} of {path}", strict)
    return pipeline.to(map_location).eval()


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], what: str, strict: bool) -> None:
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not match {what}: {exc}") from exc


def save_pipeline(pipeline: Reenactor, path: str | Path, step: int = 0) -> Path:
    """Write a pipeline's networks in the trainer's weights format (readable by :func:`load_pipeline` and
    ``morphface.train.load_checkpoint``).

    Args:
        pipeline: a :class:`~morphface.pipelines.base.Reenactor`.
        path: output ``.safetensors`` file (written atomically: temp file + rename).
        step: the step recorded in the metadata.
    """
    import os

    from safetensors.torch import save_file

    if not isinstance(pipeline, Reenactor) or not pipeline.name:
        raise TypeError(f"save_pipeline takes a registered pipeline (HeadGAN, IFaceUV, X2Face); got "
                        f"{type(pipeline).__name__}")
    tensors = {}
    for net_name, net in pipeline.nets.items():
        for key, t in net.state_dict().items():
            # clone: safetensors refuses tensors that share storage (spectral norm's weight_orig views)
            tensors[f"model.{net_name}.{key}"] = t.detach().cpu().clone().contiguous()
    spec = {"name": pipeline.name, "config": pipeline.config_dict()}
    meta = {"format": CHECKPOINT_FORMAT, "step": str(int(step)), "pipeline": json.dumps(spec),
            "imports": "[]"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
