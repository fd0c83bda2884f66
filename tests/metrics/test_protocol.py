"""The evaluation protocol on real clips with oracle and trivial generators."""

import json
import math

import pytest
import torch

from morphface.metrics import evaluate_reenactment

from .helpers import real_clips


@pytest.fixture(scope="module")
def clips(testdata):
    return real_clips(testdata, size=128)


@pytest.fixture(scope="module")
def model():
    from morphface import load_default_model

    return load_default_model("narrow")


def _oracle(clips):
    """A perfect 'generator': returns the real driving frames."""

    def generate(source, source_fit, driving_fit, audio, driving_frames):
        for c in clips:
            T = driving_fit.batch_size
            if torch.equal(c.fit.angles[:T], driving_fit.angles):
                return c.frames[:T]
        raise AssertionError("unknown driving clip")

    return generate


def test_self_reenactment_of_an_oracle_is_perfect(clips, model, tmp_path):
    report = evaluate_reenactment(_oracle(clips), clips, model, mode="self", video_path=tmp_path / "r.mp4")
    m = report.metrics
    assert m["L1"] == 0.0 and math.isinf(m["PSNR"]) and m["SSIM"] == pytest.approx(1.0)
    assert m["CSIM"] == pytest.approx(1.0, abs=1e-9)
    assert report.counts == {"clips": 2, "frames": 4, "csim_frames": 4, "motion_frames": 4}
    assert m["AED"] == pytest.approx(0.0, abs=1e-6) and m["APD"] == pytest.approx(0.0, abs=1e-4)
    assert m["ARD"] == pytest.approx(0.0, abs=1e-4)
    # no LPIPS / FID weights here: reported, not faked
    assert set(report.unavailable) <= {"LPIPS", "FID"}
    for name in report.unavailable:
        assert name not in m and report.unavailable[name]
    table = report.table()
    assert "PSNR" in table and "CSIM" in table
    data = json.loads(report.save_json(tmp_path / "m.json").read_text())
    assert data["metrics"]["PSNR"] == "inf" and len(data["per_clip"]) == 2
    assert "metric,value,status" in report.save_csv(tmp_path / "m.csv").read_text()
    from morphface.io import probe_video

    info = probe_video(tmp_path / "r.mp4")
    assert (info.width, info.height) == (3 * 128, 128)


def test_a_still_source_scores_worse_than_the_oracle(clips, model):
    def still(source, source_fit, driving_fit, audio, driving_frames):
        return source[None].expand(driving_fit.batch_size, -1, -1, -1)

    report = evaluate_reenactment(still, clips, model, mode="self", detector=None, embedder=None)
    assert report.metrics["L1"] > 1.0 and 10 < report.metrics["PSNR"] < 60 and report.metrics["SSIM"] < 1.0
    assert "detector" in report.unavailable["AED"] and report.unavailable["CSIM"] == "no face embedder given"


def test_cross_identity_protocol(clips, model):
    report = evaluate_reenactment(_oracle(clips), clips, model, mode="cross", lpips=None, fid=None)
    pairs = [(r["source"], r["driving"]) for r in report.per_clip]
    assert pairs == [("id0/v/c", "id1/v/c"), ("id1/v/c", "id0/v/c")]
    assert set(report.metrics) <= {"CSIM", "AED", "ARD"} and "L1" not in report.metrics
    # the outputs are the driving frames: their expression is matched exactly; the same man, other frames
    assert report.metrics["AED"] == pytest.approx(0.0, abs=1e-6)
    assert 0.8 < report.metrics["CSIM"] < 1.0
    assert report.unavailable["FID"] == "disabled"


def test_fid_from_a_given_feature_extractor(clips, model):
    def colour_stats(images):  # a stand-in feature extractor (the protocol takes any)
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1).double()

    report = evaluate_reenactment(_oracle(clips), clips, model, mode="self", fid=colour_stats, detector=None,
                                  embedder=None)
    assert report.metrics["FID"] == pytest.approx(0.0, abs=1e-6)
