"""Mesh topology helpers for the UV layer: edges, boundary loops, holes."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["unique_edges", "boundary_loops", "split_rim_and_holes"]


def unique_edges(faces: Tensor) -> Tensor:
    """``(E, 2)`` int64 undirected edges of ``(F, 3)`` triangles, each once with ``e[:, 0] < e[:, 1]``."""
    f = faces.to(torch.int64)
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return torch.unique(torch.sort(e, dim=1).values, dim=0)


def boundary_loops(faces: Tensor) -> list[Tensor]:
    """The closed boundary loops of a triangle mesh.

    Args:
        faces: ``(F, 3)`` int64 triangles, consistently oriented.

    Returns:
        A list of ``(N_k,)`` int64 vertex-id loops, each in the direction its edges have in their
        (only) triangle, so that a triangle ``(b, a, new)`` built on a boundary edge ``a -> b`` has the
        mesh's orientation. Longest loop first.
    """
    f = faces.detach().cpu().to(torch.int64).numpy()
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    border = directed[counts[inverse.reshape(-1)] == 1]
    if border.shape[0] == 0:
        return []
    # Follow each vertex's outgoing boundary edges; a vertex where two loops touch has two of them.
    out: dict[int, list[int]] = {}
    for a, b in border.tolist():
        out.setdefault(a, []).append(b)
    loops = []
    for start in list(out):
        while out.get(start):
            loop, cur = [start], out[start].pop()
            while cur != start and out.get(cur):
                loop.append(cur)
                cur = out[cur].pop()
            loops.append(torch.tensor(loop, dtype=torch.int64, device=faces.device))
    loops.sort(key=lambda t: -t.numel())
    return loops


def split_rim_and_holes(verts: Tensor, faces: Tensor) -> tuple[Tensor | None, list[Tensor]]:
    """The outer rim and the holes of an open mesh (e.g. a face mask with eye and mouth openings).

    The rim is the boundary loop with the largest bounding box (in ``verts``, ``(V, 3)``); every other
    loop is a hole. A closed mesh has neither.

    Returns:
        ``(rim or None, [holes])``, loops as in :func:`boundary_loops`.
    """
    loops = boundary_loops(faces)
    if not loops:
        return None, []
    size = [float((verts[lp].amax(0) - verts[lp].amin(0)).norm()) for lp in loops]
    k = int(np.argmax(size))
    return loops[k], [lp for i, lp in enumerate(loops) if i != k]
