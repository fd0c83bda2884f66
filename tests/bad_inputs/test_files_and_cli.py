"""Bad-input catalogue, files and command line (issue "Reliability and security"): every probe of the
checkpoint, image, model-file and batch-CLI kind, run through the public API or ``morphface.cli.main``.

Each test names the probe it replays; each failed on the code before the fix. The library-side probes
(camera, fitting, model lookup, synth/preprocess settings, videos) are in ``test_library_inputs.py``.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from morphface.errors import CheckpointError, ImageReadError
from morphface.io import read_image


def _png(path: Path, width: int, height: int, depth: int, colour_type: int, idat: bytes) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------ 1. code execution from a checkpoint


def _toy_config(output_dir: Path, **overrides) -> dict:
    cfg = {"output_dir": str(output_dir),
           "pipeline": {"name": "toy_gan", "config": {"channels": 4, "disc_channels": 4}},
           "data": {"name": "toy_shapes", "config": {"size": 8, "image_size": 8}}, "steps": 2, "batch_size": 2,
           "num_workers": 0, "checkpoint_every": 2, "log_every": 1, "image_every": 0, "tensorboard": False,
           "progress": False}
    return {**cfg, **overrides}


def _toy_checkpoint(tmp_path: Path) -> Path:
    from morphface.train import TrainConfig, Trainer

    return Trainer(TrainConfig.from_dict(_toy_config(tmp_path / "run"))).fit().checkpoint


def _rewrite_metadata(weights: Path, **changes: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(weights), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(weights), metadata=meta)


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """``evilmod.py`` on ``sys.path`` (the working directory, as in the probe) that leaves a mark when imported."""
    mark = tmp_path / "evil_ran"
    (tmp_path / "evilmod.py").write_text(f"open({str(mark)!r}, 'w').write('imported')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    return mark


def test_a_checkpoint_naming_a_module_never_imports_it(tmp_path, evil_module):
    from morphface.train import load_checkpoint

    weights = _toy_checkpoint(tmp_path)
    _rewrite_metadata(weights, imports=json.dumps(["evilmod"]))
    pipeline = load_checkpoint(weights)  # a registered pipeline loads; the file's module list is ignored
    assert type(pipeline).__name__ == "ToyGANPipeline"
    assert not evil_module.exists() and "evilmod" not in sys.modules

    _rewrite_metadata(weights, pipeline=json.dumps({"name": "evil_pipeline", "config": {}}))
    with pytest.raises(CheckpointError, match=r"'evil_pipeline' that is not registered.*\['evilmod'\].*never imported"):
        load_checkpoint(weights)
    assert not evil_module.exists()


def test_a_plugin_is_imported_only_when_the_caller_names_it(tmp_path, evil_module):
    from morphface.train import load_checkpoint

    weights = _toy_checkpoint(tmp_path)
    load_checkpoint(weights, plugins=["evilmod"])  # the caller's explicit opt-in
    assert evil_module.exists()


def test_a_yaml_config_naming_modules_is_refused(tmp_path, evil_module):
    import yaml

    from morphface.cli import main
    from morphface.train import ConfigError, load_config

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_toy_config(tmp_path / "run", imports=["evilmod"])))
    with pytest.raises(ConfigError, match="never decides which code runs.*--plugin"):
        load_config(path)
    assert main(["train", str(path)]) == 2
    assert not evil_module.exists()


# ------------------------------------------------------------------ 2. decompression bomb, 4. empty image


def test_a_16bit_png_claiming_16000x16000_pixels_is_refused_before_decoding(tmp_path):
    # The probe's 498 KB file decoded ~7 GB; this one's IDAT is 20 bytes: a reader that inflated before
    # checking would fail on the data, not name the limit.
    bomb = _png(tmp_path / "bomb.png", 16000, 16000, 16, 2, zlib.compress(b"\0" * 1000))
    with pytest.raises(ImageReadError, match=r"16000x16000 = 256000000 pixels is more than the limit"):
        read_image(bomb)


def test_the_pixel_limit_holds_on_every_decode_path(tmp_path, monkeypatch):
    from PIL import Image

    row16 = b"\0" + b"\0" * (300 * 6)
    png16 = _png(tmp_path / "a16.png", 300, 200, 16, 2, zlib.compress(row16 * 200))
    png8 = tmp_path / "a8.png"
    Image.new("RGB", (300, 200)).save(png8)
    assert read_image(png16).shape == read_image(png8).shape == (3, 200, 300)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # the user lowers Pillow's limit
    for path in (png16, png8):
        with pytest.raises(ImageReadError, match="more than the limit of 50000"):
            read_image(path)


def test_a_16bit_png_inflating_to_more_than_its_header_says_is_corrupt(tmp_path):
    # 2x2 RGB16 needs 2 * 13 bytes; a stream that inflates to 100 MB must stop after 27.
    png = _png(tmp_path / "liar.png", 2, 2, 16, 2, zlib.compress(b"\0" * 100_000_000, 1))
    with pytest.raises(ImageReadError, match=r"expected 26 decompressed bytes, found 27\+"):
        read_image(png)


@pytest.mark.parametrize("depth", [8, 16])
def test_an_empty_png_is_an_image_read_error(tmp_path, depth):
    png = _png(tmp_path / "empty.png", 0, 0, depth, 2, zlib.compress(b""))
    with pytest.raises(ImageReadError, match="empty|cannot read"):
        read_image(png)


# ------------------------------------------------------------------ 9. second derivatives through the renderer


def _triangle_scene(dtype=torch.float64):
    verts = torch.tensor([[[-0.8, -0.8, 5.0], [0.8, -0.7, 6.0], [0.0, 0.8, 5.5]]], dtype=dtype, requires_grad=True)
    return verts, torch.tensor([[0, 1, 2]])


@pytest.mark.parametrize("fused", [True, False], ids=["fused-numba", "torch"])
def test_second_derivatives_through_rasterize_and_interpolate_are_exact(fused, monkeypatch):
    import morphface.render.rasterizer as rasterizer
    from morphface.render import interpolate, rasterize

    monkeypatch.setattr(rasterizer, "FUSED_CPU", fused)
    verts, faces = _triangle_scene()
    attrs = torch.randn(1, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def render(v, a):
        frag = rasterize(v, faces, (8, 8))
        return interpolate(a, faces, frag), frag.depth

    assert torch.autograd.gradcheck(render, (verts, attrs))
    assert torch.autograd.gradgradcheck(render, (verts, attrs))


def test_fused_and_torch_hessian_vector_products_agree(monkeypatch):
    import morphface.render.rasterizer as rasterizer
    from morphface.render import interpolate, rasterize

    def hvp(fused: bool) -> torch.Tensor:
        monkeypatch.setattr(rasterizer, "FUSED_CPU", fused)
        verts, faces = _triangle_scene()
        frag = rasterize(verts, faces, (16, 16))
        image = interpolate(verts.detach() ** 2, faces, frag)
        (g,) = torch.autograd.grad(image.square().sum() + frag.depth.sum(), verts, create_graph=True)
        (h,) = torch.autograd.grad((g * torch.linspace(-1, 1, 9, dtype=g.dtype).view(1, 3, 3)).sum(), verts)
        return h

    fused, reference = hvp(True), hvp(False)
    assert fused.abs().max() > 1e-3
    torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-9)


def test_a_plain_backward_stays_on_the_fused_kernel(monkeypatch):
    from morphface.render import _fused_cpu, rasterize

    verts, faces = _triangle_scene(torch.float32)
    calls = []
    monkeypatch.setattr(_fused_cpu, "_graph_vjp", lambda *a: calls.append(a))
    rasterize(verts, faces, (8, 8)).depth.sum().backward()
    assert verts.grad is not None and np.isfinite(verts.grad.numpy()).all() and not calls
