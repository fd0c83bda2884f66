"""CSIM: identity similarity as the cosine of dlib face-recognition embeddings.

HeadGAN and most reenactment papers measure identity preservation as the cosine similarity of
embeddings from a face-recognition network (ArcFace in the papers). ArcFace weights are not available
offline, so morphface uses dlib's ResNet face descriptor (128-D, 99.38% on LFW), which ships in the
``face-recognition-models`` package: the face is aligned by dlib's 5-point shape predictor inside a
face rectangle and embedded by ``face_recognition_model_v1``. Values are therefore comparable across
morphface runs, not with numbers computed with ArcFace.

The rectangle comes from dlib's HOG detector, or from a given box (e.g. the projected 3DMM landmarks
of a generated frame, whose face position is known, so that a poor generator cannot make the metric
undefined by defeating the detector).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendUnavailableError, WeightsNotFoundError

__all__ = ["FaceEmbedder", "cosine_similarity"]


def _models_dir() -> Path | None:
    # find_spec does not run the package's __init__ (which imports the deprecated pkg_resources).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of ``(B, D)`` embeddings, ``(B,)`` float64 (NaN where a row is NaN)."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


class FaceEmbedder:
    """dlib face descriptors (module docstring).

    Args:
        upsample: HOG detector upsampling when no box is given (1 finds faces down to ~40 pixels).
        models_dir: folder with ``shape_predictor_5_face_landmarks.dat`` and
            ``dlib_face_recognition_resnet_model_v1.dat`` (default: the ``face_recognition_models`` package).

    Raises:
        BackendUnavailableError: dlib is not installed.
        WeightsNotFoundError: a model file is missing.
    """

    def __init__(self, upsample: int = 1, models_dir: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as e:
            raise BackendUnavailableError(f"CSIM needs dlib (pip install dlib-bin): {e}") from e
        folder = Path(models_dir) if models_dir is not None else _models_dir()
        files = {"shape": "shape_predictor_5_face_landmarks.dat",
                 "net": "dlib_face_recognition_resnet_model_v1.dat"}
        if folder is None or not all((folder / f).is_file() for f in files.values()):
            raise WeightsNotFoundError(f"CSIM needs {list(files.values())} (pip install "
                                       f"face-recognition-models); looked in {folder}")
        self._dlib = dlib
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(folder / files["shape"]))
        self._net = dlib.face_recognition_model_v1(str(folder / files["net"]))

    def embed(self, image: Tensor, box: Tensor | None = None) -> Tensor | None:
        """The 128-D descriptor of the face in ``image``.

        Args:
            image: ``(3, H, W)`` RGB in [0, 1].
            box: ``(4,)`` ``x0, y0, x1, y1`` pixels of the face; ``None``: the HOG detector's largest face.

        Returns:
            ``(128,)`` float64, or ``None`` when no box is given and no face is detected.
        """
        from ..io import image_to_uint8

        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W) RGB in [0, 1]; got {tuple(image.shape)}")
        rgb = np.ascontiguousarray(image_to_uint8(image.detach().cpu()))
        dlib = self._dlib
        if box is None:
            rects = self._detector(rgb, self.upsample)
            if len(rects) == 0:
                return None
            rect = max(rects, key=lambda r: r.width() * r.height())
        else:
            x0, y0, x1, y1 = (float(v) for v in box)
            # dlib rectangles hold inclusive pixel indices
            rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
        shape = self._shape(rgb, rect)
        return torch.tensor(np.asarray(self._net.compute_face_descriptor(rgb, shape)), dtype=torch.float64)

    def embed_batch(self, images: Tensor, boxes: Tensor | None = None) -> Tensor:
        """``(B, 128)`` descriptors of ``(B, 3, H, W)`` images (rows of NaN where no face was found)."""
        out = torch.full((images.shape[0], 128), float("nan"), dtype=torch.float64)
        for i in range(images.shape[0]):
            e = self.embed(images[i], None if boxes is None else boxes[i])
            if e is not None:
                out[i] = e
        return out
