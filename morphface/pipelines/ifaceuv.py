"""IFaceUV: reenactment through motion codes and a UV texture (Lee et al., 2023; after PIRenderer).

Generator (one module, :class:`IFaceUVGenerator`, holding the four networks of :mod:`morphface.nets`):

1. the motion encoder f^E maps the driving frame's motion window (``2w + 1`` frames of expression,
   angles and translation) to a descriptor ``z``;
2. the warping net f^W predicts a flow from the source image and ``z`` and warps the source;
3. the source image unwrapped into the model's UV layout (:func:`morphface.uv.unwrap` with the source
   frame's fit; ``"source_uv"`` of the batch) is refined by the UV refinement net f^UV (conditioned on
   ``z``), then rendered with the driving frame's 3DMM geometry and camera
   (:func:`morphface.uv.render_uv_texture`) and composited over the warped image where the face covers
   it: the *combined* image;
4. the editing net f^Ed turns ``(source, warped, combined, z)`` into the final frame.

Losses (weights in :class:`IFaceUVPipelineConfig`, IFaceUV's values), with ``d(x, y) = recon_l1 * L1(x, y)
+ recon_vgg * VGG(x, y)`` (IFaceUV/PIRenderer use VGG perceptual distances; the L1 term keeps every loss
defined when the VGG weights are not available and the perceptual term is off):

* ``lambda_warp * d(warped, y)`` (IFaceUV: 2.5);
* ``lambda_uvref * [recon_l1 * L1_mask(rendered UV, y) + recon_vgg * VGG(rendered UV over y, y)]``: the
  refined texture rendered in the driving pose must match the target inside the face mask (4);
* ``lambda_cons * L_cons``: UV cross-consistency, the refined UV maps of the source frame and of the
  driving frame (same identity in training) agree where both are valid (1);
* ``lambda_edit * d(output, y)`` (4);
* optionally ``lambda_adv * hinge(D(output))`` with a multi-scale PatchGAN (0 by default: IFaceUV, like
  PIRenderer, trains without a discriminator; then ``discriminator_step`` returns ``None``).

Motion vectors enter f^E normalised: angles in radians as they are, translation as
``(t - (0, 0, -reference_depth)) / translation_scale`` (millimetres would dwarf the other inputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..nets import (
    DiscriminatorConfig,
    EditingNet,
    EditingNetConfig,
    MotionEncoder,
    MotionEncoderConfig,
    MultiScaleDiscriminator,
    UVRefinementNet,
    UVRefinementNetConfig,
    WarpingNet,
    WarpingNetConfig,
    hinge_discriminator_loss,
    hinge_generator_loss,
    l1_loss,
    uv_consistency_loss,
)
from .base import MorphableReenactor, MorphableReenactorConfig, StepResult, to_signed, to_unit
from .conditioning import render_ncc_params

__all__ = ["IFaceUVPipelineConfig", "IFaceUV", "IFaceUVGenerator", "IFaceUVOutput"]


@dataclasses.dataclass
class IFaceUVPipelineConfig(MorphableReenactorConfig):
    """Configuration of :class:`IFaceUV` (fields of :class:`MorphableReenactorConfig` plus these).

    Attributes:
        uv_size: side of the UV textures (IFaceUV: 256; a multiple of 8).
        descriptor_dim: length of the motion descriptor ``z`` (PIRenderer: 256).
        motion_hidden, motion_layers: motion encoder Conv1d width (times ``width``) and depth (256, 3).
        warp_base_channels, warp_max_channels, warp_num_down: warping net sizes (32, 256, 5).
        refine_base_channels, edit_base_channels, max_channels: UV refinement / editing nets (64, 64, 256).
        translation_scale: millimetres per unit of the normalised translation fed to f^E.
        reference_depth: camera distance (mm) subtracted from ``-t_z`` before scaling (about the
            distance of a face filling a 256-pixel crop under the default focal length).
        recon_l1, recon_vgg: weights of the L1 and VGG parts of each reconstruction distance ``d``.
        lambda_warp: weight of ``d(warped, target)`` (IFaceUV: 2.5).
        lambda_uvref: weight of the rendered-UV reconstruction loss (IFaceUV: 4).
        lambda_cons: weight of the UV cross-consistency loss (IFaceUV: 1).
        lambda_edit: weight of ``d(output, target)`` (IFaceUV: 4).
        lambda_adv: weight of an optional hinge GAN loss (0: no discriminator, as in IFaceUV).
        disc_width, disc_base_channels, disc_num_layers, disc_num_scales: that discriminator's sizes.
        blend_input: f^UV and f^Ed predict a soft mask and blend their output with their main input (the
            unwrapped UV map, the combined image; not in IFaceUV, see :mod:`morphface.nets.ifaceuv`).
            Small, briefly trained models need it.
    """

    uv_size: int = 256
    descriptor_dim: int = 256
    motion_hidden: int = 256
    motion_layers: int = 3
    warp_base_channels: int = 32
    warp_max_channels: int = 256
    warp_num_down: int = 5
    refine_base_channels: int = 64
    edit_base_channels: int = 64
    max_channels: int = 256
    translation_scale: float = 100.0
    reference_depth: float = 1200.0
    recon_l1: float = 1.0
    recon_vgg: float = 1.0
    lambda_warp: float = 2.5
    lambda_uvref: float = 4.0
    lambda_cons: float = 1.0
    lambda_edit: float = 4.0
    lambda_adv: float = 0.0
    disc_width: float | None = None
    disc_base_channels: int = 64
    disc_num_layers: int = 4
    disc_num_scales: int = 2
    blend_input: bool = False

    def validate(self) -> None:
        super().validate()
        if self.uv_size < 8 or self.uv_size % 8:
            raise ValueError(f"uv_size must be a positive multiple of 8; got {self.uv_size}")
        if self.image_size % (2 ** self.warp_num_down):
            raise ValueError(f"image_size {self.image_size} must be a multiple of 2**warp_num_down = "
                             f"{2 ** self.warp_num_down}")
        for name in ("recon_l1", "recon_vgg", "lambda_warp", "lambda_uvref", "lambda_cons", "lambda_edit",
                     "lambda_adv"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not self.translation_scale > 0:
            raise ValueError(f"translation_scale must be > 0; got {self.translation_scale}")


class IFaceUVOutput(NamedTuple):
    """What :class:`IFaceUVGenerator` returns (images and UV maps in [-1, 1], masks in [0, 1]).

    Attributes:
        image: ``(B, 3, H, W)`` final frame.
        warped: ``(B, 3, H, W)`` source warped by f^W.
        flow: ``(B, 2, H, W)`` its pixel flow.
        uv: ``(B, 3, S, S)`` refined UV texture of the source.
        rendered: ``(B, 3, H, W)`` ``uv`` rendered in the driving pose (0 off the face).
        mask: ``(B, 1, H, W)`` the render's coverage.
        combined: ``(B, 3, H, W)`` ``rendered`` composited over ``warped``.
        uv_b: ``(B, 3, S, S)`` refined UV texture of the second image (training), or ``None``.
        z: ``(B, descriptor_dim)`` motion descriptor.
    """

    image: Tensor
    warped: Tensor
    flow: Tensor
    uv: Tensor
    rendered: Tensor
    mask: Tensor
    combined: Tensor
    uv_b: Tensor | None
    z: Tensor


class IFaceUVGenerator(nn.Module):
    """The four IFaceUV generator networks, run in one ``forward`` (what the trainer wraps and EMAs)."""

    def __init__(self, motion: MotionEncoderConfig, warping: WarpingNetConfig, refine: UVRefinementNetConfig,
                 editing: EditingNetConfig) -> None:
        super().__init__()
        self.motion_encoder = MotionEncoder(motion)
        self.warping = WarpingNet(warping)
        self.uv_refinement = UVRefinementNet(refine)
        self.editing = EditingNet(editing)

    def forward(self, source: Tensor, motion: Tensor, uv_map: Tensor, uv_mask: Tensor,
                render: Callable[[Tensor], tuple[Tensor, Tensor]], uv_source_b: Tensor | None = None,
                uv_map_b: Tensor | None = None, uv_mask_b: Tensor | None = None) -> IFaceUVOutput:
        """Args:
            source: ``(B, 3, H, W)`` in [-1, 1].
            motion: ``(B, 2w + 1, D_m)`` normalised motion windows.
            uv_map, uv_mask: ``(B, 3, S, S)`` in [-1, 1] and ``(B, 1, S, S)``: the source's unwrapped texture.
            render: ``texture (B, 3, S, S) -> (image (B, 3, H, W), mask (B, 1, H, W))``, the driving pose's
                textured render (differentiable in the texture).
            uv_source_b, uv_map_b, uv_mask_b: a second image and its unwrapped texture (the driving frame
                in training) for the UV consistency loss.
        """
        z = self.motion_encoder(motion)
        w = self.warping(source, z)
        uv = self.uv_refinement(source, uv_map, uv_mask, z)
        rendered, mask = render(uv)
        mask = mask.to(rendered)
        combined = rendered * mask + w.warped_image * (1 - mask)
        image = self.editing(source, w.warped_image, combined, z)
        uv_b = None
        if uv_map_b is not None:
            uv_b = self.uv_refinement(uv_source_b, uv_map_b, uv_mask_b, z)
        return IFaceUVOutput(image, w.warped_image, w.flow, uv, rendered, mask, combined, uv_b, z)


class IFaceUV(MorphableReenactor):
    """The trainable IFaceUV pipeline (see the module docstring); ``nets``: ``"generator"``
    (:class:`IFaceUVGenerator`) and, with ``lambda_adv > 0``, ``"discriminator"``."""

    name = "ifaceuv"
    config_class = IFaceUVPipelineConfig
    config: IFaceUVPipelineConfig

    def __init__(self, config: IFaceUVPipelineConfig | Mapping[str, Any] | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        zd = cfg.descriptor_dim
        gen = IFaceUVGenerator(
            MotionEncoderConfig(expression_dim=self.layout.n_exp, window_radius=cfg.window_radius,
                                descriptor_dim=zd, hidden_channels=cfg.motion_hidden,
                                num_layers=cfg.motion_layers, width=cfg.width),
            WarpingNetConfig(descriptor_dim=zd, base_channels=cfg.warp_base_channels,
                             max_channels=cfg.warp_max_channels, num_down=cfg.warp_num_down, width=cfg.width),
            UVRefinementNetConfig(descriptor_dim=zd, base_channels=cfg.refine_base_channels,
                                  max_channels=cfg.max_channels, width=cfg.width, blend_input=cfg.blend_input),
            EditingNetConfig(descriptor_dim=zd, base_channels=cfg.edit_base_channels,
                             max_channels=cfg.max_channels, width=cfg.width, blend_input=cfg.blend_input))
        nets: dict[str, nn.Module] = {"generator": gen}
        if cfg.lambda_adv > 0:
            dw = cfg.disc_width if cfg.disc_width is not None else cfg.width
            nets["discriminator"] = MultiScaleDiscriminator(DiscriminatorConfig(
                cond_channels=0, base_channels=cfg.disc_base_channels, num_layers=cfg.disc_num_layers,
                num_scales=cfg.disc_num_scales, width=dw))
        self.nets = nn.ModuleDict(nets)

    # ------------------------------------------------------------------ inputs
    def normalise_motion(self, motion: Tensor) -> Tensor:
        """``(..., D_m)`` motion vectors -> the encoder's input (module docstring)."""
        cfg = self.config
        offset = motion.new_zeros(self.layout.motion_dim)
        offset[-1] = -cfg.reference_depth
        scale = motion.new_ones(self.layout.motion_dim)
        scale[-3:] = cfg.translation_scale
        return (motion - offset) / scale

    def unwrap(self, images: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Unwrap ``(B, 3, H, W)`` [0, 1] images with their ``(B, D_p)`` parameters into the UV layout.

        Returns:
            ``texture (B, 3, S, S)`` in [0, 1] and validity ``mask (B, 1, S, S)``.
        """
        from ..uv import unwrap

        S = self.config.image_size
        fit = self.layout.unpack(params.detach().float(), (S, S))
        with torch.no_grad():
            res = unwrap(images.detach().float(), fit, self.model, size=self.config.uv_size)
        return res.texture.to(images), res.mask.to(images)

    def _uv_input(self, batch: Mapping[str, Tensor], key: str, image_key: str, params_key: str
                  ) -> tuple[Tensor, Tensor]:
        S = self.config.uv_size
        if key in batch:
            uv = batch[key]
            if uv.dim() != 4 or tuple(uv.shape[1:]) != (4, S, S):
                raise ValueError(f"batch[{key!r}] must have shape (B, 4, {S}, {S}) (colour + validity); got "
                                 f"{tuple(uv.shape)}")
            return uv[:, :3], uv[:, 3:]
        return self.unwrap(batch[image_key], self._params(batch, params_key))

    def _source_inputs(self, source: Tensor, source_params: Tensor) -> dict[str, Tensor]:
        tex, mask = self.unwrap(source, source_params)
        return {"source_uv": torch.cat([tex, mask], dim=1)}

    def _renderer(self, params: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """Textured render (:func:`morphface.uv.render_uv_texture`) of ``(B, 3, S, S)`` textures with the
        geometry and cameras of ``params``."""
        from ..uv import render_uv_texture

        S = self.config.image_size
        fit = self.layout.unpack(params.detach().float(), (S, S))
        with torch.no_grad():
            verts = fit.vertices(self.model)
        camera, backend = fit.camera, self.config.render_backend

        def render(texture: Tensor) -> tuple[Tensor, Tensor]:
            out = render_uv_texture(texture, self.model, camera, verts=verts, backend=backend)
            return out.image, out.mask

        return render

    # ------------------------------------------------------------------ forward
    def generate(self, batch: Mapping[str, Tensor], with_driving_uv: bool = False) -> dict[str, Tensor]:
        """The generator on a batch; ``fake``, ``warped``, ``rendered``, ``combined`` ``(B, 3, S, S)`` in
        [-1, 1], ``face_mask (B, 1, S, S)``, ``uv``/``uv_mask`` (and with ``with_driving_uv`` the driving
        frame's ``uv_b``/``uv_mask_b``), ``(B, 3|1, S_uv, S_uv)``."""
        self._check_images(batch, "source")
        src = to_signed(batch["source"])
        motion = self.normalise_motion(self._motion(batch, "driving_motion", "driving_params").to(src))
        tex, mask = self._uv_input(batch, "source_uv", "source", "source_params")
        extra: dict[str, Tensor] = {}
        if with_driving_uv:
            tex_b, mask_b = self._uv_input(batch, "driving_uv", "driving", "driving_params")
            extra = {"uv_source_b": to_signed(batch["driving"]).to(src), "uv_map_b": to_signed(tex_b).to(src),
                     "uv_mask_b": mask_b.to(src)}
        out = self.nets["generator"](src, motion, to_signed(tex).to(src), mask.to(src),
                                     self._renderer(self._params(batch, "driving_params")), **extra)
        result = {"fake": out.image, "warped": out.warped, "flow": out.flow, "rendered": out.rendered,
                  "combined": out.combined, "face_mask": out.mask, "uv": out.uv, "uv_mask": mask.to(src)}
        if out.uv_b is not None:
            result.update(uv_b=out.uv_b, uv_mask_b=extra["uv_mask_b"])
        return result

    def _distance(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        l1 = l1_loss(x, y)
        d, logs = cfg.recon_l1 * l1, {"l1": l1.detach()}
        if self.perceptual is not None and cfg.recon_vgg > 0:
            vgg = self.perceptual(x, y)
            d = d + cfg.recon_vgg * vgg
            logs["vgg"] = vgg.detach()
        return d, logs

    def generator_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        cfg = self.config
        self._check_images(batch, "source", "driving")
        out = self.generate(batch, with_driving_uv=cfg.lambda_cons > 0)
        target = to_signed(batch["driving"]).to(out["fake"])
        logs: dict[str, Tensor] = {}
        warp, lw = self._distance(out["warped"], target)
        edit, le = self._distance(out["fake"], target)
        logs.update({f"warp_{k}": v for k, v in lw.items()})
        logs.update({f"edit_{k}": v for k, v in le.items()})
        mask = out["face_mask"]
        uv_l1 = l1_loss(out["rendered"], target, mask)
        uvref = cfg.recon_l1 * uv_l1
        logs["uvref_l1"] = uv_l1.detach()
        if self.perceptual is not None and cfg.recon_vgg > 0:
            uv_vgg = self.perceptual(out["rendered"] * mask + target * (1 - mask), target)
            uvref = uvref + cfg.recon_vgg * uv_vgg
            logs["uvref_vgg"] = uv_vgg.detach()
        loss = cfg.lambda_warp * warp + cfg.lambda_edit * edit + cfg.lambda_uvref * uvref
        logs.update(warp=warp.detach(), edit=edit.detach(), uvref=uvref.detach())
        if cfg.lambda_cons > 0:
            cons = uv_consistency_loss(out["uv"], out["uv_b"], out["uv_mask"], out["uv_mask_b"])
            loss = loss + cfg.lambda_cons * cons
            logs["cons"] = cons.detach()
        if "discriminator" in self.nets:
            adv = hinge_generator_loss(self.nets["discriminator"](out["fake"]).logits)
            loss = loss + cfg.lambda_adv * adv
            logs["adv"] = adv.detach()
        keep = ("fake", "warped", "combined", "face_mask")
        return StepResult(loss, logs, {k: out[k] for k in keep})

    def discriminator_step(self, batch: Mapping[str, Tensor],
                           outputs: dict[str, Tensor]) -> StepResult | None:
        if "discriminator" not in self.nets:
            return None
        fake = outputs["fake"].detach()
        target = to_signed(batch["driving"]).to(fake)
        d = self.nets["discriminator"](torch.cat([target, fake]))
        loss = hinge_discriminator_loss([x.chunk(2)[0] for x in d.logits], [x.chunk(2)[1] for x in d.logits])
        return StepResult(loss, {"image": loss.detach()}, {})

    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """source | driving NCC | warped | output | target (plus the combined UV render), ``(B, 3, S, S)`` in
        [0, 1]."""
        if "driving_ncc" in batch:
            ncc = batch["driving_ncc"][:, -3:]
        else:
            ncc, _ = render_ncc_params(self.model, self.layout, self._params(batch, "driving_params"),
                                       self.config.image_size, self.config.render_backend)
        return {"source": batch["source"], "driving_ncc": ncc, "warped": to_unit(outputs["warped"]),
                "output": to_unit(outputs["fake"]), "target": batch["driving"],
                "combined": to_unit(outputs["combined"])}
