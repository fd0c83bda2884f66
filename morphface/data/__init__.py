"""Data for training and evaluating reenactment models: the clip cache, preprocessing of real
videos, a synthetic talking-head generator with ground truth, and the reenactment dataset.

* :mod:`.cache` -- the on-disk clip format shared by the writers and the dataset.
* :mod:`.preprocess` -- ``morphface preprocess``: detect, crop, fit, extract audio, per clip.
* :mod:`.synth` -- ``morphface synth``: textured renders of random identities with smooth motion.
* :mod:`.dataset` -- :class:`ReenactmentDataset` (self / cross reenactment pairs, NCC renders).
* :mod:`.fit_check` -- fitting accuracy against the synthetic ground truth.
"""

from .backgrounds import random_background
from .cache import ClipRecord, find_clips, is_complete, read_clip_frames, read_meta
from .dataset import ReenactmentDataset, ReenactmentDatasetConfig, split_identities
from .fit_check import ClipFitAccuracy, SynthFitAccuracy, fit_accuracy_on_synth
from .preprocess import (
    ClipSource,
    PreprocessConfig,
    PreprocessSummary,
    discover_clips,
    preprocess_clip,
    preprocess_tree,
)
from .seeding import stable_seed
from .synth import SynthClip, SynthConfig, sample_identity, synthesize_clip, synthesize_dataset
from .textures import procedural_face_texture
from .trajectories import blink_signal, expression_trajectory, head_trajectory, smooth_signal

__all__ = [
    "ClipRecord",
    "find_clips",
    "is_complete",
    "read_meta",
    "read_clip_frames",
    "ReenactmentDataset",
    "ReenactmentDatasetConfig",
    "split_identities",
    "PreprocessConfig",
    "PreprocessSummary",
    "ClipSource",
    "discover_clips",
    "preprocess_clip",
    "preprocess_tree",
    "SynthConfig",
    "SynthClip",
    "sample_identity",
    "synthesize_clip",
    "synthesize_dataset",
    "ClipFitAccuracy",
    "SynthFitAccuracy",
    "fit_accuracy_on_synth",
    "procedural_face_texture",
    "random_background",
    "smooth_signal",
    "blink_signal",
    "head_trajectory",
    "expression_trajectory",
    "stable_seed",
]
