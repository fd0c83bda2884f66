"""The face-part masks and the small face parser trained on the library's synthetic renders."""

import pytest
import torch

from morphface.errors import CheckpointError, InputShapeError, WeightsNotFoundError
from morphface.nets.parsing import (
    FaceParser,
    FaceParserConfig,
    load_face_parser,
    part_iou,
    save_face_parser,
    train_face_parser,
)
from morphface.render.face_parts import FACE_PARTS, face_part_masks

S = 64
#: The IoU a tiny parser reaches after 200 CPU steps on 30 renders, on a held-out identity (eyes + brows and
#: lips + mouth, the groups of L_S; measured 0.36 and 0.30). Longer training on a full cache reaches more.
MIN_IOU = 0.25


@pytest.fixture(scope="module")
def renders(synthetic_clips):
    """4 synthetic identities x 10 frames at 64 x 64 with their ground-truth part masks."""
    return [(c.frames, face_part_masks(c.fit.landmarks, S)) for c in synthetic_clips(4, 10, S)]


def _square_face_landmarks():
    """Hand-made landmarks: eyes, brows and lips as axis-aligned boxes/lines of known area."""
    lm = torch.zeros(1, 68, 2)
    box = lambda x0, y0, x1, y1, n: torch.tensor(  # noqa: E731
        [[x0, y0], [x1, y0], [x1, y1], [x0, y1]] + [[x0, y1]] * (n - 4), dtype=torch.float32)
    lm[0, 36:42] = box(10, 20, 20, 24, 6)
    lm[0, 42:48] = box(40, 20, 50, 24, 6)
    lm[0, 17:22] = torch.tensor([[10.0, 14], [12, 14], [14, 14], [17, 14], [20, 14]])
    lm[0, 22:27] = torch.tensor([[40.0, 14], [43, 14], [46, 14], [48, 14], [50, 14]])
    lm[0, 48:60] = box(20, 40, 44, 52, 12)
    lm[0, 60:68] = box(24, 44, 40, 48, 8)
    return lm


def test_part_masks_have_the_polygon_areas():
    m = face_part_masks(_square_face_landmarks(), S, supersample=4)
    assert m.shape == (1, 4, S, S) and len(FACE_PARTS) == 4
    area = m.sum(dim=(0, 2, 3))
    assert float(area[0]) == pytest.approx(2 * 10 * 4, abs=0.5)  # eyes
    assert float(area[3]) == pytest.approx(16 * 4, abs=0.5)  # mouth interior
    assert float(area[2]) == pytest.approx(24 * 12 - 16 * 4, abs=0.5)  # lips = outer minus interior
    # brows: bands of half width 0.06 * interocular distance (30 px) around 10 px lines, outside the eyes
    assert float(area[1]) == pytest.approx(2 * (10 * 3.6 + 3.14159 * 1.8 ** 2), rel=0.1)
    assert float((m.sum(1) > 1.0 + 1e-6).sum()) == 0  # the parts do not overlap
    with pytest.raises(InputShapeError, match=r"\(B, 68, 2\)"):
        face_part_masks(torch.zeros(1, 67, 2), S)


@pytest.mark.slow
def test_parser_trained_on_synthetic_renders_reaches_the_stated_iou(renders, tmp_path):
    train_x = torch.cat([r[0] for r in renders[:3]])
    train_y = torch.cat([r[1] for r in renders[:3]])
    cfg = FaceParserConfig(base_channels=12, num_blocks=2, max_channels=48)
    parser = train_face_parser(train_x, train_y, steps=200, batch_size=8, lr=3e-3, config=cfg)
    test_x, test_y = renders[3]
    with torch.no_grad():
        prob = parser(test_x * 2 - 1)
    assert prob.shape == test_y.shape and float(prob.min()) >= 0 and float(prob.max()) <= 1
    groups = lambda t: torch.stack([t[:, :2].amax(1), t[:, 2:].amax(1)], 1)  # noqa: E731
    iou = part_iou(groups(prob), groups(test_y))
    print(f"held-out IoU upper/lower: {iou.tolist()}")
    assert bool((iou >= MIN_IOU).all()), iou
    # an untrained parser of the same size is far from it
    with torch.no_grad():
        untrained = FaceParser(cfg)(test_x * 2 - 1)
    assert bool((part_iou(groups(untrained), groups(test_y)) < 0.2).all())
    save_face_parser(parser, tmp_path / "parser.safetensors")
    again = load_face_parser(tmp_path / "parser.safetensors")
    with torch.no_grad():
        assert torch.equal(again(test_x * 2 - 1), prob)


def test_loading_missing_or_foreign_files_raises(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(WeightsNotFoundError, match="face_parser"):
        load_face_parser(tmp_path / "none.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a morphface face-parser"):
        load_face_parser(tmp_path / "other.safetensors")
