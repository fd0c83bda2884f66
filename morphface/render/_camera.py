"""Helpers shared by the renderers: project with a camera, rasterise, rotate into the camera frame."""

from __future__ import annotations

from torch import Tensor

from ..camera import Camera, rotate
from .rasterizer import rasterize
from .types import Fragments

__all__ = ["rasterize_with_camera", "to_camera_frame", "check_verts"]


def check_verts(verts: Tensor, n_vertices: int | None = None, name: str = "verts") -> None:
    """Raise ``ValueError`` unless ``verts`` is ``(B, V, 3)`` (with ``V == n_vertices`` if given)."""
    if not isinstance(verts, Tensor) or verts.dim() != 3 or verts.shape[-1] != 3:
        shape = tuple(verts.shape) if isinstance(verts, Tensor) else type(verts).__name__
        raise ValueError(f"{name} must have shape (B, V, 3); got {shape}")
    if n_vertices is not None and verts.shape[1] != n_vertices:
        raise ValueError(f"{name} must have shape (B, {n_vertices}, 3) to match the model; got {tuple(verts.shape)}")


def rasterize_with_camera(verts: Tensor, faces: Tensor, camera: Camera, backend: str = "auto",
                          cull_backfaces: bool = False) -> Fragments:
    """Project world-frame ``(B, V, 3)`` vertices (mm) with ``camera`` and rasterise them."""
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a morphface.camera.Camera; got {type(camera).__name__}")
    check_verts(verts)
    ndc = camera.to_ndc(verts)
    return rasterize(ndc, faces, camera.image_size, perspective=camera.is_perspective, backend=backend,
                     znear=float(getattr(camera, "znear", 1.0)), cull_backfaces=cull_backfaces)


def to_camera_frame(directions: Tensor, camera: Camera) -> Tensor:
    """Rotate ``(B, N, 3)`` world-frame directions into the camera frame (x right, y up, z toward
    the viewer), ``(B', N, 3)`` with ``B'`` the broadcast of the two batches."""
    return rotate(directions, camera.R.to(directions.dtype))
