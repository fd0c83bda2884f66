"""KeypointGAN (``"kp3d"``): the 3D-keypoint GAN with AU- and audio-driven deformation (Hatakeyama et al. 2024).

Built from the reusable face-vid2vid core of :mod:`morphface.nets.keypoints`:

* from the **source** ``x_s``: the identity volume ``I`` (:class:`AppearanceFeatureExtractor`), the canonical
  keypoints ``K_c`` (:class:`CanonicalKeypointDetector`) and its head pose ``R_s, t_s``;
* from the **driving** frame: its head pose ``R_d, t_d`` (:class:`HeadPoseEstimator` on ``x_d``), its 17 AUs
  (:class:`AUDeformationEstimator` -> ``delta^AU``) and its audio (:class:`AudioDeformationEstimator` ->
  ``delta^audio``); the source's AUs and audio give the source's deformations the same way;
* eq. 3.1 ``K = R (K_c + delta^AU + delta^audio) + t`` for both, the motion field (rotations as Jacobians),
  the occlusion-aware generator, and a two-scale PatchGAN conditioned on Gaussian heatmaps of ``K_d``.

**Losses** (eq. 3.2; weights in :class:`KeypointGANConfig`, face-vid2vid's values where the paper defers to
its supplement): perceptual ``L_P`` (VGG19 only when its ImageNet weights are local; the paper's VGGFace
term is not available offline), hinge GAN ``L_G``, feature matching ``L_F``, equivariance ``L_E`` (random
affine of the driving frame), keypoint prior ``L_K``, head pose ``L_H``, deformation prior ``L_Delta`` and
the segmentation loss ``L_S = L_upper + lambda L_lower`` (eq. 3.3-3.4). Added by this library: an L1 pixel
term ``lambda_l1`` (a reconstruction signal when VGG weights are missing; 0 reproduces the paper).

**Offline substitutes** (decided once, here): head-pose targets are the frame's 3DMM fit angles (for
HopeNet); AUs are the fit's ICT blendshapes mapped to FACS (:mod:`morphface.morphable.facs`, for OpenFace);
audio features are the library's frame-aligned MFCCs (for DeepSpeech), 8-frame windows ``t-4 .. t+3``;
the face parser of ``L_S`` is :class:`~morphface.nets.parsing.FaceParser` trained on synthetic renders
(``parser_weights``), its targets the fit's part masks (:func:`~morphface.render.face_parts.face_part_masks`).

**Batch keys** (besides the data contract's ``source``, ``driving``, ``source_params``, ``driving_params``):
``source_aus``/``driving_aus`` ``(B, 17)`` (else computed from the parameters), and with ``use_audio``
``source_audio_window``/``driving_audio_window`` ``(B, 8, 108)`` plus ``has_audio`` ``(B,)`` (and optionally
``source_has_audio``; zeros switch ``delta^audio`` off for clips without audio). Control keys used by
:meth:`KeypointGAN.edit`: ``driving_rotation`` ``(B, 3, 3)`` (replaces ``R_d``), ``rotation_offset`` ``R_u``,
``translation_offset`` ``t_u`` (eq. 3.5), ``au_gain``/``audio_gain`` ``(B, k)`` (eq. 3.6).

**Without a driving image** (``reenact(driving_params=...)``, as ``morphface evaluate`` calls it; ``decode``):
both rotations come from the fits' angles (:func:`~morphface.nets.keypoints.pose_to_rotation`, the head-pose
loss trains the estimator toward exactly these), ``t_s`` from the estimator on the source and
``t_d = t_s + (c_d - c_s)``, ``c`` the fit's projected head origin in normalised image coordinates.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputShapeError, MissingInputError
from ..fitting import FitResult
from ..morphable.facs import AU_MAX, FACS_AUS, au_index, expression_to_aus
from ..nets import (
    DiscriminatorConfig,
    MultiScaleDiscriminator,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    l1_loss,
)
from ..nets.keypoints import (
    AppearanceConfig,
    AppearanceFeatureExtractor,
    AUDeformationConfig,
    AUDeformationEstimator,
    AudioDeformationConfig,
    AudioDeformationEstimator,
    CanonicalKeypointConfig,
    CanonicalKeypointDetector,
    HeadPoseConfig,
    HeadPoseEstimator,
    MotionFieldConfig,
    MotionFieldEstimator,
    OcclusionAwareGenerator,
    OcclusionAwareGeneratorConfig,
    affine_warp,
    deformation_prior_loss,
    equivariance_loss,
    head_pose_loss,
    keypoint_heatmaps_2d,
    keypoint_prior_loss,
    part_segmentation_loss,
    pose_to_rotation,
    random_affine,
    transform_keypoints,
    warp_image_by_volume_flow,
)
from ..render.face_parts import face_part_masks
from .base import MorphableReenactor, MorphableReenactorConfig, StepResult, to_signed, to_unit
from .params import clamped_window_indices, transfer_motion

__all__ = ["KeypointGANConfig", "KeypointGAN", "draw_keypoints", "AUDIO_WINDOW_BEFORE", "AUDIO_WINDOW_AFTER",
           "PARSER_MODES"]

#: Audio window of a frame ``t``: frames ``t - 4 .. t + 3`` (8 neighbouring frames), clamped at the clip ends.
AUDIO_WINDOW_BEFORE, AUDIO_WINDOW_AFTER = 4, 3
#: ``parser`` modes: ``"auto"`` (on when ``parser_weights`` is a file), ``"on"``, ``"off"``, ``"random"`` (tests).
PARSER_MODES = ("auto", "on", "off", "random")


@dataclasses.dataclass
class KeypointGANConfig(MorphableReenactorConfig):
    """Configuration of :class:`KeypointGAN` (fields of :class:`MorphableReenactorConfig` plus these; defaults are the
    paper-sized networks of face-vid2vid at 256 x 256; ``width`` scales every channel count).

    Attributes:
        num_keypoints: ``k`` (20, face-vid2vid's; the paper does not state its own).
        feature_channels, depth: ``C`` and ``D`` of the identity volume (32, 16).
        appearance_channels, appearance_res_blocks: identity extractor sizes (64, 6).
        keypoint_channels, keypoint_max_channels, keypoint_blocks, keypoint_volume_channels: canonical
            detector hourglass (32, 1024, 5, 32).
        pose_channels, pose_stages: head-pose estimator (64, 4).
        motion_channels, motion_max_channels, motion_blocks, compressed_channels: motion field hourglass
            (32, 1024, 5, 5).
        generator_channels, generator_res_blocks: occlusion-aware generator (64, 6).
        au_hidden, audio_hidden: hidden width of the per-keypoint MLPs (64).
        blend_warped: the generator blends its output with the warped source by a predicted mask (not in the
            paper; :mod:`morphface.nets.keypoints.generator`). Small, briefly trained models need it.
        use_audio: the audio-driven deformation (batches must then carry audio windows).
        audio_parts, audio_feature_size: of the frame-aligned audio features (4 x 27 = 108).
        disc_width, disc_base_channels, disc_max_channels, disc_num_layers, disc_num_scales: PatchGAN sizes.
        parser: face parser mode, see :data:`PARSER_MODES` (``"off"``: no segmentation loss).
        parser_weights: a :func:`~morphface.nets.parsing.save_face_parser` file.
        lambda_perceptual, lambda_gan, lambda_fm, lambda_equivariance, lambda_keypoint, lambda_head_pose,
            lambda_deformation: face-vid2vid's 10, 1, 10, 20, 10, 20, 5.
        lambda_segmentation: ``lambda_S`` (10), lambda_lower: ``lambda`` of eq. 3.4 (1).
        lambda_l1: the library's L1 pixel term (10; 0 for the paper's losses only).
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
    au_hidden: int = 64
    audio_hidden: int = 64
    blend_warped: bool = False
    use_audio: bool = True
    audio_parts: int = 4
    audio_feature_size: int = 27
    disc_width: float | None = None
    disc_base_channels: int = 64
    disc_max_channels: int = 512
    disc_num_layers: int = 4
    disc_num_scales: int = 2
    parser: str = "auto"
    parser_weights: str | None = None
    lambda_perceptual: float = 10.0
    lambda_gan: float = 1.0
    lambda_fm: float = 10.0
    lambda_equivariance: float = 20.0
    lambda_keypoint: float = 10.0
    lambda_head_pose: float = 20.0
    lambda_deformation: float = 5.0
    lambda_segmentation: float = 10.0
    lambda_lower: float = 1.0
    lambda_l1: float = 10.0
    equivariance_rotation_deg: float = 10.0
    equivariance_scale: float = 0.1
    equivariance_translation: float = 0.1

    def validate(self) -> None:
        super().validate()
        for f in dataclasses.fields(self):
            if f.name.startswith("lambda_") and getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0; got {getattr(self, f.name)}")
        if self.parser not in PARSER_MODES:
            raise ValueError(f"parser must be one of {PARSER_MODES}; got {self.parser!r}")
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1; got {self.num_keypoints}")
        for name, blocks, factor in (("keypoint_blocks", self.keypoint_blocks, 4),
                                     ("motion_blocks", self.motion_blocks, 4)):
            if self.image_size % (factor * 2 ** blocks):
                raise ValueError(f"image_size {self.image_size} must be a multiple of {factor * 2 ** blocks} for "
                                 f"{name}={blocks}")


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


class KeypointGAN(MorphableReenactor):
    """The trainable kp3d pipeline (module docstring). ``nets``: ``appearance``, ``canonical``, ``head_pose``,
    ``au_deformation``, ``audio_deformation`` (with ``use_audio``), ``motion``, ``generator``,
    ``discriminator``."""

    name = "kp3d"
    config_class = KeypointGANConfig
    config: KeypointGANConfig

    def __init__(self, config: KeypointGANConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        w, k = cfg.width, cfg.num_keypoints
        app = AppearanceFeatureExtractor(AppearanceConfig(
            base_channels=cfg.appearance_channels, feature_channels=cfg.feature_channels, depth=cfg.depth,
            num_res_blocks=cfg.appearance_res_blocks, width=w))
        C = app.config.channels
        nets: dict[str, nn.Module] = {
            "appearance": app,
            "canonical": CanonicalKeypointDetector(CanonicalKeypointConfig(
                num_keypoints=k, base_channels=cfg.keypoint_channels, max_channels=cfg.keypoint_max_channels,
                num_blocks=cfg.keypoint_blocks, depth=cfg.depth, volume_channels=cfg.keypoint_volume_channels,
                width=w)),
            "head_pose": HeadPoseEstimator(HeadPoseConfig(base_channels=cfg.pose_channels,
                                                          num_stages=cfg.pose_stages, width=w)),
            "au_deformation": AUDeformationEstimator(AUDeformationConfig(num_keypoints=k, hidden=cfg.au_hidden)),
        }
        if cfg.use_audio:
            nets["audio_deformation"] = AudioDeformationEstimator(AudioDeformationConfig(
                num_keypoints=k, num_frames=AUDIO_WINDOW_BEFORE + AUDIO_WINDOW_AFTER + 1, parts=cfg.audio_parts,
                feature_size=cfg.audio_feature_size, hidden=cfg.audio_hidden))
        nets["motion"] = MotionFieldEstimator(MotionFieldConfig(
            num_keypoints=k, feature_channels=C, depth=cfg.depth, compressed_channels=cfg.compressed_channels,
            base_channels=cfg.motion_channels, max_channels=cfg.motion_max_channels, num_blocks=cfg.motion_blocks,
            width=w))
        nets["generator"] = OcclusionAwareGenerator(OcclusionAwareGeneratorConfig(
            feature_channels=C, depth=cfg.depth, base_channels=cfg.generator_channels,
            num_res_blocks=cfg.generator_res_blocks, width=w, blend_warped=cfg.blend_warped))
        dw = cfg.disc_width if cfg.disc_width is not None else w
        nets["discriminator"] = MultiScaleDiscriminator(DiscriminatorConfig(
            cond_channels=k, base_channels=cfg.disc_base_channels, max_channels=cfg.disc_max_channels,
            num_layers=cfg.disc_num_layers, num_scales=cfg.disc_num_scales, width=dw))
        self.nets = nn.ModuleDict(nets)
        self.parser = self._build_parser()

    def _build_parser(self) -> nn.Module | None:
        from pathlib import Path

        from ..nets.parsing import FaceParser, load_face_parser

        cfg = self.config
        if cfg.parser == "off" or cfg.lambda_segmentation == 0:
            return None
        if cfg.parser == "random":
            warnings.warn("KeypointGAN: parser='random' uses an untrained face parser; its segmentation loss is "
                          "not meaningful (use only for tests)", stacklevel=3)
            parser = FaceParser()
        elif cfg.parser_weights is not None and (cfg.parser == "on" or Path(cfg.parser_weights).is_file()):
            parser = load_face_parser(cfg.parser_weights)
        elif cfg.parser == "on":
            raise MissingInputError("KeypointGAN: parser='on' needs parser_weights (a face-parser file from "
                                    "`python -m morphface.pipelines.face_parser`)")
        else:
            warnings.warn(f"KeypointGAN: no face-parser weights ({cfg.parser_weights!r}): the segmentation loss is "
                          "OFF. Train them with `python -m morphface.pipelines.face_parser` and set parser_weights.",
                          stacklevel=3)
            return None
        parser.requires_grad_(False)
        return parser.eval()

    def train(self, mode: bool = True) -> KeypointGAN:
        super().train(mode)
        if self.parser is not None:
            self.parser.eval()
        return self

    # ------------------------------------------------------------------ inputs
    def _aus(self, batch: Mapping[str, Tensor], who: str, B: int, like: Tensor) -> Tensor:
        key = f"{who}_aus"
        if key in batch:
            aus = batch[key]
        else:
            aus = expression_to_aus(self._params(batch, f"{who}_params")[:, self.layout.n_id:
                                                                        self.layout.n_id + self.layout.n_exp],
                                    self.model.exp_names)
        if not isinstance(aus, Tensor) or tuple(aus.shape) != (B, len(FACS_AUS)):
            shape = tuple(aus.shape) if isinstance(aus, Tensor) else type(aus).__name__
            raise InputShapeError(f"batch[{key!r}] must have shape ({B}, {len(FACS_AUS)}) (AUs in [0, 5]); got "
                                  f"{shape}")
        return aus.to(like)

    def _audio_delta(self, batch: Mapping[str, Tensor], who: str, B: int, like: Tensor) -> Tensor | None:
        if not self.config.use_audio:
            return None
        key = f"{who}_audio_window"
        if key not in batch:
            raise MissingInputError(f"KeypointGAN(use_audio=True) needs batch[{key!r}] (B, 8, 108) audio windows "
                                    f"(zeros with has_audio=0 for silent clips); the batch has {sorted(batch)}")
        delta = self.nets["audio_deformation"](batch[key].to(like))
        flag = "source_has_audio" if who == "source" and "source_has_audio" in batch else "has_audio"
        if flag in batch:
            delta = delta * batch[flag].to(like).reshape(B, 1, 1)
        return delta

    def _head_origin(self, params: Tensor) -> Tensor:
        """``(B, 3)``: the fit's projected model origin in normalised image coordinates, depth 0."""
        S = self.config.image_size
        fit = self.layout.unpack(params.float(), (S, S))
        pix, _ = fit.camera.project(torch.zeros(params.shape[0], 1, 3, device=params.device))
        xy = pix[:, 0] * (2.0 / S) - 1.0
        return torch.cat([xy, xy.new_zeros(xy.shape[0], 1)], dim=-1)

    def _angles(self, batch: Mapping[str, Tensor], who: str) -> Tensor:
        return self.layout.split(self._params(batch, f"{who}_params"))["angles"]

    # ------------------------------------------------------------------ forward
    def generate(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The forward pass on a batch (module docstring for the keys).

        Returns:
            ``fake``, ``warped`` ``(B, 3, S, S)`` in [-1, 1]; ``cond`` ``(B, k, S, S)`` heatmaps of ``K_d``;
            ``kp_canonical``, ``kp_source``, ``kp_driving`` ``(B, k, 3)``; ``rotation_source``,
            ``rotation_driving`` ``(B, 3, 3)``; ``translation_driving`` ``(B, 3)``; ``angles_source``,
            ``angles_driving`` ``(B, 3)`` (estimated; absent without a driving image); ``delta_au_driving``,
            ``delta_audio_driving`` ``(B, k, 3)`` (the latter only with audio); ``occlusion`` ``(B, 1, h, w)``.
        """
        B = self._check_images(batch, "source")
        S = self.config.image_size
        src = to_signed(batch["source"])
        volume = self.nets["appearance"](src)
        kc = self.nets["canonical"](src)
        pose_s = self.nets["head_pose"](src)
        out: dict[str, Tensor] = {"kp_canonical": kc}
        t_s = pose_s.translation
        if "driving" in batch:
            self._check_images(batch, "source", "driving")
            pose_d = self.nets["head_pose"](to_signed(batch["driving"]).to(src))
            R_s, R_d, t_d = pose_s.rotation, pose_d.rotation, pose_d.translation
            out.update(angles_source=pose_s.angles, angles_driving=pose_d.angles)
        else:
            sp, dp = self._params(batch, "source_params"), self._params(batch, "driving_params")
            R_s = pose_to_rotation(self._angles(batch, "source")).to(src)
            R_d = pose_to_rotation(self._angles(batch, "driving")).to(src)
            t_d = t_s + (self._head_origin(dp) - self._head_origin(sp)).to(src)
        if "driving_rotation" in batch:
            R_d = batch["driving_rotation"].to(src)
        if "rotation_offset" in batch:
            R_d = batch["rotation_offset"].to(src) @ R_d
        if "translation_offset" in batch:
            t_d = t_d + batch["translation_offset"].to(src)
        au_net = self.nets["au_deformation"]
        d_au_s = au_net(self._aus(batch, "source", B, src))
        d_au_d = au_net(self._aus(batch, "driving", B, src))
        d_audio_s = self._audio_delta(batch, "source", B, src)
        d_audio_d = self._audio_delta(batch, "driving", B, src)
        if "au_gain" in batch:
            d_au_d = d_au_d * batch["au_gain"].to(src)[..., None]
        if "audio_gain" in batch and d_audio_d is not None:
            d_audio_d = d_audio_d * batch["audio_gain"].to(src)[..., None]
        kp_s = transform_keypoints(kc, R_s, t_s, d_au_s, d_audio_s)
        kp_d = transform_keypoints(kc, R_d, t_d, d_au_d, d_audio_d)
        field = self.nets["motion"](volume, kp_s, kp_d, R_s, R_d)
        gen = self.nets["generator"](volume, field.flow, field.occlusion,
                                     src if self.config.blend_warped else None)
        warped = gen.warped_image if gen.warped_image is not None else warp_image_by_volume_flow(src, field.flow)
        out.update(fake=gen.image, warped=warped,
                   cond=keypoint_heatmaps_2d(kp_d.detach(), (S, S)), kp_source=kp_s, kp_driving=kp_d,
                   rotation_source=R_s, rotation_driving=R_d, translation_driving=t_d, delta_au_driving=d_au_d,
                   occlusion=field.occlusion)
        if d_audio_d is not None:
            out["delta_audio_driving"] = d_audio_d
        return out

    def _part_targets(self, batch: Mapping[str, Tensor]) -> Tensor:
        S = self.config.image_size
        fit = self.layout.unpack(self._params(batch, "driving_params").float(), (S, S))
        with torch.no_grad():
            lm = self._project_landmarks(fit)
        return face_part_masks(lm, S)

    def generator_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        cfg = self.config
        B = self._check_images(batch, "source", "driving")
        out = self.generate(batch)
        fake = out["fake"]
        target = to_signed(batch["driving"]).to(fake)
        logs: dict[str, Tensor] = {}
        loss = fake.new_zeros(())

        def add(name: str, weight: float, value: Tensor) -> None:
            nonlocal loss
            loss = loss + weight * value
            logs[name] = value.detach()

        if cfg.lambda_l1 > 0:
            add("l1", cfg.lambda_l1, l1_loss(fake, target))
        if self.perceptual is not None and cfg.lambda_perceptual > 0:
            add("perceptual", cfg.lambda_perceptual, self.perceptual(fake, target))
        if cfg.lambda_gan > 0 or cfg.lambda_fm > 0:
            d_fake = self.nets["discriminator"](fake, out["cond"])
            with torch.no_grad():
                d_real = self.nets["discriminator"](target, out["cond"])
            add("gan", cfg.lambda_gan, hinge_generator_loss(d_fake.logits))
            add("fm", cfg.lambda_fm, feature_matching_loss(d_fake.features, d_real.features))
        if cfg.lambda_equivariance > 0:
            theta = random_affine(B, max_rotation_deg=cfg.equivariance_rotation_deg, max_scale=cfg.equivariance_scale,
                                  max_translation=cfg.equivariance_translation, device=fake.device, dtype=fake.dtype)
            pose_t = self.nets["head_pose"](affine_warp(target, theta))
            kp_t = transform_keypoints(out["kp_canonical"], pose_t.rotation, pose_t.translation,
                                       out["delta_au_driving"], out.get("delta_audio_driving"))
            add("equivariance", cfg.lambda_equivariance, equivariance_loss(out["kp_driving"], kp_t, theta))
        if cfg.lambda_keypoint > 0:
            add("keypoint_prior", cfg.lambda_keypoint, keypoint_prior_loss(out["kp_driving"]))
        if cfg.lambda_head_pose > 0:
            pose = 0.5 * (head_pose_loss(out["angles_source"], self._angles(batch, "source"))
                          + head_pose_loss(out["angles_driving"], self._angles(batch, "driving")))
            add("head_pose", cfg.lambda_head_pose, pose)
        if cfg.lambda_deformation > 0:
            add("deformation_prior", cfg.lambda_deformation,
                deformation_prior_loss(out["delta_au_driving"], out.get("delta_audio_driving")))
        if self.parser is not None:
            parts = self.parser(fake.float())
            add("segmentation", cfg.lambda_segmentation,
                part_segmentation_loss(parts, self._part_targets(batch).to(parts), cfg.lambda_lower))
        outputs = {"fake": fake, "warped": out["warped"], "cond": out["cond"], "kp_driving": out["kp_driving"],
                   "kp_source": out["kp_source"]}
        return StepResult(loss, logs, outputs)

    def discriminator_step(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> StepResult:
        fake, cond = outputs["fake"].detach(), outputs["cond"].detach()
        target = to_signed(batch["driving"]).to(fake)
        d = self.nets["discriminator"](torch.cat([target, fake]), torch.cat([cond, cond]))
        real_logits = [x.chunk(2)[0] for x in d.logits]
        fake_logits = [x.chunk(2)[1] for x in d.logits]
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        logs = {"image": loss.detach(),
                "real_score": torch.stack([x.mean() for x in real_logits]).mean().detach(),
                "fake_score": torch.stack([x.mean() for x in fake_logits]).mean().detach()}
        return StepResult(loss, logs, {})

    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """source with ``K_s`` | warped | output | target with ``K_d``, each ``(B, 3, S, S)`` in [0, 1]."""
        return {"source_keypoints": draw_keypoints(batch["source"], outputs["kp_source"]),
                "warped": to_unit(outputs["warped"]), "output": to_unit(outputs["fake"]),
                "target_keypoints": draw_keypoints(batch["driving"], outputs["kp_driving"])}

    # ------------------------------------------------------------------ inference
    def _windows(self, audio: Tensor | None, idx: Tensor, T: int) -> Tensor | None:
        if audio is None:
            return None
        return audio[clamped_window_indices(idx, T, AUDIO_WINDOW_BEFORE, AUDIO_WINDOW_AFTER)]

    def _run(self, source: Tensor, source_fit: FitResult, driving_fit: FitResult, frames: Tensor | None = None,
             audio: Tensor | None = None, batch_size: int = 8, output: str = "fake",
             controls: Mapping[str, Tensor] | None = None) -> Tensor:
        """Generate ``T`` frames of a source driven by fits (and driving crops when given); ``(T, 3, S, S)``."""
        if output not in ("fake", "warped"):
            raise ValueError(f"output must be 'fake' or 'warped'; got {output!r}")
        S = self.config.image_size
        if source.shape != (3, S, S):
            raise InputShapeError(f"source must be (3, {S}, {S}); got {tuple(source.shape)}")
        with self._eval():
            src = source.to(self.device, torch.float32)[None]
            sp = self.layout.pack(source_fit.to(self.device, torch.float32))
            dp = self.layout.pack(driving_fit.to(self.device, torch.float32))
            T = dp.shape[0]
            audio = self._audio_tensor(audio, T)
            result = []
            for a in range(0, T, batch_size):
                idx = torch.arange(a, min(a + batch_size, T), device=self.device)
                n = idx.numel()
                batch: dict[str, Tensor] = {"source": src.expand(n, -1, -1, -1), "source_params": sp.expand(n, -1),
                                            "driving_params": dp[idx]}
                if frames is not None:
                    batch["driving"] = frames[idx].to(self.device, torch.float32)
                if self.config.use_audio:
                    win = self._windows(audio, idx, T)
                    zeros = torch.zeros(n, AUDIO_WINDOW_BEFORE + AUDIO_WINDOW_AFTER + 1,
                                        self.config.audio_parts * self.config.audio_feature_size, device=self.device)
                    # the source's own audio is unknown at inference: its audio deformation is switched off
                    batch["source_audio_window"] = zeros
                    batch["driving_audio_window"] = win if win is not None else zeros
                    batch["has_audio"] = torch.full((n,), 1.0 if win is not None else 0.0, device=self.device)
                    batch["source_has_audio"] = torch.zeros(n, device=self.device)
                for key, value in (controls or {}).items():
                    batch[key] = value.to(self.device).expand(n, *value.shape[1:])
                result.append(to_unit(self.generate(batch)[output]).float())
            return torch.cat(result)

    def generate_sequence(self, source: Tensor, source_fit: FitResult, sequence: FitResult,
                          audio: Tensor | None = None, batch_size: int = 8, output: str = "fake") -> Tensor:
        """Frames of a source driven by a parameter sequence (no driving images: rotations from the fits,
        module docstring); arguments as :meth:`MorphableReenactor.generate_sequence`. ``(T, 3, S, S)`` in [0, 1]."""
        return self._run(source, source_fit, sequence, audio=audio, batch_size=batch_size, output=output)

    def reenact(self, source_image: Tensor, driving_frames: Tensor | None = None,
                driving_params: FitResult | Tensor | None = None, *,
                source_fit: FitResult | Tensor | None = None, audio: Tensor | None = None,
                relative: bool = False, crop: bool | None = None, batch_size: int = 8,
                output: str = "fake") -> Tensor:
        """Self or cross reenactment (the paper's reference-required control).

        With ``driving_frames`` the head poses are estimated on the driving crops (the paper) and the AUs come
        from their fits (``driving_params`` when given, else fitted here); with only ``driving_params`` the poses
        come from the fits (module docstring). ``relative=True`` moves the source by the driving clip's motion
        relative to its first frame (:func:`~morphface.pipelines.transfer_motion`) and uses the fits' poses.
        Other arguments as :meth:`MorphableReenactor.reenact`.

        Returns:
            ``(T, 3, S, S)`` in [0, 1].
        """
        src = self.prepare_source(source_image, fit=source_fit, crop=crop)
        if driving_frames is not None and not relative:
            drv = self.prepare_driving(driving_frames, fit=driving_params, crop=crop)
            return self._run(src.images, src.fit, drv.fit, frames=drv.images, audio=audio, batch_size=batch_size,
                             output=output)
        drv_fit = self._driving_fit(driving_frames, driving_params, crop)
        seq = transfer_motion(src.fit, drv_fit, relative=relative, model=self.model) if relative else drv_fit
        return self._run(src.images, src.fit, seq, audio=audio, batch_size=batch_size, output=output)

    def edit(self, image: Tensor, expression: Tensor | Mapping[str, float] | None = None,
             yaw: float | None = None, pitch: float | None = None, roll: float | None = None,
             relative: bool = True, *, rotation: Tensor | None = None, translation: Tensor | None = None,
             au_offsets: Mapping[int, float] | None = None, aus: Tensor | None = None,
             au_gain: float | Tensor | None = None, audio_gain: float | Tensor | None = None,
             fit: FitResult | Tensor | None = None, crop: bool | None = None) -> Tensor:
        """Reference-free control (§3.4): the source is its own driving frame, ``x_d = x_s``, then perturbed.

        Args:
            image: ``(3, H, W)`` RGB in [0, 1].
            expression: blendshape offsets (``{name: weight}`` or ``(K_exp,)``) added to the fit's expression
                before it is mapped to AUs (with ``relative=False`` they replace it).
            yaw, pitch, roll: head rotation in **degrees** (library signs). ``relative=True``: ``R_u`` of eq. 3.5
                (``R_d <- R_u R_d``); ``relative=False``: the driving rotation is set to these angles (missing
                ones 0), e.g. all 0 frontalises.
            rotation: ``(3,)`` pitch/yaw/roll in degrees or a ``(3, 3)`` model-frame rotation matrix, composed
                after ``yaw/pitch/roll`` into ``R_u``.
            translation: ``(3,)`` ``t_u`` in keypoint-space units (x right, y down; 1 = half the image).
            au_offsets: ``{AU number: offset}`` added to the AUs (``AU_d <- AU_d + AU_u``), e.g. ``{12: 2.0}``.
            aus: ``(17,)`` AUs replacing the source's (before ``au_offsets``).
            au_gain, audio_gain: eq. 3.6 magnification, a float or a ``(k,)`` vector over keypoints.
            fit: a fit of ``image`` (skips detection; needed for its AUs).

        Returns:
            ``(3, S, S)`` in [0, 1].
        """
        src = self.prepare_source(image, fit=fit, crop=crop)
        k = self.config.num_keypoints
        edited = self.edit_fit(src.fit, expression, None, None, None, relative)
        au = expression_to_aus(edited.exp_coeffs, self.model.exp_names)
        if aus is not None:
            au = torch.as_tensor(aus, dtype=torch.float32, device=self.device).reshape(1, -1)
            if au.shape[1] != len(FACS_AUS):
                raise InputShapeError(f"aus must have {len(FACS_AUS)} values; got {au.shape[1]}")
        au = au.clone()
        for number, offset in (au_offsets or {}).items():
            au[:, au_index(number)] += float(offset)
        controls: dict[str, Tensor] = {"source_aus": expression_to_aus(src.fit.exp_coeffs, self.model.exp_names),
                                       "driving_aus": au.clamp(0.0, AU_MAX)}
        angles = torch.tensor([[math.radians(float(v or 0.0)) for v in (pitch, yaw, roll)]], device=self.device)
        R_u = pose_to_rotation(angles)
        if rotation is not None:
            r = torch.as_tensor(rotation, dtype=torch.float32, device=self.device)
            if r.shape == (3,):
                R_extra = pose_to_rotation(torch.deg2rad(r)[None])
            elif r.shape == (3, 3):
                c = torch.tensor([1.0, -1.0, -1.0], device=self.device)
                R_extra = (r * c[:, None] * c[None, :])[None]
            else:
                raise InputShapeError(f"rotation must be (3,) degrees or a (3, 3) matrix; got {tuple(r.shape)}")
            R_u = R_extra @ R_u
        controls["driving_rotation" if not relative else "rotation_offset"] = R_u
        if translation is not None:
            t = torch.as_tensor(translation, dtype=torch.float32, device=self.device).reshape(1, -1)
            if t.shape[1] != 3:
                raise InputShapeError(f"translation must have 3 values; got {t.shape[1]}")
            controls["translation_offset"] = t
        for key, gain in (("au_gain", au_gain), ("audio_gain", audio_gain)):
            if gain is not None:
                g = torch.as_tensor(gain, dtype=torch.float32, device=self.device).reshape(1, -1).expand(1, k)
                controls[key] = g.clone()
        return self._run(src.images, src.fit, src.fit, frames=src.images[None], batch_size=1,
                         controls=controls)[0]

    def canonical_keypoints(self, image: Tensor, *, fit: FitResult | Tensor | None = None,
                            crop: bool | None = None) -> Tensor:
        """``K_c`` ``(k, 3)`` of a face (keypoint space, :mod:`morphface.nets.keypoints.geometry`)."""
        src = self.prepare_source(image, fit=fit, crop=crop)
        with self._eval():
            return self.nets["canonical"](to_signed(src.images[None].to(self.device)))[0]

    def keypoint_picture(self, image: Tensor, *, fit: FitResult | Tensor | None = None,
                         crop: bool | None = None, canonical: bool = False) -> Tensor:
        """The face with its keypoints drawn over it: ``(3, S, S)`` in [0, 1].

        Args:
            canonical: draw ``K_c`` instead of the posed source keypoints ``K_s`` (eq. 3.1 with the face's
                own pose, AUs and no audio).
        """
        src = self.prepare_source(image, fit=fit, crop=crop)
        with self._eval():
            x = src.images[None].to(self.device)
            if canonical:
                kp = self.nets["canonical"](to_signed(x))
            else:
                au = expression_to_aus(src.fit.exp_coeffs.to(self.device), self.model.exp_names)
                sp = self.layout.pack(src.fit.to(self.device, torch.float32))
                batch = {"source": x, "driving": x, "source_params": sp, "driving_params": sp, "source_aus": au,
                         "driving_aus": au}
                if self.config.use_audio:
                    z = torch.zeros(1, AUDIO_WINDOW_BEFORE + AUDIO_WINDOW_AFTER + 1,
                                    self.config.audio_parts * self.config.audio_feature_size, device=self.device)
                    batch.update(source_audio_window=z, driving_audio_window=z, has_audio=torch.zeros(1,
                                                                                                       device=self.device))
                kp = self.generate(batch)["kp_source"]
            return draw_keypoints(x, kp)[0]
