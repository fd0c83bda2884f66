"""``morphface frontalize``: a folder with a good photo, a broken file and a picture without a face."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch.nn.functional as F

from morphface.cli import main
from morphface.fitting.detectors import available_detectors
from morphface.io import read_image, write_image

pytestmark = pytest.mark.skipif(
    all(v is not None for v in available_detectors().values()),
    reason="no landmark detector (mediapipe, dlib or FAN) is installed",
)


@pytest.fixture(scope="module")
def photo():
    """The turned-face example photo shipped with the package, ``(3, H, W)``."""
    with resources.as_file(
        resources.files("morphface").joinpath("assets", "examples", "cc0_040_yaw35_man.jpg")
    ) as p:
        return read_image(p)


def test_cli_reports_bad_files_and_goes_on(tmp_path, capsys, photo):
    src = tmp_path / "in"
    src.mkdir()
    small = F.interpolate(photo[None], size=(384, 384), mode="bilinear", antialias=True)[0]
    write_image(src / "man.png", small)
    (src / "broken.jpg").write_bytes(b"this is not a jpeg")
    rng = np.random.default_rng(0)
    write_image(src / "noise.png", (rng.random((160, 160, 3)) * 0.2 + 0.4).astype(np.float32))
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(["frontalize", str(src), "-o", str(out), "--height", "128", "--texture-size", "128"])
    err = capsys.readouterr().err
    assert code == 1
    assert (out / "man_frontal.png").is_file()
    panel = read_image(out / "man_frontal.png")
    assert panel.shape[1] == 128 and panel.shape[2] == 3 * 128
    assert "broken.jpg" in err and "ImageReadError" in err
    assert "noise.png" in err and "NoFaceError" in err
    assert "notes.txt" in err and "skipped" in err
    assert not (out / "broken_frontal.png").exists()


def test_cli_single_good_file_exits_zero(tmp_path, photo):
    path = tmp_path / "face.png"
    write_image(path, F.interpolate(photo[None], size=(320, 320), mode="bilinear", antialias=True)[0])
    assert (
        main(["frontalize", str(path), "-o", str(tmp_path / "o"), "--height", "96", "--texture-size", "128"])
        == 0
    )
    assert (tmp_path / "o" / "face_frontal.png").is_file()
    assert main(["frontalize", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 1


def test_cli_switches_off_the_person_mask_and_relighting(tmp_path, monkeypatch, photo):
    import sys

    import morphface.uv.frontalize as _  # noqa: F401 - the module, for monkeypatching

    seen = {}
    module = sys.modules["morphface.uv.frontalize"]
    real = module.frontalize

    def spy(image, **kwargs):
        seen.update(kwargs)
        return real(image, **kwargs)

    monkeypatch.setattr(module, "frontalize", spy)
    path = tmp_path / "face.png"
    write_image(path, F.interpolate(photo[None], size=(256, 256), mode="bilinear", antialias=True)[0])
    args = ["frontalize", str(path), "-o", str(tmp_path / "o"), "--height", "64", "--texture-size", "128"]
    assert main(args + ["--no-person-mask", "--no-relight"]) == 0
    assert seen["config"].fit.segmenter is None and seen["config"].texture.relight is False
    assert seen["config"].texture.size == 128
    assert main(args) == 0
    assert seen["config"].fit.segmenter == "auto" and seen["config"].texture.relight is True
