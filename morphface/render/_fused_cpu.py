"""Fused CPU kernels (numba) for the differentiable stage of rasterisation and for interpolation.

:func:`morphface.render.rasterizer.fragments_from_ids` and :func:`morphface.render.interpolate` are
written in PyTorch and run on every device. On CPU tensors, where PyTorch spends most of its time
making one memory pass per elementwise operation (about 30 per pass here), these two custom
autograd functions compute exactly the same quantities in one pass over the pixels each way:

* :class:`BaryDepth`: barycentrics and depth of the winning triangle at each pixel centre from
  ``verts_ndc`` (forward), and their vector-Jacobian product back to ``verts_ndc`` (backward);
* :class:`Interpolate`: ``sum_k bary_k attrs[faces[f, k]]`` (forward) and the gradients to
  ``attrs`` and ``bary`` (backward).

Internally they compute in float64 (accumulating gradients in float64 too) and return the
inputs' dtype. A backward asked to build a graph (``create_graph=True``, as double backward, an R1
penalty on vertices or a Hessian-vector product does) recomputes the vector-Jacobian product through
the PyTorch path (:func:`~morphface.render.rasterizer.bary_depth_torch`,
:func:`~morphface.render.interpolate.interpolate_torch`), so derivatives of every order are exact; a
plain backward stays compiled. ``morphface.render.rasterizer.FUSED_CPU = False`` uses the PyTorch path
everywhere. The tests check both paths against each other, with ``gradcheck`` and ``gradgradcheck``.

Backward passes accumulate into per-work-item buffers (summed afterwards), so no two threads ever
add into the same memory.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from . import _numba  # noqa: F401  (threading layer, before any kernel compiles)

__all__ = ["BaryDepth", "Interpolate"]


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _bary_fwd(verts, faces, p2f, perspective, bary, depth):  # pragma: no cover - compiled
    B, H, W = p2f.shape
    for r in prange(B * H):
        b = r // H
        i = r - b * H
        cy = (2.0 * i + 1.0) / H - 1.0
        for j in range(W):
            f = p2f[b, i, j]
            if f < 0:
                bary[b, i, j, 0] = 0.0
                bary[b, i, j, 1] = 0.0
                bary[b, i, j, 2] = 0.0
                depth[b, i, j] = 0.0
                continue
            cx = (2.0 * j + 1.0) / W - 1.0
            v0, v1, v2 = faces[f, 0], faces[f, 1], faces[f, 2]
            x0 = np.float64(verts[b, v0, 0]) - cx
            y0 = np.float64(verts[b, v0, 1]) - cy
            x1 = np.float64(verts[b, v1, 0]) - cx
            y1 = np.float64(verts[b, v1, 1]) - cy
            x2 = np.float64(verts[b, v2, 0]) - cx
            y2 = np.float64(verts[b, v2, 1]) - cy
            z0 = np.float64(verts[b, v0, 2])
            z1 = np.float64(verts[b, v1, 2])
            z2 = np.float64(verts[b, v2, 2])
            e0 = x1 * y2 - y1 * x2
            e1 = x2 * y0 - y2 * x0
            e2 = x0 * y1 - y0 * x1
            tot = e0 + e1 + e2
            if perspective:
                w0, w1, w2 = e0 / z0, e1 / z1, e2 / z2
                sw = w0 + w1 + w2
                if sw == 0.0:
                    sw = 1.0
                bary[b, i, j, 0] = w0 / sw
                bary[b, i, j, 1] = w1 / sw
                bary[b, i, j, 2] = w2 / sw
                depth[b, i, j] = tot / sw
            else:
                if tot == 0.0:
                    tot = 1.0
                b0, b1, b2 = e0 / tot, e1 / tot, e2 / tot
                bary[b, i, j, 0] = b0
                bary[b, i, j, 1] = b1
                bary[b, i, j, 2] = b2
                depth[b, i, j] = b0 * z0 + b1 * z1 + b2 * z2


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _bary_bwd(verts, faces, p2f, g_bary, g_depth, perspective, n_items, buf):  # pragma: no cover - compiled
    B, H, W = p2f.shape
    rows = B * H
    per = (rows + n_items - 1) // n_items
    for it in prange(n_items):
        for r in range(it * per, min(rows, (it + 1) * per)):
            b = r // H
            i = r - b * H
            cy = (2.0 * i + 1.0) / H - 1.0
            for j in range(W):
                f = p2f[b, i, j]
                if f < 0:
                    continue
                cx = (2.0 * j + 1.0) / W - 1.0
                v0, v1, v2 = faces[f, 0], faces[f, 1], faces[f, 2]
                x0 = np.float64(verts[b, v0, 0]) - cx
                y0 = np.float64(verts[b, v0, 1]) - cy
                x1 = np.float64(verts[b, v1, 0]) - cx
                y1 = np.float64(verts[b, v1, 1]) - cy
                x2 = np.float64(verts[b, v2, 0]) - cx
                y2 = np.float64(verts[b, v2, 1]) - cy
                z0 = np.float64(verts[b, v0, 2])
                z1 = np.float64(verts[b, v1, 2])
                z2 = np.float64(verts[b, v2, 2])
                e0 = x1 * y2 - y1 * x2
                e1 = x2 * y0 - y2 * x0
                e2 = x0 * y1 - y0 * x1
                tot = e0 + e1 + e2
                gb0 = np.float64(g_bary[b, i, j, 0])
                gb1 = np.float64(g_bary[b, i, j, 1])
                gb2 = np.float64(g_bary[b, i, j, 2])
                gd = np.float64(g_depth[b, i, j])
                if perspective:
                    w0, w1, w2 = e0 / z0, e1 / z1, e2 / z2
                    sw = w0 + w1 + w2
                    if sw == 0.0:
                        sw = 1.0
                    dep = tot / sw
                    s = (gb0 * w0 + gb1 * w1 + gb2 * w2) / sw
                    gw0 = (gb0 - s - gd * dep) / sw
                    gw1 = (gb1 - s - gd * dep) / sw
                    gw2 = (gb2 - s - gd * dep) / sw
                    ge0 = gw0 / z0 + gd / sw
                    ge1 = gw1 / z1 + gd / sw
                    ge2 = gw2 / z2 + gd / sw
                    gz0 = -gw0 * w0 / z0
                    gz1 = -gw1 * w1 / z1
                    gz2 = -gw2 * w2 / z2
                else:
                    if tot == 0.0:
                        tot = 1.0
                    b0, b1, b2 = e0 / tot, e1 / tot, e2 / tot
                    g0, g1, g2 = gb0 + gd * z0, gb1 + gd * z1, gb2 + gd * z2
                    s = g0 * b0 + g1 * b1 + g2 * b2
                    ge0 = (g0 - s) / tot
                    ge1 = (g1 - s) / tot
                    ge2 = (g2 - s) / tot
                    gz0, gz1, gz2 = gd * b0, gd * b1, gd * b2
                # e0 = x1 y2 - y1 x2, e1 = x2 y0 - y2 x0, e2 = x0 y1 - y0 x1.
                buf[it, b, v0, 0] += ge2 * y1 - ge1 * y2
                buf[it, b, v0, 1] += ge1 * x2 - ge2 * x1
                buf[it, b, v0, 2] += gz0
                buf[it, b, v1, 0] += ge0 * y2 - ge2 * y0
                buf[it, b, v1, 1] += ge2 * x0 - ge0 * x2
                buf[it, b, v1, 2] += gz1
                buf[it, b, v2, 0] += ge1 * y0 - ge0 * y1
                buf[it, b, v2, 1] += ge0 * x1 - ge1 * x0
                buf[it, b, v2, 2] += gz2


@njit(cache=True, parallel=True, nogil=True)
def _interp_fwd(attrs, faces, p2f, bary, out):  # pragma: no cover - compiled
    B, H, W = p2f.shape
    C = attrs.shape[2]
    shared = attrs.shape[0] == 1
    for r in prange(B * H):
        b = r // H
        i = r - b * H
        a = 0 if shared else b
        for j in range(W):
            f = p2f[b, i, j]
            if f < 0:
                for c in range(C):
                    out[b, i, j, c] = 0.0
                continue
            v0, v1, v2 = faces[f, 0], faces[f, 1], faces[f, 2]
            w0, w1, w2 = bary[b, i, j, 0], bary[b, i, j, 1], bary[b, i, j, 2]
            for c in range(C):
                out[b, i, j, c] = w0 * attrs[a, v0, c] + w1 * attrs[a, v1, c] + w2 * attrs[a, v2, c]


@njit(cache=True, parallel=True, nogil=True)
def _interp_bwd(attrs, faces, p2f, bary, g_out, need_attrs, need_bary, n_items, g_attrs, g_bary):  # pragma: no cover
    B, H, W = p2f.shape
    C = attrs.shape[2]
    shared = attrs.shape[0] == 1
    rows = B * H
    per = (rows + n_items - 1) // n_items
    for it in prange(n_items):
        for r in range(it * per, min(rows, (it + 1) * per)):
            b = r // H
            i = r - b * H
            a = 0 if shared else b
            for j in range(W):
                f = p2f[b, i, j]
                if f < 0:
                    if need_bary:
                        g_bary[b, i, j, 0] = 0.0
                        g_bary[b, i, j, 1] = 0.0
                        g_bary[b, i, j, 2] = 0.0
                    continue
                v0, v1, v2 = faces[f, 0], faces[f, 1], faces[f, 2]
                w0, w1, w2 = bary[b, i, j, 0], bary[b, i, j, 1], bary[b, i, j, 2]
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                for c in range(C):
                    g = g_out[b, i, j, c]
                    if need_attrs:
                        g_attrs[it, a, v0, c] += w0 * g
                        g_attrs[it, a, v1, c] += w1 * g
                        g_attrs[it, a, v2, c] += w2 * g
                    s0 += g * attrs[a, v0, c]
                    s1 += g * attrs[a, v1, c]
                    s2 += g * attrs[a, v2, c]
                if need_bary:
                    g_bary[b, i, j, 0] = s0
                    g_bary[b, i, j, 1] = s1
                    g_bary[b, i, j, 2] = s2


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _n_items(rows: int) -> int:
    # One accumulation buffer per work item: as many items as threads, never more than rows.
    return max(1, min(numba.get_num_threads(), rows))


def _graph_vjp(outputs: tuple, grads: tuple, inputs: tuple) -> tuple:
    """``d(sum_i <outputs_i, grads_i>) / d inputs`` as a differentiable graph; ``None`` for an input that
    needs no gradient. Called inside a backward that runs with ``create_graph=True``, on outputs the
    PyTorch path computed from the tensors saved in ``ctx`` (the graph's own tensors)."""
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
    wanted = [i for i, x in enumerate(inputs) if x.requires_grad]
    result: list = [None] * len(inputs)
    if pairs and wanted:
        got = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                  create_graph=True, allow_unused=True)
        for i, g in zip(wanted, got):
            result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(result)


class BaryDepth(torch.autograd.Function):
    """``(verts_ndc (B, V, 3), faces (F, 3), pix_to_face (B, H, W), perspective)`` ->
    ``(bary (B, H, W, 3), depth (B, H, W))``; same definition as the PyTorch path."""

    @staticmethod
    def forward(ctx, verts_ndc: Tensor, faces: Tensor, pix_to_face: Tensor, perspective: bool):
        B, H, W = pix_to_face.shape
        v = _np(verts_ndc)
        bary = np.empty((B, H, W, 3), dtype=v.dtype)  # written from float64 arithmetic
        depth = np.empty((B, H, W), dtype=v.dtype)
        _bary_fwd(v, _np(faces), _np(pix_to_face), bool(perspective), bary, depth)
        ctx.save_for_backward(verts_ndc, faces, pix_to_face)
        ctx.perspective = bool(perspective)
        return torch.from_numpy(bary), torch.from_numpy(depth)

    @staticmethod
    def backward(ctx, g_bary: Tensor, g_depth: Tensor):
        verts_ndc, faces, pix_to_face = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself must be differentiable
            from .rasterizer import bary_depth_torch

            outputs = bary_depth_torch(verts_ndc, faces, pix_to_face, ctx.perspective)
            return _graph_vjp(outputs, (g_bary, g_depth), (verts_ndc,)) + (None, None, None)
        B, H, W = pix_to_face.shape
        if g_bary is None:
            g_bary = torch.zeros(B, H, W, 3, dtype=verts_ndc.dtype)
        if g_depth is None:
            g_depth = torch.zeros(B, H, W, dtype=verts_ndc.dtype)
        n = _n_items(B * H)
        buf = np.zeros((n,) + tuple(verts_ndc.shape), dtype=np.float64)
        _bary_bwd(_np(verts_ndc), _np(faces), _np(pix_to_face), _np(g_bary), _np(g_depth), ctx.perspective, n, buf)
        return torch.from_numpy(buf.sum(0)).to(verts_ndc.dtype), None, None, None


class Interpolate(torch.autograd.Function):
    """``(attrs (A, N, C), faces (F, 3), pix_to_face (B, H, W), bary (B, H, W, 3))`` -> ``(B, H, W, C)``
    with ``A`` 1 or ``B``; ``attrs`` and ``bary`` must share a dtype."""

    @staticmethod
    def forward(ctx, attrs: Tensor, faces: Tensor, pix_to_face: Tensor, bary: Tensor):
        B, H, W = pix_to_face.shape
        a = _np(attrs)
        out = np.empty((B, H, W, a.shape[2]), dtype=a.dtype)
        _interp_fwd(a, _np(faces), _np(pix_to_face), _np(bary), out)
        ctx.save_for_backward(attrs, faces, pix_to_face, bary)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, g_out: Tensor):
        attrs, faces, pix_to_face, bary = ctx.saved_tensors
        need_attrs, _, _, need_bary = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself must be differentiable
            from .interpolate import interpolate_torch

            ga, gb = _graph_vjp((interpolate_torch(attrs, faces, pix_to_face, bary),), (g_out,), (attrs, bary))
            return (ga if need_attrs else None), None, None, (gb if need_bary else None)
        B, H, W = pix_to_face.shape
        n = _n_items(B * H)
        g_attrs = np.zeros((n if need_attrs else 0,) + tuple(attrs.shape), dtype=np.float64)
        g_bary = np.empty((B, H, W, 3) if need_bary else (0, 0, 0, 3), dtype=np.float64)
        _interp_bwd(_np(attrs), _np(faces), _np(pix_to_face), _np(bary), _np(g_out), bool(need_attrs),
                    bool(need_bary), n, g_attrs, g_bary)
        ga = torch.from_numpy(g_attrs.sum(0)).to(attrs.dtype) if need_attrs else None
        gb = torch.from_numpy(g_bary).to(bary.dtype) if need_bary else None
        return ga, None, None, gb
