"""What the two learned-3D-keypoint pipelines share: kp3d (:mod:`.kp3d`) and MMFA (:mod:`.mmfa`).

Both are built on the face-vid2vid core of :mod:`morphface.nets.keypoints` and differ only in how the keypoints of
a frame are composed (kp3d: ``R (K_c + delta^AU + delta^audio) + t`` from AUs and audio; MMFA:
``s R (K_c + delta) + t`` from an expression feature) and in their extra losses and stages. The common part lives
here, once:

* :class:`KeypointCoreConfig` -- the config fields of the core networks, the PatchGAN and the shared loss weights,
  with :func:`check_non_negative` and :func:`check_image_multiples` for the ``validate`` methods;
* :func:`core_encoders` (``appearance``, ``canonical``, ``head_pose``) and :func:`core_decoders` (``motion``,
  ``generator``, ``discriminator``): the networks both pipelines have, under the same ``nets`` names;
* :class:`LossNetworkSpec` and :func:`build_loss_network`: the frozen auxiliary network of a loss (kp3d's face
  parser, MMFA's landmark network) from an ``"auto"/"on"/"off"/"random"`` mode and a weights file;
* :class:`LossTerms`: the weighted sum of a step's loss terms and their logs;
* :class:`KeypointReenactorMixin`: the shared methods (motion field and generator, GAN and head-pose losses, the
  image discriminator step, the keypoint visuals, keeping the loss networks in eval mode);
* :func:`draw_keypoints` and :func:`rotation_control` (the ``rotation`` argument of ``edit``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import InputShapeError, MissingInputError
from ..nets import DiscriminatorConfig, MultiScaleDiscriminator, feature_matching_loss, l1_loss
from ..nets.keypoints import (
    AppearanceConfig,
    AppearanceFeatureExtractor,
    CanonicalKeypointConfig,
    CanonicalKeypointDetector,
    HeadPoseConfig,
    HeadPoseEstimator,
    MotionFieldConfig,
    MotionFieldEstimator,
    OcclusionAwareGenerator,
    OcclusionAwareGeneratorConfig,
    head_pose_loss,
    pose_to_rotation,
    warp_image_by_volume_flow,
)
from .base import StepResult, to_signed, to_unit

__all__ = ["KeypointCoreConfig", "check_non_negative", "check_image_multiples", "core_encoders", "core_decoders",
           "LossNetworkSpec", "build_loss_network", "LossTerms", "KeypointReenactorMixin", "draw_keypoints",
           "rotation_control", "LOSS_NETWORK_MODES"]

#: Modes of a loss network: ``"auto"`` (on when its weights are a file), ``"on"``, ``"off"``, ``"random"`` (tests).
LOSS_NETWORK_MODES = ("auto", "on", "off", "random")


@dataclasses.dataclass
class KeypointCoreConfig:
    """Config fields of the keypoint core shared by :class:`~morphface.pipelines.KeypointGANConfig` and
    :class:`~morphface.pipelines.MMFAConfig` (a mixin: each pipeline's config also derives from its
    :class:`~morphface.pipelines.ReenactorConfig`). Defaults: face-vid2vid's networks at 256 x 256; ``width``
    scales every channel count.

    Attributes:
        num_keypoints: ``k`` (20, face-vid2vid's).
        feature_channels, depth: ``C`` and ``D`` of the identity volume (32, 16).
        appearance_channels, appearance_res_blocks: identity extractor sizes (64, 6).
        keypoint_channels, keypoint_max_channels, keypoint_blocks, keypoint_volume_channels: canonical
            detector hourglass (32, 1024, 5, 32).
        pose_channels, pose_stages: head-pose estimator (64, 4).
        motion_channels, motion_max_channels, motion_blocks, compressed_channels: motion field hourglass
            (32, 1024, 5, 5).
        generator_channels, generator_res_blocks: occlusion-aware generator (64, 6).
        blend_warped: the generator blends its output with the warped source by a predicted mask (not in the
            papers; :mod:`morphface.nets.keypoints.generator`). Small, briefly trained models need it.
        disc_width, disc_base_channels, disc_max_channels, disc_num_layers, disc_num_scales: PatchGAN sizes
            (``disc_width`` ``None``: ``width``).
        lambda_perceptual, lambda_gan, lambda_fm, lambda_equivariance, lambda_keypoint, lambda_head_pose,
            lambda_deformation: face-vid2vid's 10, 1, 10, 20, 10, 20, 5.
        lambda_l1: the library's L1 pixel term (10; a reconstruction signal when VGG weights are missing; 0 for
            the papers' losses only).
        equivariance_rotation_deg, equivariance_scale, equivariance_translation: the random affine's range.
    """

    num_keypoints: int = 20
    feature_channels: int = 32
    depth: int = 16
    appearance_channels: int = 64
    appearance_res_blocks: int = 6
    keypoint_channels: int = 32
    keypoint_max_channels: int = 1024
    keypoint_blocks: int = 5
    keypoint_volume_channels: int = 32
    pose_channels: int = 64
    pose_stages: int = 4
    motion_channels: int = 32
    motion_max_channels: int = 1024
    motion_blocks: int = 5
    compressed_channels: int = 5
    generator_channels: int = 64
    generator_res_blocks: int = 6
    blend_warped: bool = False
    disc_width: float | None = None
    disc_base_channels: int = 64
    disc_max_channels: int = 512
    disc_num_layers: int = 4
    disc_num_scales: int = 2
    lambda_perceptual: float = 10.0
    lambda_gan: float = 1.0
    lambda_fm: float = 10.0
    lambda_equivariance: float = 20.0
    lambda_keypoint: float = 10.0
    lambda_head_pose: float = 20.0
    lambda_deformation: float = 5.0
    lambda_l1: float = 10.0
    equivariance_rotation_deg: float = 10.0
    equivariance_scale: float = 0.1
    equivariance_translation: float = 0.1

    def core_multiples(self) -> dict[str, int]:
        """What ``image_size`` must be a multiple of for the canonical detector's and the motion field's
        hourglasses (``4 * 2^blocks`` each), by field name."""
        return {"keypoint_blocks": 4 * 2 ** self.keypoint_blocks, "motion_blocks": 4 * 2 ** self.motion_blocks}


def check_non_negative(config: Any, prefixes: tuple[str, ...] = ("lambda_",), skip: Sequence[str] = ()) -> None:
    """Raise ``ValueError`` naming the first dataclass field of ``config`` with one of ``prefixes`` (not in ``skip``)
    that is negative."""
    for f in dataclasses.fields(config):
        if f.name.startswith(prefixes) and f.name not in skip and getattr(config, f.name) < 0:
            raise ValueError(f"{f.name} must be >= 0; got {getattr(config, f.name)}")


def check_image_multiples(config: Any, multiples: Mapping[str, int]) -> None:
    """Raise ``ValueError`` unless ``config.image_size`` is a multiple of each ``{field name: multiple}``."""
    for name, multiple in multiples.items():
        if config.image_size % multiple:
            raise ValueError(f"image_size {config.image_size} must be a multiple of {multiple} for "
                             f"{name}={getattr(config, name)}")


def core_encoders(cfg: KeypointCoreConfig) -> dict[str, nn.Module]:
    """The source/driving encoders of the core: ``appearance`` (identity volume), ``canonical`` (``K_c``),
    ``head_pose`` (``R, t``), built in this order."""
    w = cfg.width
    return {
        "appearance": AppearanceFeatureExtractor(AppearanceConfig(
            base_channels=cfg.appearance_channels, feature_channels=cfg.feature_channels, depth=cfg.depth,
            num_res_blocks=cfg.appearance_res_blocks, width=w)),
        "canonical": CanonicalKeypointDetector(CanonicalKeypointConfig(
            num_keypoints=cfg.num_keypoints, base_channels=cfg.keypoint_channels,
            max_channels=cfg.keypoint_max_channels, num_blocks=cfg.keypoint_blocks, depth=cfg.depth,
            volume_channels=cfg.keypoint_volume_channels, width=w)),
        "head_pose": HeadPoseEstimator(HeadPoseConfig(base_channels=cfg.pose_channels,
                                                      num_stages=cfg.pose_stages, width=w)),
    }


def core_decoders(cfg: KeypointCoreConfig, feature_channels: int, **generator_options: Any) -> dict[str, nn.Module]:
    """The core's ``motion`` field, occlusion-aware ``generator`` (``generator_options``: more
    :class:`OcclusionAwareGeneratorConfig` fields) and the PatchGAN ``discriminator`` conditioned on the ``k``
    keypoint heatmaps, built in this order; ``feature_channels``: ``C`` of the appearance volume."""
    w, k, C = cfg.width, cfg.num_keypoints, feature_channels
    dw = cfg.disc_width if cfg.disc_width is not None else w
    return {
        "motion": MotionFieldEstimator(MotionFieldConfig(
            num_keypoints=k, feature_channels=C, depth=cfg.depth, compressed_channels=cfg.compressed_channels,
            base_channels=cfg.motion_channels, max_channels=cfg.motion_max_channels, num_blocks=cfg.motion_blocks,
            width=w)),
        "generator": OcclusionAwareGenerator(OcclusionAwareGeneratorConfig(
            feature_channels=C, depth=cfg.depth, base_channels=cfg.generator_channels,
            num_res_blocks=cfg.generator_res_blocks, width=w, blend_warped=cfg.blend_warped, **generator_options)),
        "discriminator": MultiScaleDiscriminator(DiscriminatorConfig(
            cond_channels=k, base_channels=cfg.disc_base_channels, max_channels=cfg.disc_max_channels,
            num_layers=cfg.disc_num_layers, num_scales=cfg.disc_num_scales, width=dw)),
    }


@dataclasses.dataclass(frozen=True)
class LossNetworkSpec:
    """How a pipeline names and gets the frozen network of one of its losses (:func:`build_loss_network`).

    Attributes:
        owner: the pipeline's class name, the messages' prefix.
        field: the mode field of the config (``<field>_weights`` is the weights field), e.g. ``"parser"``.
        network: what the network is, e.g. ``"face parser"``. kind: its file kind, e.g. ``"face-parser"``.
        loss: the loss it serves (``"random"`` warning). loss_off: the loss's name in the ``"auto"`` warning.
        command: the module that trains the weights (``python -m <command>``).
        make_random: an untrained network. load: the network from a weights file.
    """

    owner: str
    field: str
    network: str
    kind: str
    loss: str
    loss_off: str
    command: str
    make_random: Callable[[], nn.Module]
    load: Callable[[str], nn.Module]


def build_loss_network(spec: LossNetworkSpec, mode: str, weights: str | None, weight: float) -> nn.Module | None:
    """The frozen (no gradients, eval mode) network of a loss, or ``None`` when the loss is off.

    ``mode`` ``"off"`` or a zero loss ``weight``: ``None``; ``"random"``: an untrained network (with a warning);
    ``"on"``: loaded from ``weights`` (:class:`MissingInputError` without them); ``"auto"``: loaded when
    ``weights`` is a file, else ``None`` with a warning.
    """
    if mode == "off" or weight == 0:
        return None
    if mode == "random":
        warnings.warn(f"{spec.owner}: {spec.field}='random' uses an untrained {spec.network}; its {spec.loss} is not "
                      "meaningful (use only for tests)", stacklevel=3)
        net = spec.make_random()
    elif weights is not None and (mode == "on" or Path(weights).is_file()):
        net = spec.load(weights)
    elif mode == "on":
        raise MissingInputError(f"{spec.owner}: {spec.field}='on' needs {spec.field}_weights (a {spec.kind} file from "
                                f"`python -m {spec.command}`)")
    else:
        warnings.warn(f"{spec.owner}: no {spec.kind} weights ({weights!r}): the {spec.loss_off} is OFF. Train them "
                      f"with `python -m {spec.command}` and set {spec.field}_weights.", stacklevel=3)
        return None
    net.requires_grad_(False)
    return net.eval()


class LossTerms:
    """The weighted sum of a step's loss terms: :meth:`add` adds ``weight * value`` to :attr:`total` and logs the
    unweighted, detached ``value`` under its name."""

    def __init__(self, like: Tensor) -> None:
        self.total = like.new_zeros(())
        self.logs: dict[str, Tensor] = {}

    def add(self, name: str, weight: float, value: Tensor) -> None:
        """Add ``weight * value`` (``value``: a scalar tensor) to the total; log ``value`` under ``name``."""
        self.total = self.total + weight * value
        self.logs[name] = value.detach()

    def result(self, outputs: dict[str, Tensor]) -> StepResult:
        """The step's :class:`StepResult`: the total, the logged terms and ``outputs``."""
        return StepResult(self.total, self.logs, outputs)


def draw_keypoints(images: Tensor, keypoints: Tensor, radius: float | None = None) -> Tensor:
    """Coloured discs at the keypoints' image positions (the keypoint overlay picture).

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        keypoints: ``(B, k, 3)`` keypoint-space points (their ``x, y`` are normalised image coordinates).
        radius: disc radius in pixels (default ``max(1.5, W / 64)``).

    Returns:
        ``(B, 3, H, W)`` in [0, 1]: keypoint ``i`` in hue ``i / k`` with a dark rim.
    """
    B, k = keypoints.shape[:2]
    H, W = images.shape[-2:]
    ys = (2 * torch.arange(H, device=images.device, dtype=images.dtype) + 1) / H - 1
    xs = (2 * torch.arange(W, device=images.device, dtype=images.dtype) + 1) / W - 1
    kp = keypoints[..., :2].to(images.dtype)
    radius = 2.0 * (radius if radius is not None else max(1.5, W / 64)) / W  # normalised units
    d = torch.sqrt((xs[None, None, None, :] - kp[..., 0, None, None]) ** 2
                   + (ys[None, None, :, None] - kp[..., 1, None, None]) ** 2)  # (B, k, H, W)
    hue = torch.arange(k, device=images.device, dtype=images.dtype) / k
    rgb = ((torch.stack([hue, hue + 2 / 3, hue + 1 / 3], -1) * 6) % 6 - 3).abs().sub(1).clamp(0, 1)  # (k, 3)
    fill = (d <= radius).to(images.dtype)
    rim = ((d > radius) & (d <= radius * 1.5)).to(images.dtype)
    colour = torch.einsum("bkhw,kc->bchw", fill, rgb) / fill.sum(1, keepdim=True).clamp(min=1)
    any_fill = fill.amax(1, keepdim=True)
    any_rim = rim.amax(1, keepdim=True) * (1 - any_fill)
    return images * (1 - any_fill) * (1 - any_rim) + colour * any_fill


def rotation_control(rotation: Tensor | Any, device: torch.device) -> Tensor:
    """An ``edit`` rotation as a ``(1, 3, 3)`` keypoint-space matrix: ``(3,)`` pitch, yaw, roll in degrees (library
    signs) or a ``(3, 3)`` model-frame rotation matrix (its y and z axes flipped into keypoint space).

    Raises:
        InputShapeError: any other shape.
    """
    r = torch.as_tensor(rotation, dtype=torch.float32, device=device)
    if r.shape == (3,):
        return pose_to_rotation(torch.deg2rad(r)[None])
    if r.shape == (3, 3):
        c = torch.tensor([1.0, -1.0, -1.0], device=device)
        return (r * c[:, None] * c[None, :])[None]
    raise InputShapeError(f"rotation must be (3,) pitch/yaw/roll in degrees or a (3, 3) model-frame matrix; got "
                          f"{tuple(r.shape)}")


class KeypointReenactorMixin:
    """Methods shared by the keypoint pipelines (put before their :class:`~.base.Reenactor` base class).

    A pipeline sets :attr:`gan_generator_loss` and :attr:`gan_discriminator_loss` (kp3d: hinge, MMFA: least
    squares) and :attr:`loss_networks`, the attributes holding its frozen loss networks (kept in eval mode by
    :meth:`train`).
    """

    gan_generator_loss: ClassVar[Callable[..., Tensor]]
    gan_discriminator_loss: ClassVar[Callable[..., Tensor]]
    loss_networks: ClassVar[tuple[str, ...]] = ()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.loss_networks:
            net = getattr(self, name)
            if net is not None:
                net.eval()
        return self

    def _angles(self, batch: Mapping[str, Tensor], who: str) -> Tensor:
        """The ``<who>_params`` fit's pitch, yaw, roll ``(B, 3)``."""
        return self.layout.split(self._params(batch, f"{who}_params"))["angles"]

    def _animate(self, src: Tensor, volume: Tensor, kp_source: Tensor, kp_driving: Tensor, rot_source: Tensor,
                 rot_driving: Tensor):
        """Motion field and generator: ``(generated, warped source, motion field)`` (``warped`` from the generator
        when it blends, else the source warped by the flow)."""
        field = self.nets["motion"](volume, kp_source, kp_driving, rot_source, rot_driving)
        gen = self.nets["generator"](volume, field.flow, field.occlusion, src if self.config.blend_warped else None)
        warped = gen.warped_image if gen.warped_image is not None else warp_image_by_volume_flow(src, field.flow)
        return gen, warped, field

    def _add_reconstruction_losses(self, terms: LossTerms, fakes: Sequence[Tensor], targets: Sequence[Tensor]) -> None:
        """``l1`` and ``perceptual``, each summed over the image scales ``fakes``/``targets``."""
        cfg = self.config
        if cfg.lambda_l1 > 0:
            terms.add("l1", cfg.lambda_l1, sum(l1_loss(p, t) for p, t in zip(fakes, targets)))
        if self.perceptual is not None and cfg.lambda_perceptual > 0:
            terms.add("perceptual", cfg.lambda_perceptual, sum(self.perceptual(p, t) for p, t in zip(fakes, targets)))

    def _add_gan_losses(self, terms: LossTerms, fake: Tensor, target: Tensor, cond: Tensor) -> None:
        """``gan`` (the pipeline's GAN loss) and ``fm`` (feature matching against the real image's features)."""
        cfg = self.config
        if cfg.lambda_gan > 0 or cfg.lambda_fm > 0:
            d_fake = self.nets["discriminator"](fake, cond)
            with torch.no_grad():
                d_real = self.nets["discriminator"](target, cond)
            terms.add("gan", cfg.lambda_gan, type(self).gan_generator_loss(d_fake.logits))
            terms.add("fm", cfg.lambda_fm, feature_matching_loss(d_fake.features, d_real.features))

    def _add_head_pose_loss(self, terms: LossTerms, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        """``head_pose``: the estimated angles of source and driving against their fits' angles."""
        if self.config.lambda_head_pose > 0:
            pose = 0.5 * (head_pose_loss(out["angles_source"], self._angles(batch, "source"))
                          + head_pose_loss(out["angles_driving"], self._angles(batch, "driving")))
            terms.add("head_pose", self.config.lambda_head_pose, pose)

    @staticmethod
    def _step_outputs(fake: Tensor, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """What a generator step passes on to the discriminator step and :meth:`_keypoint_visuals`."""
        return {"fake": fake, "warped": out["warped"], "cond": out["cond"], "kp_driving": out["kp_driving"],
                "kp_source": out["kp_source"]}

    def _image_discriminator_step(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> StepResult:
        """The PatchGAN's step on the driving frame (real) and the generated one (fake), both with ``cond``."""
        fake, cond = outputs["fake"].detach(), outputs["cond"].detach()
        target = to_signed(batch["driving"]).to(fake)
        d = self.nets["discriminator"](torch.cat([target, fake]), torch.cat([cond, cond]))
        real_logits = [x.chunk(2)[0] for x in d.logits]
        fake_logits = [x.chunk(2)[1] for x in d.logits]
        loss = type(self).gan_discriminator_loss(real_logits, fake_logits)
        logs = {"image": loss.detach(),
                "real_score": torch.stack([x.mean() for x in real_logits]).mean().detach(),
                "fake_score": torch.stack([x.mean() for x in fake_logits]).mean().detach()}
        return StepResult(loss, logs, {})

    @staticmethod
    def _keypoint_visuals(batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """source with ``K_s`` | warped | output | target with ``K_d``, each ``(B, 3, S, S)`` in [0, 1]."""
        return {"source_keypoints": draw_keypoints(batch["source"], outputs["kp_source"]),
                "warped": to_unit(outputs["warped"]), "output": to_unit(outputs["fake"]),
                "target_keypoints": draw_keypoints(batch["driving"], outputs["kp_driving"])}

    @staticmethod
    def _check_output(output: str) -> None:
        if output not in ("fake", "warped"):
            raise ValueError(f"output must be 'fake' or 'warped'; got {output!r}")
