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


# ------------------------------------------------------------------ 3, 4, 6. batch CLIs: names, bad files, paths

ASTRONAUT = Path(__file__).resolve().parents[2] / "morphface" / "assets" / "examples" / "astronaut_eileen_collins.png"


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """The probe's folder: ``a.jpg`` and ``a.png`` (one stem), ``..jpg`` and a 0x0 16-bit PNG."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    image = Image.open(ASTRONAUT).convert("RGB").resize((256, 256))
    image.save(folder / "a.jpg", quality=95)
    image.save(folder / "a.png")
    image.save(folder / "..jpg", format="JPEG")
    _png(folder / "broken.png", 0, 0, 16, 2, zlib.compress(b""))
    return folder


def test_fit_folder_writes_one_set_per_input_inside_the_output_and_reports_the_bad_file(photo_folder, capsys):
    from morphface.cli import main

    out = photo_folder.parent / "out"
    before = sorted(p.name for p in photo_folder.parent.iterdir())
    code = main(["fit", str(photo_folder), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # a failed input makes the exit code non-zero ...
    assert "broken.png: ImageReadError" in captured.err and "empty" in captured.err
    assert "fitted 3 of 4 file(s)" in captured.out  # ... after the good files were all processed
    stems = {p.name.split(".")[0].removesuffix("_overlay") for p in out.iterdir()}
    assert stems == {"a_jpg", "a_png", "unnamed"}
    for stem in stems:
        assert {f"{stem}.fit.safetensors", f"{stem}.obj", f"{stem}_overlay.png"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in photo_folder.parent.iterdir()) == sorted([*before, "out"])  # nothing beside -o


def test_frontalize_folder_keeps_both_a_files_and_goes_on_after_a_bad_one(photo_folder, capsys):
    from morphface.cli import main

    (photo_folder / "..jpg").unlink()
    out = photo_folder.parent / "front"
    code = main(["frontalize", str(photo_folder), "-o", str(out), "--height", "128", "--no-person-mask"])
    captured = capsys.readouterr()
    assert code == 1 and "broken.png: ImageReadError" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg_frontal.png", "a_png_frontal.png"]


def test_output_names_are_safe_and_unique():
    from morphface.cli._batch import inside, output_names, safe_name

    files = [Path(n) for n in ("a.jpg", "a.png", "A.PNG", "..jpg", "x y.png", "../../etc.png", "b.jpg")]
    names = output_names(files)
    assert names[Path("a.jpg")] == "a_jpg" and names[Path("b.jpg")] == "b" and names[Path("..jpg")] == "unnamed"
    assert names[Path("x y.png")] == "x_y" and names[Path("../../etc.png")] == "etc"
    assert len({n.lower() for n in names.values()}) == len(files)
    assert all(safe_name(n) == n and not n.startswith(".") for n in names.values())
    with pytest.raises(ValueError, match="outside the output folder"):
        inside(Path("/tmp/out"), Path("/tmp/out/../results"))


@pytest.mark.parametrize("argv, message", [
    (["fit", "x.jpg", "-o", "o", "--photometric-steps", "-3"], "--photometric-steps: must be >= 0; got -3"),
    (["frontalize", "x.jpg", "-o", "o", "--height", "-5"], "--height: must be > 0; got -5"),
    (["frontalize", "x.jpg", "-o", "o", "--height", "0"], "--height: must be > 0; got 0"),
    (["evaluate", "ckpt", "--data", "d", "--batch-size", "0"], "--batch-size: must be > 0"),
])
def test_nonsense_numbers_are_usage_errors(argv, message, capsys):
    from morphface.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="probes a machine without CUDA")
def test_device_cuda_without_cuda_is_a_usage_error(capsys):
    from morphface.cli import main

    with pytest.raises(SystemExit):
        main(["reenact", "ckpt", "--source", "s.png", "--driving", "d.mp4", "-o", "o.mp4", "--device", "cuda"])
    assert "'cuda' was asked for but this machine has" in capsys.readouterr().err


def test_a_broken_model_file_or_a_missing_detector_is_one_line(tmp_path, capsys, monkeypatch):
    from morphface.cli import main
    from morphface.errors import BackendUnavailableError
    from morphface.fitting import detectors

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    assert main(["fit", str(ASTRONAUT), "-o", str(tmp_path / "o"), "--model", str(broken)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("morphface fit: error:") and "broken.safetensors" in err and len(err.splitlines()) == 1

    def no_fan(*args, **kwargs):
        raise BackendUnavailableError("FAN weights s3fd-619a316812.pth not found in /nowhere")

    monkeypatch.setattr(detectors, "make_detector", no_fan)
    monkeypatch.setattr("morphface.fitting.make_detector", no_fan)
    assert main(["fit", str(ASTRONAUT), "-o", str(tmp_path / "o"), "--detector", "fan"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "morphface fit: error: FAN weights s3fd-619a316812.pth not found in /nowhere"


# ------------------------------------------------------------------ 5. convert-model, 7. NaN in a model file


@pytest.fixture(scope="module")
def native_model(tmp_path_factory) -> Path:
    from morphface.morphable import load_default_model

    path = tmp_path_factory.mktemp("model") / "ict.safetensors"
    load_default_model("narrow").save(path)
    return path


def test_convert_model_never_destroys_its_source(native_model, tmp_path, capsys):
    from morphface.cli import main

    original = native_model.read_bytes()
    assert main(["convert-model", str(native_model), str(native_model)]) == 1
    assert main(["convert-model", str(native_model), str(native_model), "--force"]) == 1  # not even with --force
    assert "is the source" in capsys.readouterr().err
    assert native_model.read_bytes() == original

    dst = tmp_path / "copy.safetensors"
    dst.write_bytes(b"the user's file")
    assert main(["convert-model", str(native_model), str(dst)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err and dst.read_bytes() == b"the user's file"
    assert main(["convert-model", str(native_model), str(dst), "--force"]) == 0
    from morphface.morphable import MorphableModel

    assert torch.equal(MorphableModel.load(dst).id_basis, MorphableModel.load(native_model).id_basis)

    assert main(["convert-model", str(native_model), str(tmp_path)]) == 1  # a folder
    assert "is a folder" in capsys.readouterr().err
    under_a_file = dst / "model.safetensors"
    assert main(["convert-model", str(native_model), str(under_a_file)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("morphface convert-model: error:") and len(err.splitlines()) == 1


def test_a_failed_model_write_leaves_the_old_file(native_model, tmp_path, monkeypatch):
    import safetensors.torch

    from morphface.morphable import MorphableModel

    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"old")

    def crash(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        MorphableModel.load(native_model).save(dst)
    assert dst.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_a_native_model_file_with_nan_is_refused_at_load(native_model, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from morphface.errors import ModelFormatError
    from morphface.morphable import MorphableModel

    with safe_open(str(native_model), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["id_basis"][0, 5] = float("nan")  # one vertex: x, y and z
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ModelFormatError, match=r"'id_basis' contains NaN or inf \(3 of"):
        MorphableModel.load(tmp_path / "nan.safetensors")


# ------------------------------------------------------------------ train: config errors and Ctrl-C


def _write_yaml(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("content, message", [
    ("steps: [1,\n", r"is not valid YAML: .* at line 2, column 1$"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "is not a YAML config: it is not UTF-8 text"),
])
def test_train_with_a_file_that_is_not_yaml_is_one_line(tmp_path, capsys, content, message):
    import re

    from morphface.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_train_with_a_batch_larger_than_the_data_or_no_data_root_is_one_line(tmp_path, capsys):
    from morphface.cli import main

    big = _write_yaml(tmp_path / "big.yaml", _toy_config(tmp_path / "r1", batch_size=100))
    assert main(["train", str(big)]) == 1
    err = capsys.readouterr().err.strip()
    assert "fewer than batch_size=100" in err and len(err.splitlines()) == 1
    cfg = _toy_config(tmp_path / "r2", data={"name": "reenactment", "config": {"root": str(tmp_path / "none")}})
    assert main(["train", str(_write_yaml(tmp_path / "none.yaml", cfg))]) == 1
    err = capsys.readouterr().err.strip()
    assert "none is not a folder" in err and len(err.splitlines()) == 1


def test_perceptual_off_unquoted_in_yaml_means_off():
    import yaml

    from morphface.pipelines.base import ReenactorConfig

    value = yaml.safe_load("perceptual: off")["perceptual"]
    assert value is False  # YAML 1.1: what the probe tripped on
    assert ReenactorConfig(perceptual=value).perceptual == "off"
    assert ReenactorConfig(perceptual=True).perceptual == "on"


def test_ctrl_c_during_training_names_the_last_checkpoint_and_exits_130(tmp_path, capsys, monkeypatch):
    from morphface.cli import main
    from morphface.train import Trainer

    run = tmp_path / "run"
    cfg = _write_yaml(tmp_path / "cfg.yaml", _toy_config(run, steps=4, checkpoint_every=2))
    real_fit = Trainer.fit

    def fit_then_interrupt(self, resume=False):
        real_fit(self, resume=resume)  # writes step 2 and step 4
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", fit_then_interrupt)
    assert main(["train", str(cfg)]) == 130
    err = capsys.readouterr().err
    assert "interrupted; the last checkpoint is" in err and "step_00000004.safetensors (step 4)" in err
    assert "--resume" in err and "Traceback" not in err
