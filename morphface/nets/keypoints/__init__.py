"""The learned-3D-keypoint core shared by the keypoint reenactors (kp3d, MMFA): face-vid2vid's networks.

One module, one job (Wang, Mallya & Liu, CVPR 2021; Hatakeyama, Furuta & Sato 2024):

* :mod:`.geometry` -- the keypoint space, ``pose_to_rotation``, eq. 3.1 ``transform_keypoints``, heatmaps;
* :mod:`.encoders` -- :class:`AppearanceFeatureExtractor` (identity volume), :class:`CanonicalKeypointDetector`
  (``K_c``), :class:`HeadPoseEstimator` (``R, t``);
* :mod:`.deformation` -- :class:`AUDeformationEstimator` (``delta^AU``), :class:`AudioDeformationEstimator`
  (``delta^audio``);
* :mod:`.motion` -- :class:`MotionFieldEstimator` (3D flow + occlusion from keypoint heatmaps and rotation
  Jacobians);
* :mod:`.generator` -- :class:`OcclusionAwareGenerator`;
* :mod:`.losses` -- equivariance, keypoint prior, head pose, deformation prior, part segmentation;
* :mod:`.mmfa` -- MMFA's decomposition ``K = s R (K_c + delta) + t`` (orthographic, centred ``K_c``), the
  scale/translation decoder, the expression encoder/decoder and MMFA's losses;
* :mod:`.expression_vae` -- MMFA's expression VAE and its feature discriminator;
The face-part parser of the segmentation loss is :class:`morphface.nets.parsing.FaceParser`.

Images are ``(B, 3, H, W)`` in [-1, 1]; keypoints ``(B, k, 3)`` in keypoint space.
"""

from .blocks import DownBlock2d, DownBlock3d, Hourglass2d, Hourglass3d, ResBlock2d, ResBlock3d, UpBlock2d, UpBlock3d
from .deformation import (
    AU_MAX,
    NUM_AUS,
    AUDeformationConfig,
    AUDeformationEstimator,
    AudioDeformationConfig,
    AudioDeformationEstimator,
    PerKeypointMLP,
)
from .encoders import (
    AppearanceConfig,
    AppearanceFeatureExtractor,
    CanonicalKeypointConfig,
    CanonicalKeypointDetector,
    HeadPose,
    HeadPoseConfig,
    HeadPoseEstimator,
)
from .expression_vae import (
    ExpressionVAE,
    ExpressionVAEConfig,
    FeatureDiscriminator,
    VAEOutput,
    kl_divergence,
    reparameterize,
    train_expression_vae,
)
from .generator import GeneratedImage, OcclusionAwareGenerator, OcclusionAwareGeneratorConfig
from .geometry import (
    coordinate_grid,
    gaussian_heatmaps,
    keypoint_heatmaps_2d,
    pose_to_rotation,
    rotation_to_pose,
    transform_keypoints,
)
from .losses import (
    affine_warp,
    apply_affine,
    deformation_prior_loss,
    equivariance_loss,
    head_pose_loss,
    keypoint_prior_loss,
    part_segmentation_loss,
    random_affine,
)
from .mmfa import (
    LANDMARK_PARTS,
    ExpressionDecoder,
    ExpressionDecoderConfig,
    ExpressionEncoder,
    ExpressionEncoderConfig,
    ResBottleneck,
    ScaleTranslation,
    ScaleTranslationConfig,
    ScaleTranslationDecoder,
    centre_keypoints,
    compose_keypoints,
    identity_consistency_loss,
    image_pyramid,
    landmark_part_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    orthographic_projection,
    scaled_jacobians,
    self_supervised_loss,
)
from .motion import (
    MotionField,
    MotionFieldConfig,
    MotionFieldEstimator,
    sparse_motions,
    warp_image_by_volume_flow,
    warp_volume,
)

__all__ = [
    "ResBlock2d", "ResBlock3d", "DownBlock2d", "UpBlock2d", "DownBlock3d", "UpBlock3d", "Hourglass2d", "Hourglass3d",
    "NUM_AUS", "AU_MAX", "PerKeypointMLP", "AUDeformationConfig", "AUDeformationEstimator",
    "AudioDeformationConfig", "AudioDeformationEstimator",
    "AppearanceConfig", "AppearanceFeatureExtractor", "CanonicalKeypointConfig", "CanonicalKeypointDetector",
    "HeadPoseConfig", "HeadPoseEstimator", "HeadPose",
    "OcclusionAwareGeneratorConfig", "OcclusionAwareGenerator", "GeneratedImage",
    "pose_to_rotation", "rotation_to_pose", "transform_keypoints", "coordinate_grid", "gaussian_heatmaps",
    "keypoint_heatmaps_2d",
    "random_affine", "affine_warp", "apply_affine", "equivariance_loss", "keypoint_prior_loss", "head_pose_loss",
    "deformation_prior_loss", "part_segmentation_loss",
    "MotionFieldConfig", "MotionFieldEstimator", "MotionField", "sparse_motions", "warp_volume",
    "warp_image_by_volume_flow",
    "LANDMARK_PARTS", "centre_keypoints", "orthographic_projection", "compose_keypoints", "scaled_jacobians",
    "ScaleTranslation", "ScaleTranslationConfig", "ScaleTranslationDecoder", "ResBottleneck",
    "ExpressionEncoderConfig", "ExpressionEncoder", "ExpressionDecoderConfig", "ExpressionDecoder",
    "self_supervised_loss", "identity_consistency_loss", "landmark_part_loss", "lsgan_generator_loss",
    "lsgan_discriminator_loss", "image_pyramid",
    "ExpressionVAEConfig", "ExpressionVAE", "VAEOutput", "FeatureDiscriminator", "kl_divergence", "reparameterize",
    "train_expression_vae",
]
