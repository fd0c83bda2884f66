"""Issue 21: head pose from the REAL detector run on renders of known pose.

Textured synthetic people (``morphface.data.render_posed_faces``, the dataset generator's people)
are rendered at known pitch and yaw, MediaPipe runs on the renders, ``fit_image``'s dense fit recovers
the pose. The landmarks are the detector's, not projected model points, so a detector/model mismatch
(correspondence table, pitch bias of the 2D points) shows. ``pose="regressed"`` is the learned
calibration of that bias (``morphface.fitting.pose_regressor``, trained on people 1000-1799).
Development poses were tuned on people 0-3 and ``bench/fit_real.py``'s sets; this test uses person 7
(not in either).
"""

from __future__ import annotations

import math

import pytest
import torch

from morphface import load_default_model
from morphface.fitting.accuracy import angle_slope_mae
from morphface.fitting.pose_regressor import default_pose_regressor_path

pytest.importorskip("mediapipe", reason="the detector-on-render test needs mediapipe")

PITCHES = (-40.0, -20.0, 0.0, 20.0, 40.0)


@pytest.fixture(scope="module")
def renders():
    from morphface.data.synth import render_posed_faces

    full, narrow = load_default_model("full"), load_default_model("narrow")
    grid = torch.tensor([[p, y, 0.0] for p in PITCHES for y in (-70.0, -35.0, 0.0, 35.0, 70.0)])
    images, gt = render_posed_faces(full, narrow, grid * (math.pi / 180), identity=7, size=192, supersample=1)
    return images, gt, narrow


@pytest.fixture(scope="module")
def fitted(renders):
    from morphface.fitting import make_detector
    from morphface.fitting.dense import fit_dense_landmarks
    from morphface.fitting.image import dense_points

    images, gt, narrow = renders
    det = make_detector("mediapipe")
    found, pts = [], []
    for i in range(images.shape[0]):
        faces = det.detect(images[i])
        if faces:
            found.append(i)
            pts.append(dense_points(faces[:1], depth=True)[0])
    found = torch.tensor(found)
    pts = torch.stack(pts)
    size = tuple(images.shape[-2:])
    fits = {"joint+depth": fit_dense_landmarks(narrow, pts, size),
            "rigid+depth": fit_dense_landmarks(narrow, pts, size, pose="rigid"),
            "joint 2D": fit_dense_landmarks(narrow, pts[..., :2], size)}
    if default_pose_regressor_path().is_file():
        fits["regressed"] = fit_dense_landmarks(narrow, pts, size, pose="regressed")

    true = gt.euler_degrees[found]
    return true, {k: f.euler_degrees for k, f in fits.items()}


def test_detector_finds_most_renders(fitted):
    true, _ = fitted
    assert true.shape[0] >= 21  # of 25; MediaPipe may miss a 70-deg profile


def test_depth_and_rigid_rotation_undo_pitch_compression(fitted):
    true, fits = fitted
    inner = true[:, 1].abs() <= 40  # yaw within +-35 deg
    slope, mae = {}, {}
    for k, f in fits.items():
        slope[k], mae[k] = angle_slope_mae(true[inner], f[inner])
    # the 2D-only fit (the fit before issue 21) compresses pitch (slope ~0.65 here)
    assert float(slope["joint 2D"][0]) < 0.75
    # MediaPipe's depth column (fit_image's default) undoes part of it ...
    assert float(slope["joint+depth"][0]) > float(slope["joint 2D"][0]) + 0.1
    assert float(mae["joint+depth"][0]) < 0.8 * float(mae["joint 2D"][0])
    # ... and the rigid rotation nearly all of it
    assert 0.88 <= float(slope["rigid+depth"][0]) <= 1.1
    assert float(mae["rigid+depth"][0]) < 0.6 * float(mae["joint 2D"][0])
    for k in fits:  # yaw stays close (it drifts up a little with the depth column)
        assert 0.9 <= float(slope[k][1]) <= 1.2 and float(mae[k][1]) < 5.0, (k, slope[k], mae[k])


def test_regressed_pose_undoes_the_compression_over_the_full_range(fitted):
    """The learned calibration (trained on other people) meets the issue's slope target over the whole
    grid and halves the plain fit's errors."""
    true, fits = fitted
    if "regressed" not in fits:
        pytest.skip("no shipped pose-regressor weights")
    slope, mae = angle_slope_mae(true, fits["regressed"])
    slope0, mae0 = angle_slope_mae(true, fits["joint+depth"])
    assert 0.95 <= float(slope[0]) <= 1.05 and 0.95 <= float(slope[1]) <= 1.05, slope
    assert float(mae[0]) < 0.5 * float(mae0[0]) and float(mae[1]) < 0.5 * float(mae0[1]), (mae, mae0)


@pytest.mark.xfail(strict=True, reason="issue 21 target not reached: with the learned calibration the slopes "
                   "are in range but the MAE is 4.4 deg (pitch) and 2.8 (yaw) on this grid, most of it at yaw 70 "
                   "where pitch and roll are hard to tell apart (bench/fit_real.py)")
def test_full_range_pose_within_issue_21_target(fitted):
    true, fits = fitted
    slope, mae = angle_slope_mae(true, fits.get("regressed", fits["joint+depth"]))
    assert 0.95 <= float(slope[0]) <= 1.05 and float(mae[0]) <= 2.0
    assert 0.95 <= float(slope[1]) <= 1.05 and float(mae[1]) <= 2.0
