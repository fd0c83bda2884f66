"""``torch`` backend: vectorised pure-PyTorch visibility, on any device; the reference backend.

Every (image, triangle) pair with a non-empty pixel bounding box is expanded into the pixel centres
of that box, in chunks of at most ``chunk_pixels`` candidates (so memory stays bounded whatever
the triangle sizes). Each candidate is tested with the same canonical edge functions and top-left
rule as the ``cpu`` backend (float64), and the nearest surface per pixel is chosen with one
``scatter_reduce(amin)`` over an int64 key packing ``(float32 depth, triangle id)``: the
monotone integer image of the depth's bits in the high 32 bits and the id in the low 32, so that
the minimum key is the nearest depth, ties going to the smaller id.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import RasterBackend, RasterInputs, ndc_to_screen

__all__ = ["TorchBackend", "pack_depth_id"]

_INT64_MAX = torch.iinfo(torch.int64).max


def pack_depth_id(depth: Tensor, ids: Tensor) -> Tensor:
    """int64 keys ordered like ``(float32(depth), ids)`` lexicographically (``ids`` in ``[0, 2^31)``)."""
    # "+ 0.0" turns -0.0 into +0.0, which compare equal as floats (as in the cpu kernel).
    bits = (depth.to(torch.float32) + 0.0).view(torch.int32)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives.
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return key * (1 << 32) + ids.to(torch.int64)


def _canonical_edges(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor, s: Tensor):
    """Vectorised twin of the cpu kernel's ``_edge_setup`` (see that module)."""
    forward = (ax < bx) | ((ax == bx) & (ay < by))
    cx, cy = torch.where(forward, ax, bx), torch.where(forward, ay, by)
    dx, dy = torch.where(forward, bx, ax), torch.where(forward, by, ay)
    sign = torch.where(forward, s, -s)
    ex, ey = sign * (dx - cx), sign * (dy - cy)
    owned = (ey < 0) | ((ey == 0) & (ex > 0))
    return cx, cy, dx, dy, sign, owned


class TorchBackend(RasterBackend):
    """Pure PyTorch visibility; memory is bounded by ``chunk_pixels`` candidate pixels at a time."""

    name = "torch"

    def __init__(self, chunk_pixels: int = 1 << 20) -> None:
        self.chunk_pixels = int(chunk_pixels)

    def is_available(self) -> bool:
        return True

    def supports(self, device: torch.device) -> bool:
        return True

    def visibility(self, inputs: RasterInputs) -> Tensor:
        H, W = inputs.image_size
        scr = ndc_to_screen(inputs.verts_ndc, inputs.image_size)  # (B, V, 3) float64
        faces = inputs.faces
        B, F = scr.shape[0], faces.shape[0]
        device = scr.device
        keys = torch.full((B * H * W,), _INT64_MAX, dtype=torch.int64, device=device)
        if B * F == 0 or H * W == 0:
            return torch.full((B, H, W), -1, dtype=torch.int64, device=device)

        tri = scr[:, faces]  # (B, F, 3 corners, 3)
        x, y = tri[..., 0], tri[..., 1]
        r_lo = torch.ceil(y.amin(-1) - 0.5).clamp(min=0)
        r_hi = torch.floor(y.amax(-1) - 0.5).clamp(max=H - 1)
        c_lo = torch.ceil(x.amin(-1) - 0.5).clamp(min=0)
        c_hi = torch.floor(x.amax(-1) - 0.5).clamp(max=W - 1)
        area2 = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
        keep = inputs.face_valid & (r_lo <= r_hi) & (c_lo <= c_hi) & (area2 != 0)
        b_idx, f_idx = keep.nonzero(as_tuple=True)  # (K,) work items
        if b_idx.numel() == 0:
            return torch.full((B, H, W), -1, dtype=torch.int64, device=device)

        r0 = r_lo[b_idx, f_idx].long()
        c0 = c_lo[b_idx, f_idx].long()
        w = c_hi[b_idx, f_idx].long() - c0 + 1
        n = (r_hi[b_idx, f_idx].long() - r0 + 1) * w
        tx, ty, tz = x[b_idx, f_idx], y[b_idx, f_idx], tri[..., 2][b_idx, f_idx]  # (K, 3)
        s = torch.sign(area2[b_idx, f_idx])
        edges = [_canonical_edges(tx[:, (k + 1) % 3], ty[:, (k + 1) % 3], tx[:, (k + 2) % 3], ty[:, (k + 2) % 3], s)
                 for k in range(3)]

        # Chunk boundaries over the work items so that each chunk expands to <= chunk_pixels
        # candidates (a single larger triangle gets a chunk of its own).
        ends = torch.cumsum(n, 0)
        starts = ends - n
        k0, K = 0, b_idx.numel()
        while k0 < K:
            limit = starts[k0:k0 + 1] + self.chunk_pixels
            k1 = max(int(torch.searchsorted(ends, limit, right=True)), k0 + 1)
            self._chunk(k0, k1, n, starts, r0, c0, w, b_idx, f_idx, edges, tz, inputs.perspective, keys, H, W)
            k0 = k1

        faces_out = torch.where(keys == _INT64_MAX, -1, keys & 0xFFFFFFFF)
        return faces_out.view(B, H, W)

    @staticmethod
    def _chunk(k0, k1, n, starts, r0, c0, w, b_idx, f_idx, edges, tz, perspective, keys, H, W) -> None:
        device = n.device
        counts = n[k0:k1]
        item = torch.repeat_interleave(torch.arange(k0, k1, device=device), counts)
        local = torch.arange(item.numel(), device=device) - (starts[item] - starts[k0])
        wi = w[item]
        row = r0[item] + local // wi
        col = c0[item] + local % wi
        py = row.to(torch.float64) + 0.5
        px = col.to(torch.float64) + 0.5
        inside = torch.ones_like(px, dtype=torch.bool)
        e = []
        for ax, ay, bx, by, sign, owned in edges:
            ek = sign[item] * ((ax[item] - px) * (by[item] - py) - (ay[item] - py) * (bx[item] - px))
            inside &= (ek > 0) | ((ek == 0) & owned[item])
            e.append(ek)
        tot = e[0] + e[1] + e[2]
        inside &= tot > 0
        sel = inside.nonzero().squeeze(1)
        if sel.numel() == 0:
            return
        item, e0, e1, e2, tot = item[sel], e[0][sel], e[1][sel], e[2][sel], tot[sel]
        z = tz[item]
        if perspective:
            depth = tot / (e0 / z[:, 0] + e1 / z[:, 1] + e2 / z[:, 2])
        else:
            depth = (e0 * z[:, 0] + e1 * z[:, 1] + e2 * z[:, 2]) / tot
        pix = (b_idx[item] * H + row[sel]) * W + col[sel]
        keys.scatter_reduce_(0, pix, pack_depth_id(depth, f_idx[item]), reduce="amin")
