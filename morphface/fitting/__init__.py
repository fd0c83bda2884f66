"""Fitting a morphable model to images: landmark detectors, face crops, closed-form landmark fits,
analysis-by-synthesis refinement and the :class:`FitResult` they return.

Detector backends (dlib, face-alignment, mediapipe) are optional and imported only when a
detector is built.
"""

from .accuracy import aligned_vertex_error, rotation_error_degrees, similarity_align
from .crop import CropTransform, crop_box_from_landmarks, smooth_crop_track, square_box
from .dense import (
    DenseCorrespondence,
    estimate_dense_correspondence,
    fit_dense_landmarks,
    load_dense_correspondence,
)
from .detectors import (
    IBUG68_FLIP,
    MEDIAPIPE_TO_IBUG68,
    DlibDetector,
    FaceDetection,
    FANDetector,
    LandmarkDetector,
    MediaPipeDetector,
    available_detectors,
    fan_weight_files,
    make_detector,
    resolve_detector,
)
from .image import fit_image
from .landmark_fit import fit_landmarks
from .photometric import fit_photometric, render_fit
from .result import FitResult, default_focal
from .segmentation import MediaPipeSegmenter, PersonSegmenter, available_segmenters, make_segmenter
from .silhouette import Contour, occluding_contour, refine_with_person_mask
from .synthetic import sample_fit
from .video import fit_video

__all__ = [
    "FitResult",
    "default_focal",
    "fit_landmarks",
    "fit_dense_landmarks",
    "DenseCorrespondence",
    "load_dense_correspondence",
    "estimate_dense_correspondence",
    "fit_image",
    "fit_video",
    "fit_photometric",
    "render_fit",
    "PersonSegmenter",
    "Contour",
    "occluding_contour",
    "refine_with_person_mask",
    "MediaPipeSegmenter",
    "make_segmenter",
    "available_segmenters",
    "sample_fit",
    "aligned_vertex_error",
    "rotation_error_degrees",
    "similarity_align",
    "CropTransform",
    "crop_box_from_landmarks",
    "smooth_crop_track",
    "square_box",
    "FaceDetection",
    "LandmarkDetector",
    "DlibDetector",
    "FANDetector",
    "MediaPipeDetector",
    "make_detector",
    "resolve_detector",
    "available_detectors",
    "fan_weight_files",
    "MEDIAPIPE_TO_IBUG68",
    "IBUG68_FLIP",
]
