"""MMFA (``"mmfa"``): Motion Manipulation via unsupervised keypoint positioning in Face Animation, plus its expression
VAE.

Built on the face-vid2vid core of :mod:`morphface.nets.keypoints` (appearance volume, canonical keypoint detector,
head-pose estimator, motion field, occlusion-aware generator in its ``multiscale`` form) plus MMFA's own networks
(:mod:`morphface.nets.keypoints.mmfa`, where each lost equation is read from the text):

* from every image ``x`` (source, driving, and in training an augmented driving view): centred canonical keypoints
  ``K_c`` (assumption 1), the expression feature ``f = E(x)``, the scale and image-plane translation ``s, t``
  (:class:`ScaleTranslationDecoder`) and the rotation ``R`` (:class:`HeadPoseEstimator`, HopeNet's role);
* eq. 4-5: ``delta = D_exp(f, K_c,s)`` and ``K = s R (K_c,s + delta) + t`` for source and driving, both on the
  **source's** canonical keypoints (the identity), then the motion field with Jacobians ``J = s R``
  (:func:`scaled_jacobians`) and the multi-scale generator (outputs at ``S/4``, ``S/2``, ``S``).

**Losses** (eq. 14; weights in :class:`MMFAConfig`, face-vid2vid's values for the terms it shares, the paper's own
weights being lost): multi-scale perceptual (eq. 6; VGG19 only when its weights are local, the paper's VGG-Face term
is unavailable offline), least-squares GAN + feature matching, equivariance (the augmented driving view; its
keypoints estimated with its own ``K_c``, Appendix A.2), keypoint prior (depth target 0: the centroid is at the
origin, assumption 1), deformation prior, head pose, self-supervised representation (eq. 7; same augmented view),
identity latent consistency (eq. 8) and the 2D landmark loss (eq. 9). Added by the library: a multi-scale L1
pixel term ``lambda_l1`` (a reconstruction signal when VGG weights are missing; 0 for the paper's losses only).

**Offline substitutes** (decided once, here): the rotation's "pre-trained pose estimator" is the core's
:class:`HeadPoseEstimator` supervised by the frame's 3DMM fit angles (``lambda_head_pose``, as kp3d), or replaced by
the fit's rotation when ``rotation_from_fit`` and the batch carries ``<who>_params``; the landmark detector is the
library's :class:`~morphface.nets.landmarks.HeatmapLandmarkNet` (68 points, trained on synthetic renders by
``python -m morphface.pipelines.landmark_net``, ``landmark_weights``), its parts weighted per
:data:`~morphface.nets.keypoints.LANDMARK_PARTS`.

**Expression VAE** (§3.3), trained after MMFA **in the same run**: from trainer step ``vae_start_step`` on
(:meth:`MMFA.set_step`), the generator step trains only ``nets["vae"]`` on features of the frozen expression
encoder (reconstruction + KL + adversarial, :mod:`morphface.nets.keypoints.expression_vae`) and the discriminator
step only ``nets["feature_discriminator"]``; every other network gets no gradient, so Adam leaves it unchanged.
So ``morphface train`` runs both stages from one config: ``steps = vae_start_step + VAE steps``
(``configs/mmfa_synth_small.yaml``); a run trained with ``vae_start_step`` equal to its ``steps`` can be given its
VAE stage later by raising ``steps`` and resuming. ``vae_start_step: null`` never trains the VAE. Under DDP set
``find_unused_parameters`` (the core head-pose estimator's translation head is unused: MMFA's ``t`` comes from its
own decoder; and each stage leaves the other stage's networks unused).

**Batch keys**: the data contract's ``source``, ``driving`` (required: MMFA is driven by images),
``source_params``/``driving_params`` (head-pose targets; needed when ``lambda_head_pose > 0`` or
``rotation_from_fit``). Control keys (``edit``, ``canonical_face``, relative reenactment), each for the driving
side: ``driving_rotation`` ``(B, 3, 3)`` (replaces ``R_d``), ``rotation_offset`` ``R_u`` (``R_d <- R_u R_d``),
``rotation_right`` ``M`` (``R_d <- R_d M``), ``driving_translation`` / ``translation_offset`` ``(B, 3)``,
``driving_scale`` / ``scale_factor`` ``(B,)``, ``driving_expression_feature`` ``(B, d)`` (replaces ``f_d``),
``driving_deformation`` ``(B, k, 3)`` (replaces ``delta_d``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputShapeError, MissingInputError
from ..fitting import FitResult
from ..nets.keypoints import (
    ExpressionDecoder,
    ExpressionDecoderConfig,
    ExpressionEncoder,
    ExpressionEncoderConfig,
    ExpressionVAE,
    ExpressionVAEConfig,
    FeatureDiscriminator,
    ScaleTranslationConfig,
    ScaleTranslationDecoder,
    affine_warp,
    centre_keypoints,
    compose_keypoints,
    deformation_prior_loss,
    equivariance_loss,
    identity_consistency_loss,
    image_pyramid,
    keypoint_heatmaps_2d,
    keypoint_prior_loss,
    kl_divergence,
    landmark_part_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    pose_to_rotation,
    random_affine,
    scaled_jacobians,
    self_supervised_loss,
)
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
    rotation_control,
)
from .base import Reenactor, ReenactorConfig, StepResult, to_signed, to_unit
from .params import ParamLayout

__all__ = ["MMFAConfig", "MMFA", "LANDMARK_MODES"]

#: ``landmark`` modes: ``"auto"`` (on when ``landmark_weights`` is a file), ``"on"``, ``"off"``, ``"random"`` (tests).
LANDMARK_MODES = LOSS_NETWORK_MODES


def _landmark_net_spec() -> LossNetworkSpec:
    from ..nets.landmarks import HeatmapLandmarkNet, load_landmark_net

    return LossNetworkSpec(owner="MMFA", field="landmark", network="landmark network", kind="landmark-network",
                           loss="landmark loss", loss_off="2D landmark loss",
                           command="morphface.pipelines.landmark_net", make_random=HeatmapLandmarkNet,
                           load=load_landmark_net)


@dataclasses.dataclass
class MMFAConfig(KeypointCoreConfig, ReenactorConfig):
    """Configuration of :class:`MMFA`: the fields of :class:`ReenactorConfig`, of the keypoint core
    (:class:`~morphface.pipelines._keypoint_common.KeypointCoreConfig`, as in
    :class:`~morphface.pipelines.KeypointGANConfig`: network sizes, PatchGAN, the shared loss weights
    ``lambda_perceptual .. lambda_deformation``, ``lambda_l1`` (here multi-scale) and the random affine, which
    here also makes the augmented driving view of the self-supervised loss) and these.

    Attributes:
        scale_channels, scale_stages: the scale/translation decoder (32, 3).
        expression_dim: ``d`` of the expression feature (128). expression_channels, expression_blocks: encoder
            (32, 3). expression_hidden, expression_layers: decoder (256, 2).
        multiscale: the generator's outputs at ``S/4, S/2, S`` (the paper's; False: the final image only).
        rotation_from_fit: use the 3DMM fit's rotation instead of the estimator's when the batch has the fit.
        landmark: landmark-loss network mode, see :data:`LANDMARK_MODES`. landmark_weights: a
            :func:`~morphface.nets.landmarks.save_landmark_net` file.
        landmark_eyes, landmark_mouth, landmark_contour: the per-part weights of eq. 9 (eyes + brows, mouth,
            contour + nose).
        lambda_self_supervised (1), lambda_identity (10), lambda_landmark (10): eq. 7-9 (the paper's values were
            lost in the extraction; these give terms of the same order as the others at the start).
        vae_latent_dim (16), vae_hidden (128), vae_layers (2): the expression VAE and its feature discriminator.
        vae_start_step: trainer step from which the VAE stage runs (module docstring); ``None``: never.
        lambda_vae_reconstruction (1), lambda_vae_kl (0.01), lambda_vae_adversarial (0.1): eq. 13 (0 for the
            adversarial term is the paper's collapse ablation).
    """

    scale_channels: int = 32
    scale_stages: int = 3
    expression_dim: int = 128
    expression_channels: int = 32
    expression_blocks: int = 3
    expression_hidden: int = 256
    expression_layers: int = 2
    multiscale: bool = True
    rotation_from_fit: bool = False
    landmark: str = "auto"
    landmark_weights: str | None = None
    landmark_eyes: float = 1.0
    landmark_mouth: float = 1.0
    landmark_contour: float = 1.0
    lambda_self_supervised: float = 1.0
    lambda_identity: float = 10.0
    lambda_landmark: float = 10.0
    vae_latent_dim: int = 16
    vae_hidden: int = 128
    vae_layers: int = 2
    vae_start_step: int | None = None
    lambda_vae_reconstruction: float = 1.0
    lambda_vae_kl: float = 0.01
    lambda_vae_adversarial: float = 0.1

    def validate(self) -> None:
        super().validate()
        check_non_negative(self, ("lambda_", "landmark_"), skip=("landmark_weights",))
        if self.landmark not in LANDMARK_MODES:
            raise ValueError(f"landmark must be one of {LANDMARK_MODES}; got {self.landmark!r}")
        for name in ("num_keypoints", "expression_dim", "vae_latent_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.vae_start_step is not None and self.vae_start_step < 0:
            raise ValueError(f"vae_start_step must be None or >= 0; got {self.vae_start_step}")
        check_image_multiples(self, {**self.core_multiples(),
                                     "pose_stages": 2 ** (self.pose_stages + 1),
                                     "scale_stages": 2 ** (self.scale_stages + 1),
                                     "expression_blocks": 2 ** (self.expression_blocks + 1)})


class MMFA(KeypointReenactorMixin, Reenactor):
    """The trainable MMFA pipeline (module docstring). ``nets``: ``appearance``, ``canonical``, ``head_pose``,
    ``scale_translation``, ``expression_encoder``, ``expression_decoder``, ``motion``, ``generator``,
    ``discriminator`` (MMFA stage) and ``vae``, ``feature_discriminator`` (VAE stage)."""

    name = "mmfa"
    config_class = MMFAConfig
    config: MMFAConfig
    gan_generator_loss = staticmethod(lsgan_generator_loss)
    gan_discriminator_loss = staticmethod(lsgan_discriminator_loss)
    loss_networks = ("landmark_net",)

    def __init__(self, config: MMFAConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        w, k = cfg.width, cfg.num_keypoints
        self.layout = ParamLayout.of(self.model)
        vae_cfg = ExpressionVAEConfig(feature_dim=cfg.expression_dim, latent_dim=cfg.vae_latent_dim,
                                      hidden=cfg.vae_hidden, num_layers=cfg.vae_layers)
        nets = core_encoders(cfg)
        nets.update({
            "scale_translation": ScaleTranslationDecoder(ScaleTranslationConfig(
                base_channels=cfg.scale_channels, num_stages=cfg.scale_stages, width=w)),
            "expression_encoder": ExpressionEncoder(ExpressionEncoderConfig(
                feature_dim=cfg.expression_dim, base_channels=cfg.expression_channels,
                num_blocks=cfg.expression_blocks, width=w)),
            "expression_decoder": ExpressionDecoder(ExpressionDecoderConfig(
                feature_dim=cfg.expression_dim, num_keypoints=k, hidden=cfg.expression_hidden,
                num_layers=cfg.expression_layers)),
        })
        nets.update(core_decoders(cfg, nets["appearance"].config.channels, multiscale=cfg.multiscale))
        nets.update({"vae": ExpressionVAE(vae_cfg), "feature_discriminator": FeatureDiscriminator(vae_cfg)})
        self.nets = nn.ModuleDict(nets)
        self.landmark_net = build_loss_network(_landmark_net_spec(), cfg.landmark, cfg.landmark_weights,
                                               cfg.lambda_landmark)
        self._step = 0

    # ------------------------------------------------------------------ stages
    def set_step(self, step: int) -> None:
        """Trainer hook: the 0-based step about to run picks the stage (module docstring)."""
        self._step = int(step)

    @property
    def stage(self) -> str:
        """``"mmfa"`` or ``"vae"`` (from ``vae_start_step`` and the last :meth:`set_step`)."""
        start = self.config.vae_start_step
        return "vae" if start is not None and self._step >= start else "mmfa"

    # ------------------------------------------------------------------ inputs
    def _params(self, batch: Mapping[str, Tensor], key: str) -> Tensor:
        if key not in batch:
            raise MissingInputError(f"MMFA: the batch has no {key!r} (B, {self.layout.dim}) 3DMM fit (needed for "
                                    f"the head-pose loss or rotation_from_fit); it has {sorted(batch)}")
        return self.layout.check(batch[key], f"batch[{key!r}]")

    def _control(self, batch: Mapping[str, Tensor], key: str, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
        if key not in batch:
            return None
        x = batch[key]
        if not isinstance(x, Tensor) or tuple(x.shape) != shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputShapeError(f"batch[{key!r}] must have shape {shape}; got {got}")
        return x.to(like)

    def _encode(self, images: Tensor) -> dict[str, Tensor]:
        """Per-image estimates of ``(N, 3, S, S)`` images in [-1, 1]: ``kc`` (centred), ``f``, ``scale``,
        ``translation``, ``angles``, ``rotation`` (one call of each network on the whole stack)."""
        pose = self.nets["head_pose"](images)
        st = self.nets["scale_translation"](images)
        return {"kc": centre_keypoints(self.nets["canonical"](images)),
                "f": self.nets["expression_encoder"](images),
                "scale": st.scale, "translation": st.translation, "angles": pose.angles, "rotation": pose.rotation}

    # ------------------------------------------------------------------ forward
    def generate(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The forward pass on a batch (module docstring for the keys).

        Returns:
            ``fake``, ``warped`` ``(B, 3, S, S)`` in [-1, 1]; ``pyramid`` list of ``(B, 3, s, s)`` (coarse to fine);
            ``cond`` ``(B, k, S, S)``; ``kp_canonical`` (source), ``kp_canonical_driving``, ``kp_source``,
            ``kp_driving`` ``(B, k, 3)``; ``delta_source``, ``delta_driving`` ``(B, k, 3)``; ``feature_source``,
            ``feature_driving`` ``(B, d)``; ``angles_source``, ``angles_driving`` ``(B, 3)``; ``scale_*`` ``(B,)``,
            ``translation_*`` ``(B, 3)``, ``rotation_*`` ``(B, 3, 3)`` for ``source`` and ``driving``.
        """
        return self._forward(batch, None)

    def _forward(self, batch: Mapping[str, Tensor], theta: Tensor | None) -> dict[str, Tensor]:
        cfg = self.config
        S = cfg.image_size
        if "driving" not in batch:
            raise MissingInputError(f"MMFA is driven by images: the batch needs 'driving' (B, 3, {S}, {S}) (the "
                                    f"source itself for edits); it has {sorted(batch)}")
        B = self._check_images(batch, "source", "driving")
        src = to_signed(batch["source"])
        drv = to_signed(batch["driving"]).to(src)
        stack = [src, drv]
        if theta is not None:
            stack.append(affine_warp(drv, theta))
        est = self._encode(torch.cat(stack))
        parts = {name: v.split(B) for name, v in est.items()}
        ps = {name: v[0] for name, v in parts.items()}
        pd = {name: v[1] for name, v in parts.items()}
        kc = ps["kc"]
        R_s, R_d = ps["rotation"], pd["rotation"]
        if cfg.rotation_from_fit and "source_params" in batch and "driving_params" in batch:
            R_s = pose_to_rotation(self._angles(batch, "source")).to(src)
            R_d = pose_to_rotation(self._angles(batch, "driving")).to(src)
        s_s, s_d, t_s, t_d, f_d = ps["scale"], pd["scale"], ps["translation"], pd["translation"], pd["f"]
        k = cfg.num_keypoints
        # controls of the driving side
        if (v := self._control(batch, "driving_rotation", (B, 3, 3), src)) is not None:
            R_d = v
        if (v := self._control(batch, "rotation_offset", (B, 3, 3), src)) is not None:
            R_d = v @ R_d
        if (v := self._control(batch, "rotation_right", (B, 3, 3), src)) is not None:
            R_d = R_d @ v
        if (v := self._control(batch, "driving_translation", (B, 3), src)) is not None:
            t_d = v
        if (v := self._control(batch, "translation_offset", (B, 3), src)) is not None:
            t_d = t_d + v
        if (v := self._control(batch, "driving_scale", (B,), src)) is not None:
            s_d = v
        if (v := self._control(batch, "scale_factor", (B,), src)) is not None:
            s_d = s_d * v
        if (v := self._control(batch, "driving_expression_feature", (B, cfg.expression_dim), src)) is not None:
            f_d = v
        # one decoder call: (f_s, K_c,s), (f_d, K_c,s) and, in training, (f_d, K_c,d), (f', K_c')
        feats, kcs = [ps["f"], f_d], [kc, kc]
        if theta is not None:
            feats += [pd["f"], parts["f"][2]]
            kcs += [pd["kc"], parts["kc"][2]]
        deltas = self.nets["expression_decoder"](torch.cat(feats), torch.cat(kcs)).split(B)
        d_s, d_d = deltas[0], deltas[1]
        if (v := self._control(batch, "driving_deformation", (B, k, 3), src)) is not None:
            d_d = v
        kp_s = compose_keypoints(kc, s_s, R_s, t_s, d_s)
        kp_d = compose_keypoints(kc, s_d, R_d, t_d, d_d)
        volume = self.nets["appearance"](src)
        J_s, J_d = scaled_jacobians(s_s, R_s, s_d, R_d)
        gen, warped, field = self._animate(src, volume, kp_s, kp_d, J_s, J_d)
        out: dict[str, Any] = {
            "fake": gen.image, "warped": warped, "pyramid": list(gen.pyramid or [gen.image]),
            "cond": keypoint_heatmaps_2d(kp_d.detach(), (S, S)), "kp_canonical": kc,
            "kp_canonical_driving": pd["kc"], "kp_source": kp_s, "kp_driving": kp_d, "delta_source": d_s,
            "delta_driving": d_d, "feature_source": ps["f"], "feature_driving": pd["f"],
            "angles_source": ps["angles"], "angles_driving": pd["angles"], "scale_source": s_s, "scale_driving": s_d,
            "translation_source": t_s, "translation_driving": t_d, "rotation_source": R_s, "rotation_driving": R_d,
            "occlusion": field.occlusion}
        if theta is not None:
            pa = {name: v[2] for name, v in parts.items()}
            # the driving frame's own keypoints (its own K_c) and the augmented view's, for the equivariance loss
            out["kp_driving_own"] = compose_keypoints(pd["kc"], pd["scale"], pd["rotation"], pd["translation"],
                                                      deltas[2])
            out["kp_augmented"] = compose_keypoints(pa["kc"], pa["scale"], pa["rotation"], pa["translation"],
                                                    deltas[3])
            out["feature_augmented"] = pa["f"]
        return out

    # ------------------------------------------------------------------ training
    def generator_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        if self.stage == "vae":
            return self._vae_step(batch)
        cfg = self.config
        if "driving" not in batch:
            raise MissingInputError(f"MMFA training needs batch['driving']; the batch has {sorted(batch)}")
        B = self._check_images(batch, "source", "driving")
        like = batch["source"]
        theta = None
        if cfg.lambda_equivariance > 0 or cfg.lambda_self_supervised > 0:
            theta = random_affine(B, max_rotation_deg=cfg.equivariance_rotation_deg, max_scale=cfg.equivariance_scale,
                                  max_translation=cfg.equivariance_translation, device=like.device,
                                  dtype=like.dtype)
        out = self._forward(batch, theta)
        fake = out["fake"]
        target = to_signed(batch["driving"]).to(fake)
        targets = image_pyramid(target, [p.shape[-1] for p in out["pyramid"]])
        terms = LossTerms(fake)
        add = terms.add
        self._add_reconstruction_losses(terms, out["pyramid"], targets)
        self._add_gan_losses(terms, fake, target, out["cond"])
        if cfg.lambda_equivariance > 0:
            add("equivariance", cfg.lambda_equivariance,
                equivariance_loss(out["kp_driving_own"], out["kp_augmented"], theta))
        if cfg.lambda_keypoint > 0:
            add("keypoint_prior", cfg.lambda_keypoint, keypoint_prior_loss(out["kp_driving"], target_depth=0.0))
        self._add_head_pose_loss(terms, out, batch)
        if cfg.lambda_deformation > 0:
            add("deformation_prior", cfg.lambda_deformation, deformation_prior_loss(out["delta_driving"]))
        if cfg.lambda_self_supervised > 0:
            add("self_supervised", cfg.lambda_self_supervised,
                self_supervised_loss(out["feature_driving"], out["feature_augmented"]))
        if cfg.lambda_identity > 0:
            add("identity", cfg.lambda_identity,
                identity_consistency_loss(out["kp_canonical"], out["kp_canonical_driving"]))
        if self.landmark_net is not None:
            S = float(cfg.image_size)
            lm_fake = self.landmark_net(fake.float()) / S
            with torch.no_grad():
                lm_real = self.landmark_net(target.float()) / S
            add("landmark", cfg.lambda_landmark, landmark_part_loss(
                lm_fake, lm_real, (cfg.landmark_eyes, cfg.landmark_mouth, cfg.landmark_contour)))
        return terms.result(self._step_outputs(fake, out))

    def _vae_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        cfg = self.config
        self._check_images(batch, "source", "driving")
        with torch.no_grad():
            f = self.nets["expression_encoder"](to_signed(torch.cat([batch["source"], batch["driving"]])))
        n = f.shape[0]
        prior = torch.randn(n, cfg.vae_latent_dim, device=f.device, dtype=f.dtype)
        res = self.nets["vae"](f, prior=prior)
        terms = LossTerms(f)
        add = terms.add
        add("vae_reconstruction", cfg.lambda_vae_reconstruction, (res.feature - f).pow(2).mean())
        add("vae_kl", cfg.lambda_vae_kl, kl_divergence(res.mu, res.logvar))
        fakes = torch.cat([res.feature, res.prior_feature])
        if cfg.lambda_vae_adversarial > 0:
            add("vae_adversarial", cfg.lambda_vae_adversarial,
                lsgan_generator_loss(self.nets["feature_discriminator"](fakes)))
        return terms.result({"real_features": f, "fake_features": fakes})

    def discriminator_step(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> StepResult | None:
        if self.stage == "vae":
            if self.config.lambda_vae_adversarial == 0:
                return None
            real, fake = outputs["real_features"].detach(), outputs["fake_features"].detach()
            logits = self.nets["feature_discriminator"](torch.cat([real, fake]))
            loss = lsgan_discriminator_loss(logits[:real.shape[0]], logits[real.shape[0]:])
            return StepResult(loss, {"feature": loss.detach()}, {})
        if self.config.lambda_gan == 0 and self.config.lambda_fm == 0:
            return None
        return self._image_discriminator_step(batch, outputs)

    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """MMFA stage: source with ``K_s`` | warped | output | target with ``K_d``. VAE stage: source | the driving
        frame regenerated with its VAE-reconstructed expression | with a prior sample | target. ``(B, 3, S, S)``
        in [0, 1]."""
        if self.stage != "vae":
            return self._keypoint_visuals(batch, outputs)
        B = batch["source"].shape[0]
        fakes = outputs["fake_features"]
        n = outputs["real_features"].shape[0] // 2
        with self._eval():
            base = {"source": batch["source"], "driving": batch["driving"]}
            rec = self.generate({**base, "driving_expression_feature": fakes[n:n + B]})["fake"]
            smp = self.generate({**base, "driving_expression_feature": fakes[2 * n:2 * n + B]})["fake"]
        return {"source": batch["source"], "vae_reconstruction": to_unit(rec), "vae_sample": to_unit(smp),
                "target": batch["driving"]}

    # ------------------------------------------------------------------ inference
    def _prep(self, image: Tensor, crop: bool | None) -> Tensor:
        return self.prepare_source(image, crop=crop).images

    def _pack(self, fit: FitResult | Tensor | None, n: int) -> Tensor | None:
        if fit is None:
            return None
        p = self.layout.pack(fit.to(self.device, torch.float32)) if isinstance(fit, FitResult) else \
            torch.as_tensor(fit, dtype=torch.float32, device=self.device).reshape(-1, self.layout.dim)
        if p.shape[0] not in (1, n):
            raise InputShapeError(f"a fit must have 1 or {n} entries; got {p.shape[0]}")
        return p.expand(n, -1)

    def _run(self, source: Tensor, frames: Tensor, *, batch_size: int = 8, output: str = "fake",
             controls: Mapping[str, Tensor] | None = None, source_params: Tensor | None = None,
             driving_params: Tensor | None = None) -> Tensor:
        """``source (3, S, S)`` driven by ``frames (T, 3, S, S)`` (in [0, 1]); controls are ``(1, ...)`` or
        ``(T, ...)`` tensors; returns ``(T, 3, S, S)`` in [0, 1]."""
        self._check_output(output)
        with self._eval():
            src = source.to(self.device, torch.float32)[None]
            T = frames.shape[0]
            result = []
            for a in range(0, T, batch_size):
                idx = torch.arange(a, min(a + batch_size, T), device=self.device)
                n = idx.numel()
                batch: dict[str, Tensor] = {"source": src.expand(n, -1, -1, -1),
                                            "driving": frames[idx].to(self.device, torch.float32)}
                if source_params is not None and driving_params is not None:
                    batch["source_params"] = source_params[:1].expand(n, -1)
                    batch["driving_params"] = driving_params[idx]
                for key, value in (controls or {}).items():
                    v = value.to(self.device)
                    batch[key] = v[idx] if v.shape[0] == T and T > 1 else v.expand(n, *v.shape[1:])
                result.append(to_unit(self.generate(batch)[output]).float())
            return torch.cat(result)

    def _estimates(self, images: Tensor) -> dict[str, Tensor]:
        """:meth:`_encode` of ``(N, 3, S, S)`` images in [0, 1], without gradients in eval mode."""
        with self._eval():
            return self._encode(to_signed(images.to(self.device, torch.float32)))

    def reenact(self, source_image: Tensor, driving_frames: Tensor | None = None,
                driving_params: FitResult | Tensor | None = None, *,
                source_fit: FitResult | Tensor | None = None, audio: Tensor | None = None,
                relative: bool = False, crop: bool | None = None, batch_size: int = 8,
                output: str = "fake") -> Tensor:
        """Drive a source face with driving frames (expression, rotation, scale and translation of each frame).

        Args:
            source_image: ``(3, H, W)`` RGB in [0, 1] (or a path).
            driving_frames: ``(T, 3, H', W')`` RGB in [0, 1] (or a video path); required (MMFA is image-driven).
            driving_params, source_fit: 3DMM fits (``FitResult`` or ``(T, D_p)`` / ``(D_p,)`` in ``S x S`` crop
                pixels); used only with ``rotation_from_fit`` (then required), else ignored.
            audio: accepted with the shared interface; not used.
            relative: face-vid2vid's relative motion: ``R = R_d R_d0^T R_s``, ``t = t_s + t_d - t_d0``,
                ``s = s_s s_d / s_d0`` (``d0`` the first driving frame); the expression is the driving frame's.
            crop, batch_size, output: as :meth:`Reenactor.reenact`.

        Returns:
            ``(T, 3, S, S)`` in [0, 1].

        Raises:
            MissingInputError: no driving frames (or no fits with ``rotation_from_fit``).
        """
        if driving_frames is None:
            raise MissingInputError("MMFA is driven by images: pass driving_frames (T, 3, H, W); a 3DMM fit alone "
                                    "cannot drive it (use edit() for explicit rotation, translation and scale)")
        src = self._prep(source_image, crop)
        frames = self.prepare_driving(driving_frames, crop=crop).images
        T = frames.shape[0]
        sp = dp = None
        if self.config.rotation_from_fit:
            if source_fit is None or driving_params is None:
                raise MissingInputError("MMFA(rotation_from_fit=True) needs source_fit and driving_params")
            sp, dp = self._pack(source_fit, 1), self._pack(driving_params, T)
        controls: dict[str, Tensor] = {}
        if relative:
            e = self._estimates(torch.stack([src, frames[0]]))
            R_s, R_0 = e["rotation"][:1], e["rotation"][1:]
            if sp is not None:
                R_s = pose_to_rotation(self.layout.split(sp[:1])["angles"])
                R_0 = pose_to_rotation(self.layout.split(dp[:1])["angles"])
            controls = {"rotation_right": R_0.transpose(-1, -2) @ R_s,
                        "translation_offset": e["translation"][:1] - e["translation"][1:],
                        "scale_factor": e["scale"][:1] / e["scale"][1:]}
        return self._run(src, frames, batch_size=batch_size, output=output, controls=controls, source_params=sp,
                         driving_params=dp)

    def reconstruct(self, frames: Tensor, params: FitResult | Tensor | None = None, *,
                    audio: Tensor | None = None, crop: bool | None = None, batch_size: int = 8) -> Tensor:
        """Self-reenactment: the clip's first frame driven by the whole clip, ``(T, 3, S, S)`` in [0, 1]."""
        clip = self.prepare_driving(frames, crop=crop).images
        return self.reenact(clip[0], clip, driving_params=params,
                            source_fit=None if params is None else self._pack(params, clip.shape[0])[:1],
                            crop=False, batch_size=batch_size)

    def expression_feature(self, image: Tensor, *, crop: bool | None = None) -> Tensor:
        """The expression feature ``f`` ``(d,)`` of a face image ``(3, H, W)`` in [0, 1]."""
        return self._estimates(self._prep(image, crop)[None])["f"][0]

    def expression_latent(self, image: Tensor, *, crop: bool | None = None) -> Tensor:
        """The VAE's mean latent ``mu`` ``(d_z,)`` of a face image's expression feature."""
        f = self.expression_feature(image, crop=crop)
        with self._eval():
            return self.nets["vae"].encode(f[None])[0][0]

    def decode_expression(self, z: Tensor) -> Tensor:
        """VAE latents ``(d_z,)`` or ``(n, d_z)`` -> expression features ``(d,)`` or ``(n, d)``."""
        zz = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        one = zz.dim() == 1
        with self._eval():
            f = self.nets["vae"].decode(zz[None] if one else zz)
        return f[0] if one else f

    def edit(self, image: Tensor, rotation: Tensor | None = None, translation: Tensor | None = None,
             scale: float | None = None, expression: Tensor | None = None, *, relative: bool = True,
             expression_feature: Tensor | None = None, crop: bool | None = None) -> Tensor:
        """Explicit motion control (§4.3): the face driven by itself with some attributes changed.

        Args:
            image: ``(3, H, W)`` RGB in [0, 1] (or a path).
            rotation: ``(3,)`` pitch, yaw, roll in **degrees** (library signs) or a ``(3, 3)`` model-frame rotation
                matrix; ``relative``: ``R_d <- R_u R_d``, else the rotation is set (all zeros frontalises).
            translation: ``(2,)`` or ``(3,)`` image-plane translation in keypoint units (x right, y down; 1 = half
                the image; the depth component is ignored: orthographic); added, or set when not ``relative``.
            scale: factor on ``s`` (``relative``) or the new ``s``.
            expression: another face image ``(3, H, W)`` (its expression feature is used) or a VAE latent ``z``
                ``(d_z,)`` (decoded by the expression VAE).
            expression_feature: an expression feature ``f`` ``(d,)`` to use directly.
            crop: as :meth:`Reenactor.reenact`.

        Returns:
            ``(3, S, S)`` in [0, 1].

        Raises:
            InputShapeError: a control of the wrong shape.
        """
        src = self._prep(image, crop)
        controls: dict[str, Tensor] = {}
        if rotation is not None:
            controls["rotation_offset" if relative else "driving_rotation"] = rotation_control(rotation, self.device)
        if translation is not None:
            t = torch.as_tensor(translation, dtype=torch.float32, device=self.device).reshape(-1)
            if t.numel() not in (2, 3):
                raise InputShapeError(f"translation must have 2 or 3 values; got {t.numel()}")
            t = torch.cat([t[:2], t.new_zeros(1)])[None]
            controls["translation_offset" if relative else "driving_translation"] = t
        if scale is not None:
            s = torch.as_tensor(scale, dtype=torch.float32, device=self.device).reshape(-1)
            if s.numel() != 1 or not bool(s > 0):
                raise InputShapeError(f"scale must be one positive number; got {s.tolist()}")
            controls["scale_factor" if relative else "driving_scale"] = s
        feature = self._expression_control(expression, expression_feature, crop)
        if feature is not None:
            controls["driving_expression_feature"] = feature[None]
        return self._run(src, src[None], controls=controls)[0]

    def _expression_control(self, expression, expression_feature, crop) -> Tensor | None:
        d, dz = self.config.expression_dim, self.config.vae_latent_dim
        if expression_feature is not None:
            f = torch.as_tensor(expression_feature, dtype=torch.float32, device=self.device)
            if f.shape != (d,):
                raise InputShapeError(f"expression_feature must have shape ({d},); got {tuple(f.shape)}")
            return f
        if expression is None:
            return None
        if isinstance(expression, str) or hasattr(expression, "__fspath__") or (
                isinstance(expression, Tensor) and expression.dim() == 3):
            return self.expression_feature(expression, crop=crop)
        z = torch.as_tensor(expression, dtype=torch.float32, device=self.device)
        if z.shape != (dz,):
            raise InputShapeError(f"expression must be a face image (3, H, W) or a VAE latent ({dz},); got "
                                  f"{tuple(z.shape)}")
        return self.decode_expression(z)

    def canonical_keypoints(self, image: Tensor, *, crop: bool | None = None) -> Tensor:
        """Centred canonical keypoints ``K_c`` ``(k, 3)`` of a face (keypoint space)."""
        return self._estimates(self._prep(image, crop)[None])["kc"][0]

    def canonical_face(self, image: Tensor, *, crop: bool | None = None) -> Tensor:
        """The face rendered at its canonical keypoints (the paper's Fig. 7): ``s = 1``, ``R = I``, ``t = 0``,
        ``delta = 0``, i.e. neutral pose, expression and size. ``(3, S, S)`` in [0, 1]."""
        src = self._prep(image, crop)
        k = self.config.num_keypoints
        controls = {"driving_rotation": torch.eye(3, device=self.device)[None],
                    "driving_translation": torch.zeros(1, 3, device=self.device),
                    "driving_scale": torch.ones(1, device=self.device),
                    "driving_deformation": torch.zeros(1, k, 3, device=self.device)}
        return self._run(src, src[None], controls=controls)[0]

    def sample_expressions(self, n: int, source: Tensor | None = None, *, seed: int | None = None,
                           crop: bool | None = None) -> Tensor:
        """Expressions sampled from the VAE's prior ``z ~ N(0, I)``.

        Args:
            n: number of samples.
            source: a face image ``(3, H, W)``: return it with each sampled expression (its own pose).
            seed: of the samples (``None``: the global generator).

        Returns:
            ``(n, d)`` expression features, or ``(n, 3, S, S)`` frames in [0, 1] with ``source``.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.config.vae_latent_dim, generator=g)
        f = self.decode_expression(z)
        if source is None:
            return f
        src = self._prep(source, crop)
        return self._run(src, src[None].expand(n, -1, -1, -1), controls={"driving_expression_feature": f})

    def interpolate_expression(self, source: Tensor, a: Tensor, b: Tensor, steps: int = 5, *,
                               crop: bool | None = None) -> Tensor:
        """The source (its identity and pose) with expressions interpolated in the VAE's latent space (§4.4).

        ``z_i = (1 - a_i) mu(f(a)) + a_i mu(f(b))``, ``a_i = linspace(0, 1, steps)``, each decoded to a feature.

        Args:
            source: face image ``(3, H, W)`` in [0, 1].
            a, b: face images whose expressions are the two ends.
            steps: frames (>= 2; the first and last are ``a``'s and ``b``'s expressions through the VAE).

        Returns:
            ``(steps, 3, S, S)`` in [0, 1].
        """
        if steps < 2:
            raise ValueError(f"steps must be >= 2; got {steps}")
        za, zb = self.expression_latent(a, crop=crop), self.expression_latent(b, crop=crop)
        alpha = torch.linspace(0, 1, steps, device=self.device)[:, None]
        f = self.decode_expression((1 - alpha) * za + alpha * zb)
        src = self._prep(source, crop)
        return self._run(src, src[None].expand(steps, -1, -1, -1), controls={"driving_expression_feature": f})

    def interpolation_strip(self, source: Tensor, a: Tensor, b: Tensor, steps: int = 5, *,
                            crop: bool | None = None) -> Tensor:
        """``source | steps interpolated frames (a -> b) | b`` side by side: ``(3, S, (steps + 2) S)`` in [0, 1]."""
        frames = self.interpolate_expression(source, a, b, steps, crop=crop)
        ends = [self._prep(source, crop), *frames.to(self.device), self._prep(b, crop)]
        return torch.cat(list(ends), dim=-1)
