"""Unit tests of the trainer's parts: state serialisation, EMA, sampler, checkpoint files, image grids."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from morphface.errors import CheckpointError
from morphface.train.checkpoint import (
    atomic_write,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    remove_temp_files,
    resolve_checkpoint,
    write_checkpoint,
)
from morphface.train.ema import EMA
from morphface.train.monitor import image_grid
from morphface.train.sampler import ResumableDistributedSampler
from morphface.train.state import capture_rng, pack, restore_rng, unpack


def _roundtrip(obj, tmp_path):
    tensors = {}
    tree = pack(obj, tensors, "x")
    text = json.dumps(tree, allow_nan=False)  # strict JSON, no pickle anywhere
    save_file(tensors, str(tmp_path / "t.safetensors"))
    return unpack(json.loads(text), load_file(str(tmp_path / "t.safetensors")))


def test_optimizer_state_round_trip_continues_identically(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    state = _roundtrip(opt.state_dict(), tmp_path)
    assert state["param_groups"][0]["betas"] == (0.5, 0.999)
    assert set(state["state"]) == {0, 1}  # int keys survive

    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(twin.parameters())
    opt2.load_state_dict(state)
    x = torch.randn(5, 4)
    for o, m in ((opt, net), (opt2, twin)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    assert torch.equal(net.weight, twin.weight) and torch.equal(net.bias, twin.bias)


def test_special_values_round_trip(tmp_path):
    obj = {"nan": float("nan"), "inf": float("-inf"), "t": (1, "a", None),
           "arr": np.arange(3, dtype=np.uint32),
           "u64": np.array([2**63 + 5], dtype=np.uint64), 3: [True, 2.5]}
    back = _roundtrip(obj, tmp_path)
    assert np.isnan(back["nan"]) and back["inf"] == float("-inf") and back["t"] == (1, "a", None)
    assert back["arr"].dtype == np.uint32 and back["arr"].tolist() == [0, 1, 2]
    assert back["u64"].dtype == np.uint64 and int(back["u64"][0]) == 2**63 + 5
    assert back[3] == [True, 2.5]
    with pytest.raises(TypeError, match="without pickle"):
        pack({"f": object()}, {}, "x")


def test_rng_round_trip(tmp_path):
    state = _roundtrip(capture_rng(torch.device("cpu")), tmp_path)
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(state, torch.device("cpu"))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_ema_closed_form():
    src = torch.nn.Linear(3, 2)
    ema = EMA(src, decay=0.9)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    for _ in range(5):
        ema.update()
    # A constant target: p_ema = target + (p0 - target) * decay^k.
    for p_ema, p0, p in zip(ema.module.parameters(), start, src.parameters()):
        torch.testing.assert_close(p_ema, p + (p0 - p) * 0.9**5)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_sampler_resumes_mid_epoch_and_splits_ranks():
    data = list(range(10))
    full = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=7)
    full.set_position(2, 0)
    epoch2 = list(full)
    assert sorted(epoch2) == data
    resumed = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=7)
    resumed.set_position(2, 4)
    assert list(resumed) == epoch2[4:]
    assert list(resumed) == epoch2  # the offset applies to one pass only
    ranks = [ResumableDistributedSampler(data, num_replicas=2, rank=r, seed=7) for r in (0, 1)]
    for s in ranks:
        s.set_position(2, 0)
    assert list(ranks[0]) == epoch2[0::2] and list(ranks[1]) == epoch2[1::2]


def _fake_checkpoint(directory, step):
    return write_checkpoint(directory, step, {"model.g.w": torch.full((2,), float(step))}, {"format": "x"},
                            {"optim.g": torch.zeros(1)}, {"step": step}, {})


def test_checkpoint_listing_ignores_partial_files(tmp_path):
    for step in (5, 10):
        _fake_checkpoint(tmp_path, step)
    (tmp_path / ".step_00000015.safetensors.tmp-1-abc").write_bytes(b"partial")  # killed mid-write
    (tmp_path / "step_00000015.safetensors").write_bytes(b"no record: never committed")
    torn = _fake_checkpoint(tmp_path, 20)
    with open(torn.weights, "r+b") as f:  # a record whose file was truncated afterwards
        f.truncate(10)
    with pytest.warns(UserWarning, match="wrong size"):
        assert [c.step for c in list_checkpoints(tmp_path)] == [5, 10]
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path).step == 10
    assert [p.name for p in remove_temp_files(tmp_path)] == [".step_00000015.safetensors.tmp-1-abc"]
    with pytest.warns(UserWarning):
        assert prune_checkpoints(tmp_path, keep_last=1) == [5]
    assert not any(p.name.startswith("step_00000005") for p in tmp_path.iterdir())


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="found none"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.safetensors")
    ck = _fake_checkpoint(tmp_path, 3)
    with pytest.raises(CheckpointError, match="resume-state file"):
        resolve_checkpoint(ck.state)
    assert resolve_checkpoint(ck.record_path) == ck.weights == resolve_checkpoint(tmp_path)


def test_image_grid_layout():
    a = torch.zeros(5, 3, 8, 6)
    b = torch.ones(5, 1, 4, 3)  # greyscale and another size: expanded and resized
    grid = image_grid({"a": a, "b": b}, rows=2)
    assert grid.shape == (3, 16, 12)
    assert grid[:, :, :6].max() == 0 and grid[:, :, 6:].min() == 1
    with pytest.raises(ValueError, match="'b' must have shape"):
        image_grid({"a": a, "b": torch.ones(5, 2, 8, 6)}, rows=2)


def test_tensorboard_missing_degrades_with_warning(tmp_path, monkeypatch):
    import sys

    from morphface.train.monitor import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import raise ImportError
    with pytest.warns(UserWarning, match="without TensorBoard"):
        tb = TensorBoardLog(tmp_path / "tb")
    tb.scalars({"loss": 1.0}, 1)
    tb.image("x", torch.zeros(3, 4, 4), 1)
    tb.close()
    assert not (tmp_path / "tb").exists()
