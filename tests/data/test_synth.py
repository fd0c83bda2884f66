"""morphface.data.synth / textures / trajectories / backgrounds: the synthetic talking-head generator."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from morphface.data.cache import (
    AUDIO_NAME,
    FRAMES_VIDEO,
    META_NAME,
    PARAMS_NAME,
    find_clips,
    load_audio_features,
    read_clip_frames,
)
from morphface.data.synth import (
    SynthConfig,
    clip_folder,
    sample_identity,
    synthesize_clip,
    synthesize_dataset,
    synthetic_voice,
)
from morphface.data.textures import procedural_face_texture
from morphface.data.trajectories import blink_signal, expression_trajectory, head_trajectory, smooth_signal
from morphface.fitting import FitResult
from morphface.render import render_ncc


def test_cache_layout_and_meta(tiny_cache, tiny_config):
    clips = find_clips(tiny_cache)
    assert [(c.identity, c.video, c.clip) for c in clips] == [
        ("id00000", "vid00", "clip00"), ("id00000", "vid01", "clip00"),
        ("id00001", "vid00", "clip00"), ("id00001", "vid01", "clip00")]
    for c in clips:
        assert {p.name for p in c.path.iterdir()} == {FRAMES_VIDEO, PARAMS_NAME, AUDIO_NAME, META_NAME}
        meta = json.loads((c.path / META_NAME).read_text())
        assert meta["fps"] == 25.0 and meta["num_frames"] == 8 and meta["size"] == 64
        assert meta["crop_box"] is None and meta["source"] == "synthetic" and meta["model"] == "default"
        assert meta["audio"] is True and meta["version"] == 1 and meta["ground_truth"] is True
        fit = FitResult.load(c.path / PARAMS_NAME)
        assert fit.batch_size == 8 and fit.image_size == (64, 64) and fit.camera_kind == "perspective"
        assert fit.id_coeffs.shape == (8, 100) and fit.exp_coeffs.shape == (8, 53)
        assert torch.equal(fit.id_coeffs, fit.id_coeffs[:1].expand_as(fit.id_coeffs))  # one identity per clip
        assert fit.exp_coeffs.min() >= 0 and fit.exp_coeffs.max() <= 1
        frames = read_clip_frames(c.path)
        assert frames.shape == (8, 3, 64, 64) and frames.dtype == torch.uint8
        assert load_audio_features(c.path).shape == (8, 4, 27)
    # clips of one identity share the identity; identities differ
    ids = [FitResult.load(c.path / PARAMS_NAME).id_coeffs[0] for c in clips]
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[0], ids[2])


def test_params_round_trip_and_frames_match_the_renders(tiny_cache, tiny_config, models):
    full, narrow = models
    identity = sample_identity(full, 1, tiny_config)
    clip = synthesize_clip(full, narrow, identity, 1, 0, tiny_config)
    folder = clip_folder(tiny_cache, 1, 0)
    stored = FitResult.load(folder / PARAMS_NAME)
    for name in ("id_coeffs", "exp_coeffs", "angles", "translation", "focal", "principal_point", "sh", "landmarks"):
        assert torch.equal(getattr(stored, name), getattr(clip.fit, name)), name
    # H.264 at crf 18 is close to the rendered frames
    decoded = read_clip_frames(folder).float() / 255
    assert (decoded - clip.frames).abs().mean() < 0.02
    # the stored landmarks are the narrow model's landmarks projected with the stored camera
    pix, _ = stored.camera.project(stored.vertices(narrow)[:, narrow.landmarks])
    torch.testing.assert_close(pix, stored.landmarks)


def test_narrow_render_of_the_params_lies_on_the_rendered_head(tiny_config, models):
    """Consistency of frames and parameters: the NCC render of the stored (narrow-model) parameters
    covers the face of the full-model frame: its mask is inside the frame's head mask, and it is
    the same mask whether rendered from the narrow model or from the full model's face vertices."""
    full, narrow = models
    cfg = replace(tiny_config, supersample=1)
    clip = synthesize_clip(full, narrow, sample_identity(full, 0, cfg), 0, 1, cfg)
    fit = clip.fit
    ncc = render_ncc(narrow, fit.vertices(narrow), fit.camera)
    head = clip.face_mask > 0.5
    face = ncc.mask > 0.5
    assert face.sum() > 0.1 * face[0].numel() * face.shape[0]
    inside = (face & head).sum() / face.sum()
    assert inside > 0.995
    # same coefficients, full mesh restricted to the narrow vertices: identical geometry
    v_full = fit.vertices(full)[:, full.vertex_mask("narrow_face")]
    torch.testing.assert_close(v_full, fit.vertices(narrow))
    again = render_ncc(narrow, v_full, fit.camera)
    iou = ((again.mask > 0.5) & face).sum() / ((again.mask > 0.5) | face).sum()
    assert iou == 1.0
    # the frame differs from the background inside the face: something was drawn there
    assert clip.frames.std() > 0.05


def test_synth_is_deterministic_and_resumable(tmp_path, tiny_config):
    cfg = replace(tiny_config, identities=1, clips_per_identity=2, frames=4, size=32, audio=False)
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize_dataset(a, cfg, progress=False)
    synthesize_dataset(b, cfg, progress=False)
    for fa, fb in zip(sorted(a.glob("*/*/*")), sorted(b.glob("*/*/*"))):
        pa, pb = FitResult.load(fa / PARAMS_NAME), FitResult.load(fb / PARAMS_NAME)
        assert torch.equal(pa.exp_coeffs, pb.exp_coeffs) and torch.equal(pa.angles, pb.angles)
        assert torch.equal(read_clip_frames(fa), read_clip_frames(fb))
        assert not (fa / AUDIO_NAME).exists()
    other = replace(cfg, seed=cfg.seed + 1, clips_per_identity=1)
    c = tmp_path / "c"
    synthesize_dataset(c, other, progress=False)
    assert not torch.equal(FitResult.load(clip_folder(c, 0, 0) / PARAMS_NAME).angles,
                           FitResult.load(clip_folder(a, 0, 0) / PARAMS_NAME).angles)
    # resume: a complete clip is kept as is, a half-written one (no meta.json) is redone
    done, half = clip_folder(a, 0, 0), clip_folder(a, 0, 1)
    mtime = (done / PARAMS_NAME).stat().st_mtime_ns
    (half / META_NAME).unlink()
    (half / PARAMS_NAME).write_bytes(b"truncated")
    synthesize_dataset(a, cfg, progress=False)
    assert (done / PARAMS_NAME).stat().st_mtime_ns == mtime
    assert (half / META_NAME).is_file()
    redone = FitResult.load(half / PARAMS_NAME).angles
    assert torch.equal(redone, FitResult.load(clip_folder(b, 0, 1) / PARAMS_NAME).angles)


def test_trajectories_are_bounded_and_smooth(models):
    full, _ = models
    g = torch.Generator().manual_seed(0)
    T, fps = 250, 25.0
    for _ in range(5):
        head = head_trajectory(T, fps, generator=g)
        deg = head.angles * 180 / math.pi
        assert (deg.abs() <= torch.tensor([15.0, 30.0, 10.0]) + 1e-4).all()
        assert (head.translation.abs() <= torch.tensor([5.0, 5.0, 15.0]) + 1e-4).all()
        assert deg.diff(dim=0).abs().max() < 3.0  # degrees per frame: smooth head motion
        exp = expression_trajectory(full, T, fps, generator=g)
        assert exp.shape == (T, 53) and exp.min() >= 0 and exp.max() <= 1
        jaw = exp[:, full.exp_names.index("jawOpen")]
        assert jaw.max() > 0  # the mouth moves
    s = smooth_signal(1000, 25.0, 0.5, 2.0, generator=g)
    assert s.abs().max() <= 1 and s.std() > 0.1
    # a sinusoid of at most 2 Hz sampled at 25 fps changes by at most 2 pi 2 / 25 per frame
    assert s.diff().abs().max() <= 2 * math.pi * 2.0 / 25.0 + 1e-5
    blinks = blink_signal(2500, 25.0, rate_hz=0.3, generator=g)
    assert 0 <= blinks.min() and blinks.max() <= 1 and (blinks > 0.5).any()
    assert (blinks > 0.5).float().mean() < 0.1  # eyes mostly open


def test_texture_and_voice(models):
    full, narrow = models
    a = procedural_face_texture(full, 64, torch.Generator().manual_seed(1))
    b = procedural_face_texture(full, 64, torch.Generator().manual_seed(1))
    c = procedural_face_texture(full, 64, torch.Generator().manual_seed(2))
    assert a.shape == (3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the narrow model has the same landmarks and UVs, so the same painting
    torch.testing.assert_close(procedural_face_texture(narrow, 64, torch.Generator().manual_seed(1)), a)
    jaw = torch.cat([torch.zeros(25), torch.ones(25)])
    wave = synthetic_voice(jaw, 25.0, 150.0, 16000, torch.Generator().manual_seed(0))
    assert wave.shape == (32000,) and wave.abs().max() <= 1
    assert wave[16000 + 800:].pow(2).mean() > 20 * wave[:15000].pow(2).mean()  # loud only with the mouth open


def test_synth_config_validation():
    with pytest.raises(ValueError, match="frames must be an int >= 1"):
        SynthConfig(frames=0)
    with pytest.raises(ValueError, match="frames_format"):
        SynthConfig(frames_format="gif")


def test_cli_synth(tmp_path, capsys):
    from morphface.cli import main

    rc = main(["synth", "-o", str(tmp_path / "s"), "--identities", "1", "--clips-per-identity", "1", "--frames", "3",
               "--size", "32", "--no-audio", "--quiet", "--supersample", "1"])
    assert rc == 0
    assert "1 synthetic clip(s)" in capsys.readouterr().out
    (clip,) = find_clips(tmp_path / "s")
    assert clip.num_frames == 3 and clip.meta["audio"] is False


@pytest.mark.slow
def test_fit_accuracy_on_synth(synth128):
    pytest.importorskip("dlib", reason="the fit check detects landmarks with dlib (morphface[fit])")
    from morphface.data.fit_check import fit_accuracy_on_synth

    report = fit_accuracy_on_synth(synth128, detector="dlib", progress=False)
    assert len(report.clips) == 2 and not report.failed
    assert all(c.detected == 1.0 for c in report.clips)
    assert report.rotation_median < 8.0  # degrees; about 2-5 on 256x256 clips
    assert all(c.landmark_error < 5.0 for c in report.clips)  # pixels at 128x128
    with pytest.raises(ValueError, match="no synthetic"):
        fit_accuracy_on_synth(synth128 / "id00000" / "vid00", progress=False)
