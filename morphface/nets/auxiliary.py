"""What the library's small loss networks trained on its own renders share: the face parser
(:mod:`.parsing`, kp3d's segmentation loss) and the heatmap landmark network (:mod:`.landmarks`, MMFA's landmark
loss).

* :class:`UNetHead` -- a 3x3 conv, a 2D U-Net (:class:`~morphface.nets.keypoints.blocks.Hourglass2d`) and a 1x1
  head to per-pixel output maps, on RGB images checked by :func:`check_rgb`;
* :func:`train_network` -- the training loop (seeded initialisation and batches, Adam with cosine decay, optional
  augmentation) with :func:`random_brightness_contrast`, the photometric augmentation both use;
* :func:`save_network` / :func:`load_network` -- safetensors of the ``state_dict`` with a format tag and the JSON
  config in the metadata (never unpickled).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, InputShapeError, WeightsNotFoundError
from .keypoints.blocks import Hourglass2d

__all__ = ["UNetHead", "check_rgb", "random_brightness_contrast", "train_network", "save_network", "load_network"]

N = TypeVar("N", bound=nn.Module)


def check_rgb(image: Tensor) -> None:
    """Raise :class:`InputShapeError` unless ``image`` is ``(B, 3, H, W)``."""
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputShapeError(f"image must have shape (B, 3, H, W); got {shape}")


class UNetHead(nn.Module):
    """``first`` (3x3 conv + ReLU to ``base_channels``) -> ``unet`` (:class:`Hourglass2d` with ``num_blocks``
    down/up blocks, channels capped at ``max_channels``) -> ``head`` (1x1 conv to ``out_channels``)."""

    def __init__(self, base_channels: int, num_blocks: int, max_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, base_channels, 3, padding=1), nn.ReLU())
        self.unet = Hourglass2d(base_channels, base_channels, num_blocks, max_channels)
        self.head = nn.Conv2d(self.unet.out_channels, out_channels, 1)

    def maps(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, out_channels, H, W)`` (no input check: see :func:`check_rgb`)."""
        return self.head(self.unet(self.first(x)))


def random_brightness_contrast(x: Tensor, g: torch.Generator) -> Tensor:
    """Images ``(n, 3, H, W)`` in [0, 1] with a random contrast (x 0.8 .. 1.2 about 0.5) and brightness (+- 0.1)
    each, clamped to [0, 1]; two draws of ``g`` per image."""
    n = x.shape[0]
    a = (1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.4).to(x)
    b = ((torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2).to(x)
    return ((x - 0.5) * a + 0.5 + b).clamp(0, 1)


def train_network(make: Callable[[], N], images: Tensor, targets: Tensor, loss: Callable[[N, Tensor, Tensor], Tensor],
                  *, steps: int, batch_size: int, lr: float, seed: int,
                  augment: Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]] | None = None,
                  check: Callable[[N], None] | None = None,
                  log: Callable[[int, float], None] | None = None) -> N:
    """Train a network on images with per-image targets.

    Args:
        make: builds the network (under ``torch.manual_seed(seed)``, the global RNG state restored after).
        images: ``(N, 3, H, W)`` in [0, 1]. targets: ``(N, ...)``.
        loss: ``loss(net, x, y)`` of a batch, ``x`` in [0, 1].
        steps, batch_size, lr: Adam schedule (cosine decay to 0).
        seed: of the initialisation and of the generator of the batches and augmentations.
        augment: ``augment(x, y, generator) -> (x, y)`` of each batch.
        check: called with the new network before training (raises on targets that do not fit it).
        log: called as ``log(step, loss)`` every 50 steps and at the last.

    Returns:
        The trained network in eval mode, on the images' device.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make().to(images.device)
    if check is not None:
        check(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    n = images.shape[0]
    net.train()
    for step in range(steps):
        idx = torch.randint(n, (min(batch_size, n),), generator=g).to(images.device)
        x, y = images[idx], targets[idx].to(images)
        if augment is not None:
            x, y = augment(x, y, g)
        value = loss(net, x, y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, float(value.detach()))
    return net.eval()


def save_network(net: nn.Module, path: str | os.PathLike, format: str) -> None:
    """Write ``net`` (which has a dataclass ``config``) as safetensors with ``format`` and its config in the
    metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"format": format, "config": json.dumps(dataclasses.asdict(net.config))})


def load_network(path: str | os.PathLike, format: str, build: Callable[[dict], N], *, name: str, kind: str,
                 command: str, option: str) -> N:
    """A network from a file of :func:`save_network`, in eval mode on the CPU.

    Args:
        format: the file's expected format tag.
        build: the network from its config's fields.
        name: what the network is (``"face parser"``), kind: its file kind (``"face-parser"``), command: the module
            that trains it, option: the pipeline option naming the file (for the messages).

    Raises:
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: not a file of this format, or its tensors do not match its config.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{name} weights not found at {path}: train them with `python -m {command}` or set "
                                   f"{option}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != format:
            raise CheckpointError(f"{path} is not a morphface {kind} file (format {meta.get('format')!r})")
        net = build(json.loads(meta["config"]))
        net.load_state_dict(load_file(str(path)), strict=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"could not load a {name} from {path}: {type(exc).__name__}: {exc}") from exc
    return net.eval()
