"""``nvdiffrast`` backend: NVIDIA's CUDA rasteriser (``dr.RasterizeCudaContext``), CUDA tensors only.

Our NDC becomes clip space ``(x w, y w, z_clip, w)``:

* perspective: ``w = depth`` and ``z_clip / w`` is the OpenGL depth map
  ``(f + n) / (f - n) - 2 f n / ((f - n) depth)``, monotone in depth, -1 at ``n = znear`` and 1 at
  ``f`` (a little beyond the farthest drawable vertex), so nvdiffrast's depth test keeps the
  nearest surface and its near/far clipping removes nothing we draw;
* orthographic: ``w = 1`` and ``z`` is the depth mapped linearly into ``[-0.99, 0.99]`` per image.

nvdiffrast's output row 0 is NDC ``y = -1``, which is our top row, and it samples pixel centres, so
no flip or offset is needed. Its 4th output channel is ``triangle id + 1`` (0 on background); the
shared code recomputes barycentrics and depth from that id. Triangles the caller marked invalid
(too near, non-finite, culled) are removed by moving their three corners to one clip position
outside the view volume (a zero-area triangle outside the frustum, which nvdiffrast never draws) in
an unshared per-corner vertex buffer; that buffer is only built when some triangle is invalid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import RasterBackend, RasterInputs

__all__ = ["NvdiffrastBackend"]


class NvdiffrastBackend(RasterBackend):
    """Visibility through ``nvdiffrast.torch.rasterize`` on a lazily created CUDA context."""

    name = "nvdiffrast"

    def __init__(self) -> None:
        self._contexts: dict[int, object] = {}

    def is_available(self) -> bool:
        if not torch.cuda.is_available():
            return False
        try:
            import nvdiffrast.torch  # noqa: F401
        except Exception:  # its JIT build can fail with more than ImportError
            return False
        return True

    def unavailable_reason(self) -> str:
        if not torch.cuda.is_available():
            return "backend 'nvdiffrast' needs a CUDA GPU (torch.cuda.is_available() is False)"
        return "backend 'nvdiffrast' needs the nvdiffrast package (pip install diffrp-nvdiffrast, with nvcc and ninja)"

    def supports(self, device: torch.device) -> bool:
        return device.type == "cuda"

    def _context(self, device: torch.device):
        import nvdiffrast.torch as dr

        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self._contexts:
            self._contexts[index] = dr.RasterizeCudaContext(device=torch.device("cuda", index))
        return self._contexts[index]

    @staticmethod
    def to_clip(verts_ndc: Tensor, face_valid: Tensor, faces: Tensor, perspective: bool) -> Tensor:
        """``(B, V, 3)`` NDC -> ``(B, V, 4)`` float32 clip coordinates (see the module docstring)."""
        v = verts_ndc.to(torch.float32)
        depth = v[..., 2]
        # Depth range over the vertices of drawable triangles only (others may be anything).
        used = torch.zeros_like(depth, dtype=torch.bool)
        if faces.numel():
            b, f = face_valid.nonzero(as_tuple=True)
            used[b[:, None].expand(-1, 3), faces[f]] = True
        big = torch.finfo(torch.float32).max
        d_min = torch.where(used, depth, big).amin(-1, keepdim=True)
        d_max = torch.where(used, depth, -big).amax(-1, keepdim=True)
        d_min = torch.where(used.any(-1, keepdim=True), d_min, torch.zeros_like(d_min))
        d_max = torch.where(used.any(-1, keepdim=True), d_max, torch.ones_like(d_max))
        if perspective:
            w = depth
            n = d_min.clamp(min=1e-6) * 0.5
            f = d_max * 2.0 + 1.0
            z = (f + n) / (f - n) * depth - 2.0 * f * n / (f - n)
        else:
            w = torch.ones_like(depth)
            half = ((d_max - d_min) * 0.5).clamp(min=1e-6)
            z = (depth - (d_min + d_max) * 0.5) / half * 0.99
        return torch.stack([v[..., 0] * w, v[..., 1] * w, z, w], dim=-1)

    def visibility(self, inputs: RasterInputs) -> Tensor:
        import nvdiffrast.torch as dr

        H, W = inputs.image_size
        device = inputs.verts_ndc.device
        B, F = inputs.verts_ndc.shape[0], inputs.faces.shape[0]
        if F == 0:
            return torch.full((B, H, W), -1, dtype=torch.int64, device=device)
        valid = inputs.face_valid
        clip = self.to_clip(inputs.verts_ndc, valid, inputs.faces, inputs.perspective)
        clip = torch.nan_to_num(clip, nan=0.0, posinf=0.0, neginf=0.0)  # invalid faces only
        if bool(valid.all()):
            pos, tri = clip.contiguous(), inputs.faces.to(torch.int32).contiguous()
        else:
            # Unshared corners: corner 3f + k is vertex faces[f, k]; invalid triangles collapse to a
            # point outside the frustum (x = y = 2w).
            pos = clip[:, inputs.faces.reshape(-1)]  # (B, 3F, 4)
            outside = pos.new_tensor([2.0, 2.0, 0.0, 1.0])
            pos = torch.where(valid.repeat_interleave(3, dim=1)[..., None], pos, outside).contiguous()
            tri = torch.arange(3 * F, device=device, dtype=torch.int32).view(F, 3)
        rast, _ = dr.rasterize(self._context(device), pos, tri, resolution=[H, W], grad_db=False)
        return rast[..., 3].round().to(torch.int64) - 1
