"""`FitResult`: the parameters a fit recovers, with the camera they imply and save/load."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor

from ..camera import Camera, PerspectiveCamera, WeakPerspectiveCamera, euler_to_matrix
from ..errors import FitError
from ..morphable import MorphableModel

__all__ = ["FitResult", "default_focal"]

# Deep3DFaceRecon's camera: focal 1015 px for a 224 px image (a ~12.6 degree field of view).
_D3D_FOCAL_RATIO = 1015.0 / 224.0


def default_focal(image_size: tuple[int, int]) -> float:
    """Focal length in pixels used when the true one is unknown: Deep3DFaceRecon's field of view."""
    return _D3D_FOCAL_RATIO * max(image_size)


@dataclass
class FitResult:
    """Fitted 3DMM and camera parameters for a batch of ``B`` images.

    Attributes:
        id_coeffs: ``(B, K_id)`` identity coefficients (std units).
        exp_coeffs: ``(B, K_exp)`` expression coefficients (std units, or blendshape weights in [0, 1]).
        angles: ``(B, 3)`` pitch, yaw, roll in radians (``morphface.camera`` convention).
        image_size: ``(H, W)`` of the images the fit refers to.
        camera_kind: ``"perspective"`` or ``"weak_perspective"``.
        translation: ``(B, 3)`` mm (perspective) or ``(B, 2)`` pixels (weak perspective).
        focal: ``(B,)`` pixels (perspective) or ``scale`` in pixels/mm (weak perspective).
        principal_point: ``(B, 2)`` pixels (perspective only; the image centre by default).
        tex_coeffs: ``(B, K_tex)`` albedo coefficients, or ``None``.
        vertex_albedo: ``(B, V, 3)`` per-vertex albedo for models without an albedo basis, or ``None``.
        sh: ``(B, 27)`` spherical-harmonics lighting (3 channels x 9), or ``None``.
        landmarks: ``(B, L, 2)`` pixel positions of the fitted model landmarks.
        target_landmarks: ``(B, L, 2)`` the landmarks that were fitted.
        residuals: ``(B,)`` landmark reprojection RMSE in pixels.
        history: per-iteration mean loss values.
    """

    id_coeffs: Tensor
    exp_coeffs: Tensor
    angles: Tensor
    translation: Tensor
    focal: Tensor
    image_size: tuple[int, int]
    camera_kind: str = "perspective"
    principal_point: Tensor | None = None
    tex_coeffs: Tensor | None = None
    vertex_albedo: Tensor | None = None
    sh: Tensor | None = None
    landmarks: Tensor | None = None
    target_landmarks: Tensor | None = None
    residuals: Tensor | None = None
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.camera_kind not in ("perspective", "weak_perspective"):
            raise ValueError(f"camera_kind must be 'perspective' or 'weak_perspective'; got {self.camera_kind!r}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.camera_kind == "perspective" and self.principal_point is None:
            H, W = self.image_size
            self.principal_point = self.angles.new_tensor([W / 2.0, H / 2.0]).expand(self.batch_size, 2).clone()

    @property
    def batch_size(self) -> int:
        return self.angles.shape[0]

    @property
    def euler_degrees(self) -> Tensor:
        """``(B, 3)`` pitch, yaw, roll in degrees."""
        return self.angles * (180.0 / math.pi)

    @property
    def rotation(self) -> Tensor:
        """``(B, 3, 3)`` model-to-camera rotation."""
        return euler_to_matrix(self.angles)

    @property
    def camera(self) -> Camera:
        """The fitted camera (pose included)."""
        if self.camera_kind == "perspective":
            return PerspectiveCamera(image_size=self.image_size, focal=self.focal,
                                     principal_point=self.principal_point, R=self.rotation, t=self.translation)
        return WeakPerspectiveCamera(image_size=self.image_size, scale=self.focal, translation=self.translation,
                                     R=self.rotation)

    def vertices(self, model: MorphableModel) -> Tensor:
        """Model-frame vertices ``(B, V, 3)`` mm."""
        return model(self.id_coeffs, self.exp_coeffs)

    def render_overlay(self, model: MorphableModel, images: Tensor, mode: str = "shaded", alpha: float = 0.6,
                       backend: str = "auto") -> Tensor:
        """The fitted face drawn over the images, ``(B, 3, H, W)`` in [0, 1].

        Args:
            model: the model the fit refers to.
            images: ``(B, 3, H, W)`` RGB in [0, 1], the images that were fitted.
            mode: ``"shaded"`` (grey Lambertian mesh under frontal light), ``"ncc"`` (HeadGAN's NCC
                colours) or ``"albedo"`` (the fit's own albedo and light, when it has them).
            alpha: opacity of the face over the photo.
        """
        from ..render import ambient_sh, render_ncc, render_shaded

        if images.dim() != 4 or images.shape[0] != self.batch_size or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"images must be ({self.batch_size}, 3, {self.image_size[0]}, {self.image_size[1]}); "
                             f"got {tuple(images.shape)}")
        verts = self.vertices(model).to(images)
        cam = self.to(images.dtype).camera
        if mode == "ncc":
            out = render_ncc(model, verts, cam, backend=backend)
        elif mode in ("shaded", "albedo"):
            B = self.batch_size
            if mode == "albedo" and self.sh is not None:
                sh = self.sh.to(images)
                albedo = (self.vertex_albedo.to(images) if self.vertex_albedo is not None
                          else model.albedo(self.tex_coeffs, batch_size=B).to(images))
            else:
                # a frontal key light from slightly above on a dim ambient: shows the geometry clearly
                sh = ambient_sh(B, level=0.45, dtype=images.dtype, device=images.device).reshape(B, 3, 9)
                sh[:, :, 2] = 0.55  # toward the camera (+z)
                sh[:, :, 1] = -0.25  # the basis term is -y: a negative weight lights from above
                sh = sh.reshape(B, 27)
                albedo = images.new_full((B, model.n_vertices, 3), 0.8)
            out = render_shaded(verts, model.triangles, cam, sh, albedo=albedo, backend=backend)
        else:
            raise ValueError(f"mode must be 'shaded', 'ncc' or 'albedo'; got {mode!r}")
        m = out.mask * alpha
        return images * (1 - m) + out.image * m

    def check_finite(self) -> None:
        """Raise :class:`FitError` if any parameter is NaN or infinite."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise FitError(f"fit produced non-finite values in {f.name!r}")

    def to(self, *args, **kwargs) -> FitResult:
        """A copy with every tensor moved/cast like ``Tensor.to``."""
        return replace(self, **{f.name: getattr(self, f.name).to(*args, **kwargs)
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    def detach(self) -> FitResult:
        return replace(self, **{f.name: getattr(self, f.name).detach()
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    def __getitem__(self, index) -> FitResult:
        """Select images of the batch (an int keeps a batch axis of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, **{f.name: getattr(self, f.name)[index]
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    @staticmethod
    def cat(results: list[FitResult]) -> FitResult:
        """Concatenate along the batch (histories are averaged element-wise where they overlap)."""
        first = results[0]
        upd = {}
        for f in fields(first):
            v = getattr(first, f.name)
            if isinstance(v, Tensor):
                upd[f.name] = torch.cat([getattr(r, f.name) for r in results])
        return replace(first, **upd, history=list(first.history))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write one ``.safetensors`` file (tensors + JSON metadata)."""
        from safetensors.torch import save_file

        tensors = {f.name: getattr(self, f.name).detach().cpu().contiguous()
                   for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        meta = {"format": "morphface-fit", "image_size": json.dumps(list(self.image_size)),
                "camera_kind": self.camera_kind, "history": json.dumps([float(h) for h in self.history])}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise FitError(f"{path}: not a readable fit file ({e})") from e
        if meta.get("format") != "morphface-fit":
            raise FitError(f"{path}: not a morphface fit file (format={meta.get('format')!r})")
        return cls(**tensors, image_size=tuple(json.loads(meta["image_size"])), camera_kind=meta["camera_kind"],
                   history=json.loads(meta.get("history", "[]")))
