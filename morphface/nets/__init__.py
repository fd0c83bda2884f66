"""Networks and losses for face reenactment: 3D-conditioned (HeadGAN, IFaceUV) and model-free (X2Face).

Networks take and produce images in [-1, 1]; pipelines convert from the library's [0, 1]. Flows are
backward and in pixels (:mod:`morphface.nets.warp`). Every network has a frozen config dataclass whose
defaults are the paper's sizes and a ``width`` multiplier of its channel counts.
The learned-3D-keypoint core of the keypoint reenactors (kp3d, MMFA) is the subpackage
:mod:`morphface.nets.keypoints`; the networks of their auxiliary losses, trained on the library's renders, are
the face-part parser (:mod:`morphface.nets.parsing`, kp3d) and the heatmap landmark network
(:mod:`morphface.nets.landmarks`, MMFA), their common part :mod:`morphface.nets.auxiliary`.
Run ``python -m morphface.nets.summary`` for parameter counts and CPU timings.
"""

from .blocks import SPADE, AdaIN, AdaINBlock, ConvBlock, PixelShuffleUp, SPADEBlock
from .discriminators import (
    DiscriminatorConfig,
    DiscriminatorOutput,
    MouthDiscriminator,
    MouthDiscriminatorConfig,
    MultiScaleDiscriminator,
    PatchDiscriminator,
)
from .headgan import (
    DenseFlowNet,
    DenseFlowNetConfig,
    DenseFlowOutput,
    HeadGANConfig,
    HeadGANGenerator,
    HeadGANOutput,
    RenderingNet,
    RenderingNetConfig,
)
from .ifaceuv import (
    AdaINUNet,
    AdaINUNetConfig,
    EditingNet,
    EditingNetConfig,
    MotionEncoder,
    MotionEncoderConfig,
    UVRefinementNet,
    UVRefinementNetConfig,
    WarpingNet,
    WarpingNetConfig,
    WarpingOutput,
)
from .losses import (
    VGG19,
    SegmentationLoss,
    VGGPerceptualLoss,
    default_vgg19_path,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    l1_loss,
    load_vgg19_weights,
    uv_consistency_loss,
)
from .warp import resize_flow, upsample_flow, warp
from .x2face import (
    DrivingNet,
    DrivingNetConfig,
    DrivingVectorMaps,
    EmbeddingNet,
    EmbeddingNetConfig,
    IdentityVGG,
    X2FaceGenerator,
    X2FaceGeneratorConfig,
    X2FaceOutput,
    fit_affine,
    identity_content_loss,
    load_identity_vgg,
)

__all__ = [
    # blocks
    "SPADE", "AdaIN", "SPADEBlock", "AdaINBlock", "PixelShuffleUp", "ConvBlock",
    # warping
    "warp", "resize_flow", "upsample_flow",
    # HeadGAN
    "DenseFlowNet", "DenseFlowNetConfig", "DenseFlowOutput", "RenderingNet", "RenderingNetConfig",
    "HeadGANGenerator", "HeadGANConfig", "HeadGANOutput",
    # discriminators
    "PatchDiscriminator", "MultiScaleDiscriminator", "DiscriminatorConfig", "DiscriminatorOutput",
    "MouthDiscriminator", "MouthDiscriminatorConfig",
    # IFaceUV
    "MotionEncoder", "MotionEncoderConfig", "AdaINUNet", "AdaINUNetConfig", "WarpingNet", "WarpingNetConfig",
    "WarpingOutput", "UVRefinementNet", "UVRefinementNetConfig", "EditingNet", "EditingNetConfig",
    # X2Face
    "EmbeddingNet", "EmbeddingNetConfig", "DrivingNet", "DrivingNetConfig", "X2FaceGenerator",
    "X2FaceGeneratorConfig", "X2FaceOutput", "IdentityVGG", "load_identity_vgg", "identity_content_loss",
    "fit_affine", "DrivingVectorMaps",
    # losses
    "VGG19", "VGGPerceptualLoss", "default_vgg19_path", "load_vgg19_weights", "hinge_discriminator_loss",
    "hinge_generator_loss", "feature_matching_loss", "l1_loss", "uv_consistency_loss", "SegmentationLoss",
]
