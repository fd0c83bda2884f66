"""morphface.data.dataset: ReenactmentDataset on a tiny synthetic cache (the contract's sample dict)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from morphface.data.cache import PARAMS_NAME
from morphface.data.dataset import ReenactmentDataset, ReenactmentDatasetConfig, split_identities
from morphface.fitting import FitResult
from morphface.render import render_ncc

K_EXP = 53
D_P = 100 + 53 + 3 + 3 + 1


def _dataset(root, **kw) -> ReenactmentDataset:
    return ReenactmentDataset(root, image_size=64, split="all", **kw)


def test_sample_keys_shapes_and_ranges(tiny_cache):
    ds = _dataset(tiny_cache)
    assert len(ds) == 32 and ds.total_frames == 32
    sample = ds[5]
    shapes = {
        "source": (3, 64, 64), "driving": (3, 64, 64), "source_ncc": (3, 64, 64), "driving_ncc": (9, 64, 64),
        "source_mask": (1, 64, 64), "driving_mask": (1, 64, 64), "source_motion": (27, K_EXP + 6),
        "driving_motion": (27, K_EXP + 6), "source_params": (D_P,), "driving_params": (D_P,), "audio": (108,),
        "has_audio": (), "mouth_box": (4,), "clip_index": (), "source_clip_index": (), "source_index": (),
        "driving_index": (), "identity_index": (), "source_aus": (17,), "driving_aus": (17,),
        "source_audio_window": (8, 108), "driving_audio_window": (8, 108), "source_has_audio": (),
    }
    assert set(sample) == set(shapes)
    for key, shape in shapes.items():
        assert tuple(sample[key].shape) == shape, key
    for key in ("source", "driving", "source_ncc", "driving_ncc", "source_mask", "driving_mask"):
        v = sample[key]
        assert v.dtype == torch.float32 and v.min() >= 0 and v.max() <= 1, key
    for key in ("clip_index", "source_clip_index", "source_index", "driving_index"):
        assert sample[key].dtype == torch.int64
    assert sample["has_audio"] == 1.0 and sample["audio"].abs().sum() > 0
    x0, y0, x1, y1 = sample["mouth_box"].tolist()
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and abs((x1 - x0) - (y1 - y0)) < 1e-3
    batch = next(iter(DataLoader(ds, batch_size=3)))  # the default collate stacks every entry
    assert batch["driving_ncc"].shape == (3, 9, 64, 64) and batch["clip_index"].shape == (3,)


def test_without_renders_and_with_extra_sources(tiny_cache):
    plain = _dataset(tiny_cache)
    ds = _dataset(tiny_cache, renders=False, extra_sources=2)
    a, b = plain[5], ds[5]
    assert not any(k.endswith(("_ncc", "_mask")) or k == "mouth_box" for k in b)
    assert b["extra_sources"].shape == (2, 3, 64, 64)
    for key in ("source", "driving", "source_index", "driving_index", "driving_params"):  # the same draw
        assert torch.equal(a[key], b[key]), key
    clip = ds.clips[int(b["source_clip_index"])]
    assert int(b["identity_index"]) == ds.identities.index(clip.identity)
    # the extra frames are other frames of the source clip
    frames = ds._frames(int(b["source_clip_index"]), list(range(clip.num_frames)))
    for extra in b["extra_sources"]:
        match = [i for i in range(clip.num_frames) if torch.allclose(frames[i], extra)]
        assert match and int(b["source_index"]) not in match


def test_conditioning_matches_the_cached_parameters(tiny_cache, models):
    _, narrow = models
    ds = _dataset(tiny_cache)
    for i in (0, 1, 13):  # 0 and 1: driving frames at the clip start (clamped history)
        s = ds[i]
        clip, t, sc, si = (int(s[k]) for k in ("clip_index", "driving_index", "source_clip_index", "source_index"))
        assert ds.draw(i) == (clip, t, sc, si)
        fit = FitResult.load(ds.clips[clip].path / PARAMS_NAME)
        hist = torch.arange(t - 2, t + 1).clamp(min=0)
        ref = render_ncc(narrow, fit[hist].vertices(narrow), fit[hist].camera)
        torch.testing.assert_close(s["driving_ncc"], ref.image.reshape(9, 64, 64))
        torch.testing.assert_close(s["driving_mask"], ref.mask[-1])
        row = torch.cat([fit.exp_coeffs[t], fit.angles[t], fit.translation[t]])
        torch.testing.assert_close(s["driving_motion"][13], row)
        first = torch.cat([fit.exp_coeffs[0], fit.angles[0], fit.translation[0]])
        torch.testing.assert_close(s["driving_motion"][0], first)  # t - 13 < 0: clamped to the clip start
        flat = torch.cat([fit.id_coeffs[t], fit.exp_coeffs[t], fit.angles[t], fit.translation[t], fit.focal[t:t + 1]])
        torch.testing.assert_close(s["driving_params"], flat)
        # the mouth box contains the projected mouth landmarks
        mouth = fit.landmarks[t, 48:68]
        box = s["mouth_box"]
        assert (mouth[:, 0] >= box[0]).all() and (mouth[:, 0] <= box[2]).all()
        assert (mouth[:, 1] >= box[1]).all() and (mouth[:, 1] <= box[3]).all()
    # the face render covers the face in the frame: the NCC mask is where the frame is not background
    assert ds[3]["driving_mask"].mean() > 0.1


def test_determinism_and_epochs(tiny_cache):
    a, b = _dataset(tiny_cache, seed=7), _dataset(tiny_cache, seed=7)
    _ = a[9]  # asking for other items first changes nothing
    for i in (2, 17, 30):
        sa, sb = a[i], b[i]
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    draws0 = [a.draw(i) for i in range(len(a))]
    a.set_epoch(1)
    draws1 = [a.draw(i) for i in range(len(a))]
    assert [d[:2] for d in draws0] == [d[:2] for d in draws1]  # every frame drives once per epoch
    assert draws0 != draws1  # but the sources are drawn anew
    other_seed = _dataset(tiny_cache, seed=8)
    assert [other_seed.draw(i) for i in range(len(a))] != draws0
    # samples_per_epoch: random driving frames too, still a function of (seed, epoch, i)
    c = _dataset(tiny_cache, seed=7, samples_per_epoch=5)
    assert len(c) == 5 and [c.draw(i) for i in range(5)] == [_dataset(tiny_cache, seed=7,
                                                                      samples_per_epoch=5).draw(i) for i in range(5)]
    with pytest.raises(IndexError):
        c[5]


_WORKERS_SCRIPT = """
import sys, torch
from torch.utils.data import DataLoader
from morphface.data.dataset import ReenactmentDataset
ds = ReenactmentDataset(sys.argv[1], image_size=64, split="all", samples_per_epoch=4)
ds.set_epoch(2)
(plain,) = list(DataLoader(ds, batch_size=4, num_workers=0))  # the parent renders before forking
(multi,) = list(DataLoader(ds, batch_size=4, num_workers=2))
assert all(torch.equal(plain[k], multi[k]) for k in plain), "workers gave other samples"
print("same batches")
"""


def test_dataloader_workers_give_the_same_batches(tiny_cache):
    """Forked workers render safely after the parent rendered (numba's fork-safe threading layer)
    and give exactly the batches of the main process. A fresh interpreter, because numba's
    threading layer is fixed once a kernel has run in a process."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", _WORKERS_SCRIPT, str(tiny_cache)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same batches" in out.stdout


def test_self_and_cross_modes(tiny_cache):
    selfs = _dataset(tiny_cache, mode="self")
    for i in range(len(selfs)):
        clip, t, sclip, s = selfs.draw(i)
        assert clip == sclip and s != t
    cross = _dataset(tiny_cache, mode="cross")
    for i in range(len(cross)):
        clip, _, sclip, _ = cross.draw(i)
        assert cross.clips[clip].identity != cross.clips[sclip].identity
    sample = cross[4]
    assert not torch.equal(sample["source_params"][:100], sample["driving_params"][:100])  # other identity
    with pytest.raises(ValueError, match="at least two identities"):
        ReenactmentDataset(tiny_cache, image_size=64, split="train", mode="cross", test_identities=["id00001"])


def test_distributed_sampler_split(tiny_cache):
    ds = _dataset(tiny_cache)
    ranks = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) == set(range(len(ds)))
    # what a rank gets for an index does not depend on the rank
    assert torch.equal(ds[ranks[1][0]]["driving"], _dataset(tiny_cache)[ranks[1][0]]["driving"])


def test_identity_split(tiny_cache):
    names = [f"id{i:03d}" for i in range(20)]
    assert split_identities(names, "test", 0.1) == ["id018", "id019"]
    assert len(split_identities(names, "train", 0.1)) == 18
    assert split_identities(names, "test", test_identities=["id003"]) == ["id003"]
    assert split_identities(names[:5], "test", 0.1) == []  # fewer than 10: no held-out identity by default
    with pytest.raises(ValueError, match="not in the cache"):
        split_identities(names, "test", test_identities=["nobody"])
    train = ReenactmentDataset(tiny_cache, image_size=64, split="train", test_identities=["id00001"])
    test = ReenactmentDataset(tiny_cache, image_size=64, split="test", test_identities=["id00001"])
    assert train.identities == ["id00000"] and test.identities == ["id00001"]
    assert len(train) == len(test) == 16
    with pytest.raises(ValueError, match="is empty"):
        ReenactmentDataset(tiny_cache, image_size=64, split="test")  # 2 identities, 10%: none held out


def test_resized_images_scale_the_cameras(tiny_cache):
    big, small = _dataset(tiny_cache), ReenactmentDataset(tiny_cache, image_size=32, split="all")
    sb, ss = big[6], small[6]
    assert ss["driving"].shape == (3, 32, 32) and ss["driving_ncc"].shape == (9, 32, 32)
    torch.testing.assert_close(ss["mouth_box"], sb["mouth_box"] / 2, atol=0.05, rtol=0)
    assert abs(float(ss["driving_params"][-1]) - float(sb["driving_params"][-1]) / 2) < 1e-3  # focal in pixels
    # the masks agree with a 2x downsampling of the full-size mask
    down = torch.nn.functional.avg_pool2d(sb["driving_mask"][None], 2)[0]
    assert (down.round() - ss["driving_mask"]).abs().mean() < 0.03


def test_registry_and_config_errors(tiny_cache):
    from morphface.train.registry import build_dataset

    ds = build_dataset("reenactment", {"root": str(tiny_cache), "image_size": 64, "split": "all",
                                       "samples_per_epoch": 4})
    assert isinstance(ds, ReenactmentDataset) and len(ds) == 4
    with pytest.raises(ValueError, match="bad config"):
        ReenactmentDataset.from_config({"root": str(tiny_cache), "colour": "red"})
    with pytest.raises(ValueError, match="mode must be"):
        ReenactmentDatasetConfig(root=str(tiny_cache), mode="both")
    with pytest.raises(ValueError, match="no complete clip"):
        ReenactmentDataset(tiny_cache / "id00000" / "vid00")


@pytest.mark.skipif(importlib.util.find_spec("morphface.uv.unwrap") is None, reason="morphface.uv.unwrap not there")
def test_source_uv(tiny_cache, models):
    from morphface.uv.unwrap import unwrap

    _, narrow = models
    ds = _dataset(tiny_cache, uv_size=32)
    s = ds[3]
    assert s["source_uv"].shape == (4, 32, 32)
    assert 0 <= s["source_uv"].min() and s["source_uv"].max() <= 1
    assert s["source_uv"][3].mean() > 0.1  # a good part of the layout was seen
    clip, src = int(s["source_clip_index"]), int(s["source_index"])
    fit = FitResult.load(ds.clips[clip].path / PARAMS_NAME)[src]
    ref = unwrap(s["source"][None], fit, narrow, size=32)
    torch.testing.assert_close(s["source_uv"][:3], ref.texture[0], atol=1e-5, rtol=0)
