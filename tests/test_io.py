"""morphface.io: image and video files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from morphface.errors import ImageReadError
from morphface.io import (
    VideoWriter,
    image_to_uint8,
    iter_video,
    probe_video,
    read_image,
    read_video,
    write_image,
    write_video,
)

CLIP = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "liveportrait_d20_talking.mp4"


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _write_png16(path: Path, a: np.ndarray) -> None:
    """An independent 16-bit PNG encoder; row i uses filter type i % 5 so that the reader's
    un-filtering of all five filters is exercised."""
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    raw = a.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int64)  # (h, w*c*2) bytes
    bpp = 2 * c
    rows = []
    for i in range(h):
        x = raw[i]
        left = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
        up = raw[i - 1] if i else np.zeros_like(x)
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        f = i % 5
        pred = [0 * x, left, up, (left + up) // 2, _paeth(left, up, upleft)][f]
        rows.append(bytes([f]) + ((x - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------- images


def test_rgb_png_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    p = write_image(tmp_path / "sub" / "dir" / "x.png", a)  # creates parent folders
    x = read_image(p)
    assert x.shape == (3, 7, 9) and x.dtype == torch.float32
    assert np.array_equal(_hwc(x), a / np.float32(255.0))
    # a (3, H, W) float tensor writes back to the same bytes
    write_image(tmp_path / "y.png", x)
    assert np.array_equal(iio.imread(tmp_path / "y.png"), a)


def test_greyscale_and_one_bit(tmp_path):
    g = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    x = read_image(tmp_path / "g.png")
    assert x.shape == (3, 6, 10)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert np.allclose(x[0].numpy(), g / 255.0)
    Image.fromarray(np.eye(5, dtype=bool)).save(tmp_path / "b.png")
    b = read_image(tmp_path / "b.png")
    assert torch.equal(b[0], torch.eye(5))


def test_rgba_composites_over_white_by_default(tmp_path):
    a = np.zeros((2, 3, 4), np.uint8)
    a[..., 0] = 200  # red 200
    a[..., 3] = [[0, 255, 51], [102, 255, 0]]
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    alpha = a[..., 3] / 255.0
    white = read_image(tmp_path / "a.png")
    assert np.allclose(white[0].numpy(), 200 / 255.0 * alpha + (1 - alpha), atol=1e-6)
    assert np.allclose(white[1].numpy(), 1 - alpha, atol=1e-6)
    black = read_image(tmp_path / "a.png", alpha="black")
    assert np.allclose(black[0].numpy(), 200 / 255.0 * alpha, atol=1e-6)
    drop = read_image(tmp_path / "a.png", alpha="drop")
    assert np.allclose(drop[0].numpy(), 200 / 255.0)
    with pytest.raises(ValueError, match="alpha"):
        read_image(tmp_path / "a.png", alpha="grey")


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    pal.save(tmp_path / "p.png")
    x = read_image(tmp_path / "p.png")
    expect_red = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], np.float32)
    assert np.array_equal(x[0].numpy(), expect_red) and np.array_equal(x[2].numpy(), 1 - expect_red)
    pal.save(tmp_path / "pt.png", transparency=1)  # blue is transparent -> white
    y = read_image(tmp_path / "pt.png")
    assert np.array_equal(y[1].numpy(), 1 - expect_red)  # green channel: 1 where it was blue


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_full_precision(tmp_path, channels):
    rng = np.random.default_rng(channels)
    shape = (11, 13) if channels == 1 else (11, 13, channels)
    a = rng.integers(0, 65536, shape, dtype=np.uint16)
    if channels in (2, 4):
        a[..., -1] = 65535  # opaque, so the colour is read unchanged
    _write_png16(tmp_path / "x.png", a)
    x = read_image(tmp_path / "x.png", alpha="drop")
    colour = {1: a, 2: a[..., 0], 3: a, 4: a[..., :3]}[channels]
    ref = colour.astype(np.float64) / 65535.0
    got = x[0].numpy() if channels in (1, 2) else _hwc(x)
    # exact to float32 rounding: 16-bit precision is kept (8-bit would be off by up to 1/510)
    assert np.abs(got - ref).max() < 1e-6


def test_16bit_grey_written_by_pillow(tmp_path):
    g = (np.arange(200, dtype=np.uint32).reshape(10, 20) * 321 % 65536).astype(np.uint16)
    iio.imwrite(tmp_path / "g16.png", g)
    x = read_image(tmp_path / "g16.png")
    assert np.abs(x[1].numpy() - g / 65535.0).max() < 1e-6


def test_jpeg_and_exif_orientation(tmp_path):
    yy, xx = np.mgrid[0:40, 0:60]
    a = np.stack([xx * 4, yy * 6, np.full_like(xx, 128)], -1).astype(np.uint8)
    write_image(tmp_path / "a.jpg", a, quality=95)
    x = read_image(tmp_path / "a.jpg")
    assert x.shape == (3, 40, 60)
    assert np.abs(_hwc(x) - a / 255.0).mean() < 0.01
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif, quality=95)
    r = read_image(tmp_path / "r.jpg")
    assert r.shape == (3, 60, 40)
    assert np.abs(_hwc(r) - np.rot90(a, -1) / 255.0).mean() < 0.01


def test_truncated_and_non_images_raise_image_read_error(tmp_path):
    a = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "full.png", a)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _write_png16(tmp_path / "full16.png", a.astype(np.uint16) * 257)
    data16 = (tmp_path / "full16.png").read_bytes()
    (tmp_path / "cut16.png").write_bytes(data16[: len(data16) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ["cut.png", "cut16.png", "text.png", "empty.jpg", "missing.png"]:
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_image_to_uint8_layouts():
    chw = torch.rand(3, 5, 7)
    hwc = image_to_uint8(chw)
    assert hwc.shape == (5, 7, 3) and hwc.dtype == np.uint8
    assert np.array_equal(image_to_uint8(chw.permute(1, 2, 0).numpy()), hwc)
    assert image_to_uint8(torch.rand(5, 7)).shape == (5, 7)
    assert np.array_equal(image_to_uint8(np.array([[-1.0, 2.0, 0.5]])), np.array([[0, 255, 128]], np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 5, 7\)"):
        image_to_uint8(torch.rand(2, 5, 7))


# ----------------------------------------------------------------------------------- videos


def _moving_square(t: int, h: int, w: int) -> torch.Tensor:
    frames = torch.full((t, 3, h, w), 0.2)
    for i in range(t):
        frames[i, :, 10:30, 4 + 3 * i:24 + 3 * i] = torch.tensor([0.9, 0.5, 0.1])[:, None, None]
    return frames


def test_video_roundtrip(tmp_path):
    frames = _moving_square(6, 48, 64)
    write_video(tmp_path / "v" / "a.mp4", frames, fps=12.5)
    video = read_video(tmp_path / "v" / "a.mp4")
    assert video.frames.shape == (6, 3, 48, 64) and video.frames.dtype == torch.float32
    assert video.fps == pytest.approx(12.5)
    assert (video.frames - frames).abs().mean() < 0.02
    chunks = list(iter_video(tmp_path / "v" / "a.mp4", chunk=4))
    assert [c.shape[0] for c in chunks] == [4, 2]
    assert torch.equal(torch.cat(chunks), video.frames)
    assert read_video(tmp_path / "v" / "a.mp4", max_frames=3).frames.shape[0] == 3


def test_video_odd_size_is_padded_not_rescaled(tmp_path):
    frames = _moving_square(3, 47, 63)
    write_video(tmp_path / "odd.mp4", frames.permute(0, 2, 3, 1).numpy(), fps=10)  # (T, H, W, 3) array
    video = read_video(tmp_path / "odd.mp4")
    assert video.frames.shape == (3, 3, 48, 64)
    assert (video.frames[:, :, :47, :63] - frames).abs().mean() < 0.02


def test_video_errors(tmp_path):
    (tmp_path / "text.mp4").write_text("not a video")
    for name in ["text.mp4", "missing.mp4"]:
        with pytest.raises(ImageReadError, match=name):
            read_video(tmp_path / name)
        with pytest.raises(ImageReadError, match=name):
            next(iter_video(tmp_path / name))
    with pytest.raises(ValueError, match="non-empty"):
        write_video(tmp_path / "x.mp4", np.zeros((0, 8, 8, 3), np.uint8), fps=10)
    with VideoWriter(tmp_path / "y.mp4", fps=10) as writer:
        writer.write(np.zeros((2, 8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="size of the first"):
            writer.write(np.zeros((1, 8, 10, 3), np.uint8))
    assert writer.frames_written == 2 and read_video(tmp_path / "y.mp4").frames.shape == (2, 3, 8, 8)


@pytest.mark.skipif(not CLIP.is_file(), reason=f"test clip not found: {CLIP}")
def test_real_clip_frame_count_and_fps(tmp_path):
    info = probe_video(CLIP)
    assert (info.width, info.height, info.fps, info.has_audio) == (480, 480, 25.0, True)
    count = 0
    for chunk in iter_video(CLIP, chunk=64):
        assert chunk.shape[1:] == (3, 480, 480) and chunk.dtype == torch.float32
        count += chunk.shape[0]
    assert count == 175 == info.num_frames
    head = read_video(CLIP, max_frames=5)
    assert head.frames.shape == (5, 3, 480, 480) and head.fps == 25.0
    assert 0.05 < float(head.frames.mean()) < 0.95
    # a reenactment output keeps the driving clip's audio, cut to the video's length
    write_video(tmp_path / "with_audio.mp4", head.frames, fps=head.fps, audio_path=CLIP)
    out = probe_video(tmp_path / "with_audio.mp4")
    assert out.has_audio and out.duration == pytest.approx(5 / 25, abs=0.1)
