"""Issue 20, bad inputs to the library (probe catalogue, part 2): each test names the probe it covers.

Mixed dataset settings (synth, preprocess), truncated videos, camera arguments, fitting inputs,
model files (capped error messages, lookup by name) and the demo after a plain install.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from morphface.data.cache import SETTINGS_NAME, find_clips
from morphface.errors import SettingsMismatchError, TruncatedVideoWarning

TINY_SYNTH = dict(identities=1, clips_per_identity=1, frames=2, size=32, texture_size=32, supersample=1, audio=False)


# ---------------------------------------------------------------------------------- defect 8: synth / preprocess
def test_probe_synth_into_folder_with_other_size_is_refused(tmp_path):
    """Probe: `synth` size 64 then size 128 into one folder silently mixed the two sets."""
    from morphface.data.synth import SynthConfig, synthesize_dataset

    out = tmp_path / "synth"
    synthesize_dataset(out, SynthConfig(**TINY_SYNTH), progress=False)
    assert json.loads((out / SETTINGS_NAME).read_text())["settings"]["size"] == 32
    with pytest.raises(SettingsMismatchError, match=r"size=32.*size=48"):
        synthesize_dataset(out, SynthConfig(**{**TINY_SYNTH, "size": 48}), progress=False)
    # resuming with the same settings (and more identities) stays as it was
    folders = synthesize_dataset(out, SynthConfig(**{**TINY_SYNTH, "identities": 2}), progress=False)
    assert len(folders) == 2 and len(find_clips(out)) == 2
    assert {c.meta["size"] for c in find_clips(out)} == {32}


def test_probe_synth_into_folder_without_settings_file_checks_clip_meta(tmp_path):
    """Probe: a set written before the settings file existed is checked against its clips' meta.json."""
    from morphface.data.synth import SynthConfig, synthesize_dataset

    out = tmp_path / "synth"
    synthesize_dataset(out, SynthConfig(**TINY_SYNTH), progress=False)
    (out / SETTINGS_NAME).unlink()
    with pytest.raises(SettingsMismatchError, match="seed"):
        synthesize_dataset(out, SynthConfig(**{**TINY_SYNTH, "seed": 5}), progress=False)
    synthesize_dataset(out, SynthConfig(**TINY_SYNTH), progress=False)
    assert (out / SETTINGS_NAME).is_file()


def test_probe_synth_cli_other_settings_and_existing_file_are_one_line_errors(tmp_path, capsys):
    """Probes: `synth -o DIR` with other settings, and `synth -o <existing file>` (was a traceback)."""
    from morphface.cli import main

    args = ["--identities", "1", "--clips-per-identity", "1", "--frames", "2", "--supersample", "1", "--no-audio",
            "--quiet"]
    out = tmp_path / "s"
    assert main(["synth", "-o", str(out), "--size", "32", *args]) == 0
    capsys.readouterr()
    assert main(["synth", "-o", str(out), "--size", "48", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "size=32" in err and "size=48" in err
    f = tmp_path / "file.txt"
    f.write_text("not a folder")
    assert main(["synth", "-o", str(f), "--size", "32", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "existing file" in err
    assert f.read_text() == "not a folder"


class _FixedDetector:
    """A detector that finds the same face (the default model's landmarks) in every frame."""

    name = "fixed"

    def __init__(self, size: int):
        from morphface import load_default_model
        from morphface.fitting import sample_fit

        model = load_default_model("narrow")
        fit = sample_fit(model, 1, (size, size), max_yaw=0, max_pitch=0, max_roll=0, generator=torch.Generator()
                         .manual_seed(0))
        with torch.no_grad():
            self.lms = fit.camera.project(fit.vertices(model)[:, model.landmarks])[0][0]

    def detect(self, image):
        from morphface.fitting import FaceDetection

        lo, hi = self.lms.amin(0), self.lms.amax(0)
        return [FaceDetection(box=torch.cat([lo, hi]), landmarks=self.lms.clone(), score=1.0, backend="fixed")]


def _write_mp4(path, frames: int, size: int = 64, truncate: float | None = None):
    """A random clip written with imageio-ffmpeg (``moov`` atom first, so that a cut file still has
    its header), optionally cut to ``truncate`` of its bytes."""
    import imageio_ffmpeg

    rng = np.random.default_rng(0)
    gen = imageio_ffmpeg.write_frames(str(path), (size, size), fps=25, codec="libx264", macro_block_size=1,
                                      output_params=["-movflags", "+faststart"])
    gen.send(None)
    for _ in range(frames):
        gen.send((rng.random((size, size, 3)) * 255).astype(np.uint8).tobytes())
    gen.close()
    if truncate is not None:
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * truncate)])
    return path


@pytest.fixture
def fixed_tools(monkeypatch):
    from morphface import load_default_model
    from morphface.data import preprocess as pp

    tools = (load_default_model("narrow"), _FixedDetector(64))
    monkeypatch.setattr(pp, "_build_tools", lambda config: tools)
    return tools


def test_probe_preprocess_into_cache_with_other_size_or_crop_scale_is_refused(tmp_path, fixed_tools):
    """Probe: `preprocess` into a cache made with another --size/--crop-scale said "6 already done"."""
    from morphface.data.preprocess import PreprocessConfig, preprocess_tree

    src = tmp_path / "videos" / "idA" / "v0"
    src.mkdir(parents=True)
    _write_mp4(src / "c0.mp4", 4)
    cache = tmp_path / "cache"
    config = PreprocessConfig(size=32, audio=False)
    assert len(preprocess_tree(tmp_path / "videos", cache, config, progress=False).written) == 1
    for other in (PreprocessConfig(size=48, audio=False), PreprocessConfig(size=32, crop_scale=2.5, audio=False)):
        with pytest.raises(SettingsMismatchError, match="size|crop_scale"):
            preprocess_tree(tmp_path / "videos", cache, other, progress=False)
    again = preprocess_tree(tmp_path / "videos", cache, PreprocessConfig(size=32, audio=False, crf=20), progress=False)
    assert len(again.skipped) == 1 and not again.written


def test_probe_preprocess_cli_other_size_is_a_one_line_error(tmp_path, fixed_tools, capsys):
    """Probe: the CLI of the same case, and `preprocess -o <existing file>`."""
    from morphface.cli import main

    src = tmp_path / "videos" / "idA" / "v0"
    src.mkdir(parents=True)
    _write_mp4(src / "c0.mp4", 3)
    cache = tmp_path / "cache"
    base = ["preprocess", str(tmp_path / "videos"), "--no-audio", "--quiet", "-o"]
    assert main([*base, str(cache), "--size", "32"]) == 0
    capsys.readouterr()
    assert main([*base, str(cache), "--size", "48"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "size=32" in err and "size=48" in err
    (tmp_path / "f").write_text("x")
    assert main([*base, str(tmp_path / "f")]) == 2
    assert "existing file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- truncated videos
def test_probe_truncated_mp4_warns_with_both_frame_counts(tmp_path):
    """Probe: a truncated mp4 whose header claims N frames yielded fewer without a word."""
    from morphface.io import iter_video, read_video

    whole = _write_mp4(tmp_path / "whole.mp4", 50)
    cut = _write_mp4(tmp_path / "cut.mp4", 50, truncate=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        assert read_video(whole).frames.shape[0] == 50  # a whole file: no warning
        assert sum(b.shape[0] for b in iter_video(cut, max_frames=5)) == 5  # stopped early: no claim
    with pytest.warns(TruncatedVideoWarning, match=r"decoded \d+ frames but its header announces 50") as rec:
        n = read_video(cut).frames.shape[0]
    w = next(r.message for r in rec if isinstance(r.message, TruncatedVideoWarning))
    assert 0 < n < 45 and w.decoded == n and w.expected == 50
    with pytest.warns(TruncatedVideoWarning):
        assert sum(b.shape[0] for b in iter_video(cut, chunk=7)) == n


def test_probe_preprocess_truncated_clip_is_recorded_in_meta_and_log(tmp_path, fixed_tools):
    """Probe: `preprocess` cached a 50-frame clip with 23 frames as complete, silently."""
    from morphface.data.preprocess import ERROR_LOG, PreprocessConfig, preprocess_tree

    src = tmp_path / "videos" / "idA" / "v0"
    src.mkdir(parents=True)
    _write_mp4(src / "cut.mp4", 30, truncate=0.5)
    _write_mp4(src / "whole.mp4", 5)
    cache = tmp_path / "cache"
    summary = preprocess_tree(tmp_path / "videos", cache, PreprocessConfig(size=32, audio=False), progress=False)
    assert not summary.failed
    metas = {c.clip: c.meta for c in find_clips(cache)}
    assert metas["cut"]["truncated"] is True and metas["cut"]["expected_frames"] == 30
    assert 0 < metas["cut"]["num_frames"] < 27
    assert metas["whole"]["truncated"] is False and "expected_frames" not in metas["whole"]
    log = (cache / ERROR_LOG).read_text()
    assert "cut.mp4" in log and "truncated" in log and "whole.mp4" not in log


# ---------------------------------------------------------------------------------- camera
@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=(64, 64), focal=float("nan")), "focal.*finite"),
    (dict(image_size=(64, 64), focal=torch.tensor([100.0, float("nan")])), "focal.*finite"),
    (dict(image_size=(64, 64), focal=-10.0), "focal.*> 0"),
    (dict(image_size=(0, 64)), "image_size"),
    (dict(image_size=(64, -5)), "image_size"),
    (dict(image_size=(64,)), "image_size"),
])
def test_probe_perspective_camera_with_nan_focal_or_bad_size_is_refused(kwargs, match):
    """Probe: `PerspectiveCamera` accepted a NaN focal and a zero image size (NaN pixels later)."""
    from morphface.camera import PerspectiveCamera

    with pytest.raises(ValueError, match=match):
        PerspectiveCamera(**kwargs)


def test_probe_weak_perspective_camera_with_bad_size_or_nan_scale_is_refused():
    from morphface.camera import WeakPerspectiveCamera

    with pytest.raises(ValueError, match="image_size"):
        WeakPerspectiveCamera(image_size=(0, 0))
    with pytest.raises(ValueError, match="scale.*finite"):
        WeakPerspectiveCamera(image_size=(8, 8), scale=float("nan"))


def test_probe_camera_project_mismatched_batch_or_dtype_names_what_was_expected():
    """Probe: `project` with mismatched batch sizes or half vs float gave raw torch errors."""
    from morphface.camera import PerspectiveCamera, WeakPerspectiveCamera

    for cam in (PerspectiveCamera(image_size=(64, 64), focal=torch.tensor([100.0, 120.0])),
                WeakPerspectiveCamera(image_size=(64, 64), scale=torch.tensor([1.0, 2.0]))):
        with pytest.raises(ValueError, match=r"B = 2 or 1.*\(3, 5, 3\)"):
            cam.project(torch.rand(3, 5, 3))
        with pytest.raises(ValueError, match=r"torch.float16.*torch.float32"):
            cam.project(torch.rand(2, 5, 3).half())
        with pytest.raises(ValueError, match=r"torch.float64.*torch.float32"):
            cam.view_directions(torch.rand(2, 5, 3, dtype=torch.float64))
        assert cam.project(torch.rand(1, 5, 3))[0].shape == (2, 5, 2)  # batch 1 broadcasts, as before
        assert cam.to(torch.float16).project(torch.rand(2, 5, 3).half())[0].dtype == torch.float16
    with pytest.raises(ValueError, match="batch sizes"):
        PerspectiveCamera(image_size=(64, 64), focal=torch.tensor([100.0, 120.0]), t=torch.zeros(3, 3))


# ---------------------------------------------------------------------------------- fitting
@pytest.fixture(scope="module")
def narrow():
    from morphface import load_default_model

    return load_default_model("narrow")


@pytest.fixture
def dlib_name_is_fixed_detector(monkeypatch):
    """``make_detector("dlib")`` builds the fixed test detector (dlib need not be installed)."""
    from morphface.fitting import detectors

    monkeypatch.setitem(detectors._BACKENDS, "dlib", lambda **kwargs: _FixedDetector(64))


def test_probe_fit_image_with_image_in_0_255_says_0_1(narrow, dlib_name_is_fixed_detector):
    """Probe: an image tensor in [0, 255] was accepted (then "no face found" or a wrong fit)."""
    from morphface.fitting import fit_image, fit_photometric, fit_video

    image = torch.rand(3, 64, 64) * 255
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        fit_image(narrow, image, detector="dlib")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_video(narrow, image[None].expand(3, -1, -1, -1), detector="dlib", progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_photometric(narrow, image[None], landmarks=torch.rand(1, 68, 2) * 64)
    with pytest.raises(ValueError, match="float"):
        fit_image(narrow, (torch.rand(3, 64, 64) * 255).to(torch.uint8), detector="dlib")


def test_probe_fit_image_all_nan_mentions_nan(narrow, dlib_name_is_fixed_detector):
    """Probe: an all-NaN image gave "no face found" without mentioning NaN."""
    from morphface.fitting import fit_image

    with pytest.raises(ValueError, match="NaN"):
        fit_image(narrow, torch.full((3, 64, 64), float("nan")), detector="dlib")


def test_probe_fit_image_accepts_detector_names(narrow, dlib_name_is_fixed_detector):
    """Probe: `fit_image(face, image, detector="dlib")` raised AttributeError: 'str' has no 'detect'."""
    from morphface.fitting import fit_image, fit_video

    fit = fit_image(narrow, torch.rand(3, 64, 64), detector="dlib")
    assert fit.batch_size == 1 and torch.isfinite(fit.angles).all()
    fits = fit_video(narrow, torch.rand(3, 3, 64, 64), detector="dlib", progress=False)
    assert fits.batch_size == 3
    with pytest.raises(ValueError, match="backend must be one of"):
        fit_image(narrow, torch.rand(3, 64, 64), detector="no-such-detector")
    with pytest.raises(ValueError, match="detector must be"):
        fit_image(narrow, torch.rand(3, 64, 64), detector=42)


def test_probe_fit_photometric_under_no_grad_runs_and_returns_the_same(narrow):
    """Probe: `fit_photometric` under `torch.no_grad()` failed at `loss.backward()`."""
    from morphface.fitting import fit_landmarks, fit_photometric

    det = _FixedDetector(64)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    init = fit_landmarks(narrow, det.lms[None], (64, 64))
    expected = fit_photometric(narrow, image, init=init, steps=3)
    with torch.no_grad():
        got = fit_photometric(narrow, image, init=init, steps=3)
    for name in ("exp_coeffs", "angles", "translation", "sh", "vertex_albedo"):
        a, b = getattr(expected, name), getattr(got, name)
        assert not b.requires_grad
        torch.testing.assert_close(b, a)
    assert got.history == expected.history


# ---------------------------------------------------------------------------------- model files
def _face_grid(nx=5, ny=7):
    """A height-field "face" in mm (z out of the face) and its counter-clockwise triangles."""
    x, y = np.meshgrid(np.linspace(-70, 70, nx), np.linspace(-90, 90, ny))
    z = 60 + 50 * np.exp(-(x**2 + y**2) / (2 * 35.0**2))
    tri = [(j * nx + i, j * nx + i + 1, (j + 1) * nx + i + 1) for j in range(ny - 1) for i in range(nx - 1)]
    tri += [(j * nx + i, (j + 1) * nx + i + 1, (j + 1) * nx + i) for j in range(ny - 1) for i in range(nx - 1)]
    return np.stack([x, y, z], -1).reshape(-1, 3), np.array(tri, dtype=np.int64)


def _write_lsfm(path, k=3):
    """A tiny LSFM ``.mat`` (export_lsfm_model layout: mm, orthonormal components, 0-based trilist)."""
    import scipy.io

    mean, tri = _face_grid()
    comps, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(mean.size, k)))
    scipy.io.savemat(path, {"mean": mean.reshape(-1), "components": comps, "eigenvalues": np.arange(1.0, k + 1),
                            "trilist": tri.astype(np.uint32)})
    return path


def _write_bfm2009(path, k=3):
    """A tiny ``01_MorphableModel.mat`` (micrometres, 1-based clockwise ``tl``, no albedo)."""
    import scipy.io

    mean, tri = _face_grid()
    pc, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(mean.size, k)))
    scipy.io.savemat(path, {"shapeMU": (mean * 1000).reshape(-1, 1).astype(np.float32),
                            "shapePC": pc.astype(np.float32), "shapeEV": np.full((k, 1), 2e3, np.float32),
                            "tl": (tri[:, [0, 2, 1]] + 1).astype(np.float64)})
    return path


def test_probe_mat_named_garbage_error_lists_a_few_variables_only(tmp_path):
    """Probe: the ModelFormatError for a non-MATLAB file named .mat listed megabytes of "variables"."""
    from morphface.errors import ModelFormatError
    from morphface.morphable import load_model

    # MATLAB v4 records (what scipy makes of many byte patterns): 3000 distinct 150-character names
    records = []
    for i in range(3000):
        name = f"v{i:05d}".encode() + b"x" * 144 + b"\0"
        records.append(struct.pack("<5i", 0, 1, 1, 0, len(name)) + name + struct.pack("<d", 1.0))
    path = tmp_path / "garbage.mat"
    path.write_bytes(b"".join(records))
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    message = str(info.value)
    assert len(message) < 1500 and "\n" not in message
    assert "found variables ['v00000" in message and "... and 2992 more]" in message


def test_probe_model_by_name_is_found_in_env_folder_then_working_directory_assets(tmp_path, monkeypatch):
    """Probe: licensed model files had no place to go; `load_model("bfm2009")` etc. now finds them."""
    from morphface.errors import ModelFormatError
    from morphface.morphable import MODEL_DIR_ENV, find_model, load_model
    from morphface.morphable import loaders as L

    env_dir, work = tmp_path / "models", tmp_path / "work"
    (work / "assets" / "bfm").mkdir(parents=True)
    env_dir.mkdir()
    monkeypatch.setenv(MODEL_DIR_ENV, str(env_dir))
    monkeypatch.chdir(work)
    _write_lsfm(env_dir / "all_all_all.mat")
    _write_lsfm(work / "assets" / "bfm" / "lsfm.mat", k=2)
    _write_bfm2009(work / "assets" / "bfm" / "01_MorphableModel.mat")

    assert find_model("lsfm") == env_dir / "all_all_all.mat"  # the environment's folder first
    lsfm = load_model("lsfm")
    assert lsfm.n_vertices == 35 and lsfm.n_id == 3
    bfm = load_model("BFM2009")  # names are case-insensitive
    assert bfm.n_vertices == 35 and bfm.n_id == 3 and bfm.n_exp == 0
    (work / "assets" / "bfm" / "Exp_Pca.bin").write_bytes(b"\0" * 16)  # beside it: read as the expression basis
    with pytest.raises(ModelFormatError, match="Exp_Pca|std_exp|BFM_exp_idx"):
        load_model("bfm2009")
    dirs = [d.resolve() for d in L.model_dirs()]
    package_dir = Path(L.__file__).resolve().parents[1] / "assets" / "bfm"
    assert dirs[:2] == [env_dir.resolve(), (work / "assets" / "bfm").resolve()] and dirs[-1] == package_dir


def test_probe_model_name_not_found_lists_every_place_looked(tmp_path, monkeypatch):
    from morphface.errors import ModelFormatError
    from morphface.morphable import MODEL_DIR_ENV, load_model
    from morphface.morphable import loaders as L

    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFormatError) as info:
        load_model("bfm2017")
    message = str(info.value)
    for d in L.model_dirs():
        assert str(d) in message
    assert str(tmp_path / "empty") in message and "model2017-1_bfm_nomouth.h5" in message
    assert "morphface/assets/bfm" in message.replace("\\", "/")
    monkeypatch.delenv(MODEL_DIR_ENV)
    with pytest.raises(ModelFormatError, match=MODEL_DIR_ENV):
        load_model("deep3d")


# ---------------------------------------------------------------------------------- demo
def test_probe_demo_after_plain_install_skips_photo_steps_with_one_line(tmp_path, monkeypatch, capsys):
    """Probe: `morphface demo` after `pip install morphface` (no detector) died with a
    BackendUnavailableError traceback after writing two pictures."""
    from morphface import fitting
    from morphface.cli import main
    from morphface.errors import BackendUnavailableError

    def no_detector(*args, **kwargs):
        raise BackendUnavailableError("no landmark detector can run here; tried: dlib: not installed")

    monkeypatch.setattr(fitting, "make_detector", no_detector)
    monkeypatch.setattr(fitting.detectors, "make_detector", no_detector)
    assert main(["demo", "-o", str(tmp_path / "demo"), "--size", "48"]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and 'morphface[fit]' in skipped[0] and "morphface[mediapipe]" in skipped[0]
    assert "Traceback" not in out and "done in" in out
    assert (tmp_path / "demo" / "model_gallery.png").is_file() and (tmp_path / "demo" / "render_grid.png").is_file()
    assert not list((tmp_path / "demo").glob("fit_*.png")) and not list((tmp_path / "demo").glob("frontalize_*"))
