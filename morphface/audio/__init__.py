"""Audio: decoding, MFCC features aligned to video frames, and the audio-to-motion LSTM.

Needs only torch / numpy and the ffmpeg binary bundled by ``imageio-ffmpeg`` (for decoding).

* :mod:`.io` -- :func:`load_audio`, :func:`video_frame_rate`, :func:`count_video_frames`.
* :mod:`.features` -- MFCC (HTK mel scale), deltas, log energy in pure torch.
* :mod:`.alignment` -- :func:`frame_aligned_features`: ``2k`` audio parts per video frame (HeadGAN).
* :mod:`.motion`, :mod:`.motion_losses`, :mod:`.motion_train` -- IFaceUV's audio-to-motion LSTM.
"""

from .alignment import (
    DEFAULT_FLAT_SIZE,
    DEFAULT_K,
    align_to_frames,
    frame_aligned_feature_size,
    frame_aligned_features,
    video_audio_features,
)
from .features import (
    DEFAULT_FEATURE_SIZE,
    MFCCConfig,
    audio_features,
    deltas,
    feature_size,
    log_energy,
    log_mel_spectrogram,
    mel_filterbank,
    mfcc,
    power_spectrogram,
)
from .io import count_video_frames, load_audio, video_frame_rate
from .motion import (
    AudioToMotion,
    AudioToMotionConfig,
    MotionPrediction,
    load_audio_to_motion,
    save_audio_to_motion,
)
from .motion_losses import MotionLossWeights, audio_to_motion_losses, continuity_loss
from .motion_train import TrainHistory, collate_motion, train_audio_to_motion

__all__ = [
    "load_audio",
    "video_frame_rate",
    "count_video_frames",
    "MFCCConfig",
    "DEFAULT_FEATURE_SIZE",
    "mfcc",
    "deltas",
    "log_energy",
    "log_mel_spectrogram",
    "power_spectrogram",
    "mel_filterbank",
    "audio_features",
    "feature_size",
    "DEFAULT_K",
    "DEFAULT_FLAT_SIZE",
    "align_to_frames",
    "frame_aligned_features",
    "frame_aligned_feature_size",
    "video_audio_features",
    "AudioToMotion",
    "AudioToMotionConfig",
    "MotionPrediction",
    "save_audio_to_motion",
    "load_audio_to_motion",
    "MotionLossWeights",
    "audio_to_motion_losses",
    "continuity_loss",
    "TrainHistory",
    "collate_motion",
    "train_audio_to_motion",
]
