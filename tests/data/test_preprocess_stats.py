"""Preprocessing on real-video problems: per-clip statistics (jitter, fit error), frames without a face
(trimmed at the ends, interpolated between detections, always reported), a small face in a portrait frame,
and the summary table."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from morphface.data import preprocess as pp
from morphface.data.cache import META_NAME, PARAMS_NAME, load_audio_features, read_clip_frames
from morphface.data.clip_stats import SUMMARY_NAME, face_runs, landmark_jitter, pose_jitter, rms, summary_table
from morphface.data.preprocess import PreprocessConfig, preprocess_tree
from morphface.data.synth import clip_folder
from morphface.fitting import CropTransform, FitResult, fit_video, rotation_error_degrees
from morphface.fitting.video import smooth_video_fit
from morphface.io import read_video, write_video

CONFIG = PreprocessConfig(size=96, detector="dlib")
needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None,
                                reason="the preprocessing tests detect landmarks with dlib (morphface[fit])")


# ------------------------------------------------------------------------------------ the metrics
def test_landmark_jitter_known_values():
    t = torch.arange(12, dtype=torch.float64)[:, None, None]
    start = torch.randn(1, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 50
    velocity = torch.tensor([3.0, -1.5], dtype=torch.float64)
    linear = start + velocity * t  # (12, 5, 2) constant-velocity motion
    assert landmark_jitter(linear) == pytest.approx(0.0, abs=1e-9)
    # +d, -d, +d ... along x on every landmark: each second difference has length 4 d
    d = 0.75
    wobble = linear.clone()
    wobble[..., 0] += d * (-1.0) ** t[..., 0]
    assert landmark_jitter(wobble) == pytest.approx(4 * d)
    # constant acceleration 1 px/frame^2 along x and y: |a| = sqrt(2) on every triplet
    assert landmark_jitter(linear + 0.5 * t ** 2) == pytest.approx(math.sqrt(2.0))
    # i.i.d. noise of std s per coordinate: sqrt(12) s (every second difference has variance 6 s^2 per axis)
    s = 0.5
    noise = s * torch.randn(4000, 5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert landmark_jitter(linear + noise[:12]) > 0.5
    assert landmark_jitter(noise) == pytest.approx(math.sqrt(12) * s, rel=0.03)


def test_jitter_skips_triplets_with_an_invalid_frame():
    t = torch.arange(10, dtype=torch.float32)[:, None, None]
    x = (2.0 * t).expand(10, 3, 2).clone()
    x[4] += 30.0  # a detection glitch ...
    valid = torch.ones(10, dtype=torch.bool)
    assert landmark_jitter(x, valid) > 10
    valid[4] = False  # ... on a frame marked as without a face: its three triplets are not counted
    assert landmark_jitter(x, valid) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(landmark_jitter(x[:2]))  # fewer than 3 frames: undefined, not 0
    with pytest.raises(ValueError, match=r"\(T, L, 2\)"):
        landmark_jitter(x[0])
    with pytest.raises(ValueError, match="valid must be"):
        landmark_jitter(x, valid[:5])


def test_pose_jitter_per_angle_and_wraparound():
    t = torch.arange(9, dtype=torch.float64)[:, None]
    angles = torch.cat([2.0 * t, 170.0 + 5.0 * t, -t], dim=1)  # yaw passes +180 -> -180 at constant speed
    angles = torch.remainder(angles + 180.0, 360.0) - 180.0
    assert torch.allclose(pose_jitter(angles), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    noisy = angles.clone()
    noisy[:, 1] += 1.5 * (-1.0) ** t[:, 0]  # +-1.5 degree alternation on yaw only
    per_angle = pose_jitter(noisy)
    assert torch.allclose(per_angle, torch.tensor([0.0, 6.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert rms(per_angle) == pytest.approx(6.0 / math.sqrt(3))


def test_face_runs():
    found = torch.tensor([0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0], dtype=torch.bool)
    assert face_runs(found) == (2, 3, [4, 5, 7])
    assert face_runs(torch.ones(4, dtype=torch.bool)) == (0, 0, [])
    with pytest.raises(ValueError, match="no detection"):
        face_runs(torch.zeros(3, dtype=torch.bool))


def test_summary_table_tolerates_clips_without_stats():
    text = summary_table([("a/v/c", {"num_frames": 5, "audio": False})], [("x.mp4", "NoFaceError: none")], size=64)
    row = text.splitlines()[2]
    assert row.startswith("| a/v/c | - | 5 |") and row.endswith("| no |")
    assert "64x64 crop pixels" in text and "- `x.mp4`: NoFaceError: none" in text


def test_smooth_video_fit_is_fit_videos_temporal_pass(synth128, models):
    """fit_video(smoothness=s) == smooth_video_fit(fit_video(smoothness=0), s): preprocessing gets the
    unsmoothed fit for its statistics without changing the cached one."""
    _, narrow = models
    gt = FitResult.load(clip_folder(synth128, 0, 0) / PARAMS_NAME)
    lms = gt.camera.project(gt.vertices(narrow)[:, narrow.landmarks])[0]
    lms = lms + 0.7 * torch.randn(lms.shape, generator=torch.Generator().manual_seed(0))
    size = gt.image_size
    smoothed = fit_video(narrow, None, landmarks=lms, image_size=size, smoothness=4.0, progress=False)
    raw = fit_video(narrow, None, landmarks=lms, image_size=size, smoothness=0.0, progress=False)
    again = smooth_video_fit(narrow, raw, lms, 4.0)
    for name in ("exp_coeffs", "angles", "translation", "landmarks", "residuals"):
        assert torch.allclose(getattr(again, name), getattr(smoothed, name), atol=1e-5), name
    assert not torch.allclose(raw.angles, again.angles)  # the smoothing did something ...
    assert landmark_jitter(again.landmarks) < landmark_jitter(raw.landmarks)  # ... and it lowered the jitter


# ------------------------------------------------------------------------- preprocessing videos


def _portrait(tiles, height=360, width=216, top=40, left=50):
    """Synthetic face tiles ``(T, 3, s, s)`` pasted small into portrait frames (upper-body framing:
    the face in the upper part, a 'torso' block below)."""
    T, _, s, _ = tiles.shape
    y = torch.linspace(0.25, 0.6, height)[None, :, None].expand(3, height, width)
    canvas = y[None].repeat(T, 1, 1, 1).clone()
    canvas[:, :, top + s + 10:, 30:width - 30] = torch.tensor([0.15, 0.2, 0.45])[:, None, None]  # shirt
    canvas[:, :, top:top + s, left:left + s] = tiles
    return canvas


@needs_dlib
def test_small_face_in_a_portrait_upper_body_frame(tmp_path, synth128):
    clip = clip_folder(synth128, 0, 0)
    tiles = read_clip_frames(clip).float() / 255
    top, left = 40, 50
    src = tmp_path / "videos" / "person" / "v0"
    src.mkdir(parents=True)
    write_video(src / "upper.mp4", _portrait(tiles, top=top, left=left), fps=25)
    summary = preprocess_tree(tmp_path / "videos", tmp_path / "cache", CONFIG, progress=False)
    (folder,) = summary.written
    meta = json.loads((folder / META_NAME).read_text())
    assert meta["original_size"] == [360, 216] and meta["num_frames"] == 6 and meta["source_frames"] == 6
    assert meta["no_face"]["leading"] == meta["no_face"]["trailing"] == 0 and meta["no_face"]["interior"] == []
    # the crop box is found around the pasted tile (its centre; its side, the union over the clip's head
    # motion, a little larger than the tile the synthetic clip framed with the same crop rule)
    box = torch.tensor(meta["crop_box"])
    side, centre = box[2] - box[0], (box[:2] + box[2:]) / 2
    assert (centre - torch.tensor([left + 64.0, top + 64.0])).abs().max() < 8 and 120 < side < 160
    crops = read_clip_frames(folder).float() / 255
    expected = CropTransform.from_box(box, 96).crop(_portrait(tiles, top=top, left=left))
    assert (crops - expected).abs().mean() < 0.03
    # the face fills the crop as the crop rule says (landmark box ~ 1 / 1.8 of the side), inside it
    lms = FitResult.load(folder / PARAMS_NAME).target_landmarks
    extent = (lms.amax(1) - lms.amin(1)).amax(-1)
    assert (lms > 0).all() and (lms < 96).all() and ((extent / 96 - 1 / 1.8).abs() < 0.12).all()
    fit = FitResult.load(folder / PARAMS_NAME)
    assert rotation_error_degrees(fit.angles, FitResult.load(clip / PARAMS_NAME).angles).median() < 8.0
    stats = meta["stats"]
    assert 0 < stats["fit_rmse_px"] < 3 and stats["jitter_triplets"] == 4
    assert all(stats[k] > 0 for k in ("landmark_jitter_detector_px", "landmark_jitter_fit_px", "pose_jitter_fit_deg"))


@needs_dlib
def test_frames_without_a_face_are_trimmed_or_interpolated_and_reported(tmp_path, synth128, capsys):
    """2 blank frames, 6 face frames with the 3rd blanked, 2 blank frames, with an audio track."""
    from scipy.io import wavfile

    from morphface.cli import main

    tiles = read_clip_frames(clip_folder(synth128, 0, 1)).float() / 255
    blank = torch.full((1, 3, 128, 128), 0.5)
    body = tiles.clone()
    body[2] = 0.5
    video = torch.cat([blank, blank, body, blank, blank])  # source frames 0..9; faces at 2, 3, 5, 6, 7
    src = tmp_path / "videos" / "person" / "v0"
    src.mkdir(parents=True)
    sr = 16000
    tone = (0.3 * torch.sin(torch.arange(sr) * (2 * math.pi * 220 / sr)) * torch.linspace(0, 1, sr)).numpy()
    wavfile.write(tmp_path / "voice.wav", sr, (tone * 32767).astype("int16"))
    write_video(src / "gaps.mp4", video, fps=25, audio_path=tmp_path / "voice.wav")
    cache = tmp_path / "cache"
    assert main(["preprocess", str(tmp_path / "videos"), "-o", str(cache), "--detector", "dlib", "--size", "96",
                 "--quiet"]) == 0
    out = capsys.readouterr()
    folder = cache / "person" / "v0" / "gaps"
    meta = json.loads((folder / META_NAME).read_text())
    assert meta["source_frames"] == 10 and meta["num_frames"] == 6 and meta["source_start"] == 2
    assert meta["detected_frames"] == 5
    nf = meta["no_face"]
    assert (nf["leading"], nf["trailing"], nf["interior"]) == (2, 2, [2]) and "trimmed" in nf["handling"]
    assert "interpolated" in nf["handling"]
    # every cached array has the kept frames, and cached frame i is source frame 2 + i
    assert FitResult.load(folder / PARAMS_NAME).batch_size == 6
    frames = read_clip_frames(folder).float() / 255
    assert frames.shape == (6, 3, 96, 96)
    crop = CropTransform.from_box(torch.tensor(meta["crop_box"]), 96)
    source = read_video(src / "gaps.mp4").frames
    err = (frames[:, None] - crop.crop(source)[None]).abs().mean(dim=(2, 3, 4))  # (cached, source)
    assert err.argmin(dim=1).tolist()[:2] == [2, 3] and err.argmin(dim=1).tolist()[3:] == [5, 6, 7]
    assert err[2, 4] < 0.02  # the blank interior frame is kept in place
    from morphface.data.preprocess import _audio_features

    full = _audio_features(src / "gaps.mp4", 25.0, 10)
    assert meta["audio"] is True and torch.allclose(load_audio_features(folder), full[2:8])
    stats = meta["stats"]
    assert stats["jitter_triplets"] == 1  # only (5, 6, 7) has three detected frames
    assert stats["fit_rmse_px"] > 0 and stats["landmark_jitter_detector_px"] is not None
    # reported: the error log, stderr, the summary file and the printed table
    log = (cache / pp.ERROR_LOG).read_text()
    assert "first 2 and the last 2 of its 10 frames: trimmed" in log and "source frames 4): kept" in log
    assert "trimmed" in out.err
    table = (cache / SUMMARY_NAME).read_text()
    row = next(line for line in table.splitlines() if line.startswith("| person/v0/gaps |"))
    assert "| 10 | 6 | 2 / 1 / 2 | trimmed 4, interpolated 1 |" in row and row.endswith("| yes |")
    assert table in out.out
