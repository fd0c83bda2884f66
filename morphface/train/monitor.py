"""Run records on rank 0: ``metrics.jsonl`` (one JSON object per step), TensorBoard scalars and image
grids (optional dependency, imported lazily), and PNG copies of the grids."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import atomic_write

__all__ = ["MetricsLog", "TensorBoardLog", "image_grid", "read_metrics"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file; a torn last line (a killed writer) is skipped."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def _json_value(v: float) -> Any:
    return v if math.isfinite(v) else repr(v)


class MetricsLog:
    """Append-only ``metrics.jsonl``, flushed every record so a killed run loses at most a torn line.

    Args:
        path: the file.
        truncate_after: on resume, the step of the checkpoint: records of later steps (done by the
            interrupted run after its last checkpoint) are dropped so the file reads as one history.
            ``None``: start a new file.
    """

    def __init__(self, path: str | Path, truncate_after: int | None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if int(r["step"]) <= truncate_after]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
        self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (floats that are not finite are written as strings)."""
        rec = {k: (_json_value(v) if isinstance(v, float) else v) for k, v in record.items()}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLog:
    """A ``SummaryWriter`` under ``log_dir``, or nothing (with one warning) if tensorboard is missing.

    Args:
        log_dir: event-file folder.
        purge_step: on resume, the first step of the resumed run: events of later steps written by the
            interrupted run are hidden by TensorBoard.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is an optional dependency (extra "train")
            warnings.warn(f"tensorboard is not importable ({exc}); training continues without TensorBoard "
                          f"logs (pip install tensorboard)", stacklevel=2)
            return
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """``image``: ``(3, H, W)`` in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def image_grid(visuals: dict[str, Tensor], rows: int) -> Tensor:
    """One ``(3, rows * H, n_keys * W)`` image: a column per visual (in dict order), a row per sample.

    Args:
        visuals: name -> ``(B, 3 or 1, H, W)`` images in [0, 1]; all are resized to the first one's size.
        rows: samples shown (at most the smallest B).

    Raises:
        ValueError: an entry is not a ``(B, 1|3, H, W)`` tensor, or ``visuals`` is empty.
    """
    if not visuals:
        raise ValueError("visuals() returned no images")
    first = next(iter(visuals.values()))
    if not isinstance(first, Tensor) or first.dim() != 4:
        raise ValueError(f"visuals must be (B, 3, H, W) tensors; got {getattr(first, 'shape', type(first))}")
    h, w = first.shape[-2:]
    n = min([rows] + [v.shape[0] for v in visuals.values()])
    cols = []
    for name, v in visuals.items():
        if not isinstance(v, Tensor) or v.dim() != 4 or v.shape[1] not in (1, 3):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"visual {name!r} must have shape (B, 3, H, W) or (B, 1, H, W); got {shape}")
        v = v[:n].detach().float()
        if v.shape[1] == 1:
            v = v.expand(-1, 3, -1, -1)
        if v.shape[-2:] != (h, w):
            v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        cols.append(v.clamp(0, 1).cpu())
    grid = torch.cat(cols, dim=3)  # (n, 3, H, k * W)
    return grid.permute(1, 0, 2, 3).reshape(3, n * h, -1)


def save_png(image: Tensor, path: str | Path) -> None:
    """Write a ``(3, H, W)`` [0, 1] image as an 8-bit PNG (atomically)."""
    import imageio.v3 as iio

    arr = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, arr, extension=".png"))
