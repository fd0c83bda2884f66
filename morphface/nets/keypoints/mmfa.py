"""MMFA's additions to the keypoint core (Motion Manipulation via unsupervised keypoint positioning in Face Animation).

The extracted paper lost its equations; each is read here from its text and from the face-vid2vid formulation it
revises (eq. 3 of the paper, :func:`~.geometry.transform_keypoints`: ``K = R (K_c + delta) + t``):

* **Assumptions** (§3.2). (1) the face's centroid is at the origin of the world frame, which is the camera frame:
  :func:`centre_keypoints` subtracts the mean of the canonical keypoints, so ``K_c`` is centred by construction and
  rotations and scalings act about the face's centre; (2) orthographic projection: the image point of a keypoint
  is its ``(x, y)`` (:func:`orthographic_projection`; keypoint space is the normalised image plane plus a depth
  axis parallel to the optical axis, :mod:`.geometry`), so a translation only moves the face in the image plane
  and ``t = (t_x, t_y, 0)``; (3) rigidity: one ``s`` and ``R`` for all keypoints.
* **Eq. 5** (the keypoints of the source and of the driving frame): ``K = s R (K_c + delta) + t``
  (:func:`compose_keypoints`; the scaled orthographic model of 3DDFA the paper cites). With a scale the motion
  field's Jacobian of keypoint ``i`` is ``J = s R``, so the first-order motion from driving to source space is
  ``J_s J_d^{-1} = (s_s / s_d) R_s R_d^T``: :func:`scaled_jacobians` gives the two matrices the core's
  :class:`~.motion.MotionFieldEstimator` multiplies as ``rot_source @ rot_driving^T``.
* **Eq. 4** (expression deformation): ``f = E(x)`` (:class:`ExpressionEncoder`: conv + ReLU + max-pool,
  ResBottleneck blocks down to a small map, a linear layer to the ``d``-dimensional feature) and
  ``delta = D_exp(f, K_c)`` (:class:`ExpressionDecoder`: ``[f, vec(K_c)]`` through fully connected layers with
  BatchNorm and ReLU, a last linear layer without activation, Appendix A.1).
* **s and t** come from "a simple decoder" (:class:`ScaleTranslationDecoder`: a small conv trunk, global pooling
  and a linear head ``(log s, t_x, t_y)``; ``s = exp(log s)`` > 0, starting at ``s = 1, t = 0``).
* **Eq. 7** (self-supervised representation loss): ``L_ss = 1 - cos(f, f')`` with ``f'`` the feature of the
  driving image augmented by rotation, scale and translation (:func:`self_supervised_loss`, mean over the batch).
* **Eq. 8** (identity latent consistency): ``L_id = |K_c,s - K_c,d|_1`` in the canonical space
  (:func:`identity_consistency_loss`, mean absolute difference).
* **Eq. 9** (2D landmark loss): ``L_lm = sum_p lambda_p |l_p(x_g) - l_p(x_d)|`` over face parts ``p``
  (:func:`landmark_part_loss`: mean Euclidean distance per part of landmarks in normalised image units, weighted per
  part). The paper's detector gives 145 points with pupils and three weights; offline the library's
  :class:`~morphface.nets.landmarks.HeatmapLandmarkNet` gives the 68 iBUG points, grouped as
  :data:`LANDMARK_PARTS` (eyes + brows, mouth, contour + nose).
* **GAN loss** (Appendix A.2): least squares (:func:`lsgan_generator_loss`, :func:`lsgan_discriminator_loss`) plus
  feature matching.
* **Eq. 6** (multi-scale perceptual loss): ``sum_i P(x_g^i, x_d^i)`` over the generator's resolutions, the target
  down-sampled (:func:`image_pyramid`); the generator's side outputs are the core's ``multiscale`` option
  (:class:`~.generator.OcclusionAwareGenerator`).

Shapes: images ``(B, 3, H, W)`` in [-1, 1], keypoints ``(B, k, 3)`` in keypoint space, features ``(B, d)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputShapeError
from ..blocks import scaled_channels
from .encoders import PooledImageEncoder, check_image

__all__ = [
    "LANDMARK_PARTS",
    "centre_keypoints",
    "orthographic_projection",
    "compose_keypoints",
    "scaled_jacobians",
    "ScaleTranslation",
    "ScaleTranslationConfig",
    "ScaleTranslationDecoder",
    "ResBottleneck",
    "ExpressionEncoderConfig",
    "ExpressionEncoder",
    "ExpressionDecoderConfig",
    "ExpressionDecoder",
    "self_supervised_loss",
    "identity_consistency_loss",
    "landmark_part_loss",
    "lsgan_generator_loss",
    "lsgan_discriminator_loss",
    "image_pyramid",
]

#: Face parts of the 68 iBUG landmarks for the per-part weights of eq. 9: (name, indices).
LANDMARK_PARTS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("eyes_brows", tuple(range(17, 27)) + tuple(range(36, 48))),
    ("mouth", tuple(range(48, 68))),
    ("contour_nose", tuple(range(0, 17)) + tuple(range(27, 36))),
)


def _check_kp(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError(f"{name} must have shape (B, k, 3); got {shape}")


def centre_keypoints(keypoints: Tensor) -> Tensor:
    """Assumption 1: ``(B, k, 3)`` keypoints minus their centroid (mean over ``k``)."""
    _check_kp("keypoints", keypoints)
    return keypoints - keypoints.mean(dim=1, keepdim=True)


def orthographic_projection(keypoints: Tensor) -> Tensor:
    """Assumption 2: image-plane positions ``(B, k, 2)`` (normalised image coordinates) of ``(B, k, 3)`` points."""
    _check_kp("keypoints", keypoints)
    return keypoints[..., :2]


def compose_keypoints(canonical: Tensor, scale: Tensor, rotation: Tensor, translation: Tensor,
                      deformation: Tensor | None = None) -> Tensor:
    """Eq. 5: ``K = s R (K_c + delta) + t`` (rows are points: ``s (K_c + delta) R^T + t``).

    Args:
        canonical: ``(B, k, 3)`` canonical keypoints ``K_c``.
        scale: ``(B,)`` or ``(B, 1)`` positive scale ``s``.
        rotation: ``(B, 3, 3)`` keypoint-space rotation ``R``.
        translation: ``(B, 3)`` (or ``(B, 2)``, read as ``(t_x, t_y, 0)``) translation ``t``.
        deformation: ``(B, k, 3)`` expression deformation ``delta`` (``None``: zero).

    Returns:
        ``(B, k, 3)`` keypoints.
    """
    _check_kp("canonical", canonical)
    B = canonical.shape[0]
    if rotation.shape != (B, 3, 3):
        raise InputShapeError(f"rotation must have shape ({B}, 3, 3); got {tuple(rotation.shape)}")
    s = scale.reshape(-1)
    if s.shape != (B,):
        raise InputShapeError(f"scale must have shape ({B},) or ({B}, 1); got {tuple(scale.shape)}")
    if translation.shape == (B, 2):
        translation = F.pad(translation, (0, 1))
    if translation.shape != (B, 3):
        raise InputShapeError(f"translation must have shape ({B}, 3) or ({B}, 2); got {tuple(translation.shape)}")
    points = canonical
    if deformation is not None:
        if deformation.shape != canonical.shape:
            raise InputShapeError(f"deformation must have the canonical keypoints' shape {tuple(canonical.shape)}; "
                                  f"got {tuple(deformation.shape)}")
        points = points + deformation
    return s[:, None, None] * (points @ rotation.transpose(-1, -2)) + translation[:, None, :]


def scaled_jacobians(scale_source: Tensor, rotation_source: Tensor, scale_driving: Tensor,
                     rotation_driving: Tensor) -> tuple[Tensor, Tensor]:
    """The two matrices to pass to :class:`~.motion.MotionFieldEstimator` as ``rot_source, rot_driving``.

    The estimator's per-keypoint motion is ``rot_source @ rot_driving^T``; with Jacobians ``J = s R`` the motion
    must be ``J_s J_d^{-1} = (s_s / s_d) R_s R_d^T`` (module docstring), so this returns ``(s_s R_s, R_d / s_d)``.

    Args:
        scale_source, scale_driving: ``(B,)`` scales.
        rotation_source, rotation_driving: ``(B, 3, 3)`` rotations.

    Returns:
        ``(B, 3, 3)`` and ``(B, 3, 3)``.
    """
    return (scale_source.reshape(-1, 1, 1) * rotation_source, rotation_driving / scale_driving.reshape(-1, 1, 1))


class ScaleTranslation(NamedTuple):
    """Output of :class:`ScaleTranslationDecoder`: ``scale`` ``(B,)`` > 0 and ``translation`` ``(B, 3)`` with
    ``t_z = 0`` (orthographic, module docstring)."""

    scale: Tensor
    translation: Tensor


@dataclass(frozen=True)
class ScaleTranslationConfig:
    """Sizes of :class:`ScaleTranslationDecoder`.

    Attributes:
        base_channels: channels of the first 7x7 stride-2 conv (32), doubled per stage.
        num_stages: ``down block + res block`` stages (3).
        max_channels: channel cap (256).
        max_log_scale: ``|log s|`` is bounded by ``max_log_scale * tanh`` (1: ``s`` in about [0.37, 2.7]).
        width: channel multiplier.
    """

    base_channels: int = 32
    num_stages: int = 3
    max_channels: int = 256
    max_log_scale: float = 1.0
    width: float = 1.0


class ScaleTranslationDecoder(PooledImageEncoder):
    """Image -> scale ``s`` and image-plane translation ``t`` (module docstring): the head-pose estimator's trunk
    (:class:`~.encoders.PooledImageEncoder`) with a linear head."""

    def __init__(self, config: ScaleTranslationConfig | None = None) -> None:
        cfg = config or ScaleTranslationConfig()
        super().__init__(cfg.base_channels, cfg.num_stages, cfg.max_channels, cfg.width)
        self.config = cfg
        self.head = nn.Linear(self.out_channels, 3)
        nn.init.zeros_(self.head.weight)  # start at s = 1, t = 0
        nn.init.zeros_(self.head.bias)

    def forward(self, image: Tensor) -> ScaleTranslation:
        """Args:
            image: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of :attr:`multiple`.

        Returns:
            :class:`ScaleTranslation`.
        """
        out = self.head(self.pooled(image))
        scale = torch.exp(self.config.max_log_scale * torch.tanh(out[:, 0]))
        return ScaleTranslation(scale, F.pad(out[:, 1:], (0, 1)))


class ResBottleneck(nn.Module):
    """Kim et al.'s bottleneck residual block: ``1x1 (C/4) -> 3x3 stride s -> 1x1 (C_out)`` with norm + ReLU,
    plus a ``1x1 stride s`` projection of the input (affine instance norm, the core's choice)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        mid = max(1, out_channels // 4)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1), nn.InstanceNorm2d(mid, affine=True), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1), nn.InstanceNorm2d(mid, affine=True), nn.ReLU(),
            nn.Conv2d(mid, out_channels, 1), nn.InstanceNorm2d(out_channels, affine=True))
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H / stride, W / stride)``."""
        return F.relu(self.body(x) + self.skip(x))


@dataclass(frozen=True)
class ExpressionEncoderConfig:
    """Sizes of :class:`ExpressionEncoder`.

    Attributes:
        feature_dim: ``d`` of the expression feature (the paper does not state it in the extracted text; 128).
        base_channels: channels of the first conv (32), doubled by each bottleneck block.
        num_blocks: stride-2 ResBottleneck blocks after the max-pool (3).
        max_channels: channel cap (256).
        pool: the feature map is average-pooled to ``pool x pool`` before the linear layer, so the linear layer's
            size does not depend on the image size (4).
        width: channel multiplier.
    """

    feature_dim: int = 128
    base_channels: int = 32
    num_blocks: int = 3
    max_channels: int = 256
    pool: int = 4
    width: float = 1.0


class ExpressionEncoder(nn.Module):
    """Image -> ``d``-dimensional expression feature ``f`` (eq. 4, module docstring)."""

    def __init__(self, config: ExpressionEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ExpressionEncoderConfig()
        if cfg.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1; got {cfg.feature_dim}")
        b = scaled_channels(cfg.base_channels, cfg.width)
        top = max(b, scaled_channels(cfg.max_channels, cfg.width))
        self.first = nn.Sequential(nn.Conv2d(3, b, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2))
        blocks, ch = [], b
        for _ in range(cfg.num_blocks):
            nxt = min(ch * 2, top)
            blocks.append(ResBottleneck(ch, nxt, stride=2))
            ch = nxt
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(ch * cfg.pool * cfg.pool, cfg.feature_dim)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** (self.config.num_blocks + 1)

    def forward(self, image: Tensor) -> Tensor:
        """Args:
            image: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of :attr:`multiple`.

        Returns:
            ``(B, d)`` expression features.
        """
        check_image("image", image, self.multiple)
        x = self.blocks(self.first(image))
        x = F.adaptive_avg_pool2d(x, self.config.pool)
        return self.fc(x.flatten(1))


@dataclass(frozen=True)
class ExpressionDecoderConfig:
    """Sizes of :class:`ExpressionDecoder`.

    Attributes:
        feature_dim: ``d``.
        num_keypoints: ``k``.
        hidden: width of the hidden fully connected layers (256).
        num_layers: hidden ``Linear + BatchNorm + ReLU`` layers (2).
        out_init_scale: scale of the last layer's initial weights (small: ``delta`` starts near 0).
    """

    feature_dim: int = 128
    num_keypoints: int = 20
    hidden: int = 256
    num_layers: int = 2
    out_init_scale: float = 0.01


class ExpressionDecoder(nn.Module):
    """``(f, K_c)`` -> expression deformation ``delta`` (eq. 4, module docstring)."""

    def __init__(self, config: ExpressionDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ExpressionDecoderConfig()
        layers: list[nn.Module] = []
        ch = cfg.feature_dim + 3 * cfg.num_keypoints
        for _ in range(cfg.num_layers):
            layers += [nn.Linear(ch, cfg.hidden), nn.BatchNorm1d(cfg.hidden), nn.ReLU()]
            ch = cfg.hidden
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(ch, 3 * cfg.num_keypoints)
        with torch.no_grad():
            self.out.weight.mul_(cfg.out_init_scale)
            self.out.bias.zero_()

    def forward(self, feature: Tensor, canonical: Tensor) -> Tensor:
        """Args:
            feature: ``(B, d)`` expression features.
            canonical: ``(B, k, 3)`` canonical keypoints of the face the deformation is for.

        Returns:
            ``(B, k, 3)`` deformation in keypoint-space units.
        """
        cfg = self.config
        B = feature.shape[0] if isinstance(feature, Tensor) and feature.dim() == 2 else None
        if B is None or feature.shape[1] != cfg.feature_dim:
            shape = tuple(feature.shape) if isinstance(feature, Tensor) else type(feature).__name__
            raise InputShapeError(f"expression feature must have shape (B, {cfg.feature_dim}); got {shape}")
        if not isinstance(canonical, Tensor) or canonical.shape != (B, cfg.num_keypoints, 3):
            shape = tuple(canonical.shape) if isinstance(canonical, Tensor) else type(canonical).__name__
            raise InputShapeError(f"canonical keypoints must have shape ({B}, {cfg.num_keypoints}, 3); got {shape}")
        x = torch.cat([feature, canonical.flatten(1).to(feature)], dim=1)
        return self.out(self.hidden(x)).reshape(B, cfg.num_keypoints, 3)


def self_supervised_loss(feature: Tensor, feature_augmented: Tensor, eps: float = 1e-8) -> Tensor:
    """Eq. 7: ``mean_b (1 - cos(f_b, f'_b))`` of ``(B, d)`` features; 0 for identical (non-zero) features."""
    if feature.shape != feature_augmented.shape or feature.dim() != 2:
        raise InputShapeError(f"features must both be (B, d); got {tuple(feature.shape)} and "
                              f"{tuple(feature_augmented.shape)}")
    return (1 - F.cosine_similarity(feature, feature_augmented, dim=1, eps=eps)).mean()


def identity_consistency_loss(canonical_source: Tensor, canonical_driving: Tensor) -> Tensor:
    """Eq. 8: mean ``|K_c,s - K_c,d|`` of two ``(B, k, 3)`` canonical keypoint sets; 0 when they agree."""
    _check_kp("canonical_source", canonical_source)
    if canonical_driving.shape != canonical_source.shape:
        raise InputShapeError(f"canonical keypoints shapes differ: {tuple(canonical_source.shape)} vs "
                              f"{tuple(canonical_driving.shape)}")
    return (canonical_source - canonical_driving).abs().mean()


def landmark_part_loss(landmarks: Tensor, target: Tensor, part_weights: Sequence[float] = (1.0, 1.0, 1.0),
                       parts: Sequence[tuple[str, Sequence[int]]] = LANDMARK_PARTS) -> Tensor:
    """Eq. 9: ``sum_p lambda_p mean_{i in p} |l_i - l*_i|_2`` (module docstring).

    Args:
        landmarks: ``(B, n, 2)`` landmarks of the generated image (any consistent units; the pipeline uses
            normalised image coordinates).
        target: ``(B, n, 2)`` those of the driving frame (no gradient flows into them).
        part_weights: one weight per part.
        parts: ``(name, indices)`` per part (default :data:`LANDMARK_PARTS`, for ``n = 68``).

    Returns:
        Scalar >= 0.
    """
    if landmarks.shape != target.shape or landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise InputShapeError(f"landmarks and target must both be (B, n, 2); got {tuple(landmarks.shape)} and "
                              f"{tuple(target.shape)}")
    if len(part_weights) != len(parts):
        raise ValueError(f"need one weight per part ({[p[0] for p in parts]}); got {list(part_weights)}")
    n = landmarks.shape[1]
    dist = (landmarks - target.detach()).pow(2).sum(-1).add(1e-12).sqrt()  # (B, n)
    loss = landmarks.new_zeros(())
    for (name, idx), w in zip(parts, part_weights):
        if max(idx) >= n:
            raise InputShapeError(f"part {name!r} needs landmark {max(idx)}; got {n} landmarks")
        loss = loss + float(w) * dist[:, list(idx)].mean()
    return loss


def lsgan_generator_loss(fake_logits: Tensor | Sequence[Tensor]) -> Tensor:
    """Least-squares GAN (Mao et al.), generator side: mean over scales of ``mean (D(fake) - 1)^2``."""
    logits = [fake_logits] if isinstance(fake_logits, Tensor) else list(fake_logits)
    return torch.stack([(x - 1).pow(2).mean() for x in logits]).mean()


def lsgan_discriminator_loss(real_logits: Tensor | Sequence[Tensor],
                             fake_logits: Tensor | Sequence[Tensor]) -> Tensor:
    """Least-squares GAN, discriminator side: mean over scales of ``mean (D(real) - 1)^2 + mean D(fake)^2``."""
    real = [real_logits] if isinstance(real_logits, Tensor) else list(real_logits)
    fake = [fake_logits] if isinstance(fake_logits, Tensor) else list(fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"need as many real as fake logit maps; got {len(real)} and {len(fake)}")
    return torch.stack([(r - 1).pow(2).mean() + f.pow(2).mean() for r, f in zip(real, fake)]).mean()


def image_pyramid(image: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """``image`` ``(B, C, H, W)`` resized (area-antialiased bilinear) to each square size of ``sizes``."""
    out = []
    for s in sizes:
        if (s, s) == tuple(image.shape[-2:]):
            out.append(image)
        else:
            out.append(F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False, antialias=True))
    return out
