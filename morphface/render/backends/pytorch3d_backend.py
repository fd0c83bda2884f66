"""``pytorch3d`` backend: ``pytorch3d.renderer.mesh.rasterize_meshes`` (CPU or CUDA), when importable.

PyTorch3D's NDC has +X to the *left* and +Y *up*, and for non-square images the shorter side spans
``[-1, 1]`` while the longer one spans ``[-s, s]`` with ``s = long / short``; its pixel (0, 0) is
the top-left one. Ours has x right and y down with both axes spanning ``[-1, 1]``, so
``x_p3d = -x * W / min(H, W)`` and ``y_p3d = -y * H / min(H, W)``. Its z is only used for the depth
test here (the shared code recomputes barycentrics and depth); it skips faces behind ``z = 0``, so
orthographic depths are shifted to be positive. Invalid triangles are left out of each image's
face list and the packed face indices it returns are mapped back to our per-mesh ids.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import RasterBackend, RasterInputs

__all__ = ["Pytorch3dBackend"]


class Pytorch3dBackend(RasterBackend):
    """Visibility through PyTorch3D's rasteriser (``faces_per_pixel=1``, ``blur_radius=0``)."""

    name = "pytorch3d"

    def is_available(self) -> bool:
        try:
            from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
            from pytorch3d.structures import Meshes  # noqa: F401
        except Exception:
            return False
        return True

    def unavailable_reason(self) -> str:
        return "backend 'pytorch3d' needs the pytorch3d package (not importable here)"

    def supports(self, device: torch.device) -> bool:
        return device.type in ("cpu", "cuda")

    @staticmethod
    def to_pytorch3d_ndc(verts_ndc: Tensor, image_size: tuple[int, int], perspective: bool) -> Tensor:
        """``(B, V, 3)`` our NDC -> PyTorch3D NDC (+X left, +Y up, shorter side ``[-1, 1]``)."""
        H, W = image_size
        short = float(min(H, W))
        v = verts_ndc.to(torch.float32)
        z = v[..., 2]
        if not perspective:
            finite = torch.isfinite(z)
            z_min = torch.where(finite, z, torch.full_like(z, float("inf"))).amin(-1, keepdim=True)
            z = z - torch.where(torch.isfinite(z_min), z_min, torch.zeros_like(z_min)) + 1.0
        return torch.stack([-v[..., 0] * (W / short), -v[..., 1] * (H / short), z], dim=-1)

    def visibility(self, inputs: RasterInputs) -> Tensor:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes

        H, W = inputs.image_size
        device = inputs.verts_ndc.device
        B = inputs.verts_ndc.shape[0]
        verts = self.to_pytorch3d_ndc(inputs.verts_ndc, inputs.image_size, inputs.perspective)
        verts = torch.nan_to_num(verts, nan=0.0, posinf=0.0, neginf=0.0)  # only invalid faces use them
        ids = [inputs.face_valid[b].nonzero().squeeze(1) for b in range(B)]
        if sum(int(i.numel()) for i in ids) == 0:
            return torch.full((B, H, W), -1, dtype=torch.int64, device=device)
        meshes = Meshes(verts=list(verts.unbind(0)), faces=[inputs.faces[i] for i in ids])
        pix_to_face, _, _, _ = rasterize_meshes(
            meshes, image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, perspective_correct=False,
            cull_backfaces=False)
        lut = torch.cat(ids)  # packed face index -> our face id
        packed = pix_to_face[..., 0].long()
        return torch.where(packed >= 0, lut[packed.clamp(min=0)], packed.new_full((), -1))
