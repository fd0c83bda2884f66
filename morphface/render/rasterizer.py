"""`rasterize`: nearest-triangle visibility at pixel centres, then differentiable barycentrics.

Two stages (nvdiffrast's split):

1. A backend (:mod:`morphface.render.backends`) computes *visibility*: the id of the nearest
   triangle at every pixel centre. No gradient flows through this stage.
2. Written once here, in PyTorch, for every backend: the barycentric coordinates and the depth
   at each covered pixel centre are recomputed from the winning triangle's vertices. They are
   differentiable w.r.t. the vertex positions, so gradients reach the geometry through the
   interpolated attributes of the visible surface (not through silhouette changes). On CPU
   tensors the same formulas run as fused numba kernels (:data:`FUSED_CPU`), several times
   faster than op-by-op PyTorch there; the tests hold the two paths to each other.

Conventions. ``verts_ndc`` is exactly what :meth:`morphface.camera.Camera.to_ndc` returns: NDC
x, y with ``(-1, -1)`` at the top-left image *corner* and y down, and the depth in mm (positive in
front of a perspective camera) as the third coordinate. Pixel ``(i, j)`` is sampled at its centre,
``x = (2j + 1) / W - 1``, ``y = (2i + 1) / H - 1``; the nearest surface (smallest depth) wins.

Perspective cameras (``perspective=True``): barycentrics are perspective-correct
(``b_k`` proportional to ``s_k / depth_k`` for the screen-space weights ``s_k``) and the depth is the
harmonic interpolation of the corner depths (the true depth of the surface point). Triangles with
any vertex nearer than ``znear`` are **dropped, not clipped**: faces are never close to the camera
in this library's use, and dropping keeps every backend exact and simple.

Orthographic / weak-perspective (``perspective=False``): barycentrics and depth are linear in
screen space; depth may be negative.

Robustness: triangles with a non-finite vertex are dropped; zero-area (degenerate) triangles never
win a pixel; triangles entirely outside the image cost nothing; both windings are drawn unless
``cull_backfaces=True``, which drops triangles that are clockwise on screen, i.e. back faces of a
mesh whose triangles are counter-clockwise seen from outside (the convention of every model in
morphface). Culling is off by default because a face mesh seen from the side shows some back faces
at its silhouette, and their id is harmless while a hole is not.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .backends import RasterInputs, resolve_backend
from .types import Fragments

__all__ = ["rasterize", "face_validity", "fragments_from_ids", "check_faces", "FUSED_CPU"]

#: Use the fused numba kernels of :mod:`morphface.render._fused_cpu` for the differentiable stage
#: (and for :func:`morphface.render.interpolate`) on float32/float64 CPU tensors. They compute the
#: same values as the PyTorch code below in one pass instead of ~30. Their backward is compiled too;
#: a backward that builds a graph (``create_graph=True``: double backward, R1 penalties on vertices,
#: Hessian-vector products) runs through the PyTorch code instead, so every order of derivative is
#: exact. Set to False to run the PyTorch path everywhere.
FUSED_CPU = True


def use_fused_cpu(*tensors: Tensor) -> bool:
    """True if the fused CPU kernels apply to these tensors (see :data:`FUSED_CPU`)."""
    return FUSED_CPU and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)


def check_faces(faces: Tensor, n_vertices: int | None = None, name: str = "faces") -> Tensor:
    """Validate ``(F, 3)`` integer faces and return them as int64 (ids checked if ``n_vertices``)."""
    if not isinstance(faces, Tensor) or faces.dim() != 2 or faces.shape[1] != 3:
        shape = tuple(faces.shape) if isinstance(faces, Tensor) else type(faces).__name__
        raise ValueError(f"{name} must have shape (F, 3); got {shape}")
    if faces.dtype.is_floating_point or faces.dtype == torch.bool or faces.is_complex():
        raise ValueError(f"{name} must be an integer tensor (int64); got dtype {faces.dtype}")
    faces = faces.to(torch.int64)
    if n_vertices is not None and faces.numel():
        lo, hi = torch.aminmax(faces)
        if int(lo) < 0 or int(hi) >= n_vertices:
            raise ValueError(f"{name} ids must lie in [0, {n_vertices}); got [{int(lo)}, {int(hi)}]")
    return faces


def check_ids(pix_to_face: Tensor, n_faces: int) -> None:
    """Raise ``ValueError`` unless every id in ``pix_to_face`` is ``-1`` or a row of an ``(n_faces, 3)`` table."""
    if pix_to_face.numel():
        lo, hi = torch.aminmax(pix_to_face)
        if int(lo) < -1 or int(hi) >= n_faces:
            raise ValueError(f"pix_to_face ids must lie in [-1, {n_faces}) for faces of shape ({n_faces}, 3); "
                             f"got [{int(lo)}, {int(hi)}]")


def _check_image_size(image_size) -> tuple[int, int]:
    try:
        H, W = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W); got {image_size!r}") from None
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size must be positive; got {(H, W)}")
    return H, W


def face_validity(verts_ndc: Tensor, faces: Tensor, perspective: bool, znear: float,
                  cull_backfaces: bool) -> Tensor:
    """``(B, F)`` bool: which triangles a backend may draw (see the module docstring)."""
    v = verts_ndc.detach()
    ok = torch.isfinite(v).all(dim=-1)  # (B, V): per vertex first, cheaper than per corner
    if perspective:
        ok &= v[..., 2] >= znear
    if bool(ok.all()):  # the usual case: skip the per-corner gather
        valid = torch.ones(v.shape[0], faces.shape[0], dtype=torch.bool, device=v.device)
    else:
        valid = ok[:, faces].all(dim=-1)
    if cull_backfaces:
        x, y = v[..., 0][:, faces], v[..., 1][:, faces]  # (B, F, 3)
        area2 = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
        # With y down on screen, a triangle counter-clockwise seen by the viewer has area2 < 0.
        valid &= area2 < 0
    return valid


_CYCLE = torch.tensor([0, 1, 2, 0, 1])


@functools.lru_cache(maxsize=16)
def _pixel_centres(H: int, W: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(H * W, 2)`` NDC x, y of the pixel centres, row-major (cached: a few per image size)."""
    xs = (torch.arange(W, dtype=torch.float64) * 2 + 1) / W - 1
    ys = (torch.arange(H, dtype=torch.float64) * 2 + 1) / H - 1
    grid = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W)], dim=-1).reshape(H * W, 2)
    return grid.to(device=device, dtype=dtype)


def fragments_from_ids(verts_ndc: Tensor, faces: Tensor, pix_to_face: Tensor, perspective: bool) -> Fragments:
    """Differentiable barycentrics and depth at the pixel centres covered by ``pix_to_face``.

    Args:
        verts_ndc: ``(B, V, 3)`` NDC x, y and depth (mm); may require grad.
        faces: ``(F, 3)`` int64.
        pix_to_face: ``(B, H, W)`` int64 visible triangle ids, ``-1`` on background.
        perspective: perspective-correct barycentrics and harmonic depth if True.

    Returns:
        :class:`Fragments`; ``bary`` and ``depth`` carry gradients to ``verts_ndc``.
    """
    if pix_to_face.dim() != 3 or pix_to_face.shape[0] != verts_ndc.shape[0]:
        raise ValueError(f"pix_to_face must be (B, H, W) with B = {verts_ndc.shape[0]} (the vertices' batch); "
                         f"got {tuple(pix_to_face.shape)}")
    if use_fused_cpu(verts_ndc):
        from ._fused_cpu import BaryDepth

        check_ids(pix_to_face, faces.shape[0])  # the compiled kernel does no bounds checks

        bary, depth = BaryDepth.apply(verts_ndc, faces, pix_to_face, bool(perspective))
    else:
        bary, depth = bary_depth_torch(verts_ndc, faces, pix_to_face, perspective)
    return Fragments(pix_to_face=pix_to_face, bary=bary, depth=depth, mask=pix_to_face >= 0)


def bary_depth_torch(verts_ndc: Tensor, faces: Tensor, pix_to_face: Tensor, perspective: bool) -> tuple[Tensor, Tensor]:
    """The PyTorch path of :func:`fragments_from_ids` (any device, any order of derivatives): ``bary``
    ``(B, H, W, 3)`` and ``depth`` ``(B, H, W)``. The fused CPU kernel's double backward runs through it."""
    B, H, W = pix_to_face.shape
    V = verts_ndc.shape[1]
    dtype, device = verts_ndc.dtype, verts_ndc.device
    mask = pix_to_face >= 0
    idx = mask.reshape(-1).nonzero().squeeze(1)  # (P,) covered pixels
    P = idx.numel()
    f = pix_to_face.reshape(-1).index_select(0, idx)
    b = idx.div(H * W, rounding_mode="floor")
    centre = _pixel_centres(H, W, dtype, device).index_select(0, idx.remainder(H * W))  # (P, 2) NDC

    # Corners 0, 1, 2, 0, 1 of each winning triangle, so that corner k + 1 and k + 2 are views.
    corner = (faces.index_select(0, f) + (b * V)[:, None])[:, _CYCLE.to(device)]  # (P, 5)
    tri = verts_ndc.reshape(B * V, 3).index_select(0, corner.reshape(-1)).view(P, 5, 3)
    # Corners relative to the pixel centre: the edge functions then multiply small numbers, which
    # keeps float32 accurate for sub-pixel triangles anywhere in a large image. (NDC instead of
    # pixel units only scales all three edge functions by the same W H / 4, which cancels.)
    x = tri[..., 0] - centre[:, :1]
    y = tri[..., 1] - centre[:, 1:]
    z = tri[:, :3, 2]
    # Weight of corner k = signed area of (p, v_{k+1}, v_{k+2}) = cross(v_{k+1} - p, v_{k+2} - p).
    e = x[:, 1:4] * y[:, 2:5] - y[:, 1:4] * x[:, 2:5]  # (P, 3)
    tot = e.sum(-1, keepdim=True)
    # A winner never has zero total weight in the backend's arithmetic; the guards only keep NaN
    # out should this arithmetic (or a foreign backend) disagree.
    if perspective:
        # b_k = (e_k / z_k) / sum_j (e_j / z_j) and depth = sum_j e_j / sum_j (e_j / z_j): the
        # perspective-correct weights and the harmonic depth, without normalising e first.
        w = e / z
        sw = w.sum(-1, keepdim=True)
        sw = torch.where(sw == 0, torch.ones_like(sw), sw)
        bary_c, depth_c = w / sw, (tot / sw).squeeze(-1)
    else:
        tot = torch.where(tot == 0, torch.ones_like(tot), tot)
        bary_c = e / tot
        depth_c = (bary_c * z).sum(-1)

    bary = verts_ndc.new_zeros(B * H * W, 3).index_copy(0, idx, bary_c).view(B, H, W, 3)
    depth = verts_ndc.new_zeros(B * H * W).index_copy(0, idx, depth_c).view(B, H, W)
    return bary, depth


def rasterize(
    verts_ndc: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    perspective: bool = True,
    backend: str = "auto",
    znear: float = 1.0,
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterise a batch of meshes sharing one triangle list.

    Args:
        verts_ndc: ``(B, V, 3)`` float: NDC x, y in ``[-1, 1]`` over the image (top-left corner
            ``(-1, -1)``, y down) and depth in mm, as returned by ``camera.to_ndc(verts)``.
        faces: ``(F, 3)`` int64 vertex ids (shared by the batch).
        image_size: ``(H, W)`` in pixels.
        perspective: pass ``camera.is_perspective``; enables perspective-correct barycentrics,
            harmonic depth interpolation and the ``znear`` test.
        backend: ``"auto"``, ``"cpu"``, ``"torch"``, ``"nvdiffrast"`` or ``"pytorch3d"``
            (see :mod:`morphface.render.backends`).
        znear: near distance in mm (perspective only; triangles with a vertex nearer are dropped).
        cull_backfaces: drop triangles that are clockwise on screen (back faces of a CCW mesh).

    Returns:
        :class:`Fragments` ``(pix_to_face, bary, depth, mask)`` on the device of ``verts_ndc``.

    Raises:
        ValueError: bad shapes, ids out of range, non-positive ``znear``.
        BackendUnavailableError: the requested backend cannot run here.
    """
    if not isinstance(verts_ndc, Tensor) or verts_ndc.dim() != 3 or verts_ndc.shape[-1] != 3:
        shape = tuple(verts_ndc.shape) if isinstance(verts_ndc, Tensor) else type(verts_ndc).__name__
        raise ValueError(f"verts_ndc must have shape (B, V, 3); got {shape}")
    if not verts_ndc.dtype.is_floating_point:
        raise ValueError(f"verts_ndc must be a floating-point tensor; got dtype {verts_ndc.dtype}")
    H, W = _check_image_size(image_size)
    faces = check_faces(faces, verts_ndc.shape[1]).to(verts_ndc.device)
    if perspective and not znear > 0:
        raise ValueError(f"znear must be > 0 for a perspective camera; got {znear}")

    impl = resolve_backend(backend, verts_ndc.device)
    with torch.no_grad():
        valid = face_validity(verts_ndc, faces, bool(perspective), float(znear), bool(cull_backfaces))
        inputs = RasterInputs(verts_ndc=verts_ndc.detach(), faces=faces, face_valid=valid,
                              image_size=(H, W), perspective=bool(perspective))
        pix_to_face = impl.visibility(inputs)
    return fragments_from_ids(verts_ndc, faces, pix_to_face, bool(perspective))
