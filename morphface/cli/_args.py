"""argparse ``type=`` checkers shared by the subcommands: a bad number or device is a one-line usage error
(``morphface fit: error: argument --photometric-steps: must be >= 0; got -3``), never a traceback later."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "non_negative_int", "positive_float", "device"]


def _number(kind, text: str, low: float, inclusive: bool):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    if not (value >= low if inclusive else value > low) or value != value:  # value != value: NaN
        raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}; got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer > 0."""
    return _number(int, text, 0, inclusive=False)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _number(int, text, 0, inclusive=True)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(float, text, 0.0, inclusive=False)
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite; got {text}")
    return value


def device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` (or any torch device) that this machine has."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible CUDA GPU"
            raise argparse.ArgumentTypeError(f"{text!r} was asked for but this machine has {build}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r} is not available on this machine; use --device cpu")
    return text
