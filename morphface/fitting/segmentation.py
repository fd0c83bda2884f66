"""Person segmentation: which pixels show the subject (face, hair, body) and which the background.

Frontalisation samples the photo's colours onto the fitted face; where the fit reaches past the real
outline (the nose tip of a profile, the far cheek), those samples are background. A person mask
tells them apart without any assumption about colours. One backend:

- ``"mediapipe"``: MediaPipe's selfie segmentation (general model, 256x256 input), shipped in the
  ``mediapipe==0.10.14`` wheel (the ``mediapipe`` extra), ~10 ms per 1000x1000 photo on one CPU core.
  Its probability is soft over a few pixels at the outline, and the 0.9 level follows a face's
  profile (nose, lips) closely.

:func:`make_segmenter` builds one by name (``"auto"``: the first that runs here).
"""

from __future__ import annotations

import importlib.util
import warnings
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendUnavailableError
from .detectors import import_mediapipe_solution, quiet_native_stderr

__all__ = ["PersonSegmenter", "MediaPipeSegmenter", "make_segmenter", "available_segmenters"]


class PersonSegmenter(ABC):
    """Interface: ``segment(image)`` -> per-pixel probability that the pixel shows the person."""

    name: str = "base"

    @abstractmethod
    def _segment_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` float probabilities in ``[0, 1]``."""

    def segment(self, image: Tensor) -> Tensor:
        """Person probability of each pixel.

        Args:
            image: ``(3, H, W)`` or ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (any device).

        Returns:
            ``(1, H, W)`` or ``(B, 1, H, W)`` float probabilities in ``[0, 1]``, on the image's device
            and in its dtype.
        """
        if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a (3, H, W) or (B, 3, H, W) RGB tensor in [0, 1]; got {shape}")
        batch = image if image.dim() == 4 else image[None]
        rgb = (batch.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        probs = [torch.from_numpy(np.array(self._segment_rgb(np.ascontiguousarray(x)), dtype=np.float32))
                 for x in rgb]
        out = torch.stack(probs)[:, None].clamp(0, 1).to(device=image.device, dtype=image.dtype)
        return out if image.dim() == 4 else out[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources."""

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MediaPipeSegmenter(PersonSegmenter):
    """MediaPipe selfie segmentation (module doc).

    Args:
        landscape: use the 144x256 landscape model instead of the 256x256 general one.

    Raises:
        BackendUnavailableError: mediapipe (with its selfie-segmentation solution) is not importable.
    """

    name = "mediapipe"

    def __init__(self, landscape: bool = False):
        selfie_segmentation = import_mediapipe_solution("selfie_segmentation", "the MediaPipe segmenter")
        self._seg = selfie_segmentation.SelfieSegmentation(model_selection=1 if landscape else 0)
        self._warm = False

    def _segment_rgb(self, rgb: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
            with quiet_native_stderr(not self._warm):
                mask = self._seg.process(rgb).segmentation_mask
            self._warm = True
            return mask

    def close(self) -> None:
        """Release MediaPipe's graph."""
        seg, self._seg = getattr(self, "_seg", None), None
        if seg is not None:
            seg.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


_BACKENDS = {"mediapipe": MediaPipeSegmenter}


def available_segmenters() -> dict[str, str | None]:
    """``{name: None if usable else the reason}`` (cheap: packages importable; nothing is loaded)."""
    return {"mediapipe": None if importlib.util.find_spec("mediapipe") is not None else "mediapipe is not installed"}


def make_segmenter(backend: str = "auto", **kwargs) -> PersonSegmenter:
    """Build a person segmenter by name (``"mediapipe"``, or ``"auto"``: the first that builds).

    Raises:
        BackendUnavailableError: the backend (for ``"auto"``: every backend) cannot run here.
        ValueError: an unknown name.
    """
    if backend == "auto":
        failures = []
        for name, reason in available_segmenters().items():
            if reason is not None:
                failures.append(f"{name}: {reason}")
                continue
            try:
                return _BACKENDS[name](**kwargs)
            except BackendUnavailableError as e:
                failures.append(f"{name}: {e}")
        raise BackendUnavailableError("no person segmenter can run here; tried:\n  " + "\n  ".join(failures))
    if backend not in _BACKENDS:
        raise ValueError(f"unknown segmenter backend {backend!r}; choose from {sorted(_BACKENDS)} or 'auto'")
    return _BACKENDS[backend](**kwargs)
