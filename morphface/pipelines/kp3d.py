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
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputShapeError, MissingInputError
from ..fitting import FitResult
from ..morphable.facs import AU_MAX, FACS_AUS, au_index, expression_to_aus
from ..nets import hinge_discriminator_loss, hinge_generator_loss
from ..nets.keypoints import (
    AUDeformationConfig,
    AUDeformationEstimator,
    AudioDeformationConfig,
    AudioDeformationEstimator,
    affine_warp,
    deformation_prior_loss,
    equivariance_loss,
    keypoint_heatmaps_2d,
    keypoint_prior_loss,
    part_segmentation_loss,
    pose_to_rotation,
    random_affine,
    transform_keypoints,
)
from ..render.face_parts import face_part_masks
from ._keypoint_common import (
    LOSS_NETWORK_MODES,
    KeypointCoreConfig,
    KeypointReenactorMixin,
    LossNetworkSpec,
    LossTerms,
    build_loss_network,
    check_image_multiples,
    check_non_negative,
    core_decoders,
    core_encoders,
    draw_keypoints,
    rotation_control,
)
from .base import MorphableReenactor, MorphableReenactorConfig, StepResult, to_signed, to_unit
from .params import clamped_window_indices, transfer_motion

__all__ = ["KeypointGANConfig", "KeypointGAN", "draw_keypoints", "AUDIO_WINDOW_BEFORE", "AUDIO_WINDOW_AFTER",
           "PARSER_MODES"]

#: Audio window of a frame ``t``: frames ``t - 4 .. t + 3`` (8 neighbouring frames), clamped at the clip ends.
AUDIO_WINDOW_BEFORE, AUDIO_WINDOW_AFTER = 4, 3
#: ``parser`` modes: ``"auto"`` (on when ``parser_weights`` is a file), ``"on"``, ``"off"``, ``"random"`` (tests).
PARSER_MODES = LOSS_NETWORK_MODES


def _face_parser_spec() -> LossNetworkSpec:
    from ..nets.parsing import FaceParser, load_face_parser

    return LossNetworkSpec(owner="KeypointGAN", field="parser", network="face parser", kind="face-parser",
                           loss="segmentation loss", loss_off="segmentation loss",
                           command="morphface.pipelines.face_parser", make_random=FaceParser, load=load_face_parser)


@dataclasses.dataclass
class KeypointGANConfig(KeypointCoreConfig, MorphableReenactorConfig):
    """Configuration of :class:`KeypointGAN`: the fields of :class:`MorphableReenactorConfig`, of the keypoint core
    (:class:`~morphface.pipelines._keypoint_common.KeypointCoreConfig`: network sizes, PatchGAN, the shared loss
    weights ``lambda_perceptual .. lambda_deformation``, ``lambda_l1``, the equivariance affine) and these.

    Attributes:
        au_hidden, audio_hidden: hidden width of the per-keypoint MLPs (64).
        use_audio: the audio-driven deformation (batches must then carry audio windows).
        audio_parts, audio_feature_size: of the frame-aligned audio features (4 x 27 = 108).
        parser: face parser mode, see :data:`PARSER_MODES` (``"off"``: no segmentation loss).
        parser_weights: a :func:`~morphface.nets.parsing.save_face_parser` file.
        lambda_segmentation: ``lambda_S`` (10), lambda_lower: ``lambda`` of eq. 3.4 (1).
    """

    au_hidden: int = 64
    audio_hidden: int = 64
    use_audio: bool = True
    audio_parts: int = 4
    audio_feature_size: int = 27
    parser: str = "auto"
    parser_weights: str | None = None
    lambda_segmentation: float = 10.0
    lambda_lower: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_non_negative(self)
        if self.parser not in PARSER_MODES:
            raise ValueError(f"parser must be one of {PARSER_MODES}; got {self.parser!r}")
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1; got {self.num_keypoints}")
        check_image_multiples(self, self.core_multiples())


class KeypointGAN(KeypointReenactorMixin, MorphableReenactor):
    """The trainable kp3d pipeline (module docstring). ``nets``: ``appearance``, ``canonical``, ``head_pose``,
    ``au_deformation``, ``audio_deformation`` (with ``use_audio``), ``motion``, ``generator``,
    ``discriminator``."""

    name = "kp3d"
    config_class = KeypointGANConfig
    config: KeypointGANConfig
    gan_generator_loss = staticmethod(hinge_generator_loss)
    gan_discriminator_loss = staticmethod(hinge_discriminator_loss)
    loss_networks = ("parser",)

    def __init__(self, config: KeypointGANConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        k = cfg.num_keypoints
        nets = core_encoders(cfg)
        nets["au_deformation"] = AUDeformationEstimator(AUDeformationConfig(num_keypoints=k, hidden=cfg.au_hidden))
        if cfg.use_audio:
            nets["audio_deformation"] = AudioDeformationEstimator(AudioDeformationConfig(
                num_keypoints=k, num_frames=AUDIO_WINDOW_BEFORE + AUDIO_WINDOW_AFTER + 1, parts=cfg.audio_parts,
                feature_size=cfg.audio_feature_size, hidden=cfg.audio_hidden))
        nets.update(core_decoders(cfg, nets["appearance"].config.channels))
        self.nets = nn.ModuleDict(nets)
        self.parser = build_loss_network(_face_parser_spec(), cfg.parser, cfg.parser_weights,
                                         cfg.lambda_segmentation)

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
        gen, warped, field = self._animate(src, volume, kp_s, kp_d, R_s, R_d)
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
        terms = LossTerms(fake)
        add = terms.add
        self._add_reconstruction_losses(terms, [fake], [target])
        self._add_gan_losses(terms, fake, target, out["cond"])
        if cfg.lambda_equivariance > 0:
            theta = random_affine(B, max_rotation_deg=cfg.equivariance_rotation_deg, max_scale=cfg.equivariance_scale,
                                  max_translation=cfg.equivariance_translation, device=fake.device, dtype=fake.dtype)
            pose_t = self.nets["head_pose"](affine_warp(target, theta))
            kp_t = transform_keypoints(out["kp_canonical"], pose_t.rotation, pose_t.translation,
                                       out["delta_au_driving"], out.get("delta_audio_driving"))
            add("equivariance", cfg.lambda_equivariance, equivariance_loss(out["kp_driving"], kp_t, theta))
        if cfg.lambda_keypoint > 0:
            add("keypoint_prior", cfg.lambda_keypoint, keypoint_prior_loss(out["kp_driving"]))
        self._add_head_pose_loss(terms, out, batch)
        if cfg.lambda_deformation > 0:
            add("deformation_prior", cfg.lambda_deformation,
                deformation_prior_loss(out["delta_au_driving"], out.get("delta_audio_driving")))
        if self.parser is not None:
            parts = self.parser(fake.float())
            add("segmentation", cfg.lambda_segmentation,
                part_segmentation_loss(parts, self._part_targets(batch).to(parts), cfg.lambda_lower))
        return terms.result(self._step_outputs(fake, out))

    def discriminator_step(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> StepResult:
        return self._image_discriminator_step(batch, outputs)

    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """source with ``K_s`` | warped | output | target with ``K_d``, each ``(B, 3, S, S)`` in [0, 1]."""
        return self._keypoint_visuals(batch, outputs)

    # ------------------------------------------------------------------ inference
    def _windows(self, audio: Tensor | None, idx: Tensor, T: int) -> Tensor | None:
        if audio is None:
            return None
        return audio[clamped_window_indices(idx, T, AUDIO_WINDOW_BEFORE, AUDIO_WINDOW_AFTER)]

    def _run(self, source: Tensor, source_fit: FitResult, driving_fit: FitResult, frames: Tensor | None = None,
             audio: Tensor | None = None, batch_size: int = 8, output: str = "fake",
             controls: Mapping[str, Tensor] | None = None) -> Tensor:
        """Generate ``T`` frames of a source driven by fits (and driving crops when given); ``(T, 3, S, S)``."""
        self._check_output(output)
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
            R_u = rotation_control(rotation, self.device) @ R_u
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
