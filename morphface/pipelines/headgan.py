"""HeadGAN: one-shot reenactment from 3D face renders (Doukas, Zafeiriou, Sharmanska, ICCV 2021).

The generator (:class:`morphface.nets.HeadGANGenerator`: dense flow network F and rendering network R)
takes the source frame with its NCC render and the NCC renders of the driving frame and its ``k = 2``
previous frames, plus the driving frame's audio features, and produces the driving frame with the
source's appearance. In self-reenactment training the target is the driving frame itself.

Losses of the generator (weights in :class:`HeadGANPipelineConfig`; HeadGAN's values):

* ``lambda_l1 * L1(G, y) + lambda_vgg * VGG(G, y)`` on the output ``G`` and the target ``y``;
* ``lambda_warp_l1 * L1(w, y) + lambda_warp_vgg * VGG(w, y)`` on F's warped source ``w`` (HeadGAN trains
  F with the same reconstruction losses on its warped image; same weights);
* ``lambda_adv * hinge(D_I(G | NCC_t)) + lambda_fm * FM(D_I)`` for the image discriminator, a
  two-scale PatchGAN conditioned on the driving NCC render;
* ``lambda_mouth * hinge(D_M(mouth(G) | audio)) + lambda_fm * FM(D_M)`` for the mouth discriminator on
  ``mouth_size``-pixel crops around the driving lips (HeadGAN: 64 x 64 at 256 x 256), conditioned on
  the audio features when the pipeline uses audio.

Hinge losses as in SPADE/HeadGAN; VGG19 perceptual loss only when its ImageNet weights are available
(:mod:`morphface.pipelines.perceptual`). Audio: the data contract's frame-aligned MFCC features
(``2k * 27 = 108`` floats per frame) replace HeadGAN's 300-D DeepSpeech features; clips without audio
give zeros.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..nets import (
    DiscriminatorConfig,
    HeadGANConfig,
    HeadGANGenerator,
    MouthDiscriminator,
    MouthDiscriminatorConfig,
    MultiScaleDiscriminator,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    l1_loss,
)
from .base import MorphableReenactor, MorphableReenactorConfig, StepResult, to_signed, to_unit
from .conditioning import crop_boxes, render_driving_ncc, render_ncc_params, reorder_newest_first
from .params import mouth_boxes

__all__ = ["HeadGANPipelineConfig", "HeadGAN"]


@dataclasses.dataclass
class HeadGANPipelineConfig(MorphableReenactorConfig):
    """Configuration of :class:`HeadGAN` (fields of :class:`MorphableReenactorConfig` plus these).

    Attributes:
        base_channels: first encoder layer of F and R (HeadGAN: 32; then 4x and 16x), times ``width``.
        spade_hidden: SPADE embedding width (HeadGAN's code: 256), times ``width``.
        spectral: spectral normalisation in the generator (HeadGAN: yes).
        use_audio: condition R (AdaIN) and the mouth discriminator on audio features.
        audio_dim: length of a frame's flattened audio features (the contract's ``2k * 27 = 108``).
        disc_width: channel multiplier of the discriminators (``None``: ``width``).
        disc_base_channels, disc_max_channels, disc_num_layers, disc_num_scales: PatchGAN sizes
            (HeadGAN: 64, 512, 4 layers, 2 scales).
        mouth_discriminator: train with HeadGAN's mouth discriminator.
        mouth_size: side of the mouth crops (``None``: ``image_size // 4``, HeadGAN's 64 at 256).
        mouth_scale: box side over the lip landmarks' extent when boxes are computed from parameters.
        lambda_l1: weight of L1(output, target) (HeadGAN: 50).
        lambda_vgg: weight of VGG(output, target) (HeadGAN: 10).
        lambda_warp_l1, lambda_warp_vgg: the same on F's warped source (HeadGAN: 50 and 10).
        lambda_fm: weight of each discriminator's feature-matching loss (HeadGAN: 10).
        lambda_adv: weight of the image discriminator's generator hinge loss (HeadGAN: 1).
        lambda_mouth: weight of the mouth discriminator's generator hinge loss (HeadGAN: 1).
        blend_warped: R predicts a soft mask and blends its output with F's warped reference (not in
            HeadGAN; see :mod:`morphface.nets.headgan`). Small, briefly trained models need it.
    """

    base_channels: int = 32
    spade_hidden: int = 256
    spectral: bool = True
    use_audio: bool = True
    audio_dim: int = 108
    disc_width: float | None = None
    disc_base_channels: int = 64
    disc_max_channels: int = 512
    disc_num_layers: int = 4
    disc_num_scales: int = 2
    mouth_discriminator: bool = True
    mouth_size: int | None = None
    mouth_scale: float = 1.5
    lambda_l1: float = 50.0
    lambda_vgg: float = 10.0
    lambda_warp_l1: float = 50.0
    lambda_warp_vgg: float = 10.0
    lambda_fm: float = 10.0
    lambda_adv: float = 1.0
    lambda_mouth: float = 1.0
    blend_warped: bool = False

    def validate(self) -> None:
        super().validate()
        for name in ("lambda_l1", "lambda_vgg", "lambda_warp_l1", "lambda_warp_vgg", "lambda_fm",
                     "lambda_adv", "lambda_mouth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.mouth_size is not None and (self.mouth_size < 16 or self.mouth_size % 4):
            raise ValueError(f"mouth_size must be a multiple of 4 >= 16; got {self.mouth_size}")

    @property
    def mouth_crop_size(self) -> int:
        return self.mouth_size if self.mouth_size is not None else self.image_size // 4


class HeadGAN(MorphableReenactor):
    """The trainable HeadGAN pipeline (see the module docstring); ``nets``: ``"generator"`` (F + R),
    ``"discriminator"`` (image) and ``"mouth_discriminator"`` (when enabled)."""

    name = "headgan"
    config_class = HeadGANPipelineConfig
    config: HeadGANPipelineConfig

    def __init__(self, config: HeadGANPipelineConfig | Mapping[str, Any] | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        k = cfg.num_previous
        gen = HeadGANGenerator(HeadGANConfig(
            num_frames=k + 1, base_channels=cfg.base_channels, spade_hidden=cfg.spade_hidden,
            audio_dim=cfg.audio_dim, use_audio=cfg.use_audio, spectral=cfg.spectral, width=cfg.width,
            blend_warped=cfg.blend_warped))
        dw = cfg.disc_width if cfg.disc_width is not None else cfg.width
        nets = {"generator": gen, "discriminator": MultiScaleDiscriminator(DiscriminatorConfig(
            cond_channels=3, base_channels=cfg.disc_base_channels, max_channels=cfg.disc_max_channels,
            num_layers=cfg.disc_num_layers, num_scales=cfg.disc_num_scales, width=dw))}
        if cfg.mouth_discriminator:
            nets["mouth_discriminator"] = MouthDiscriminator(MouthDiscriminatorConfig(
                audio_dim=cfg.audio_dim, use_audio=cfg.use_audio, base_channels=cfg.disc_base_channels,
                max_channels=cfg.disc_max_channels, num_layers=cfg.disc_num_layers,
                num_scales=cfg.disc_num_scales, width=dw))
        self.nets = nn.ModuleDict(nets)

    # ------------------------------------------------------------------ inputs
    def _audio(self, batch: Mapping[str, Tensor], B: int, like: Tensor) -> Tensor | None:
        if not self.config.use_audio:
            return None
        a = batch.get("audio")
        if a is None:
            return like.new_zeros(B, self.config.audio_dim)
        if a.dim() == 3:
            a = a.reshape(a.shape[0], -1)
        if a.shape != (B, self.config.audio_dim):
            raise ValueError(f"batch['audio'] must have shape ({B}, {self.config.audio_dim}); got "
                             f"{tuple(a.shape)}")
        if "has_audio" in batch:  # the contract's zeros for clips without audio, enforced
            a = a * batch["has_audio"].to(a).reshape(B, 1)
        return a.to(like)

    def _source_inputs(self, source: Tensor, source_params: Tensor) -> dict[str, Tensor]:
        ncc, mask = render_ncc_params(self.model, self.layout, source_params, self.config.image_size,
                                      self.config.render_backend)
        return {"source_ncc": ncc, "source_mask": mask}

    def _sequence_inputs(self, params: Tensor, indices: Tensor) -> dict[str, Tensor]:
        # Render each needed frame once (chunk plus k frames before it), then gather the stacks.
        k, S = self.config.num_previous, self.config.image_size
        first = max(int(indices[0]) - k, 0)
        last = int(indices[-1]) + 1
        ncc, mask = render_ncc_params(self.model, self.layout, params[first:last], S,
                                      self.config.render_backend)
        rows = (indices[:, None] + torch.arange(-k, 1, device=indices.device)[None]).clamp(min=0) - first
        stack = ncc[rows]  # (n, k + 1, 3, S, S) oldest first
        return {"driving_ncc": stack.reshape(indices.numel(), 3 * (k + 1), S, S),
                "driving_mask": mask[indices - first]}

    def conditioning(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The batch's NCC renders, rendered from its parameters where missing.

        Returns:
            ``source_ncc (B, 3, S, S)`` and ``driving_ncc (B, 3 (k + 1), S, S)`` (oldest first) in [0, 1],
            ``driving_mask (B, 1, S, S)``.
        """
        cfg = self.config
        S, k, backend = cfg.image_size, cfg.num_previous, cfg.render_backend
        out = {}
        if "source_ncc" in batch:
            out["source_ncc"] = batch["source_ncc"]
        else:
            source = self._params(batch, "source_params")
            out["source_ncc"], _ = render_ncc_params(self.model, self.layout, source, S, backend)
        if "driving_ncc" in batch:
            out["driving_ncc"] = batch["driving_ncc"]
            out["driving_mask"] = batch.get("driving_mask")
        else:
            motion = self._motion(batch, "driving_motion", "driving_params")
            driving = self._params(batch, "driving_params")
            ncc, mask = render_driving_ncc(self.model, self.layout, driving, motion, k, S, backend)
            out["driving_ncc"], out["driving_mask"] = ncc, mask
        B = out["source_ncc"].shape[0]
        for key, c in (("source_ncc", 3), ("driving_ncc", 3 * (k + 1))):
            if tuple(out[key].shape) != (B, c, S, S):
                raise ValueError(f"{key} must have shape ({B}, {c}, {S}, {S}); got {tuple(out[key].shape)}")
        return out

    # ------------------------------------------------------------------ forward
    def generate(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """F + R on a batch: ``fake``, ``warped`` ``(B, 3, S, S)`` and ``flow`` ``(B, 2, S, S)`` in the
        networks' units, plus ``cond``: the current driving NCC in [-1, 1] (the image discriminator's
        condition)."""
        B = self._check_images(batch, "source")
        cond = self.conditioning(batch)
        src = to_signed(batch["source"])
        driving = to_signed(reorder_newest_first(cond["driving_ncc"].to(src)))
        source_face = to_signed(cond["source_ncc"].to(src))
        out = self.nets["generator"](src, source_face, driving, self._audio(batch, B, src))
        return {"fake": out.image, "warped": out.warped_image, "flow": out.flow, "cond": driving[:, :3]}

    def _mouth_boxes(self, batch: Mapping[str, Tensor]) -> Tensor:
        if "mouth_box" in batch:
            return batch["mouth_box"]
        fit = self.layout.unpack(self._params(batch, "driving_params").float(), (self.config.image_size,) * 2)
        with torch.no_grad():
            return mouth_boxes(fit, self.model, self.config.mouth_scale)

    def generator_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        cfg = self.config
        self._check_images(batch, "source", "driving")
        out = self.generate(batch)
        fake, warped, cond = out["fake"], out["warped"], out["cond"]
        target = to_signed(batch["driving"]).to(fake)
        logs: dict[str, Tensor] = {}
        l1 = l1_loss(fake, target)
        l1_warp = l1_loss(warped, target)
        loss = cfg.lambda_l1 * l1 + cfg.lambda_warp_l1 * l1_warp
        logs.update(l1=l1.detach(), l1_warp=l1_warp.detach())
        if self.perceptual is not None:
            vgg = self.perceptual(fake, target)
            vgg_warp = self.perceptual(warped, target)
            loss = loss + cfg.lambda_vgg * vgg + cfg.lambda_warp_vgg * vgg_warp
            logs.update(vgg=vgg.detach(), vgg_warp=vgg_warp.detach())
        if cfg.lambda_adv > 0 or cfg.lambda_fm > 0:
            d_fake = self.nets["discriminator"](fake, cond)
            with torch.no_grad():
                d_real = self.nets["discriminator"](target, cond)
            adv = hinge_generator_loss(d_fake.logits)
            fm = feature_matching_loss(d_fake.features, d_real.features)
            loss = loss + cfg.lambda_adv * adv + cfg.lambda_fm * fm
            logs.update(adv=adv.detach(), fm=fm.detach())
        outputs = {"fake": fake, "warped": warped, "cond": cond}
        if "mouth_discriminator" in self.nets:
            boxes = self._mouth_boxes(batch).to(fake)
            audio = self._audio(batch, fake.shape[0], fake)
            m_fake = self.nets["mouth_discriminator"](crop_boxes(fake, boxes, cfg.mouth_crop_size), audio)
            with torch.no_grad():
                real_mouth = crop_boxes(target, boxes, cfg.mouth_crop_size)
                m_real = self.nets["mouth_discriminator"](real_mouth, audio)
            adv_m = hinge_generator_loss(m_fake.logits)
            fm_m = feature_matching_loss(m_fake.features, m_real.features)
            loss = loss + cfg.lambda_mouth * adv_m + cfg.lambda_fm * fm_m
            logs.update(adv_mouth=adv_m.detach(), fm_mouth=fm_m.detach())
            outputs["mouth_box"] = boxes
        return StepResult(loss, logs, outputs)

    def discriminator_step(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> StepResult:
        cfg = self.config
        fake, cond = outputs["fake"].detach(), outputs["cond"].detach()
        target = to_signed(batch["driving"]).to(fake)
        # One forward on real and fake together: one graph per backward (DDP) and fewer launches.
        d = self.nets["discriminator"](torch.cat([target, fake]), torch.cat([cond, cond]))
        real_logits = [x.chunk(2)[0] for x in d.logits]
        fake_logits = [x.chunk(2)[1] for x in d.logits]
        loss_img = hinge_discriminator_loss(real_logits, fake_logits)
        loss = loss_img
        logs = {"image": loss_img.detach(),
                "real_score": torch.stack([x.mean() for x in real_logits]).mean().detach(),
                "fake_score": torch.stack([x.mean() for x in fake_logits]).mean().detach()}
        if "mouth_discriminator" in self.nets:
            boxes = outputs["mouth_box"] if "mouth_box" in outputs else self._mouth_boxes(batch).to(fake)
            audio = self._audio(batch, fake.shape[0], fake)
            crops = crop_boxes(torch.cat([target, fake]), torch.cat([boxes, boxes]), cfg.mouth_crop_size)
            m = self.nets["mouth_discriminator"](crops, None if audio is None else torch.cat([audio, audio]))
            loss_m = hinge_discriminator_loss([x.chunk(2)[0] for x in m.logits],
                                              [x.chunk(2)[1] for x in m.logits])
            loss = loss + loss_m
            logs["mouth"] = loss_m.detach()
        return StepResult(loss, logs, {})

    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """source | driving NCC | warped | output | target, each ``(B, 3, S, S)`` in [0, 1]."""
        return {"source": batch["source"], "driving_ncc": to_unit(outputs["cond"]),
                "warped": to_unit(outputs["warped"]), "output": to_unit(outputs["fake"]),
                "target": batch["driving"]}
