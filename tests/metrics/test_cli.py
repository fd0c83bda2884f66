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
