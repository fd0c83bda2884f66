"""Non-pickle serialisation of training state: nested Python containers -> (JSON tree, tensors).

Optimiser, grad-scaler and RNG states are nested dicts/lists/tuples of tensors, numbers, strings and
numpy arrays. :func:`pack` moves every tensor and array into a flat ``{key: tensor}`` dict (saved with
safetensors) and leaves a JSON tree with tagged placeholders, so a checkpoint never needs
``pickle``: reading one back cannot execute code (DESIGN.md: never unpickle user files).

Tags (JSON objects with one reserved key): ``{"__tensor__": key}``, ``{"__ndarray__": [key, dtype]}``,
``{"__tuple__": [...]}``, ``{"__dict__": [[key, value], ...]}`` (for dicts with non-string keys, e.g.
optimiser state indexed by int) and ``{"__float__": "nan" | "inf" | "-inf"}`` (strict JSON has none).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["pack", "unpack", "capture_rng", "restore_rng"]


def pack(obj: Any, tensors: dict[str, Tensor], prefix: str) -> Any:
    """JSON tree of ``obj``; its tensors/arrays are added to ``tensors`` under keys starting ``prefix``."""
    if isinstance(obj, Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        arr = np.ascontiguousarray(obj)
        # safetensors/torch lack wide unsigned ints: store their bits as int64 and the dtype in JSON.
        if arr.dtype == np.uint64:
            arr = arr.view(np.int64)
        elif arr.dtype.kind == "u" and arr.dtype.itemsize > 1:
            arr = arr.astype(np.int64)
        tensors[key] = torch.from_numpy(arr.copy())
        return {"__ndarray__": [key, obj.dtype.str]}
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return pack(obj.item(), tensors, prefix)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: pack(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot serialise a dict key of type {type(k).__name__} at {prefix}")
            items.append([k, pack(v, tensors, f"{prefix}.{k}")])
        return {"__dict__": items}
    raise TypeError(f"cannot serialise a {type(obj).__name__} at {prefix} without pickle")


def unpack(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        (tag, value), = tree.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__ndarray__":
            key, dtype = value
            arr = tensors[key].numpy()
            dtype = np.dtype(dtype)
            return arr.view(dtype) if dtype == np.uint64 else arr.astype(dtype)
        if tag == "__tuple__":
            return tuple(unpack(v, tensors) for v in value)
        if tag == "__dict__":
            return {k: unpack(v, tensors) for k, v in value}
        if tag == "__float__":
            return float(value)
    return {k: unpack(v, tensors) for k, v in tree.items()}


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The states of Python's ``random``, numpy's global and torch's CPU (and ``device``'s CUDA) RNGs."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Set the RNGs from a :func:`capture_rng` state (after a :func:`pack`/:func:`unpack` round trip)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8), device)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
