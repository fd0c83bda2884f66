"""Process-group set-up for single-process, multi-GPU and multi-node training.

``torchrun`` (``torch.distributed.run``) exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and initialises the default
process group (NCCL on CUDA, gloo on CPU). Without those variables (or with ``WORLD_SIZE=1``) it
creates no process group and every helper here degrades to the single-process no-op, so the same
entry point runs either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "barrier", "all_gather_objects"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``; rank 0 writes files and logs.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the training device of this process.
        owns_group: True if :func:`init_distributed` created the process group (and must destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on global rank 0."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from exc


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` from the environment when launched by ``torchrun``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is
            available, else the CPU. ``"cuda"`` under torchrun also means ``cuda:LOCAL_RANK``.

    Returns:
        :class:`DistInfo`. An already initialised default group is reused (and not destroyed later).
    """
    already = dist.is_available() and dist.is_initialized()
    if already:
        rank, world, local = dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0)
    else:
        world = _env_int("WORLD_SIZE", 1)
        rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if not 0 <= rank < world:
            raise ValueError(f"RANK must be in [0, WORLD_SIZE={world}); got {rank}")

    if device is None:
        dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available; use device: cpu")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)

    owns = False
    if world > 1 and not already:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, **kwargs)
        owns = True
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op single-process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (small, picklable, produced by this code itself), in rank order."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
