"""Rotations, poses and cameras: world (model) millimetres -> pixels, depth and NDC.

Conventions (used everywhere in morphface)
-----------------------------------------
**World / model frame.** Right-handed, millimetres; x toward the subject's left, y up, z out of the
face toward a frontal camera (the ICT and BFM frames; loaders convert other models into it).

**Rotations.** Euler angles ``(pitch, yaw, roll)`` in radians, about the x, y and z axes of the
world frame, composed as ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (pitch first, roll last; the same
order as Deep3DFaceRecon). Rotation matrices act on column vectors; batched row-vector vertices
``(B, V, 3)`` are rotated as ``verts @ R.transpose(-1, -2)``. Signs, seen from a frontal camera:
``yaw > 0`` turns the nose toward the subject's left (toward the image's right); ``pitch > 0``
rotates +y toward +z: the forehead comes forward and the nose goes down (the face looks down);
``roll > 0`` rotates +x toward +y: the subject's left eye (image right) moves up, a
counter-clockwise turn in the image.

**Camera frame (OpenGL-style).** The camera sits at the origin of its frame and looks down its
-z axis, with x to the right of the image and y up. A vertex is brought into the camera frame by
the camera's pose ``X_cam = R @ X + t``, so the identity rotation is a frontal view of the face.
*Depth* is the distance in front of the camera along the view axis, ``depth = -z_cam`` (positive
for visible points of a perspective camera).

**Pixels.** Origin at the top-left corner of the image, x to the right, y down; pixel ``(row i,
column j)`` covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``. A centred
principal point is therefore ``(W / 2, H / 2)``. Landmarks and projections are in these units.

**NDC (what :func:`morphface.render.rasterize` takes).** ``x_ndc = 2 u / W - 1``,
``y_ndc = 2 v / H - 1`` (so ``(-1, -1)`` is the top-left *corner* of the image and y points down,
like pixels), and the third coordinate is the depth in millimetres. For a perspective camera the
rasteriser uses that depth for perspective-correct interpolation and clips at a near plane; for an
orthographic / weak-perspective camera depth is only used for the nearest-surface test and may be
negative.

Perspective: ``u = cx + f * x_cam / depth``, ``v = cy - f * y_cam / depth``.
Weak perspective: ``u = tx + s * x_rot``, ``v = ty - s * y_rot``, ``depth = -z_rot`` with
``X_rot = R @ X``.

**Checks.** Cameras raise ``ValueError`` for an image size that is not two positive integers, a
focal length (perspective) that is not finite and positive, or a scale (weak perspective) that is
not finite; the values are checked for CPU tensors and Python numbers (on a GPU the check would
stall the device; shapes are checked everywhere). Their tensors' batch sizes must agree (each
``B`` or 1). :meth:`Camera.project` and the other methods taking vertices raise ``ValueError``
naming the shapes, dtypes or devices expected when the vertices' batch is neither the camera's nor
1, or their dtype/device differs from the camera's (under autocast, mixed dtypes are allowed).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import kornia.geometry.conversions as kconv
import torch
from torch import Tensor

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rotate",
    "Camera",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "pixels_to_ndc",
    "ndc_to_pixels",
]


def _check_last(name: str, x: Tensor, n: int) -> None:
    if not isinstance(x, Tensor) or x.shape[-1] != n:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape (..., {n}); got {shape}")


def euler_to_matrix(angles: Tensor) -> Tensor:
    """Rotation matrices from Euler angles.

    Args:
        angles: ``(..., 3)`` pitch, yaw, roll in radians.

    Returns:
        ``(..., 3, 3)`` ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``; differentiable.
    """
    _check_last("angles", angles, 3)
    p, y, r = angles.unbind(-1)
    cp, sp, cy, sy, cr, sr = p.cos(), p.sin(), y.cos(), y.sin(), r.cos(), r.sin()
    # The product Rz @ Ry @ Rx written out, so that no intermediate matrices are built.
    rows = [
        cr * cy, cr * sy * sp - sr * cp, cr * sy * cp + sr * sp,
        sr * cy, sr * sy * sp + cr * cp, sr * sy * cp - cr * sp,
        -sy, cy * sp, cy * cp,
    ]
    return torch.stack(rows, dim=-1).reshape(*angles.shape[:-1], 3, 3)


def matrix_to_euler(R: Tensor) -> Tensor:
    """Inverse of :func:`euler_to_matrix`.

    Args:
        R: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 3)`` pitch, yaw, roll in radians with yaw in ``[-pi/2, pi/2]``. At gimbal lock
        (``|yaw| = pi/2``) roll is set to 0 and pitch absorbs the remaining rotation.
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R must have shape (..., 3, 3); got {tuple(R.shape)}")
    sy = (-R[..., 2, 0]).clamp(-1.0, 1.0)
    yaw = torch.asin(sy)
    cy = torch.sqrt(R[..., 2, 1] ** 2 + R[..., 2, 2] ** 2)
    locked = cy < 1e-6
    pitch = torch.where(locked, torch.atan2(-R[..., 1, 2], R[..., 1, 1]), torch.atan2(R[..., 2, 1], R[..., 2, 2]))
    roll = torch.where(locked, torch.zeros_like(yaw), torch.atan2(R[..., 1, 0], R[..., 0, 0]))
    return torch.stack([pitch, yaw, roll], dim=-1)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """``(..., 3)`` axis * angle (radians) -> ``(..., 3, 3)`` rotation matrices (kornia)."""
    _check_last("axis_angle", axis_angle, 3)
    flat = axis_angle.reshape(-1, 3)
    return kconv.axis_angle_to_rotation_matrix(flat).reshape(*axis_angle.shape[:-1], 3, 3)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 3)`` axis * angle in radians (kornia)."""
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R must have shape (..., 3, 3); got {tuple(R.shape)}")
    flat = R.reshape(-1, 3, 3)
    return kconv.rotation_matrix_to_axis_angle(flat).reshape(*R.shape[:-2], 3)


def rotate(verts: Tensor, R: Tensor) -> Tensor:
    """Rotate row-vector points: ``(B, V, 3)`` with ``(B|1, 3, 3)`` -> ``(B, V, 3)``."""
    return verts @ R.transpose(-1, -2)


def pixels_to_ndc(pixels: Tensor, image_size: tuple[int, int]) -> Tensor:
    """``(..., 2)`` pixel coordinates (x right, y down) -> NDC in ``[-1, 1]`` (corners at +-1)."""
    H, W = image_size
    scale = pixels.new_tensor([2.0 / W, 2.0 / H])
    return pixels * scale - 1.0


def ndc_to_pixels(ndc: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pixels_to_ndc`."""
    H, W = image_size
    scale = ndc.new_tensor([W / 2.0, H / 2.0])
    return (ndc[..., :2] + 1.0) * scale


def _check_image_size(image_size) -> tuple[int, int]:
    """``(H, W)`` as two positive ints, or ``ValueError``."""
    try:
        H, W = image_size
        ok = all(not isinstance(v, bool) and float(v) == int(v) and int(v) > 0 for v in (H, W))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"image_size must be (H, W), two positive integers in pixels; got {image_size!r}")
    return int(H), int(W)


def _check_values(name: str, x: Tensor, positive: bool) -> None:
    """``x`` finite (and > 0 when ``positive``): checked on the CPU only (no device sync)."""
    if x.device.type != "cpu":
        return
    v = x.detach()
    bad = ~torch.isfinite(v)
    if positive:
        bad |= v <= 0
    if bool(bad.any()):
        want = "finite and > 0" if positive else "finite"
        raise ValueError(f"{name} must be {want}; got {v.flatten()[:8].tolist()}"
                         + (f" ({int(bad.sum())} bad of {v.numel()})" if v.numel() > 8 else ""))


def _check_batches(kind: str, **tensors: Tensor) -> None:
    sizes = {name: t.shape[0] for name, t in tensors.items()}
    if len({b for b in sizes.values() if b != 1}) > 1:
        raise ValueError(f"{kind}: the tensors' batch sizes must be equal or 1; got "
                         + ", ".join(f"{n} {tuple(t.shape)}" for n, t in tensors.items()))


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def _batch(x: Tensor | float, dims: int, like: Tensor | None = None) -> Tensor:
    """Make ``x`` a tensor with a leading batch axis and ``dims`` trailing dims."""
    t = torch.as_tensor(x, dtype=like.dtype if like is not None else None,
                        device=like.device if like is not None else None)
    if not t.is_floating_point():
        t = t.float()
    while t.dim() < dims + 1:
        t = t.unsqueeze(0)
    return t


@dataclass
class Camera(ABC):
    """Base class: a pose (``R``, translation) plus a projection to pixels.

    Subclasses implement :meth:`project`. All tensors carry a leading batch axis that may be 1 and
    broadcasts against the vertices' batch. Cameras are plain containers of tensors: the tensors
    may require grad (the fitting code optimises them) and ``.to()`` moves them.
    """

    image_size: tuple[int, int]  # (H, W) in pixels

    #: True if depth divides the image coordinates (perspective-correct interpolation applies).
    is_perspective = False

    @property
    def batch_size(self) -> int:
        return max(getattr(self, f.name).shape[0] for f in fields(self) if isinstance(getattr(self, f.name), Tensor))

    def to(self, *args, **kwargs) -> Camera:
        """A copy with every tensor moved/cast like ``Tensor.to`` (dtype casts only floats)."""
        updates = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                updates[f.name] = v.to(*args, **kwargs)
        return replace(self, **updates)

    def __getitem__(self, index) -> Camera:
        """Select batch entries (a batch of size 1 is kept and broadcast)."""
        updates = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                updates[f.name] = v if v.shape[0] == 1 else v[index]
                if updates[f.name].dim() == v.dim() - 1:
                    updates[f.name] = updates[f.name].unsqueeze(0)
        return replace(self, **updates)

    @abstractmethod
    def world_to_view(self, verts: Tensor) -> Tensor:
        """``(B, V, 3)`` world mm -> the camera's frame (or rotated frame for orthographic), mm."""

    @abstractmethod
    def project(self, verts: Tensor) -> tuple[Tensor, Tensor]:
        """World ``(B, V, 3)`` mm -> pixels ``(B, V, 2)`` and depth ``(B, V)`` mm."""

    def to_ndc(self, verts: Tensor) -> Tensor:
        """World ``(B, V, 3)`` mm -> ``(B, V, 3)``: NDC x, y (y down, corners +-1) and depth in mm."""
        pix, depth = self.project(verts)
        return torch.cat([pixels_to_ndc(pix, self.image_size), depth.unsqueeze(-1)], dim=-1)

    @abstractmethod
    def view_directions(self, verts: Tensor) -> Tensor:
        """Unit directions ``(B, V, 3)`` (world frame) from each point toward the camera."""


def _check_verts(verts: Tensor, camera: Camera | None = None) -> None:
    if not isinstance(verts, Tensor) or verts.dim() != 3 or verts.shape[-1] != 3:
        shape = tuple(verts.shape) if isinstance(verts, Tensor) else type(verts).__name__
        raise ValueError(f"verts must have shape (B, V, 3); got {shape}")
    if camera is None:
        return
    R, B, Bc = camera.R, verts.shape[0], camera.batch_size
    kind = type(camera).__name__
    if B != Bc and B != 1 and Bc != 1:
        raise ValueError(f"verts batch does not match the camera's: expected (B, V, 3) with B = {Bc} or 1 for a "
                         f"{kind} of batch {Bc}; got {tuple(verts.shape)}")
    if verts.device != R.device:
        raise ValueError(f"verts are on {verts.device} but the {kind} on {R.device}; expected both on one device")
    if verts.dtype != R.dtype and not _autocast_on(verts.device.type):
        raise ValueError(f"verts dtype {verts.dtype} differs from the {kind}'s {R.dtype}; expected one dtype "
                         f"(cast the vertices or camera.to({verts.dtype}))")


@dataclass
class PerspectiveCamera(Camera):
    """A pinhole camera with pose.

    Attributes:
        image_size: ``(H, W)`` in pixels.
        focal: ``(B,)`` focal length in pixels.
        principal_point: ``(B, 2)`` pixels (x right, y down); ``(W/2, H/2)`` is the image centre.
        R: ``(B, 3, 3)`` world-to-camera rotation.
        t: ``(B, 3)`` world-to-camera translation in mm; a face ``d`` mm in front of the camera has
            ``t = (0, 0, -d)``.
        znear: near clipping distance in mm used by the rasteriser.
    """

    focal: Tensor = None  # type: ignore[assignment]
    principal_point: Tensor = None  # type: ignore[assignment]
    R: Tensor = None  # type: ignore[assignment]
    t: Tensor = None  # type: ignore[assignment]
    znear: float = 1.0

    is_perspective = True

    def __post_init__(self) -> None:
        H, W = self.image_size = _check_image_size(self.image_size)
        like = next((v for v in (self.focal, self.principal_point, self.R, self.t) if isinstance(v, Tensor)), None)
        if self.focal is None:
            self.focal = _batch(float(max(H, W)), 0, like)
        self.focal = _batch(self.focal, 0, like)
        if self.principal_point is None:
            self.principal_point = _batch([W / 2.0, H / 2.0], 1, like)
        self.principal_point = _batch(self.principal_point, 1, like)
        if self.R is None:
            self.R = torch.eye(3, dtype=self.focal.dtype, device=self.focal.device)
        self.R = _batch(self.R, 2, like)
        if self.t is None:
            self.t = _batch([0.0, 0.0, -1000.0], 1, like)
        self.t = _batch(self.t, 1, like)
        if self.R.shape[-2:] != (3, 3) or self.t.shape[-1] != 3 or self.principal_point.shape[-1] != 2:
            raise ValueError(
                f"expected R (B, 3, 3), t (B, 3), principal_point (B, 2); got {tuple(self.R.shape)}, "
                f"{tuple(self.t.shape)}, {tuple(self.principal_point.shape)}")
        if self.focal.dim() != 1:
            raise ValueError(f"focal must be a number or a (B,) tensor; got shape {tuple(self.focal.shape)}")
        _check_batches("PerspectiveCamera", focal=self.focal, principal_point=self.principal_point, R=self.R,
                       t=self.t)
        _check_values("PerspectiveCamera focal (pixels)", self.focal, positive=True)

    @classmethod
    def from_fov(cls, fov_degrees: float, image_size: tuple[int, int], **kwargs) -> PerspectiveCamera:
        """A centred camera whose horizontal field of view is ``fov_degrees``."""
        H, W = image_size
        focal = (W / 2.0) / math.tan(math.radians(fov_degrees) / 2.0)
        return cls(image_size=image_size, focal=torch.tensor([focal]), **kwargs)

    def world_to_view(self, verts: Tensor) -> Tensor:
        """``(B, V, 3)`` world mm -> camera frame mm (camera looks down -z)."""
        _check_verts(verts, self)
        return rotate(verts, self.R) + self.t[:, None, :]

    def project(self, verts: Tensor) -> tuple[Tensor, Tensor]:
        """World ``(B, V, 3)`` mm -> pixels ``(B, V, 2)`` and depth ``(B, V)`` mm.

        Points at or behind the camera get a clamped divisor (no inf/NaN); the rasteriser drops
        triangles with any vertex nearer than ``znear``.
        """
        Xc = self.world_to_view(verts)
        depth = -Xc[..., 2]
        safe = depth.clamp(min=1e-6)
        f = self.focal[:, None]
        u = self.principal_point[:, None, 0] + f * Xc[..., 0] / safe
        v = self.principal_point[:, None, 1] - f * Xc[..., 1] / safe
        return torch.stack([u, v], dim=-1), depth

    def view_directions(self, verts: Tensor) -> Tensor:
        """Unit vectors from each world point toward the camera centre, ``(B, V, 3)``, world frame."""
        _check_verts(verts, self)
        centre = -(self.R.transpose(-1, -2) @ self.t[..., None])[..., 0]  # camera centre in world
        return torch.nn.functional.normalize(centre[:, None, :] - verts, dim=-1)


@dataclass
class WeakPerspectiveCamera(Camera):
    """A scaled orthographic camera with rotation.

    Attributes:
        image_size: ``(H, W)`` in pixels.
        scale: ``(B,)`` pixels per millimetre.
        translation: ``(B, 2)`` pixel position of the world origin.
        R: ``(B, 3, 3)`` rotation.
    """

    scale: Tensor = None  # type: ignore[assignment]
    translation: Tensor = None  # type: ignore[assignment]
    R: Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        H, W = self.image_size = _check_image_size(self.image_size)
        like = next((v for v in (self.scale, self.translation, self.R) if isinstance(v, Tensor)), None)
        if self.scale is None:
            self.scale = _batch(1.0, 0, like)
        self.scale = _batch(self.scale, 0, like)
        if self.translation is None:
            self.translation = _batch([W / 2.0, H / 2.0], 1, like)
        self.translation = _batch(self.translation, 1, like)
        if self.R is None:
            self.R = torch.eye(3, dtype=self.scale.dtype, device=self.scale.device)
        self.R = _batch(self.R, 2, like)
        if self.R.shape[-2:] != (3, 3) or self.translation.shape[-1] != 2:
            raise ValueError(f"expected R (B, 3, 3) and translation (B, 2); got {tuple(self.R.shape)}, "
                             f"{tuple(self.translation.shape)}")
        if self.scale.dim() != 1:
            raise ValueError(f"scale must be a number or a (B,) tensor; got shape {tuple(self.scale.shape)}")
        _check_batches("WeakPerspectiveCamera", scale=self.scale, translation=self.translation, R=self.R)
        _check_values("WeakPerspectiveCamera scale (pixels per mm)", self.scale, positive=False)

    def world_to_view(self, verts: Tensor) -> Tensor:
        """``(B, V, 3)`` world mm -> rotated mm (the camera looks down -z)."""
        _check_verts(verts, self)
        return rotate(verts, self.R)

    def project(self, verts: Tensor) -> tuple[Tensor, Tensor]:
        """World ``(B, V, 3)`` mm -> pixels ``(B, V, 2)`` and depth ``(B, V)`` (``-z_rot``, mm)."""
        Xr = self.world_to_view(verts)
        s = self.scale[:, None]
        u = self.translation[:, None, 0] + s * Xr[..., 0]
        v = self.translation[:, None, 1] - s * Xr[..., 1]
        return torch.stack([u, v], dim=-1), -Xr[..., 2]

    def view_directions(self, verts: Tensor) -> Tensor:
        """The constant direction toward the camera (``R^T e_z``), broadcast to ``(B, V, 3)``."""
        _check_verts(verts, self)
        d = self.R[..., 2, :]  # third row of R == R^T e_z
        return d[:, None, :].expand(max(d.shape[0], verts.shape[0]), verts.shape[1], 3)
