"""Evaluation metrics and protocols of face reenactment.

* :mod:`.image`: L1 on the 0-255 scale, PSNR, SSIM (Gaussian window 11, sigma 1.5).
* :mod:`.lpips`, :mod:`.fid`: LPIPS and FID hooks that work only with locally available weights (never
  downloaded, never faked); the Frechet distance formula itself.
* :mod:`.identity`: CSIM with dlib's face-recognition descriptors (offline).
* :mod:`.motion`: AED, APD, ARD on fitted 3DMM parameters.
* :mod:`.protocol`: same-identity and cross-identity evaluation of any ``generate`` function, with a
  report (table, JSON, CSV) and a side-by-side results video.
"""

from .fid import fid_from_features, frechet_distance, inception_feature_extractor
from .identity import FaceEmbedder, cosine_similarity
from .image import l1_255, psnr, ssim
from .lpips import lpips_metric
from .motion import expression_distance, fit_frames, pose_distance, rotation_distance
from .protocol import (
    CROSS_METRICS,
    SELF_METRICS,
    EvalClip,
    EvaluationReport,
    evaluate_reenactment,
    landmark_boxes,
)

__all__ = [
    "l1_255",
    "psnr",
    "ssim",
    "lpips_metric",
    "frechet_distance",
    "fid_from_features",
    "inception_feature_extractor",
    "FaceEmbedder",
    "cosine_similarity",
    "expression_distance",
    "pose_distance",
    "rotation_distance",
    "fit_frames",
    "EvalClip",
    "EvaluationReport",
    "evaluate_reenactment",
    "landmark_boxes",
    "SELF_METRICS",
    "CROSS_METRICS",
]
