"""The library's named exceptions.

Every message says what was expected and what was found, so that a user can fix the input
without reading the source. Shape and value problems with tensors passed to public functions
raise :class:`ValueError` (or a subclass of it) with the shapes in the message.
"""

from __future__ import annotations


class MorphfaceError(Exception):
    """Base class of all morphface errors."""


class ModelFormatError(MorphfaceError, ValueError):
    """A model file is missing, truncated, of an unknown format or has a wrong key/shape/dtype."""


class BackendUnavailableError(MorphfaceError, RuntimeError):
    """An optional backend (nvdiffrast, pytorch3d, dlib, ...) was asked for but cannot run here."""


class NoFaceError(MorphfaceError, RuntimeError):
    """No face was found in an image."""


class ImageReadError(MorphfaceError, OSError):
    """An image or video file could not be read (missing, truncated, not an image)."""


class AudioReadError(MorphfaceError, OSError):
    """An audio track could not be read (missing file, no audio stream, undecodable data)."""


class FitError(MorphfaceError, RuntimeError):
    """A fit failed (diverged, produced non-finite values, or had too few correspondences)."""


class WeightsNotFoundError(MorphfaceError, FileNotFoundError):
    """Pretrained weights are needed but not present locally (morphface never downloads silently)."""


class InputShapeError(MorphfaceError, ValueError):
    """A tensor given to a network or pipeline has the wrong shape, size or count (e.g. 16 AUs instead of 17,
    a 48-pixel image for a 64-pixel pipeline)."""


class ImageSizeError(InputShapeError):
    """An image or batch of images does not have the shape a network or pipeline was built for."""


class MissingInputError(MorphfaceError, ValueError):
    """An input a configuration requires was not given (e.g. audio windows when audio-driven deformation is
    on)."""


class CheckpointError(MorphfaceError, RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


class TrainingDivergedError(MorphfaceError, RuntimeError):
    """A training loss became NaN or infinite."""


class SettingsMismatchError(MorphfaceError, ValueError):
    """An output folder (a synth dataset, a preprocess cache) was made with other settings than the
    ones asked for now; adding to it would mix two incompatible sets."""


class TruncatedVideoWarning(UserWarning):
    """A video decoded to fewer frames than its container's header announces (a truncated file).

    ``decoded`` and ``expected`` hold the two frame counts.
    """

    def __init__(self, message: str, decoded: int = 0, expected: int = 0):
        super().__init__(message)
        self.decoded, self.expected = int(decoded), int(expected)


def check_finite(name: str, tensor) -> None:
    """Raise ``ValueError`` if ``tensor`` holds a NaN or an infinity."""
    import torch

    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} must be finite; found {bad} NaN/inf value(s) in a tensor of shape "
                         f"{tuple(tensor.shape)}")


class AnnotationFormatError(MorphfaceError, ValueError):
    """A ground-truth annotation file (.pts, AFLW2000-3D .mat) is missing fields or malformed."""
