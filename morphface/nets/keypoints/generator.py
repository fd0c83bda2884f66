"""face-vid2vid's occlusion-aware generator ``G``: warped identity volume -> image.

The identity volume ``I`` ``(B, C, D, h, w)`` is warped by the motion field's 3D flow, its depth is folded
into the channels (``(B, C D, h, w)``), a 3x3 conv maps it to ``4 base`` channels, the occlusion map
multiplies it, residual blocks and two up blocks (x4) follow and a 7x7 conv with ``tanh`` gives the image
in [-1, 1] (face-vid2vid ends in a sigmoid on [0, 1]; the library's networks work in [-1, 1]).

``blend_warped`` (not in face-vid2vid; as the HeadGAN/IFaceUV small configs do): the last conv also predicts a
soft mask that mixes the generated colours with the full-resolution source warped by the same flow
(:func:`~.motion.warp_image_by_volume_flow`, :func:`morphface.nets.blocks.blend_output`), so that a briefly
trained generator starts from the warped source instead of from noise.

``multiscale`` (MMFA's multi-scale generator, Appendix A.1; off for kp3d): after the residual blocks (``h x w``) and
after the first up block (``2h x 2w``) a 3x3 conv predicts an image at that resolution (``tanh``), which is
concatenated to the features entering the next up block ("we concatenate the image feature and the output image"),
so the generator reconstructs the face at ``S/4``, ``S/2`` and ``S`` (:attr:`GeneratedImage.pyramid`, coarse to fine,
the last being ``image``). The paper's first stage (a conv folding the warped volume into a 2D map, then a
ResBlock) is the core's ``first`` conv and residual blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ...errors import InputShapeError
from ..blocks import blend_output, init_blend_head, scaled_channels
from .blocks import ResBlock2d, UpBlock2d
from .motion import warp_image_by_volume_flow, warp_volume

__all__ = ["OcclusionAwareGeneratorConfig", "OcclusionAwareGenerator", "GeneratedImage"]


class GeneratedImage(NamedTuple):
    """Output of :class:`OcclusionAwareGenerator`.

    Attributes:
        image: ``(B, 3, 4h, 4w)`` in [-1, 1].
        warped_volume: ``(B, C, D, h, w)`` the identity volume after the flow.
        warped_image: ``(B, 3, 4h, 4w)`` the source warped by the flow (``blend_warped`` only, else ``None``).
        pyramid: ``multiscale`` only (else ``None``): the images at ``h x w``, ``2h x 2w`` and ``4h x 4w`` in
            [-1, 1], coarse to fine; the last is ``image``.
    """

    image: Tensor
    warped_volume: Tensor
    warped_image: Tensor | None = None
    pyramid: tuple[Tensor, ...] | None = None


@dataclass(frozen=True)
class OcclusionAwareGeneratorConfig:
    """Sizes of :class:`OcclusionAwareGenerator` (face-vid2vid: 64 base channels, 6 residual blocks).

    Attributes:
        feature_channels: ``C`` of the identity volume.
        depth: ``D`` of the identity volume.
        base_channels: the up blocks go ``4 base -> 2 base -> base``.
        num_res_blocks: 2D residual blocks at ``h x w``.
        width: multiplier of ``base_channels``.
        blend_warped: blend the output with the warped source by a predicted mask (module docstring).
        multiscale: also predict images at 1/4 and 1/2 of the output size (MMFA, module docstring).
    """

    feature_channels: int = 32
    depth: int = 16
    base_channels: int = 64
    num_res_blocks: int = 6
    width: float = 1.0
    blend_warped: bool = False
    multiscale: bool = False


class OcclusionAwareGenerator(nn.Module):
    """Warped identity volume + occlusion -> image (module docstring)."""

    def __init__(self, config: OcclusionAwareGeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or OcclusionAwareGeneratorConfig()
        b = scaled_channels(cfg.base_channels, cfg.width)
        self.first = nn.Sequential(nn.Conv2d(cfg.feature_channels * cfg.depth, 4 * b, 3, padding=1),
                                   nn.InstanceNorm2d(4 * b, affine=True), nn.ReLU())
        self.res = nn.Sequential(*[ResBlock2d(4 * b) for _ in range(cfg.num_res_blocks)])
        extra = 3 if cfg.multiscale else 0  # the side image concatenated to the next up block's input
        self.up = nn.Sequential(UpBlock2d(4 * b + extra, 2 * b), UpBlock2d(2 * b + extra, b))
        self.side = (nn.ModuleList([nn.Conv2d(4 * b, 3, 3, padding=1), nn.Conv2d(2 * b, 3, 3, padding=1)])
                     if cfg.multiscale else None)
        self.last = nn.Conv2d(b, 4 if cfg.blend_warped else 3, 7, padding=3)
        if cfg.blend_warped:
            init_blend_head(self.last)

    def forward(self, volume: Tensor, flow: Tensor, occlusion: Tensor, source: Tensor | None = None
                ) -> GeneratedImage:
        """Args:
            volume: ``(B, C, D, h, w)`` source identity features.
            flow: ``(B, D, h, w, 3)`` backward flow (:class:`~.motion.MotionField`).
            occlusion: ``(B, 1, h, w)`` in [0, 1].
            source: ``(B, 3, 4h, 4w)`` source image in [-1, 1]; required iff ``blend_warped``.

        Returns:
            :class:`GeneratedImage` with the image at ``4h x 4w``.
        """
        cfg = self.config
        if volume.dim() != 5 or volume.shape[1:3] != (cfg.feature_channels, cfg.depth):
            raise InputShapeError(f"volume must have shape (B, {cfg.feature_channels}, {cfg.depth}, h, w); got "
                                  f"{tuple(volume.shape)}")
        B, C, D, h, w = volume.shape
        if flow.shape != (B, D, h, w, 3) or occlusion.shape != (B, 1, h, w):
            raise InputShapeError(f"flow must be ({B}, {D}, {h}, {w}, 3) and occlusion ({B}, 1, {h}, {w}); got "
                                  f"{tuple(flow.shape)} and {tuple(occlusion.shape)}")
        warped = warp_volume(volume, flow)
        x = self.first(warped.reshape(B, C * D, h, w)) * occlusion.to(warped.dtype)
        x = self.res(x)
        sides: list[Tensor] = []
        if self.side is None:
            x = self.up(x)
        else:
            for up, side in zip(self.up, self.side):
                sides.append(torch.tanh(side(x)))
                x = up(torch.cat([x, sides[-1]], dim=1))
        x = self.last(x)
        if not cfg.blend_warped:
            image, base = torch.tanh(x), None
        else:
            if source is None or source.shape != (B, 3, 4 * h, 4 * w):
                raise InputShapeError(f"blend_warped needs the source image ({B}, 3, {4 * h}, {4 * w}); got "
                                      f"{None if source is None else tuple(source.shape)}")
            base = warp_image_by_volume_flow(source.to(x.dtype), flow)
            image = blend_output(x, base)
        return GeneratedImage(image, warped, base, (*sides, image) if self.side is not None else None)
