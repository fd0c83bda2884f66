"""Flat 3DMM parameter vectors, motion vectors and parameter transfer between faces.

Layouts (the data contract between :mod:`morphface.data` and the pipelines):

* **parameter vector** ``(D_p,)``: ``[id (K_id), exp (K_exp), angles (3, radians: pitch, yaw, roll),
  translation (3, mm), focal (1, pixels)]``; the camera is perspective with its principal point at the
  image centre (the cached clips are square crops fitted that way). ``D_p = K_id + K_exp + 7``.
* **motion vector** ``(D_m,)``: ``[exp (K_exp), angles (3), translation (3)]``, ``D_m = K_exp + 6``
  (IFaceUV / PIRenderer's per-frame motion descriptor, in the 3DMM's own units).
* **motion window** ``(2 w + 1, D_m)``: the motion vectors of frames ``t - w .. t + w`` (oldest first),
  indices clamped at the clip ends; row ``w`` is frame ``t``.

The helpers are batched and differentiable; nothing here loops over frames.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor

from ..fitting import CropTransform, FitResult
from ..morphable import MorphableModel

__all__ = [
    "ParamLayout",
    "clamped_window_indices",
    "motion_windows",
    "transfer_motion",
    "rescale_fit",
    "crop_fit",
    "mouth_boxes",
]


class ParamLayout(NamedTuple):
    """Sizes of the flat parameter and motion vectors of one morphable model.

    Attributes:
        n_id: identity coefficients ``K_id``.
        n_exp: expression coefficients ``K_exp``.
    """

    n_id: int
    n_exp: int

    @classmethod
    def of(cls, model: MorphableModel) -> ParamLayout:
        return cls(model.n_id, model.n_exp)

    @property
    def dim(self) -> int:
        """``D_p = K_id + K_exp + 7``."""
        return self.n_id + self.n_exp + 7

    @property
    def motion_dim(self) -> int:
        """``D_m = K_exp + 6``."""
        return self.n_exp + 6

    @property
    def code_dim(self) -> int:
        """Length of a compression code (:meth:`code`): ``K_exp + 7`` (expression + camera)."""
        return self.n_exp + 7

    def check(self, params: Tensor, name: str = "params") -> Tensor:
        """``params`` as ``(B, D_p)`` (a ``(D_p,)`` vector gets a batch axis); ``ValueError`` otherwise."""
        if isinstance(params, Tensor) and params.dim() == 1:
            params = params[None]
        if not isinstance(params, Tensor) or params.dim() != 2 or params.shape[1] != self.dim:
            shape = tuple(params.shape) if isinstance(params, Tensor) else type(params).__name__
            raise ValueError(f"{name} must have shape (B, {self.dim}) = [id ({self.n_id}), exp "
                             f"({self.n_exp}), angles (3), translation (3), focal (1)]; got {shape}")
        return params

    def pack(self, fit: FitResult) -> Tensor:
        """``(B, D_p)`` parameter vectors of a perspective fit."""
        if fit.camera_kind != "perspective":
            raise ValueError("parameter vectors describe perspective fits; got "
                             f"camera_kind={fit.camera_kind!r}")
        B = fit.batch_size
        if fit.id_coeffs.shape[-1] != self.n_id or fit.exp_coeffs.shape[-1] != self.n_exp:
            raise ValueError(f"fit has {fit.id_coeffs.shape[-1]} identity and {fit.exp_coeffs.shape[-1]} "
                             f"expression coefficients; this layout needs {self.n_id} and {self.n_exp}")
        return torch.cat([fit.id_coeffs.expand(B, -1), fit.exp_coeffs, fit.angles, fit.translation,
                          fit.focal.reshape(B, 1)], dim=1)

    def split(self, params: Tensor) -> dict[str, Tensor]:
        """``{"id", "exp", "angles", "translation", "focal"}`` views of ``(B, D_p)`` vectors (focal
        ``(B,)``)."""
        p = self.check(params)
        i, e = self.n_id, self.n_id + self.n_exp
        return {"id": p[:, :i], "exp": p[:, i:e], "angles": p[:, e:e + 3], "translation": p[:, e + 3:e + 6],
                "focal": p[:, e + 6]}

    def unpack(self, params: Tensor, image_size: tuple[int, int]) -> FitResult:
        """A perspective :class:`FitResult` (principal point at the image centre) of ``(B, D_p)`` vectors."""
        s = self.split(params)
        return FitResult(id_coeffs=s["id"], exp_coeffs=s["exp"], angles=s["angles"],
                         translation=s["translation"], focal=s["focal"], image_size=image_size,
                         camera_kind="perspective")

    def motion(self, params: Tensor) -> Tensor:
        """``(B, D_m)`` motion vectors ``[exp, angles, translation]`` of ``(B, D_p)`` parameter vectors."""
        p = self.check(params)
        return p[:, self.n_id:self.n_id + self.n_exp + 6]

    def with_motion(self, params: Tensor, motion: Tensor) -> Tensor:
        """``params (B, D_p)`` with expression and pose replaced by ``motion (B, D_m)`` (identity and focal
        kept)."""
        p = self.check(params)
        if motion.shape != (p.shape[0], self.motion_dim):
            raise ValueError(f"motion must have shape ({p.shape[0]}, {self.motion_dim}); got "
                             f"{tuple(motion.shape)}")
        return torch.cat([p[:, :self.n_id], motion.to(p), p[:, -1:]], dim=1)

    def code(self, params: Tensor) -> Tensor:
        """``(B, K_exp + 7)`` compression codes ``[exp, angles, translation, focal]`` (all but the
        identity)."""
        return self.check(params)[:, self.n_id:]

    def from_code(self, identity_params: Tensor, code: Tensor) -> Tensor:
        """Parameter vectors with the identity of ``identity_params (B|1, D_p)`` and the rest from
        ``code (B, K_exp + 7)``."""
        if code.dim() == 1:
            code = code[None]
        if code.dim() != 2 or code.shape[1] != self.code_dim:
            raise ValueError(f"code must have shape (B, {self.code_dim}) = [exp ({self.n_exp}), angles (3), "
                             f"translation (3), focal (1)]; got {tuple(code.shape)}")
        ident = self.check(identity_params, "identity_params")[:, :self.n_id].to(code)
        return torch.cat([ident.expand(code.shape[0], -1), code], dim=1)


def clamped_window_indices(indices: Tensor, num_frames: int, before: int, after: int) -> Tensor:
    """``(N, before + after + 1)`` frame indices ``t - before .. t + after`` for each ``t`` of
    ``indices (N,)``, clamped to ``[0, num_frames - 1]``."""
    offsets = torch.arange(-before, after + 1, device=indices.device)
    return (indices[:, None] + offsets[None]).clamp(0, num_frames - 1)


def motion_windows(motion: Tensor, radius: int, indices: Tensor | None = None) -> Tensor:
    """Windows of motion vectors around frames of a sequence.

    Args:
        motion: ``(T, D_m)`` per-frame motion vectors of one clip.
        radius: ``w``; windows hold ``2 w + 1`` rows, clamped at the clip ends.
        indices: ``(N,)`` centre frames (default: all ``T``).

    Returns:
        ``(N, 2 w + 1, D_m)``.
    """
    if motion.dim() != 2:
        raise ValueError(f"motion must have shape (T, D_m); got {tuple(motion.shape)}")
    T = motion.shape[0]
    if indices is None:
        indices = torch.arange(T, device=motion.device)
    return motion[clamped_window_indices(indices.to(motion.device), T, radius, radius)]


def transfer_motion(source: FitResult, driving: FitResult, relative: bool = False,
                    model: MorphableModel | None = None) -> FitResult:
    """Cross-identity transfer: the source's identity with the driving expression and head pose.

    Args:
        source: a perspective fit of batch 1 (the source face).
        driving: a perspective fit of ``T`` driving frames, in the same image size as ``source``
            (use :func:`rescale_fit` first otherwise).
        relative: False (HeadGAN's reenactment): expression, angles and translation are the driving
            frames'. True: the source's own values plus the change of each driving frame relative
            to driving frame 0 (keeps the source's pose and resting expression; better when the
            two faces are posed differently).
        model: when given and its expressions are blendshapes, the result is clamped to ``[0, 1]``.

    Returns:
        A fit of ``T`` frames: source identity, focal and principal point; transferred motion.
    """
    if source.batch_size != 1:
        raise ValueError(f"source must be a fit of one image; got a batch of {source.batch_size}")
    if tuple(source.image_size) != tuple(driving.image_size):
        raise ValueError("source and driving fits must refer to the same image size; got "
                         f"{source.image_size} and {driving.image_size} (rescale_fit one of them)")
    src = source.to(driving.angles.dtype)
    T = driving.batch_size
    if relative:
        exp = src.exp_coeffs + (driving.exp_coeffs - driving.exp_coeffs[:1])
        angles = src.angles + (driving.angles - driving.angles[:1])
        translation = src.translation + (driving.translation - driving.translation[:1])
    else:
        exp, angles, translation = driving.exp_coeffs, driving.angles, driving.translation
    if model is not None and model.exp_kind == "blendshape":
        exp = exp.clamp(0.0, 1.0)
    pp = src.principal_point.expand(T, 2).clone()
    return FitResult(id_coeffs=src.id_coeffs.expand(T, -1).clone(), exp_coeffs=exp.clone(),
                     angles=angles.clone(), translation=translation.clone(),
                     focal=src.focal.expand(T).clone(), principal_point=pp, image_size=src.image_size,
                     camera_kind="perspective")


def rescale_fit(fit: FitResult, size: int) -> FitResult:
    """The same fit for the image resized to ``size x size`` (a pure pixel scale: focal, principal
    point and landmarks scale; 3D parameters are unchanged).

    Raises:
        ValueError: the image is not square (a non-uniform resize changes the camera's aspect).
    """
    H, W = fit.image_size
    if (H, W) == (size, size):
        return fit
    if H != W:
        raise ValueError(f"rescale_fit needs a square image; got {H}x{W} (crop it with crop_fit first)")
    k = size / W
    upd = {"image_size": (size, size), "focal": fit.focal * k}
    if fit.principal_point is not None:
        upd["principal_point"] = fit.principal_point * k
    for name in ("landmarks", "target_landmarks"):
        if getattr(fit, name) is not None:
            upd[name] = getattr(fit, name) * k
    if fit.residuals is not None:
        upd["residuals"] = fit.residuals * k
    return replace(fit, **upd)


def crop_fit(fit: FitResult, crop: CropTransform) -> FitResult:
    """The fit of the full image expressed in the crop's pixels.

    A crop is a pixel similarity ``x' = s x + o`` (:class:`~morphface.fitting.CropTransform`), so a pinhole
    camera stays a pinhole camera: focal ``s f``, principal point ``s c + o``. Exact, no refitting.
    """
    if fit.camera_kind != "perspective":
        raise ValueError(f"crop_fit needs a perspective fit; got {fit.camera_kind!r}")
    s = crop.scale.to(fit.focal)
    o = crop.offset.to(fit.focal)
    upd = {"image_size": (crop.size, crop.size), "focal": fit.focal * s,
           "principal_point": fit.principal_point * s[:, None] + o}
    for name in ("landmarks", "target_landmarks"):
        if getattr(fit, name) is not None:
            upd[name] = crop.apply(getattr(fit, name).to(s))
    if fit.residuals is not None:
        upd["residuals"] = fit.residuals * s
    return replace(fit, **upd)


#: iBUG-68 indices of the mouth (outer and inner lip contours).
MOUTH_LANDMARKS = tuple(range(48, 68))


def mouth_boxes(fit: FitResult, model: MorphableModel, scale: float = 1.5) -> Tensor:
    """Square mouth boxes from the projected lip landmarks (iBUG 48-67).

    Args:
        fit: ``B`` fitted faces.
        model: the model of the fit (its 68 landmark vertices).
        scale: box side over the longer side of the lip landmarks' bounding box.

    Returns:
        ``(B, 4)`` ``x0, y0, x1, y1`` in pixels.
    """
    if model.landmarks.numel() < 68:
        raise ValueError(f"model {model.name!r} has {model.landmarks.numel()} landmarks; mouth boxes need "
                         "the 68 iBUG points")
    ids = model.landmarks[list(MOUTH_LANDMARKS)]
    if bool((ids < 0).any()):
        raise ValueError(f"model {model.name!r} lacks some lip landmark vertices (48-67)")
    verts = fit.vertices(model)[:, ids]
    pix, _ = fit.camera.project(verts.to(fit.angles))
    lo, hi = pix.amin(dim=1), pix.amax(dim=1)
    centre = (lo + hi) / 2
    half = (hi - lo).amax(dim=-1, keepdim=True).clamp(min=1.0) * scale / 2
    return torch.cat([centre - half, centre + half], dim=-1)

