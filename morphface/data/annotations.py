"""Readers of face-alignment ground truth: iBUG ``.pts`` files and AFLW2000-3D ``.mat`` files.

* **iBUG / 300-W ``.pts``**: ``version: 1``, ``n_points: 68``, then ``{`` one ``x y`` line per point
  ``}``. The 300-W annotations put the top-left pixel's centre at (1, 1) (MATLAB convention); the
  reader subtracts ``pixel_offset`` (default 0.5) to give ``morphface.camera`` pixels (centres at
  integer + 0.5).
* **AFLW2000-3D ``.mat``** (3DDFA's release): ``Pose_Para`` ``(1, 7)`` = pitch, yaw, roll (radians),
  tx, ty, tz, scale; ``pt3d_68`` ``(3, 68)`` = x, y, z of the 68 landmarks as 3D model points (the
  jaw too: the "3D point" convention, not the silhouette) in image pixels (x right, y down). The
  angles are those of 3DDFA's ``R = Rz(roll) Ry(yaw) Rx(pitch)``, the composition of
  ``morphface.camera``; ``signs`` flips any of them if a data set was made with other signs
  (``bench/fit_real.py`` prints the slope per angle, which comes out near -1 for a flipped sign).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import AnnotationFormatError

__all__ = ["read_pts", "read_aflw2000_mat", "Annotation"]


class Annotation:
    """Ground truth of one image: ``landmarks (68, 2)`` pixels and ``angles (3,)`` radians (pitch,
    yaw, roll) or ``None`` when the file has no pose."""

    def __init__(self, landmarks: Tensor, angles: Tensor | None) -> None:
        self.landmarks = landmarks
        self.angles = angles


def read_pts(path: str | Path, pixel_offset: float = 0.5) -> Annotation:
    """Read an iBUG ``.pts`` file (module doc).

    Raises:
        AnnotationFormatError: not a ``.pts`` file with ``n_points`` ``x y`` lines between braces.
    """
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        n = int(next(ln for ln in lines if ln.startswith("n_points")).split(":")[1])
        start = lines.index("{") + 1
        rows = [[float(v) for v in ln.split()[:2]] for ln in lines[start:start + n]]
        if len(rows) != n or lines[start + n] != "}":
            raise ValueError(f"{len(rows)} point lines before the closing brace")
    except (OSError, StopIteration, ValueError, IndexError) as e:
        raise AnnotationFormatError(f"{p}: expected an iBUG .pts file (n_points, then x y lines in braces): {e}") from e
    return Annotation(torch.tensor(rows, dtype=torch.float32) - pixel_offset, None)


def read_aflw2000_mat(path: str | Path, signs: tuple[float, float, float] = (1.0, 1.0, 1.0),
                      pixel_offset: float = 0.0) -> Annotation:
    """Read an AFLW2000-3D ``.mat`` file (module doc): 68 landmarks (x, y of ``pt3d_68``, minus
    ``pixel_offset``) and the pose.

    Raises:
        AnnotationFormatError: no ``Pose_Para`` (7 values) or ``pt3d_68`` (3 x 68) in the file.
    """
    from scipy.io import loadmat

    p = Path(path)
    try:
        m = loadmat(str(p))
        pose = np.asarray(m["Pose_Para"], dtype=np.float64).reshape(-1)
        pts = np.asarray(m["pt3d_68"], dtype=np.float64)
        if pose.size != 7 or pts.shape != (3, 68):
            raise ValueError(f"Pose_Para has {pose.size} values, pt3d_68 shape {pts.shape}")
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise AnnotationFormatError(f"{p}: expected an AFLW2000-3D .mat with Pose_Para (1, 7) and pt3d_68 "
                                    f"(3, 68): {e}") from e
    angles = torch.tensor(pose[:3] * np.asarray(signs, dtype=np.float64), dtype=torch.float32)
    if not bool(torch.isfinite(angles).all()) or float(angles.abs().max()) > 2 * math.pi:
        raise AnnotationFormatError(f"{p}: Pose_Para angles must be finite radians; got {pose[:3].tolist()}")
    return Annotation(torch.from_numpy(pts[:2].T.copy()).float() - pixel_offset, angles)
