"""``morphface train CONFIG`` end to end on the toy GAN."""

import subprocess
import sys

import pytest

from morphface.cli import main
from morphface.train import latest_checkpoint, load_checkpoint, read_metrics
from morphface.train.toy import ToyGANPipeline

from .helpers import REPO, subprocess_env, toy_config


@pytest.mark.slow
def test_cli_trains_resumes_and_reports_errors(tmp_path, write_yaml, capsys):
    cfg = write_yaml(toy_config(tmp_path / "from_yaml", steps=50, image_every=3))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "morphface", "train", str(cfg), "--steps", "6", "--output-dir", str(out)]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "done: 6 steps" in proc.stdout
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 7))
    assert latest_checkpoint(out).step == 6 and not (tmp_path / "from_yaml").exists()
    assert isinstance(load_checkpoint(out), ToyGANPipeline)
    assert (out / "images" / "step_00000006.png").is_file()

    # Same output dir without --resume: refused; with it: continues to the new step count.
    assert main(["train", str(cfg), "--steps", "8", "--output-dir", str(out)]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(cfg), "--steps", "8", "--output-dir", str(out), "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 9))

    bad = write_yaml({**toy_config(out), "batch_sise": 4}, "bad.yaml")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'batch_sise'" in err and "did you mean 'batch_size'" in err

    unknown = write_yaml({**toy_config(tmp_path / "x"), "pipeline": {"name": "nope"}}, "unknown.yaml")
    assert main(["train", str(unknown)]) == 1
    assert "unknown pipeline 'nope'; registered:" in capsys.readouterr().err
