"""morphface.data.preprocess: discovery, the real clip end to end, error logging, resumability, workers."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from morphface.data import preprocess as pp
from morphface.data.cache import (
    AUDIO_NAME,
    FRAMES_DIR,
    FRAMES_VIDEO,
    META_NAME,
    PARAMS_NAME,
    find_clips,
    load_audio_features,
    read_clip_frames,
)
from morphface.data.dataset import ReenactmentDataset
from morphface.data.preprocess import PreprocessConfig, discover_clips, preprocess_tree
from morphface.data.synth import clip_folder
from morphface.fitting import FitResult, rotation_error_degrees
from morphface.io import write_image, write_video

pytest.importorskip("dlib", reason="the preprocessing tests detect landmarks with dlib (morphface[fit])")

CONFIG = PreprocessConfig(size=96, detector="dlib")


@pytest.fixture(scope="module")
def synth_videos(synth128):
    return [clip_folder(synth128, 0, j) for j in range(2)]


def _tree(tmp_path, synth_videos, names=("c0", "c1")):
    src = tmp_path / "videos"
    for name, clip in zip(names, synth_videos):
        (src / "idA" / "v0").mkdir(parents=True, exist_ok=True)
        shutil.copy(clip / FRAMES_VIDEO, src / "idA" / "v0" / f"{name}.mp4")
    return src


def test_discover_clips(tmp_path):
    (tmp_path / "id1" / "v1" / "framesclip").mkdir(parents=True)
    write_image(tmp_path / "id1" / "v1" / "framesclip" / "0001.jpg", torch.rand(3, 8, 8))
    (tmp_path / "id1" / "v1" / "a.mp4").write_bytes(b"x")
    (tmp_path / "id1" / "v1" / "notes.txt").write_text("ignored")
    (tmp_path / "id1" / "v1" / "empty").mkdir()
    (tmp_path / "id0" / "v9").mkdir(parents=True)
    (tmp_path / "id0" / "v9" / "b.MOV").write_bytes(b"x")
    (tmp_path / "toplevel.mp4").write_bytes(b"x")
    found = discover_clips(tmp_path)
    assert [(c.identity, c.video, c.clip, c.path.name) for c in found] == [
        ("id0", "v9", "b", "b.MOV"), ("id1", "v1", "a", "a.mp4"), ("id1", "v1", "framesclip", "framesclip")]
    assert found[0].destination("/c").as_posix() == "/c/id0/v9/b"


@pytest.mark.slow
def test_corrupt_and_faceless_clips_are_logged_and_skipped(tmp_path, synth_videos, capsys):
    """Through a pool of two spawned workers: failures come back with their clip, are logged and skipped."""
    src = _tree(tmp_path, synth_videos[:1])
    (src / "idA" / "v0" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    write_video(src / "idA" / "v0" / "noise.mp4", torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
                fps=25)
    cache = tmp_path / "cache"
    summary = preprocess_tree(src, cache, CONFIG, workers=2, progress=False)
    assert [p.name for p in summary.written] == ["c0"]
    failed = {p.name: msg for p, msg in summary.failed}
    assert set(failed) == {"corrupt.mp4", "noise.mp4"}
    assert failed["corrupt.mp4"].startswith("ImageReadError") and failed["noise.mp4"].startswith("NoFaceError")
    log = (cache / pp.ERROR_LOG).read_text().splitlines()
    assert len(log) == 2 and any("corrupt.mp4\tImageReadError" in line for line in log)
    assert any("noise.mp4\tNoFaceError: " in line for line in log)
    assert "noise.mp4" in capsys.readouterr().err
    assert not (cache / "idA" / "v0" / "corrupt").exists() and not (cache / "idA" / "v0" / "noise").exists()
    assert [c.clip for c in find_clips(cache)] == ["c0"]


def test_interrupted_run_resumes(tmp_path, synth_videos, monkeypatch):
    src = _tree(tmp_path, synth_videos)
    cache = tmp_path / "cache"
    real_write_meta = pp.write_meta

    def crash_on_second(folder, meta):
        if folder.name == "c1":  # killed after the frames and params of the second clip were written
            raise KeyboardInterrupt
        return real_write_meta(folder, meta)

    monkeypatch.setattr(pp, "write_meta", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        preprocess_tree(src, cache, CONFIG, progress=False)
    first, second = cache / "idA" / "v0" / "c0", cache / "idA" / "v0" / "c1"
    assert (first / META_NAME).is_file()
    assert (second / FRAMES_VIDEO).is_file() and not (second / META_NAME).exists()  # half-written
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    monkeypatch.setattr(pp, "write_meta", real_write_meta)
    summary = preprocess_tree(src, cache, CONFIG, progress=False)
    assert summary.skipped == [first] and summary.written == [second] and not summary.failed
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamps  # not redone
    # the summary of the resumed run covers the clip of the first run too, with its statistics
    rows = [line for line in summary.table.splitlines() if line.startswith("| idA/v0/")]
    assert [r.split(" | ")[0] for r in rows] == ["| idA/v0/c0", "| idA/v0/c1"] and "| - |" not in rows[0]
    assert (cache / pp.SUMMARY_NAME).read_text() == summary.table
    for clip, truth in zip((first, second), synth_videos):
        meta = json.loads((clip / META_NAME).read_text())
        assert meta["num_frames"] == 6 and meta["size"] == 96 and meta["audio"] is False
        x0, y0, x1, y1 = meta["crop_box"]
        assert abs((x1 - x0) - (y1 - y0)) < 1e-3
        fit = FitResult.load(clip / PARAMS_NAME)
        assert fit.batch_size == 6 and fit.image_size == (96, 96)
        assert read_clip_frames(clip).shape == (6, 3, 96, 96)
        # the fit of the crop recovers the synthetic head rotation
        gt = FitResult.load(truth / PARAMS_NAME)
        assert rotation_error_degrees(fit.angles, gt.angles).median() < 8.0


def test_frame_folders_and_jpg_output(tmp_path, synth_videos):
    frames = read_clip_frames(synth_videos[0])
    src = tmp_path / "videos" / "idB" / "v0" / "clipdir"
    for i, f in enumerate(frames):
        write_image(src / f"{i:04d}.png", f)
    cache = tmp_path / "cache"
    summary = preprocess_tree(tmp_path / "videos", cache, replace(CONFIG, frames_format="jpg", fps=30.0),
                              progress=False)
    (clip,) = summary.written
    assert sorted(p.name for p in (clip / FRAMES_DIR).iterdir()) == [f"{i:06d}.jpg" for i in range(6)]
    meta = json.loads((clip / META_NAME).read_text())
    assert meta["fps"] == 30.0 and meta["audio"] is False and meta["num_frames"] == 6
    ds = ReenactmentDataset(cache, image_size=96, split="all")
    assert ds[0]["driving"].shape == (3, 96, 96)


@pytest.mark.slow
def test_real_clip(tmp_path, testdata):
    """The 175-frame talking-head clip: one crop box, a fit per frame, small landmark residuals, audio."""
    src = tmp_path / "videos" / "id0" / "vid0"
    src.mkdir(parents=True)
    shutil.copy(testdata / "liveportrait_d20_talking.mp4", src / "clip0.mp4")
    cache = tmp_path / "cache"
    from morphface.cli import main

    assert main(["preprocess", str(tmp_path / "videos"), "-o", str(cache), "--detector", "dlib", "--quiet"]) == 0
    clip = cache / "id0" / "vid0" / "clip0"
    meta = json.loads((clip / META_NAME).read_text())
    assert meta["num_frames"] == 175 and meta["fps"] == 25.0 and meta["size"] == 256 and meta["audio"] is True
    assert meta["source"].endswith("clip0.mp4") and meta["model"] == "default" and meta["version"] == 1
    box = torch.tensor(meta["crop_box"])
    assert box.shape == (4,) and abs(float((box[2] - box[0]) - (box[3] - box[1]))) < 1e-3  # one square per clip
    fit = FitResult.load(clip / PARAMS_NAME)
    assert fit.batch_size == 175 and fit.image_size == (256, 256) and fit.camera_kind == "perspective"
    assert torch.equal(fit.id_coeffs, fit.id_coeffs[:1].expand_as(fit.id_coeffs))
    lm = fit.target_landmarks
    iod = (lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1)).norm(dim=-1)
    assert (fit.residuals / iod).mean() < 0.08
    assert (lm >= 0).all() and (lm <= 256).all()  # every face lies inside the crop
    frames = read_clip_frames(clip)
    assert frames.shape == (175, 3, 256, 256)
    assert load_audio_features(clip).shape == (175, 4, 27) and (clip / AUDIO_NAME).is_file()
    # the crop is the original frame resampled through the box
    from morphface.fitting import CropTransform
    from morphface.io import read_video

    original = read_video(testdata / "liveportrait_d20_talking.mp4", max_frames=1).frames
    expected = CropTransform.from_box(box, 256).crop(original)[0]
    assert (frames[0].float() / 255 - expected).abs().mean() < 0.03
