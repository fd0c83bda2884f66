"""Input validation shared by the networks: shape errors name the expected and the actual shape."""

from __future__ import annotations

from torch import Tensor


def _shape(x) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def check_map(name: str, x, channels: int, *, batch: int | None = None, size: tuple[int, int] | None = None,
              multiple: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(batch, channels, H, W)`` with ``(H, W) == size`` (when given)
    and ``H, W`` divisible by ``multiple``."""
    b = "B" if batch is None else batch
    hw = "H, W" if size is None else f"{size[0]}, {size[1]}"
    want = f"({b}, {channels}, {hw})"
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape {want}; got {_shape(x)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} must have shape {want} (same batch as the first input); got {_shape(x)}")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(f"{name} must have shape {want} (same size as the first input); got {_shape(x)}")
    if multiple > 1 and (x.shape[-2] % multiple or x.shape[-1] % multiple):
        raise ValueError(f"{name} height and width must be multiples of {multiple}; got {_shape(x)}")


def check_vector(name: str, x, dim: int, *, batch: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(batch, dim)``."""
    b = "B" if batch is None else batch
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != dim or (batch is not None and x.shape[0] != batch):
        raise ValueError(f"{name} must have shape ({b}, {dim}); got {_shape(x)}")
