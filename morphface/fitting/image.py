"""Fit a photo end to end: detect the face(s), fit landmarks, optionally refine photometrically."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import NoFaceError
from ..morphable import MorphableModel
from ._images import check_image_values
from .dense import MEDIAPIPE_DENSE_POINTS, dense_correspondence_for, fit_dense_landmarks
from .detectors import resolve_detector
from .landmark_fit import fit_landmarks
from .photometric import fit_photometric
from .result import FitResult

__all__ = ["fit_image", "dense_points"]

#: ``fit_photometric``'s ``w_rotation`` after a ``pose="regressed"`` landmark fit.
REGRESSED_ROTATION_WEIGHT = 1.0


def dense_points(faces, depth: bool = False) -> Tensor | None:
    """``(F, 468, 2)`` MediaPipe points (irises dropped) of detected faces, or ``None`` unless every
    face has them; ``(F, 468, 3)`` with MediaPipe's relative depth (pixels, larger = farther) when
    ``depth`` and every face has one."""
    if not faces or any(f.dense is None or f.dense.shape[0] < MEDIAPIPE_DENSE_POINTS for f in faces):
        return None
    cols = 3 if depth and all(f.dense.shape[1] >= 3 for f in faces) else 2
    return torch.stack([torch.as_tensor(f.dense[:MEDIAPIPE_DENSE_POINTS, :cols], dtype=torch.float32)
                        for f in faces])


def fit_image(
    model: MorphableModel,
    image: Tensor | str | Path,
    detector=None,
    photometric_steps: int = 0,
    all_faces: bool = False,
    name: str | None = None,
    dense: bool | None = None,
    pose: str = "joint",
    segmenter=None,
    **fit_kwargs,
) -> FitResult:
    """Detect and fit the face(s) in one image.

    Args:
        model: the morphable model (``load_default_model("narrow")`` is a good default).
        image: ``(3, H, W)`` float RGB in [0, 1], or a path read with :func:`morphface.io.read_image`.
        detector: a landmark detector, or a backend name for :func:`~morphface.fitting.make_detector`
            (``"auto"``, ``"dlib"``, ``"fan"``, ``"mediapipe"``); default ``"auto"``.
        photometric_steps: analysis-by-synthesis steps after the landmark fit (0: landmarks only).
        all_faces: fit every detected face (a batch, largest first) instead of only the largest.
        name: file name for error messages (defaults to the path).
        dense: fit MediaPipe's 468 points through the model's correspondence table
            (:func:`~morphface.fitting.fit_dense_landmarks`: lips, eyelids and cheeks followed more
            closely, large turns pinned down better) instead of the 68. ``None``: when the detector
            gives them and the model has a table (the embedded model does).
        pose: how the dense fit finds the rotation (:func:`~morphface.fitting.fit_dense_landmarks`):
            ``"joint"`` (default), ``"rigid"`` or ``"regressed"`` (the learned calibration of
            MediaPipe's pose bias, :mod:`~morphface.fitting.pose_regressor`). 68-point fits: ``"joint"`` only.
        segmenter: a :class:`~morphface.fitting.PersonSegmenter` or a backend name: with
            ``photometric_steps``, its person mask turns on the photometric fit's silhouette term.
        **fit_kwargs: passed to :func:`fit_landmarks`.

    Returns:
        A :class:`FitResult` with one entry per fitted face; its ``landmarks`` and ``residuals``
        refer to the points fitted (68 or 468).

    Raises:
        NoFaceError: no face was found.
        ImageReadError: the path is not a readable image.
        ValueError: ``pose`` other than ``"joint"`` for a 68-point fit; ``dense=True`` without dense
            points or without a table for the model; an
            image that is not float RGB in [0, 1] (e.g. [0, 255]) or holds NaN/inf.
    """
    if isinstance(image, (str, Path)):
        from ..io import read_image

        name = name or str(image)
        image = read_image(image)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be (3, H, W) RGB in [0, 1]; got {shape}")
    check_image_values(image, name or "image")
    detector = resolve_detector(detector)
    faces = detector.detect(image)
    if not faces:
        raise NoFaceError(f"{name or 'image'}: no face found")
    faces = sorted(faces, key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    if not all_faces:
        faces = faces[:1]
    H, W = image.shape[-2:]
    points = dense_points(faces, depth=True) if dense is not False else None
    table = None if points is None else dense_correspondence_for(model, points.shape[1])
    if dense and points is None:
        who = getattr(detector, "name", type(detector).__name__)
        raise ValueError(f"dense=True needs a detector that gives dense points (MediaPipe); {who} does not")
    if dense and table is None:
        raise ValueError(f"dense=True but there is no dense-correspondence table for model {model.name!r}")
    if table is not None:
        fit = fit_dense_landmarks(model, points, (H, W), correspondence=table, pose=pose, **fit_kwargs)
    else:
        if pose != "joint":
            raise ValueError(f"pose={pose!r} needs MediaPipe's dense points; a 68-point fit is pose='joint' only")
        lms = torch.stack([torch.as_tensor(f.landmarks, dtype=torch.float32)[:, :2] for f in faces])
        fit = fit_landmarks(model, lms, (H, W), **fit_kwargs)
    if photometric_steps > 0:
        batch = image[None].expand(len(faces), -1, -1, -1)
        person = None
        if segmenter is not None:
            from .segmentation import make_segmenter

            seg = make_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
            person = seg.segment(batch)
        # a regressed rotation is what the landmarks cannot give: keep it (bench/photometric_pose.py)
        fit = fit_photometric(model, batch, init=fit, steps=photometric_steps, person_mask=person,
                              w_rotation=REGRESSED_ROTATION_WEIGHT if pose == "regressed" else 0.0)
    return fit
