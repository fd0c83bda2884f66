"""Trainable face reenactment pipelines: HeadGAN and IFaceUV (3DMM-conditioned), KeypointGAN (kp3d) and MMFA (learned
3D keypoints) and X2Face (model-free).

Each pipeline is an ``nn.Module`` that implements the training protocol of :mod:`morphface.train`
(``nets``, ``generator_step``, ``discriminator_step``, ``visuals``, ``config_dict``; registered there as
``"headgan"``, ``"ifaceuv"``, ``"kp3d"``, ``"mmfa"`` and ``"x2face"``), a :meth:`~Reenactor.training_step` for
custom loops, and the inference
API (``reenact``, ``reconstruct``, ``edit``, ``frontalize``, ``encode``/``decode``). Batches follow the data
contract of :mod:`morphface.data` (images in [0, 1]; the networks work in [-1, 1] internally);
3D inputs missing from a batch are rendered from its parameter vectors. :func:`load_pipeline` restores a
trained pipeline from a ``morphface train`` checkpoint.
"""

from .base import MorphableReenactor, MorphableReenactorConfig, Prepared, Reenactor, ReenactorConfig, StepResult
from .headgan import HeadGAN, HeadGANPipelineConfig
from .ifaceuv import IFaceUV, IFaceUVGenerator, IFaceUVOutput, IFaceUVPipelineConfig
from .io import load_pipeline, resolve_weights, save_pipeline
from .kp3d import KeypointGAN, KeypointGANConfig
from .mmfa import MMFA, MMFAConfig
from .params import ParamLayout, crop_fit, motion_windows, mouth_boxes, rescale_fit, transfer_motion
from .x2face import X2Face, X2FaceConfig

__all__ = [
    "Reenactor",
    "ReenactorConfig",
    "MorphableReenactor",
    "MorphableReenactorConfig",
    "X2Face",
    "X2FaceConfig",
    "Prepared",
    "StepResult",
    "HeadGAN",
    "HeadGANPipelineConfig",
    "IFaceUV",
    "IFaceUVPipelineConfig",
    "IFaceUVGenerator",
    "IFaceUVOutput",
    "KeypointGAN",
    "KeypointGANConfig",
    "MMFA",
    "MMFAConfig",
    "load_pipeline",
    "save_pipeline",
    "resolve_weights",
    "ParamLayout",
    "transfer_motion",
    "motion_windows",
    "rescale_fit",
    "crop_fit",
    "mouth_boxes",
]
