"""Ground-truth readers (.pts, AFLW2000-3D .mat) on files the test writes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.io import savemat

from morphface.data.annotations import read_aflw2000_mat, read_pts
from morphface.errors import AnnotationFormatError


def test_read_pts_round_trip_and_pixel_convention(tmp_path):
    pts = np.random.default_rng(0).uniform(10, 200, size=(68, 2))
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    ann = read_pts(tmp_path / "a.pts")
    assert ann.angles is None and ann.landmarks.shape == (68, 2)
    # 300-W coordinates are 1-based pixel centres: (1, 1) is the centre of the top-left pixel, 0.5 here
    np.testing.assert_allclose(ann.landmarks.numpy(), pts - 0.5, atol=1e-3)
    (tmp_path / "short.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n3 4\n}\n")
    with pytest.raises(AnnotationFormatError, match="short.pts"):
        read_pts(tmp_path / "short.pts")
    with pytest.raises(AnnotationFormatError, match="missing.pts"):
        read_pts(tmp_path / "missing.pts")


def test_read_aflw2000_mat_pose_and_landmarks(tmp_path):
    pt3d = np.random.default_rng(1).uniform(0, 450, size=(3, 68))
    pose = np.array([[0.1, -0.5, 0.2, 100.0, 120.0, 0.0, 0.0012]])
    savemat(tmp_path / "image00002.mat", {"Pose_Para": pose, "pt3d_68": pt3d})
    ann = read_aflw2000_mat(tmp_path / "image00002.mat")
    np.testing.assert_allclose(ann.angles.numpy(), [0.1, -0.5, 0.2], atol=1e-6)
    np.testing.assert_allclose(ann.landmarks.numpy(), pt3d[:2].T, atol=1e-4)
    flipped = read_aflw2000_mat(tmp_path / "image00002.mat", signs=(-1, 1, -1))
    np.testing.assert_allclose(flipped.angles.numpy(), [-0.1, -0.5, -0.2], atol=1e-6)
    savemat(tmp_path / "bad.mat", {"Pose_Para": pose[:, :3], "pt3d_68": pt3d})
    with pytest.raises(AnnotationFormatError, match="Pose_Para"):
        read_aflw2000_mat(tmp_path / "bad.mat")
    savemat(tmp_path / "nopts.mat", {"Pose_Para": pose})
    with pytest.raises(AnnotationFormatError, match="pt3d_68"):
        read_aflw2000_mat(tmp_path / "nopts.mat")
    savemat(tmp_path / "deg.mat", {"Pose_Para": np.array([[30.0, 0, 0, 0, 0, 0, 1]]), "pt3d_68": pt3d})
    with pytest.raises(AnnotationFormatError, match="radians"):
        read_aflw2000_mat(tmp_path / "deg.mat")


def test_nme_and_slope_metrics():
    from morphface.fitting.accuracy import angle_slope_mae, landmark_nme

    target = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [0.0, 25.0], [100.0, 25.0]]])
    pred = target + torch.tensor([3.0, 4.0])  # every point 5 px off; box sqrt(100 * 25) = 50
    assert math.isclose(float(landmark_nme(pred, target)[0]), 0.1, rel_tol=1e-6)
    true = torch.tensor([[-40.0, -70, 0], [0, 0, 0], [40, 70, 0]])
    slope, mae = angle_slope_mae(true, true * torch.tensor([0.5, 1.0, 1.0]) + torch.tensor([0.0, 2.0, 0.0]))
    assert torch.allclose(slope[:2], torch.tensor([0.5, 1.0])) and bool(slope[2].isnan())
    assert torch.allclose(mae, torch.tensor([40.0 / 3, 2.0, 0.0]))
    with pytest.raises(ValueError, match="N >= 2"):
        angle_slope_mae(true[:1], true[:1])
