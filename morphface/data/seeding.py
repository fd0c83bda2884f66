"""Stable seeds derived from tuples (independent of Python's per-process string hash salt)."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["stable_seed", "seeded_generator"]


def stable_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (their ``repr``), the same in every process."""
    text = "\x1f".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`stable_seed` of ``parts``."""
    return torch.Generator().manual_seed(stable_seed(*parts))
