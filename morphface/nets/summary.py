"""Parameter counts and CPU forward timings of every network in :mod:`morphface.nets`.

Run ``python -m morphface.nets.summary`` (``--help`` for options). Timings are the median of
``--repeats`` forward passes under ``torch.inference_mode`` after one warm-up, batch 1, at ``--size``
(256) for the image networks; the mouth discriminator sees a ``size / 4`` crop (HeadGAN: 64x64 at
256) and the motion encoder one 27-frame window. X2Face's networks are built for ``--size`` (their
depth is capped at ``log2(size)``). The 3D-keypoint core ("KP ...", kp3d/MMFA) is at face-vid2vid's sizes
(20 keypoints, a 32 x 16 x size/4 x size/4 volume); its paper-sized hourglasses need ``--size`` >= 128. MMFA's
own networks ("MMFA ...") are at :class:`~morphface.pipelines.MMFAConfig`'s defaults (d = 128, d_z = 16).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .discriminators import DiscriminatorConfig, MouthDiscriminator, MouthDiscriminatorConfig, MultiScaleDiscriminator
from .headgan import DenseFlowNet, DenseFlowNetConfig, RenderingNet, RenderingNetConfig
from .ifaceuv import (
    EditingNet,
    EditingNetConfig,
    MotionEncoder,
    MotionEncoderConfig,
    UVRefinementNet,
    UVRefinementNetConfig,
    WarpingNet,
    WarpingNetConfig,
)
from .keypoints import (
    AppearanceConfig,
    AppearanceFeatureExtractor,
    AUDeformationEstimator,
    AudioDeformationEstimator,
    CanonicalKeypointConfig,
    CanonicalKeypointDetector,
    ExpressionDecoder,
    ExpressionEncoder,
    ExpressionEncoderConfig,
    ExpressionVAE,
    FeatureDiscriminator,
    HeadPoseConfig,
    HeadPoseEstimator,
    MotionFieldConfig,
    MotionFieldEstimator,
    OcclusionAwareGenerator,
    OcclusionAwareGeneratorConfig,
    ScaleTranslationConfig,
    ScaleTranslationDecoder,
)
from .landmarks import HeatmapLandmarkNet
from .losses import VGGPerceptualLoss
from .parsing import FaceParser
from .x2face import DrivingNet, DrivingNetConfig, EmbeddingNet, EmbeddingNetConfig, IdentityVGG

__all__ = ["NetworkEntry", "network_entries", "count_parameters", "time_forward", "main"]


@dataclass
class NetworkEntry:
    """A network with a function making example inputs ``(batch, size) -> args``."""

    name: str
    module: nn.Module
    make_inputs: Callable[[int, int], tuple]
    input_desc: str


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or frozen)."""
    return sum(p.numel() for p in module.parameters())


def network_entries(width: float = 1.0, size: int = 256) -> list[NetworkEntry]:
    """All networks at the given width with their default configs otherwise (X2Face's for ``size``)."""
    f = DenseFlowNet(DenseFlowNetConfig(width=width))
    c0, c1, c2 = f.config.channels
    me = MotionEncoder(MotionEncoderConfig(width=width))
    zdim, win, mdim = me.config.descriptor_dim, me.config.window, me.config.motion_dim

    def img(b: int, s: int, c: int = 3) -> torch.Tensor:
        return torch.rand(b, c, s, s) * 2 - 1

    return [
        NetworkEntry("HeadGAN DenseFlowNet (F)", f, lambda b, s: (img(b, s), img(b, s), img(b, s, 9)),
                     "ref 3 + NCC 3 + driving 9"),
        NetworkEntry("HeadGAN RenderingNet (R)", RenderingNet(RenderingNetConfig(width=width)),
                     lambda b, s: (img(b, s, 9), (img(b, s, c0), img(b, s // 2, c1), img(b, s // 4, c2)),
                                   img(b, s), torch.randn(b, 300)), "driving 9, warped feats, audio 300"),
        NetworkEntry("HeadGAN image D (2 scales)", MultiScaleDiscriminator(DiscriminatorConfig(width=width)),
                     lambda b, s: (img(b, s), img(b, s)), "image 3 + NCC 3"),
        NetworkEntry("HeadGAN mouth D (2 scales)", MouthDiscriminator(MouthDiscriminatorConfig(width=width)),
                     lambda b, s: (img(b, s // 4), torch.randn(b, 300)), "mouth crop size/4, audio 300"),
        NetworkEntry("IFaceUV MotionEncoder", me, lambda b, s: (torch.randn(b, win, mdim),),
                     f"{win} frames x {mdim}"),
        NetworkEntry("IFaceUV WarpingNet", WarpingNet(WarpingNetConfig(width=width)),
                     lambda b, s: (img(b, s), torch.randn(b, zdim)), "source 3, z"),
        NetworkEntry("IFaceUV UVRefinementNet", UVRefinementNet(UVRefinementNetConfig(width=width)),
                     lambda b, s: (img(b, s), img(b, s), torch.rand(b, 1, s, s), torch.randn(b, zdim)),
                     "source, UV 3 + mask 1 (UV size = size), z"),
        NetworkEntry("IFaceUV EditingNet", EditingNet(EditingNetConfig(width=width)),
                     lambda b, s: (img(b, s), img(b, s), img(b, s), torch.randn(b, zdim)), "3 images, z"),
        NetworkEntry("X2Face EmbeddingNet (U-Net)", EmbeddingNet(EmbeddingNetConfig(image_size=size, width=width)),
                     lambda b, s: (img(b, s),), "source 3 -> flow 2"),
        NetworkEntry("X2Face DrivingNet", DrivingNet(DrivingNetConfig(image_size=size, width=width)),
                     lambda b, s: (img(b, s),), "driving 3 -> vector 128 -> flow 2"),
        NetworkEntry("X2Face identity VGG-11", IdentityVGG("vgg11"),
                     lambda b, s: (img(b, s), ("relu2_1", "relu3_1", "relu3_2", "relu4_1", "relu4_2", "relu5_1")),
                     "image (stage II, frozen)"),
        *_keypoint_entries(width, img),
        *_mmfa_entries(width, img),
        NetworkEntry("VGG19 perceptual loss", VGGPerceptualLoss(pretrained=False),
                     lambda b, s: (img(b, s), img(b, s)), "pred, target"),
    ]


def _keypoint_entries(width: float, img: Callable[..., torch.Tensor]) -> list[NetworkEntry]:
    """The 3D-keypoint core (kp3d / MMFA) at face-vid2vid's sizes times ``width``."""
    app = AppearanceFeatureExtractor(AppearanceConfig(width=width))
    C, D = app.config.channels, app.config.depth
    k = CanonicalKeypointConfig().num_keypoints

    def volume(b: int, s: int) -> torch.Tensor:
        return torch.randn(b, C, D, s // 4, s // 4)

    def kp(b: int) -> torch.Tensor:
        return torch.rand(b, k, 3) - 0.5

    def rot(b: int) -> torch.Tensor:
        return torch.eye(3).expand(b, 3, 3).contiguous()

    def flow(b: int, s: int) -> torch.Tensor:
        from .keypoints import coordinate_grid

        return coordinate_grid(D, s // 4, s // 4).expand(b, -1, -1, -1, -1).contiguous()

    return [
        NetworkEntry("KP appearance extractor", app, lambda b, s: (img(b, s),), f"image -> volume {C}x{D}"),
        NetworkEntry("KP canonical detector", CanonicalKeypointDetector(CanonicalKeypointConfig(width=width)),
                     lambda b, s: (img(b, s),), f"image -> {k} keypoints"),
        NetworkEntry("KP head-pose estimator", HeadPoseEstimator(HeadPoseConfig(width=width)),
                     lambda b, s: (img(b, s),), "image -> angles, t"),
        NetworkEntry("KP AU deformation", AUDeformationEstimator(), lambda b, s: (torch.rand(b, 17) * 5,),
                     "17 AUs"),
        NetworkEntry("KP audio deformation", AudioDeformationEstimator(), lambda b, s: (torch.randn(b, 8, 108),),
                     "8 frames x 108 audio"),
        NetworkEntry("KP motion field", MotionFieldEstimator(MotionFieldConfig(feature_channels=C, width=width)),
                     lambda b, s: (volume(b, s), kp(b), kp(b), rot(b), rot(b)), "volume, K_s, K_d, R_s, R_d"),
        NetworkEntry("KP occlusion-aware G",
                     OcclusionAwareGenerator(OcclusionAwareGeneratorConfig(feature_channels=C, width=width)),
                     lambda b, s: (volume(b, s), flow(b, s), torch.rand(b, 1, s // 4, s // 4)),
                     "volume, flow, occlusion"),
        NetworkEntry("Face-part parser", FaceParser(), lambda b, s: (img(b, s),), "image -> 4 parts"),
    ]


def _mmfa_entries(width: float, img: Callable[..., torch.Tensor]) -> list[NetworkEntry]:
    """MMFA's networks beside the core (its generator is the core's with ``multiscale``)."""
    app = AppearanceConfig(width=width)
    C, D = app.channels, app.depth
    k = CanonicalKeypointConfig().num_keypoints
    d = ExpressionEncoderConfig().feature_dim

    def flow(b: int, s: int) -> torch.Tensor:
        from .keypoints import coordinate_grid

        return coordinate_grid(D, s // 4, s // 4).expand(b, -1, -1, -1, -1).contiguous()

    return [
        NetworkEntry("MMFA scale/translation decoder", ScaleTranslationDecoder(ScaleTranslationConfig(width=width)),
                     lambda b, s: (img(b, s),), "image -> s, t"),
        NetworkEntry("MMFA expression encoder", ExpressionEncoder(ExpressionEncoderConfig(width=width)),
                     lambda b, s: (img(b, s),), f"image -> f ({d})"),
        NetworkEntry("MMFA expression decoder", ExpressionDecoder(), lambda b, s: (torch.randn(b, d),
                                                                                   torch.rand(b, k, 3) - 0.5),
                     f"f, K_c -> delta ({k} x 3)"),
        NetworkEntry("MMFA multi-scale G",
                     OcclusionAwareGenerator(OcclusionAwareGeneratorConfig(feature_channels=C, width=width,
                                                                           multiscale=True)),
                     lambda b, s: (torch.randn(b, C, D, s // 4, s // 4), flow(b, s), torch.rand(b, 1, s // 4, s // 4)),
                     "volume, flow, occlusion -> 3 scales"),
        NetworkEntry("MMFA expression VAE", ExpressionVAE(), lambda b, s: (torch.randn(b, d),), "f -> z -> f"),
        NetworkEntry("MMFA feature D", FeatureDiscriminator(), lambda b, s: (torch.randn(b, d),), "f -> logit"),
        NetworkEntry("2D landmark net", HeatmapLandmarkNet(), lambda b, s: (img(b, s),), "image -> 68 points"),
    ]


def time_forward(module: nn.Module, inputs: tuple, repeats: int = 3) -> float:
    """Median wall time in seconds of ``module(*inputs)`` over ``repeats`` runs after one warm-up."""
    module.eval()
    times = []
    with torch.inference_mode():
        module(*inputs)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            module(*inputs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m morphface.nets.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1: paper sizes)")
    parser.add_argument("--size", type=int, default=256, help="image size for the timings (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (default 3)")
    parser.add_argument("--no-timing", action="store_true", help="only count parameters")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    print(f"morphface.nets at width {args.width:g}; CPU forward, batch 1, {args.size}x{args.size}, "
          f"median of {args.repeats} after a warm-up, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = f"{'network':<28} {'params':>12} {'forward ms':>11}  input"
    print(header)
    print("-" * len(header))
    for e in network_entries(args.width, args.size):
        params = count_parameters(e.module)
        ms = "-" if args.no_timing else f"{1e3 * time_forward(e.module, e.make_inputs(1, args.size), args.repeats):.1f}"
        print(f"{e.name:<28} {params:>12,} {ms:>11}  {e.input_desc}", flush=True)


if __name__ == "__main__":
    main()
