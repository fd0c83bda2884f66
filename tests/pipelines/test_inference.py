"""Inference API of the pipelines on tiny untrained networks: shapes, ranges and internal consistency.

Untrained renders defeat landmark detectors, so most tests pass the known synthetic parameters
(``source_fit=`` / ``driving_params=``); one test runs the detection path on a real photo and clip.
"""

import math

import pytest
import torch

from morphface.pipelines import HeadGAN, IFaceUV, transfer_motion
from morphface.pipelines.base import to_unit
from morphface.pipelines.params import motion_windows

from .helpers import S, render_faces, sequence_fit
from .test_ifaceuv import _has_unwrap

TINY = dict(image_size=S, width=1 / 16, perceptual="off")


@pytest.fixture(scope="module")
def headgan():
    torch.manual_seed(0)
    return HeadGAN(**TINY)


@pytest.fixture(scope="module")
def clip(narrow_model):
    fit = sequence_fit(narrow_model, T=4, seed=3)
    return render_faces(narrow_model, fit), fit


def _in_unit_range(x):
    return float(x.min()) >= 0 and float(x.max()) <= 1 and bool(torch.isfinite(x).all())


def test_reenact_with_known_parameters(headgan, clip, narrow_model):
    frames, fit = clip
    other = sequence_fit(narrow_model, T=3, seed=9)
    out = headgan.reenact(frames[0], driving_params=other, source_fit=fit[0])
    assert out.shape == (3, 3, S, S) and _in_unit_range(out)
    # (T, D_p) parameter vectors work as well and give the same frames
    vec = headgan.layout.pack(other)
    assert torch.allclose(headgan.reenact(frames[0], driving_params=vec, source_fit=fit[0]), out, atol=1e-6)
    assert headgan.training  # inference restores the mode it found
    # the warp-only ablation is the flow network's warped source, not the rendered frame
    warped = headgan.reenact(frames[0], driving_params=other, source_fit=fit[0], output="warped")
    assert warped.shape == out.shape and _in_unit_range(warped) and not torch.allclose(warped, out)
    with pytest.raises(ValueError, match="output"):
        headgan.reenact(frames[0], driving_params=other, source_fit=fit[0], output="flow")
    with pytest.raises(ValueError, match="driving_frames"):
        headgan.reenact(frames[0], source_fit=fit[0])


def test_chunked_inference_matches_the_training_forward(headgan, clip):
    frames, fit = clip
    a = headgan.generate_sequence(frames[0], fit[0], fit, batch_size=1)
    b = headgan.generate_sequence(frames[0], fit[0], fit, batch_size=3)
    assert torch.allclose(a, b, atol=1e-5)
    # frame t from a training-style batch (NCC rendered from the motion window) is the same frame
    layout = headgan.layout
    params = layout.pack(fit)
    t = torch.tensor([2])
    batch = {"source": frames[:1], "source_params": params[:1], "driving_params": params[t],
             "driving_motion": motion_windows(layout.motion(params), 13, t)}
    headgan.eval()
    with torch.no_grad():
        single = to_unit(headgan.generate(batch)["fake"])
    headgan.train()
    assert torch.allclose(single[0], a[2], atol=1e-5)


def test_reconstruct_edit_frontalize(headgan, clip):
    frames, fit = clip
    rec = headgan.reconstruct(frames, params=fit)
    assert rec.shape == (4, 3, S, S) and _in_unit_range(rec)
    one = fit[1]
    edited = headgan.edit_fit(one, expression={"jawOpen": 0.5}, yaw=10.0, pitch=-5.0)
    j = headgan.model.exp_names.index("jawOpen")
    assert torch.isclose(edited.exp_coeffs[0, j], (one.exp_coeffs[0, j] + 0.5).clamp(max=1.0))
    delta = torch.tensor([math.radians(-5), math.radians(10), 0.0])  # pitch, yaw, roll
    assert torch.allclose(edited.angles[0], one.angles[0] + delta)
    absolute = headgan.edit_fit(one, expression=torch.full((53,), 2.0), roll=3.0, relative=False)
    assert torch.equal(absolute.exp_coeffs, torch.ones(1, 53))  # blendshapes clamp to [0, 1]
    assert torch.isclose(absolute.angles[0, 2], torch.tensor(math.radians(3.0)))
    assert torch.equal(absolute.angles[0, :2], one.angles[0, :2])
    with pytest.raises(ValueError, match="unknown expression"):
        headgan.edit_fit(one, expression={"smile": 1.0})
    img = headgan.edit(frames[1], expression={"jawOpen": 0.5}, yaw=10.0, fit=one)
    assert img.shape == (3, S, S) and _in_unit_range(img)
    front = headgan.frontalize(frames[1], fit=one)
    assert front.shape == (3, S, S) and _in_unit_range(front)


def test_encode_decode(headgan, clip):
    frames, fit = clip
    code = headgan.encode(frames[2], fit=fit[2])
    assert code.shape == (53 + 7,)
    expected = torch.cat([fit.exp_coeffs[2], fit.angles[2], fit.translation[2], fit.focal[2:3]])
    assert torch.allclose(code, expected)
    frame = headgan.decode(frames[0], code, reference_fit=fit[0])
    assert frame.shape == (3, S, S) and _in_unit_range(frame)
    # decoding is reenactment of the reference by the encoded frame
    same = headgan.reenact(frames[0], driving_params=fit[2], source_fit=fit[0])[0]
    assert torch.allclose(frame, same, atol=1e-5)
    codes = torch.stack([headgan.encode(frames[i], fit=fit[i]) for i in range(3)])
    assert headgan.decode(frames[0], codes, reference_fit=fit[0]).shape == (3, 3, S, S)


@pytest.mark.skipif(not _has_unwrap(), reason="morphface.uv.unwrap is not available yet")
def test_ifaceuv_inference(clip, narrow_model):
    torch.manual_seed(0)
    p = IFaceUV(**TINY, uv_size=32)
    frames, fit = clip
    out = p.reenact(frames[0], driving_params=fit, source_fit=fit[0], batch_size=2)
    assert out.shape == (4, 3, S, S) and _in_unit_range(out)
    code = p.encode(frames[1], fit=fit[1])
    assert p.decode(frames[0], code, reference_fit=fit[0]).shape == (3, S, S)
    assert p.frontalize(frames[1], fit=fit[1]).shape == (3, S, S)


@pytest.mark.slow
def test_real_photo_and_clip_are_detected_cropped_and_fitted(headgan, testdata):
    from morphface.io import read_image, read_video

    photo = read_image(testdata / "astronaut_eileen_collins.png")
    video = read_video(testdata / "liveportrait_d20_talking.mp4", max_frames=3)
    src = headgan.prepare_source(photo)
    assert src.images.shape == (3, S, S) and src.crop is not None and src.fit.image_size == (S, S)
    # the fitted landmarks lie on the face in the crop: within a few crop pixels of the detections
    assert float(src.fit.residuals[0]) < 2.0
    drv = headgan.prepare_driving(video.frames)
    assert drv.images.shape == (3, 3, S, S) and drv.fit.batch_size == 3
    assert torch.equal(drv.fit.id_coeffs[0], drv.fit.id_coeffs[2])  # one identity per clip
    out = headgan.reenact(photo, video.frames)
    assert out.shape == (3, 3, S, S) and _in_unit_range(out)
    expected = headgan.generate_sequence(src.images, src.fit, transfer_motion(src.fit, drv.fit))
    assert torch.allclose(out, expected, atol=1e-4)
