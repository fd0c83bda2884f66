"""The learned MediaPipe pose calibration: its geometry pieces against closed forms, and a small training run."""

from __future__ import annotations

import math

import pytest
import torch

from morphface.camera import euler_to_matrix, matrix_to_euler
from morphface.errors import ModelFormatError
from morphface.fitting.pose_regressor import (
    PoseRegressor,
    PoseRegressorConfig,
    default_pose_regressor_path,
    load_pose_regressor,
    pose_features,
    ray_rotation,
    regress_rotation,
    rotation_from_6d,
    save_pose_regressor,
    weighted_procrustes,
)


def _random_rotations(n: int, seed: int = 0, max_deg: float = 60.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return euler_to_matrix((torch.rand(n, 3, generator=g) * 2 - 1) * math.radians(max_deg))


def test_rotation_from_6d_is_a_rotation_and_keeps_its_first_column():
    x = torch.randn(16, 6, dtype=torch.float64)
    R = rotation_from_6d(x)
    eye = torch.eye(3, dtype=torch.float64).expand(16, 3, 3)
    assert torch.allclose(R.transpose(1, 2) @ R, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=torch.float64))
    assert torch.allclose(R[..., 0], x[:, :3] / x[:, :3].norm(dim=1, keepdim=True))
    R0 = _random_rotations(4).double()
    assert torch.allclose(rotation_from_6d(torch.cat([R0[..., 0], R0[..., 1]], dim=1)), R0, atol=1e-12)


def test_weighted_procrustes_recovers_a_similarity_exactly():
    g = torch.Generator().manual_seed(1)
    template = torch.randn(50, 3, generator=g, dtype=torch.float64)
    weights = torch.rand(50, generator=g, dtype=torch.float64)
    R = _random_rotations(5, seed=2, max_deg=170).double()
    s = torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0], dtype=torch.float64)
    pts = s[:, None, None] * template @ R.transpose(1, 2) + torch.randn(5, 1, 3, generator=g, dtype=torch.float64)
    R_hat, s_hat = weighted_procrustes(pts, template, weights)
    assert torch.allclose(R_hat, R, atol=1e-10) and torch.allclose(s_hat, s, atol=1e-10)


def test_ray_rotation_takes_the_optical_axis_to_the_ray():
    size, f = (200, 300), 400.0
    pts = torch.tensor([[[150.0, 100.0]], [[250.0, 40.0]], [[10.0, 190.0]]])
    R = ray_rotation(pts, size, focal=f)
    ray = torch.stack([(pts[:, 0, 0] - 150) / f, -(pts[:, 0, 1] - 100) / f, -torch.ones(3)], dim=1)
    ray = ray / ray.norm(dim=1, keepdim=True)
    assert torch.allclose(R @ torch.tensor([0.0, 0.0, -1.0]), ray, atol=1e-6)
    assert torch.allclose(R[0], torch.eye(3), atol=1e-6)  # a centred face: no correction
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3).expand(3, 3, 3), atol=1e-6)


def test_pose_features_ignore_position_and_size():
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(2, 468, 3, generator=g) * 30 + 100
    moved = pts * 2.5 + torch.tensor([40.0, -7.0, 3.0])
    assert torch.allclose(pose_features(pts), pose_features(moved), atol=1e-5)
    assert pose_features(pts[..., :2]).shape == (2, 468 * 3)


def _canonical_views(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MediaPipe's canonical face seen orthographically at random rotations, as (pixels, depth) points."""
    net = PoseRegressor(PoseRegressorConfig(hidden=8))
    R = _random_rotations(n, seed=seed, max_deg=50)
    cam = net.canonical @ R.transpose(1, 2) * 60.0  # camera frame, y up, z toward the viewer
    pts = torch.stack([cam[..., 0] + 128, -cam[..., 1] + 128, -cam[..., 2]], dim=-1)  # pixels, depth farther
    return pts, R


def test_a_perfect_detector_needs_no_correction_and_training_keeps_it():
    """On exact canonical points the Procrustes start is already right; a few training steps must not
    spoil it (the residual network starts at the identity)."""
    from morphface.pipelines.pose_regressor import train_pose_regressor

    pts, R = _canonical_views(64, seed=4)
    angles = matrix_to_euler(R)
    data = {"points": pts, "angles": angles, "size": torch.full((64,), 256), "person": torch.zeros(64)}
    net = train_pose_regressor(data, PoseRegressorConfig(hidden=32, dropout=0.0), steps=30, batch=32,
                               progress=False)
    pred = regress_rotation(pts, (256, 256), regressor=net)
    err = torch.rad2deg((((euler_to_matrix(pred).transpose(1, 2) @ R).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2)
                        .clamp(-1, 1).acos())
    assert float(err.max()) < 1.5, err


def test_save_load_roundtrip_and_missing_weights(tmp_path):
    net = PoseRegressor(PoseRegressorConfig(hidden=16)).eval()
    path = tmp_path / "p.safetensors"
    save_pose_regressor(net, path, metadata={"note": "test"})
    back = load_pose_regressor(path)
    x = pose_features(torch.randn(3, 468, 3))
    assert torch.equal(net(x), back(x)) and back.config.hidden == 16
    with pytest.raises(FileNotFoundError, match="pose_regressor"):
        load_pose_regressor(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ModelFormatError, match="not a pose-regressor weights file"):
        load_pose_regressor(bad)


def test_regressed_pose_needs_depth():
    from morphface import load_default_model
    from morphface.fitting.dense import fit_dense_landmarks

    with pytest.raises(ValueError, match="depth column"):
        fit_dense_landmarks(load_default_model("narrow"), torch.rand(1, 468, 2) * 100, (128, 128), pose="regressed")
    with pytest.raises(ValueError, match="pose must be one of"):
        fit_dense_landmarks(load_default_model("narrow"), torch.rand(1, 468, 2) * 100, (128, 128), pose="nope")


@pytest.mark.skipif(not default_pose_regressor_path().is_file(), reason="shipped weights not built")
def test_shipped_weights_load_and_give_rotations():
    net = load_pose_regressor()
    pts, R = _canonical_views(4, seed=5)
    pred = regress_rotation(pts, (256, 256), regressor=net)
    assert pred.shape == (4, 3) and bool(torch.isfinite(pred).all())


def test_training_command_end_to_end(tmp_path):
    """``python -m morphface.pipelines.pose_regressor`` on a tiny set: renders through MediaPipe, trains,
    scores held-out people, writes weights and numbers; a second run reuses the cached renders."""
    pytest.importorskip("mediapipe", reason="the render set runs MediaPipe")
    import json

    from morphface.pipelines.pose_regressor import main

    out = tmp_path / "p.safetensors"
    argv = ["--out", str(out), "--people", "2", "--poses", "3", "--val-people", "1", "--steps", "3",
            "--hidden", "16", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(out.with_name("p.json").read_text())
    assert report["train_renders"] == 6 and 0 < report["train_detected"] <= 6
    assert set(report["val_regressor"]) >= {"geodesic_deg", "pitch_slope", "pitch_mae", "yaw_mae"}
    assert load_pose_regressor(out).config.hidden == 16
    cached = out.with_name("p.train-renders.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert out.with_name("p.train-renders.pt").stat().st_mtime_ns == cached
