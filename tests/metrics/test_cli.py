"""``morphface evaluate`` and ``morphface reenact`` end to end on a tiny checkpoint."""

import json

import pytest
import torch

from morphface.cli import main

from .helpers import real_clips, write_cache

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from morphface.pipelines import HeadGAN, save_pipeline

    torch.manual_seed(0)
    pipe = HeadGAN(image_size=SIZE, width=1 / 16, perceptual="off")
    return save_pipeline(pipe, tmp_path_factory.mktemp("ckpt") / "step_00000000.safetensors")


@pytest.fixture(scope="module")
def cache(testdata, tmp_path_factory):
    # 128-pixel crops in the cache: the CLI resizes them (and their fits) to the pipeline's 64
    return write_cache(tmp_path_factory.mktemp("cache"), real_clips(testdata, size=128))


def test_evaluate_self_and_cross(checkpoint, cache, tmp_path, capsys):
    # the training split rule: 2 identities and test_fraction 0.1 leave no test identity
    assert main(["evaluate", str(checkpoint), "--data", str(cache), "-o", str(tmp_path / "none")]) == 1
    assert "has no clips" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert main(["evaluate", str(checkpoint), "--data", str(cache), "-o", str(out), "--mode", "self",
                 "--split", "all", "--baselines"]) == 0
    assert "PSNR" in capsys.readouterr().out
    # baselines: copying the source frame, and the pipeline's warp-only output (a different image)
    copy = json.loads((out / "metrics_copy_source.json").read_text())["metrics"]
    warp = json.loads((out / "metrics_warp_only.json").read_text())["metrics"]
    assert 0 < copy["L1"] < 255 and 0 < warp["L1"] < 255 and copy["L1"] != warp["L1"]
    data = json.loads((out / "metrics.json").read_text())
    assert {"L1", "PSNR", "SSIM", "CSIM"} <= set(data["metrics"]) and data["counts"]["frames"] == 4
    assert 0 < data["metrics"]["L1"] < 255 and -1 <= data["metrics"]["SSIM"] <= 1
    # an untrained generator's output defeats the landmark detector: AED is reported unavailable, not faked
    for name in ("AED", "APD", "ARD"):
        assert name in data["metrics"] or name in data["unavailable"]
    assert (out / "metrics.csv").is_file()
    from morphface.io import probe_video

    info = probe_video(out / "results.mp4")
    assert (info.width, info.height) == (3 * SIZE, SIZE)

    # explicit held-out identities select the test clips
    out1 = tmp_path / "test"
    assert main(["evaluate", str(checkpoint), "--data", str(cache), "-o", str(out1),
                 "--test-identities", "id1", "--detector", "none", "--no-csim", "--no-video"]) == 0
    data = json.loads((out1 / "metrics.json").read_text())
    assert [row["source"] for row in data["per_clip"]] == ["id1/v/c"]
    # cross-identity mode
    out2 = tmp_path / "cross"
    assert main(["evaluate", str(checkpoint), "--data", str(cache), "-o", str(out2), "--mode", "cross",
                 "--split", "all", "--detector", "none", "--no-video", "--max-frames", "2"]) == 0
    data = json.loads((out2 / "metrics.json").read_text())
    assert data["mode"] == "cross" and "CSIM" in data["metrics"] and "L1" not in data["metrics"]
    assert "AED" in data["unavailable"] and not (out2 / "results.mp4").exists()


@pytest.mark.slow
def test_reenact_writes_a_side_by_side_video_with_the_driving_audio(checkpoint, testdata, tmp_path):
    from morphface.io import probe_video, read_video

    out = tmp_path / "out.mp4"
    assert main(["reenact", str(checkpoint), "--source", str(testdata / "astronaut_eileen_collins.png"),
                 "--driving", str(testdata / "liveportrait_d20_talking.mp4"), "--max-frames", "3",
                 "-o", str(out)]) == 0
    info = probe_video(out)
    assert (info.width, info.height, info.has_audio) == (3 * SIZE, SIZE, True)
    assert read_video(out).frames.shape[0] == 3


def test_reenact_reports_errors(checkpoint, tmp_path, capsys):
    assert main(["reenact", str(checkpoint), "--source", str(tmp_path / "none.png"), "--driving",
                 str(tmp_path / "none.mp4"), "-o", str(tmp_path / "o.mp4")]) == 1
    assert "morphface reenact: error" in capsys.readouterr().err


def test_compare_two_pipelines_and_the_baselines_on_the_same_frames(checkpoint, cache, tmp_path, capsys):
    from morphface.cli.compare import markdown_table
    from morphface.pipelines import X2Face, save_pipeline

    torch.manual_seed(1)
    x2face = save_pipeline(X2Face(image_size=SIZE, base_channels=8, max_channels=16, depth=6, norm="instance"),
                           tmp_path / "x2f" / "step_00000000.safetensors")
    out = tmp_path / "cmp"
    assert main(["compare", str(checkpoint), str(x2face), "--data", str(cache), "--split", "all", "-o", str(out),
                 "--detector", "none", "--max-frames", "3", "--names", "HeadGAN", "X2Face"]) == 0
    report = json.loads((out / "compare.json").read_text())
    methods = [row["method"] for row in report["rows"]]
    # X2Face's output is a warp: no separate warp-only row for it; HeadGAN's warp-only output differs
    assert methods == ["copy source", "HeadGAN", "HeadGAN (warp only)", "X2Face"]
    by_name = {row["method"]: row["metrics"] for row in report["rows"]}
    assert all({"L1", "PSNR", "SSIM", "CSIM"} <= set(m) for m in by_name.values())
    # an untrained X2Face starts as the identity warp: it reproduces the copy-source baseline exactly
    assert by_name["X2Face"]["L1"] == pytest.approx(by_name["copy source"]["L1"], abs=1e-3)
    assert by_name["HeadGAN"]["L1"] != by_name["HeadGAN (warp only)"]["L1"]
    table = (out / "compare.md").read_text()
    assert "| method | L1 | PSNR | SSIM | CSIM | AED | APD | ARD | training |" in table
    assert table.count("\n| ") == 5  # header + 4 rows
    from morphface.io import read_image

    grid = read_image(out / "compare_grid.png")
    assert grid.shape == (3, 2 * SIZE, 6 * SIZE)  # 2 driving frames of 3; source, driving + 4 methods
    # the table formats numbers and marks what is missing
    text = markdown_table([{"method": "m", "metrics": {"L1": 5.0}, "unavailable": {"AED": "no detector"},
                            "train_seconds": 90.0}], "self")
    assert "| m | 5.00 | - | - | - | n/a | - | - | 1.5 min |" in text and "AED: no detector" in text
    assert main(["compare", str(checkpoint), "--data", str(cache), "--names", "a", "b"]) == 1
    assert "--names gives 2 name(s) for 1 checkpoint(s)" in capsys.readouterr().err


def test_training_seconds_counts_each_step_once_across_a_resume(checkpoint, tmp_path):
    import shutil

    from morphface.cli._eval import training_seconds

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    weights = shutil.copy(checkpoint, run / "checkpoints" / "step_00000003.safetensors")
    rows = [{"step": s, "sec": sec} for s, sec in [(1, 1.0), (2, 2.0), (3, 4.0), (2, 2.5), (3, 4.5), (4, 8.0)]]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert training_seconds(weights) == pytest.approx(1.0 + 2.5 + 4.5)  # steps <= 3, the resumed values
    assert training_seconds(checkpoint) is None  # no metrics.jsonl beside its folder
