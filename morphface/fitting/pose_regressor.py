"""Head rotation regressed from a detector's dense points: a calibration of MediaPipe's pose bias.

MediaPipe's face mesh pulls its 2D points toward a frontal face: on renders of known pose its points
are ~2 px from the truth when frontal but 10-17 px off at pitch -40 deg or yaw 70 deg, so a fit of
the model to them compresses the angles (pitch slope ~0.6, ``bench/fit_real.py``), whatever the
correspondence table. The bias is systematic, so it can be learned: :class:`PoseRegressor` is a small
MLP that maps the detector's 468 points with their depth column to the head rotation, trained on
textured synthetic people rendered at known pose and **run through the real detector**
(``python -m morphface.pipelines.pose_regressor``; the shipped weights and their held-out accuracy
are in ``assets/mediapipe/pose_regressor.json``). :func:`~morphface.fitting.fit_dense_landmarks`
with ``pose="regressed"`` keeps this rotation and fits shape and camera to the points.

Input features (:func:`pose_features`): the points centred on their 2D centroid and divided by their
RMS 2D spread, so the image size, face size and position do not matter. The network does not learn the
rotation from scratch: a weighted 3D Procrustes of the points onto MediaPipe's canonical face (its own
``procrustes_weights``, as its face-geometry module does) gives a first rotation ``R_p``, and the MLP
sees the points in that frame minus the canonical face (what the rotation leaves unexplained) together
with ``R_p``, and predicts the residual rotation: ``R_apparent = R_p @ R_residual``, ``R_residual``
starting at the identity. Perspective: a face away from
the optical axis is seen along a tilted ray, which looks like a rotation; the network predicts the
rotation relative to the ray through the points' centroid (:func:`ray_rotation`), and the camera-frame
rotation is ``R = R_ray @ R_apparent``. Output: Zhou et al.'s (2019) continuous 6D rotation
representation, orthonormalised by Gram-Schmidt.

What it cannot know: it was trained on synthetic renders only (the library's generator: ICT identities,
procedural textures, random lights and backgrounds, random expressions), so on photos it is as good as
MediaPipe's behaviour on those renders is like its behaviour on photos (README, "Fitting accuracy").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..camera import matrix_to_euler
from ..errors import ModelFormatError

__all__ = ["PoseRegressorConfig", "PoseRegressor", "pose_features", "ray_rotation", "rotation_from_6d",
           "default_pose_regressor_path", "load_pose_regressor", "save_pose_regressor", "regress_rotation"]

MEDIAPIPE_POINTS = 468


def weighted_procrustes(points: Tensor, template: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation and scale of the best similarity ``points ~ s R template + t``.

    Args:
        points: ``(B, N, 3)``; template: ``(N, 3)``; weights: ``(N,)`` non-negative.

    Returns:
        ``R (B, 3, 3)`` (a rotation, det +1; Umeyama 1991) and ``s (B,)``.
    """
    w = (weights / weights.sum()).to(points)[None, :, None]
    P = points - (w * points).sum(1, keepdim=True)
    C = template.to(points) - (w[0] * template.to(points)).sum(0)
    H = (w * P).transpose(1, 2) @ C.expand_as(P)  # (B, 3, 3) = sum_i w_i p_i c_i^T
    U, S, Vh = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.ones_like(S)
    D[:, 2] = d
    R = U @ torch.diag_embed(D) @ Vh
    s = (S * D).sum(1) / (w[0] * C.pow(2)).sum()
    return R, s


@dataclass(frozen=True)
class PoseRegressorConfig:
    """Network size.

    Attributes:
        n_points: detector points per face (MediaPipe: 468, irises dropped).
        hidden: width of the two hidden layers.
        dropout: dropout after each hidden layer (training only).
    """

    n_points: int = MEDIAPIPE_POINTS
    hidden: int = 256
    dropout: float = 0.1


def rotation_from_6d(x: Tensor) -> Tensor:
    """``(B, 6)`` -> ``(B, 3, 3)`` rotation matrices: the two columns Gram-Schmidt orthonormalised."""
    a, b = x[..., :3], x[..., 3:]
    c0 = F.normalize(a, dim=-1)
    c1 = F.normalize(b - (c0 * b).sum(-1, keepdim=True) * c0, dim=-1)
    return torch.stack([c0, c1, torch.cross(c0, c1, dim=-1)], dim=-1)


def ray_rotation(points: Tensor, image_size: tuple[int, int], focal: Tensor | float | None = None,
                 principal_point: Tensor | None = None) -> Tensor:
    """``(B, 3, 3)`` rotation taking the optical axis ``(0, 0, -1)`` to the ray through the points' centroid.

    Args:
        points: ``(B, N, 2+)`` pixels.
        image_size: ``(H, W)`` (only for the defaults below).
        focal: pixels, a number or ``(B,)`` (default: :func:`~morphface.fitting.result.default_focal`).
        principal_point: ``(B, 2)`` pixels (default: the image centre).
    """
    from .result import default_focal

    H, W = image_size
    B = points.shape[0]
    f = torch.as_tensor(default_focal(image_size) if focal is None else focal, dtype=points.dtype,
                        device=points.device).reshape(-1, 1)
    pp = (torch.tensor([W / 2.0, H / 2.0], dtype=points.dtype, device=points.device).expand(B, 2)
          if principal_point is None else principal_point.to(points))
    c = points[..., :2].mean(1)
    # camera frame: x right, y up, looking down -z; pixel y grows downward
    d = F.normalize(torch.stack([(c[:, 0] - pp[:, 0]) / f[:, 0], -(c[:, 1] - pp[:, 1]) / f[:, 0],
                                 -torch.ones_like(c[:, 0])], dim=-1), dim=-1)
    z = torch.tensor([0.0, 0.0, -1.0], dtype=points.dtype, device=points.device).expand(B, 3)
    axis = torch.cross(z, d, dim=-1)
    s, cos = axis.norm(dim=-1), (z * d).sum(-1)
    k = axis / s.clamp(min=1e-12)[:, None]
    K = torch.zeros(B, 3, 3, dtype=points.dtype, device=points.device)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - K.transpose(1, 2)
    eye = torch.eye(3, dtype=points.dtype, device=points.device).expand(B, 3, 3)
    return eye + s[:, None, None] * K + (1 - cos)[:, None, None] * (K @ K)  # Rodrigues


def pose_features(points: Tensor) -> Tensor:
    """``(B, N, 3)`` pixel points with relative depth -> ``(B, 3N)`` features (module docstring).

    Centred on the 2D centroid (depth on its mean), divided by the RMS 2D distance from it; y and depth
    flipped to the camera frame's y-up, z-toward-viewer axes. Two-column points get a zero depth.
    """
    if points.shape[-1] == 2:
        points = torch.cat([points, points.new_zeros(*points.shape[:-1], 1)], dim=-1)
    p = points[..., :3] - points[..., :3].mean(1, keepdim=True)
    scale = p[..., :2].pow(2).sum(-1).mean(1).sqrt().clamp(min=1e-6)
    p = p / scale[:, None, None]
    p = p * p.new_tensor([1.0, -1.0, -1.0])
    return p.flatten(1)


class PoseRegressor(nn.Module):
    """MLP from normalised detector points to the head rotation relative to the viewing ray.

    ``forward(features (B, 3N)) -> (B, 3, 3)``; :func:`regress_rotation` wraps features, ray and
    device handling.
    """

    def __init__(self, config: PoseRegressorConfig | None = None, canonical: Tensor | None = None,
                 procrustes_weights: Tensor | None = None) -> None:
        super().__init__()
        self.config = config or PoseRegressorConfig()
        c = self.config
        if canonical is None:
            from .dense import load_mediapipe_canonical

            mesh = load_mediapipe_canonical()
            canonical, procrustes_weights = mesh.vertices[:c.n_points], mesh.procrustes_weights[:c.n_points]
        # the canonical face normalised like pose_features (centred, unit RMS 2D radius); saved with the weights
        tpl = canonical - canonical.mean(0)
        self.register_buffer("canonical", tpl / tpl[:, :2].pow(2).sum(-1).mean().sqrt())
        self.register_buffer("procrustes_weights", procrustes_weights.clamp(min=0) + 1e-3)
        self.net = nn.Sequential(
            nn.Linear(3 * c.n_points + 9, c.hidden), nn.GELU(), nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.hidden), nn.GELU(), nn.Dropout(c.dropout),
            nn.Linear(c.hidden, 6),
        )
        with torch.no_grad():  # start at the identity rotation: the frontal face
            self.net[-1].weight.mul_(0.01)
            self.net[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, features: Tensor) -> Tensor:
        P = features.reshape(features.shape[0], -1, 3)
        R_p, s = weighted_procrustes(P, self.canonical, self.procrustes_weights)
        aligned = (P - P.mean(1, keepdim=True)) @ R_p / s[:, None, None]  # rows: R_p^T p / s
        unexplained = aligned - (self.canonical - self.canonical.mean(0))
        x = torch.cat([unexplained.flatten(1), R_p.flatten(1)], dim=1)
        return R_p @ rotation_from_6d(self.net(x))


def default_pose_regressor_path() -> Path:
    """The shipped MediaPipe pose regressor (``morphface/assets/mediapipe/pose_regressor.safetensors``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "mediapipe" / "pose_regressor.safetensors"


def save_pose_regressor(net: PoseRegressor, path: str | Path, metadata: dict | None = None) -> None:
    """Write weights (safetensors, atomically) with the config and ``metadata`` in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"config": json.dumps(asdict(net.config)), "metadata": json.dumps(metadata or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp),
              metadata=header)
    tmp.replace(path)


@lru_cache(maxsize=4)
def _load_cached(path: str) -> PoseRegressor:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
        config = PoseRegressorConfig(**json.loads(header.get("config", "{}")))
        state = load_file(path)
        net = PoseRegressor(config, canonical=state["canonical"], procrustes_weights=state["procrustes_weights"])
        net.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - any failure means the file is not one of ours
        raise ModelFormatError(f"{path}: not a pose-regressor weights file ({type(e).__name__}: {e})") from e
    return net.eval().requires_grad_(False)


def load_pose_regressor(path: str | Path | None = None) -> PoseRegressor:
    """Load (and cache) a pose regressor; default: the shipped MediaPipe one.

    Raises:
        FileNotFoundError: no weights at ``path`` (train them with
            ``python -m morphface.pipelines.pose_regressor``).
        ModelFormatError: the file is not a pose regressor's weights.
    """
    path = Path(path) if path is not None else default_pose_regressor_path()
    if not path.is_file():
        raise FileNotFoundError(f"no pose-regressor weights at {path}; train them with "
                                "python -m morphface.pipelines.pose_regressor")
    return _load_cached(str(path.resolve()))


def regress_rotation(points: Tensor, image_size: tuple[int, int], focal: Tensor | float | None = None,
                     regressor: PoseRegressor | str | Path | None = None) -> Tensor:
    """Camera-frame head rotation from detector points.

    Args:
        points: ``(B, 468, 3)`` MediaPipe points in pixels with their relative depth (pixels).
        image_size: ``(H, W)``.
        focal: pixels (default: :func:`~morphface.fitting.result.default_focal`).
        regressor: a :class:`PoseRegressor` or a weights path (default: the shipped one).

    Returns:
        ``(B, 3)`` Euler angles (pitch, yaw, roll) in radians, ``morphface.camera`` convention.

    Raises:
        ValueError: points of the wrong shape.
    """
    net = regressor if isinstance(regressor, PoseRegressor) else load_pose_regressor(regressor)
    n = net.config.n_points
    if points.dim() != 3 or points.shape[1] < n or points.shape[2] != 3:
        raise ValueError(f"the pose regressor needs (B, {n}, 3) points with a depth column; "
                         f"got {tuple(points.shape)}")
    pts = points[:, :n]
    p = next(net.parameters())
    with torch.no_grad():
        R_app = net(pose_features(pts).to(device=p.device, dtype=p.dtype)).to(pts)
    return matrix_to_euler(ray_rotation(pts, image_size, focal) @ R_app)
