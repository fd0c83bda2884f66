import math

import pytest
import torch

from morphface import load_default_model
from morphface.errors import NoFaceError
from morphface.fitting import FitResult, aligned_vertex_error, fit_landmarks, rotation_error_degrees
from morphface.fitting.video import fit_video, interpolate_missing, smooth_sequence


@pytest.fixture(scope="module")
def narrow():
    return load_default_model("narrow")


def _clip(model, T=60, seed=0):
    """A smooth synthetic head motion with one identity, seen at 256^2."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, T)[:, None]
    ida = torch.randn(1, model.n_id, generator=g).expand(T, -1)
    exp = torch.zeros(T, model.n_exp)
    jaw = model.exp_names.index("jawOpen")
    exp[:, jaw] = 0.5 + 0.4 * torch.sin(2 * math.pi * 2 * t[:, 0])
    angles = torch.cat([0.2 * torch.sin(2 * math.pi * t), 0.6 * torch.sin(2 * math.pi * t + 1), 0.05 * t], 1)
    trans = torch.tensor([[0.0, 0.0, -1933.0]]).expand(T, 3)
    gt = FitResult(id_coeffs=ida, exp_coeffs=exp, angles=angles, translation=trans,
                   focal=torch.full((T,), 4.53 * 256), image_size=(256, 256))
    verts = gt.vertices(model)
    clean, _ = gt.camera.project(verts[:, model.landmarks])
    return gt, verts, clean + torch.randn(clean.shape, generator=g)


def test_fit_video_shared_identity_and_smoothing(narrow):
    gt, verts, noisy = _clip(narrow)
    fit = fit_video(narrow, None, landmarks=noisy, image_size=(256, 256), chunk=16, progress=False)
    assert fit.batch_size == 60
    assert torch.equal(fit.id_coeffs, fit.id_coeffs[:1].expand_as(fit.id_coeffs))
    rough = fit_video(narrow, None, landmarks=noisy, image_size=(256, 256), smoothness=0, progress=False)
    err_smooth = rotation_error_degrees(fit.angles, gt.angles)
    err_rough = rotation_error_degrees(rough.angles, gt.angles)
    assert err_smooth.median() <= 1.5  # the single-image target of the fitting issue
    assert err_smooth.mean() < err_rough.mean()
    # one identity fitted jointly beats the average of independent per-frame identities
    single = fit_landmarks(narrow, noisy, (256, 256))
    id_gt = narrow(gt.id_coeffs[:1])
    assert aligned_vertex_error(narrow(fit.id_coeffs[:1]), id_gt) < aligned_vertex_error(
        narrow(single.id_coeffs.mean(0, keepdim=True)), id_gt)
    e = aligned_vertex_error(fit.vertices(narrow), verts)
    e_mean = aligned_vertex_error(narrow.mean.expand_as(verts), verts)
    assert (e / e_mean).median() < 0.6
    jaw = narrow.exp_names.index("jawOpen")
    assert torch.corrcoef(torch.stack([fit.exp_coeffs[:, jaw], gt.exp_coeffs[:, jaw]]))[0, 1] > 0.9


def test_smooth_sequence_keeps_lines_and_damps_noise():
    t = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None]
    line = 3 * t - 1
    torch.testing.assert_close(smooth_sequence(line, 10.0), line)  # second differences of a line are 0
    noisy = line + 0.1 * torch.randn(50, 1, dtype=torch.float64)
    assert (smooth_sequence(noisy, 10.0) - line).abs().mean() < (noisy - line).abs().mean()


def test_interpolate_missing():
    v = torch.tensor([[0.0], [0.0], [2.0], [0.0], [6.0], [0.0]])
    valid = torch.tensor([False, True, True, False, True, False])
    torch.testing.assert_close(interpolate_missing(v, valid), torch.tensor([[0.0], [0.0], [2.0], [4.0], [6.0], [6.0]]))


class _NoFaces:
    def detect(self, image):
        return []


def test_fit_video_without_faces_raises():
    frames = torch.rand(3, 3, 32, 32)
    with pytest.raises(NoFaceError, match="no face found in any of its 3 frames"):
        fit_video(load_default_model("narrow"), frames, detector=_NoFaces(), progress=False, name="blank.mp4")


@pytest.mark.slow
def test_fit_real_clip(narrow, testdata):
    """The real talking-head clip with dlib: fits every frame, small landmark residuals, smooth pose."""
    from morphface.fitting import DlibDetector

    fit = fit_video(narrow, testdata / "liveportrait_d20_talking.mp4", detector=DlibDetector(), progress=False)
    assert fit.batch_size == 175
    lm = fit.target_landmarks
    iod = (lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1)).norm(dim=-1)
    assert (fit.residuals / iod).mean() < 0.08
    yaw_speed = fit.euler_degrees[:, 1].diff().abs()
    assert yaw_speed.max() < 5.0  # degrees per frame at 25 fps: no jitter spikes


class _DenseFake:
    """MediaPipe-like: dense points right, its 68 points 8 px off; frame ``t`` is the constant image ``t / 255``."""

    name = "mediapipe"

    def __init__(self, dense, sparse):
        self.dense, self.sparse = dense, sparse

    def detect(self, image):
        from morphface.fitting.detectors import FaceDetection

        t = int(round(float(image[0, 0, 0]) * 255))
        d = self.dense[t]
        box = torch.cat([self.sparse[t].amin(0), self.sparse[t].amax(0)])
        return [FaceDetection(box, self.sparse[t] + torch.tensor([8.0, 0.0]), 1.0, dense=d, backend="fake")]


def test_fit_video_fits_dense_points_when_the_detector_gives_them(narrow):
    from morphface.fitting import load_dense_correspondence

    T = 12
    gt, _, sparse = _clip(narrow, T=T, seed=4)
    ids = load_dense_correspondence().vertex_ids(narrow)
    dense, _ = gt.camera.project(gt.vertices(narrow)[:, ids.clamp(min=0)])
    frames = (torch.arange(T, dtype=torch.float32) / 255).view(T, 1, 1, 1).expand(T, 3, 256, 256)
    fake = _DenseFake(dense, sparse)
    fit = fit_video(narrow, frames, detector=fake, chunk=5, progress=False, smoothness=0)
    assert fit.landmarks.shape == (T, 468, 2) and fit.target_landmarks.shape == (T, 468, 2)
    assert float(rotation_error_degrees(fit.angles, gt.angles).median()) < 1.5
    assert float(fit.residuals.max()) < 2.0
    # the 68 points are off: fitting them instead is worse
    sparse_fit = fit_video(narrow, frames, detector=fake, chunk=5, progress=False, dense=False, smoothness=0)
    assert sparse_fit.landmarks.shape == (T, 68, 2)
    assert float((sparse_fit.translation - gt.translation)[:, 0].abs().mean()) > float(
        (fit.translation - gt.translation)[:, 0].abs().mean())
    # given 468-point landmarks are fitted through the table too; dense=True with 68 is an error
    given = fit_video(narrow, None, landmarks=dense, image_size=(256, 256), progress=False)
    assert given.landmarks.shape == (T, 468, 2)
    with pytest.raises(ValueError, match="468 points"):
        fit_video(narrow, None, landmarks=sparse, image_size=(256, 256), progress=False, dense=True)
    fake.dense = [None] * T  # a 68-point detector asked for dense points
    with pytest.raises(ValueError, match="dense=True needs a detector"):
        fit_video(narrow, frames, detector=fake, progress=False, dense=True)
