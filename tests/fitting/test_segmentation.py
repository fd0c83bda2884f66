"""Person segmentation backends: interface, errors, and MediaPipe on a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphface.errors import BackendUnavailableError
from morphface.fitting import PersonSegmenter, available_segmenters, make_segmenter


class _Half(PersonSegmenter):
    """Left half person, right half background."""

    name = "half"

    def _segment_rgb(self, rgb: np.ndarray) -> np.ndarray:
        out = np.zeros(rgb.shape[:2], np.float32)
        out[:, : rgb.shape[1] // 2] = 1.0
        return out


def test_interface_shapes_dtype_and_errors():
    seg = _Half()
    img = torch.rand(3, 8, 10, dtype=torch.float64)
    p = seg.segment(img)
    assert p.shape == (1, 8, 10) and p.dtype == torch.float64
    assert torch.equal(p[0, :, :5], torch.ones(8, 5, dtype=torch.float64)) and float(p[0, :, 5:].sum()) == 0
    assert seg.segment(img[None].expand(2, -1, -1, -1)).shape == (2, 1, 8, 10)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        seg.segment(torch.rand(1, 8, 10))
    with pytest.raises(ValueError, match="unknown segmenter"):
        make_segmenter("nope")


def test_mediapipe_separates_the_person_from_the_background(testdata):
    if available_segmenters()["mediapipe"] is not None:
        pytest.skip("mediapipe is not installed")
    from morphface.io import read_image

    img = read_image(testdata / "cc0_013_yaw45_woman.jpg")  # a face on a white wall
    with make_segmenter("mediapipe") as seg:
        p = seg.segment(img)[0]
    H, W = p.shape
    assert float(p[int(0.35 * H), int(0.30 * W)]) > 0.9  # her face
    assert float(p[int(0.9 * H), int(0.1 * W)]) < 0.1  # the wall, bottom left
    assert float(p[: int(0.05 * H)].mean()) < 0.1  # above her head


def test_make_segmenter_auto_says_what_failed(monkeypatch):
    import morphface.fitting.segmentation as S

    monkeypatch.setattr(S, "available_segmenters", lambda: {"mediapipe": "mediapipe is not installed"})
    with pytest.raises(BackendUnavailableError, match="mediapipe is not installed"):
        S.make_segmenter("auto")


def test_quiet_native_stderr_hides_fd2_writes_and_restores_it(capfd):
    import os

    from morphface.fitting.detectors import quiet_native_stderr

    with quiet_native_stderr():
        os.write(2, b"native chatter\n")
    os.write(2, b"after\n")
    with quiet_native_stderr(enabled=False):
        os.write(2, b"kept\n")
    err = capfd.readouterr().err
    assert "native chatter" not in err and "after" in err and "kept" in err
