"""What the batch subcommands (``fit DIR``, ``frontalize DIR``) share: safe, unique output names and a
per-input failure report.

Output names come from input file names, which a user does not always control (a downloaded folder, a
file called ``..jpg``): :func:`output_names` makes them safe (letters, digits, ``.``, ``_``, ``-``; no
leading dot, so never ``.`` or ``..``), unique within the run (``a.jpg`` and ``a.png`` become ``a_jpg``
and ``a_png``; plain ``a`` when the stem is unique, so single inputs keep their familiar names), and
:func:`inside` checks that a path built from one stays inside the output folder.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["output_names", "safe_name", "inside", "FailureLog"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """``text`` with every run of other characters replaced by ``_`` and leading dots/underscores removed
    (``"../x y"`` -> ``"x_y"``); ``fallback`` when nothing is left."""
    name = _UNSAFE.sub("_", text).lstrip("._")
    return name[:200] or fallback


def output_names(files: Iterable[Path]) -> dict[Path, str]:
    """A safe output base name per input file, unique within ``files``.

    The base name is the file's stem; stems that would collide (after :func:`safe_name`, ignoring case,
    since some file systems do) get the input's extension appended (``a.jpg``, ``a.png`` -> ``a_jpg``,
    ``a_png``), and a counter if even that collides.
    """
    files = list(files)
    stems = {f: safe_name(f.stem) for f in files}
    counts = Counter(s.lower() for s in stems.values())
    names: dict[Path, str] = {}
    used: set[str] = set()
    for f in files:
        name = stems[f]
        if counts[name.lower()] > 1:
            name = safe_name(f"{name}_{f.suffix.lstrip('.')}")
        base, k = name, 2
        while name.lower() in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name.lower())
        names[f] = name
    return names


def inside(folder: Path, path: Path) -> Path:
    """``path`` unchanged if it lies inside ``folder``; else ``ValueError`` (nothing is written outside ``-o``)."""
    if folder.resolve() not in path.resolve().parents:
        raise ValueError(f"refusing to write {path}: outside the output folder {folder}")
    return path


class FailureLog:
    """Collects the inputs of a batch that failed, reporting each on stderr as it happens (one line)."""

    def __init__(self, write=None):
        self.failed: list[tuple[Path, str]] = []
        self._write = write or (lambda line: print(line, file=sys.stderr))

    def add(self, path: Path, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        self.failed.append((path, message))
        self._write(f"failed {path}: {message}")

    def summary(self, verb: str, total: int, out: Path) -> str:
        """``"<verb> N of M file(s) into OUT; K failed: a, b"``."""
        done = total - len(self.failed)
        text = f"{verb} {done} of {total} file(s) into {out}"
        if self.failed:
            names = ", ".join(p.name for p, _ in self.failed[:10])
            more = f" and {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
            text += f"; {len(self.failed)} failed: {names}{more}"
        return text

    @property
    def exit_code(self) -> int:
        """1 if any input failed, else 0."""
        return 1 if self.failed else 0
