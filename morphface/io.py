"""Image and video files in and out, as torch tensors in the library's conventions.

Images are ``(3, H, W)`` float32 RGB in ``[0, 1]`` (``morphface.camera`` pixel conventions: row 0
is the top of the picture). Videos are ``(T, 3, H, W)`` stacks of such frames plus a frame rate.

Reading (:func:`read_image`) goes through imageio's Pillow plugin and converts every common layout:

* greyscale (``L``, 1-bit, 16-bit ``I;16``) is replicated to three channels;
* palette images are expanded through their palette (with their transparency, if any);
* images with alpha (RGBA, LA, palette + transparency) are *composited over a background*, white
  by default (``alpha="white"``; ``"black"`` or ``"drop"`` keep the other choices); straight
  (non-premultiplied) alpha is assumed, as PNG stores it;
* 8-bit data is divided by 255, 16-bit data by 65535. Pillow reads 16-bit RGB(A) PNGs as 8-bit,
  so non-interlaced 16-bit PNGs are decoded here (zlib + PNG un-filtering) at full precision;
* JPEG EXIF orientation is applied, so a phone portrait comes out upright;
* of a multi-frame file (GIF, TIFF) the first frame is read.

Any failure (missing file, truncated or corrupt data, a file that is not an image, an empty image, an
image larger than the pixel limit) raises :class:`morphface.errors.ImageReadError` naming the file and
the reason. The pixel limit is Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 megapixels; set it to
``None`` to lift it) and holds on every decode path, the 16-bit PNG decoder included: it is checked from
the file's header before anything is decompressed, so a small file that claims a huge picture (a
decompression bomb) costs nothing.

Videos are read with imageio v3's FFMPEG plugin (the ffmpeg binary of ``imageio-ffmpeg``) and
written with ``imageio_ffmpeg.write_frames``: H.264 (libx264, CRF quality) in ``yuv420p`` so that
every player opens the file. ``yuv420p`` needs even sizes: an odd height or width is padded by
repeating the last row or column (a file of ``W x H`` frames becomes ``W' x H'`` with
``W' = W + W % 2``), never rescaled.
"""

from __future__ import annotations

import os
import struct
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import ImageReadError

__all__ = [
    "atomic_write",
    "read_image",
    "write_image",
    "image_to_uint8",
    "read_video",
    "iter_video",
    "probe_video",
    "write_video",
    "VideoWriter",
    "Video",
    "VideoInfo",
    "max_image_pixels",
]

_ALPHA_MODES = ("white", "black", "drop")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def atomic_write(path: str | Path, write) -> int:
    """Write ``path`` atomically: ``write(tmp_path)`` fills a temp file in the same folder, which is
    fsync-ed and renamed over ``path``. Returns the file size in bytes."""
    path = Path(path)
    # Not mkstemp: its 0600 mode would stick to the final file; this name is unique per process and call.
    tmp = str(path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return size



# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def read_image(path: str | Path, alpha: str = "white") -> Tensor:
    """Read an image file as a ``(3, H, W)`` float32 RGB tensor in ``[0, 1]``.

    Args:
        path: any format Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, ...).
        alpha: what to do with transparency: ``"white"`` (composite over white, the default),
            ``"black"`` (over black) or ``"drop"`` (ignore alpha, keep the stored colour).

    Returns:
        ``(3, H, W)`` float32 on the CPU; greyscale images have three equal channels.

    Raises:
        ImageReadError: the file is missing, truncated, corrupt or not an image.
        ValueError: ``alpha`` is not one of the choices.
    """
    if alpha not in _ALPHA_MODES:
        raise ValueError(f"alpha must be one of {_ALPHA_MODES}; got {alpha!r}")
    path = Path(path)
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "no such file"
        raise ImageReadError(f"cannot read image {str(path)!r}: {reason}")
    array = _png16(path)
    if array is None:
        _check_pixel_limit(path, *_pillow_size(path))
        array = _read_with_imageio(path)
    rgb = _to_float_rgb(array, path, alpha)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def max_image_pixels() -> int | None:
    """The pixel limit of every image decode: Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (``None``: no limit)."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def _check_pixel_limit(path: Path, width: int, height: int) -> None:
    limit = max_image_pixels()
    if limit is not None and width * height > limit:
        raise ImageReadError(f"cannot read image {str(path)!r}: {width}x{height} = {width * height} pixels is more "
                             f"than the limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS; a decompression bomb?)")


def _pillow_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the header only, or ``(0, 0)`` when Pillow cannot tell (the reader says why)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # between 1x and 2x the limit Pillow only warns: we refuse below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"cannot read image {str(path)!r}: {e}") from None
    except Exception:  # noqa: BLE001 - not a Pillow image; the imageio fallback reports the reason
        return 0, 0


def _read_with_imageio(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        meta = iio.immeta(path, plugin="pillow", index=0)
        mode = meta.get("mode", "")
        kwargs = {"index": 0, "rotate": True}  # rotate: apply the EXIF orientation tag
        # Ask Pillow for a layout that numpy can hold exactly; everything not listed is converted
        # to RGB by Pillow (CMYK, YCbCr, LAB, HSV, ...).
        if mode in ("P", "PA"):
            kwargs["mode"] = "RGBA" if ("transparency" in meta or mode == "PA") else "RGB"
        elif mode in ("RGBa", "La"):  # premultiplied: let Pillow un-premultiply
            kwargs["mode"] = "RGBA" if mode == "RGBa" else "LA"
        elif mode not in ("RGB", "RGBA", "L", "LA", "1", "I", "F") and not mode.startswith("I;16"):
            kwargs["mode"] = "RGB"
        array = iio.imread(path, plugin="pillow", **kwargs)
    except Exception as pillow_error:  # noqa: BLE001 - any reader failure becomes ImageReadError
        # Formats Pillow does not know may still have an imageio plugin (e.g. tifffile if installed).
        try:
            with warnings.catch_warnings():  # imageio probes legacy plugins that warn on import
                warnings.simplefilter("ignore", DeprecationWarning)
                array = iio.imread(path, index=0)
        except Exception:  # noqa: BLE001
            raise ImageReadError(
                f"cannot read image {str(path)!r}: {_reason(pillow_error)}") from pillow_error
    return np.asarray(array)


def _reason(error: BaseException) -> str:
    """The most specific message of an exception chain (imageio wraps the decoder's error)."""
    seen = set()
    while id(error) not in seen and (error.__cause__ or error.__context__) is not None:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'unreadable data'}"


def _to_float_rgb(array: np.ndarray, path: Path, alpha: str) -> np.ndarray:
    """``(H, W[, C])`` array of any dtype -> ``(H, W, 3)`` float32 in [0, 1]."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ImageReadError(f"cannot read image {str(path)!r}: expected (H, W[, 1|2|3|4]) pixel data, "
                             f"got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"cannot read image {str(path)!r}: it is empty ({array.shape[1]}x{array.shape[0]} "
                             "pixels)")
    if array.dtype == np.bool_:
        x = array.astype(np.float32)
    elif array.dtype == np.uint8:
        x = array.astype(np.float32) / 255.0
    elif array.dtype in (np.uint16, np.int32, np.uint32, np.int64):
        # Pillow's "I" mode holds 16-bit PNG/TIFF data; wider data is clipped to 16 bits.
        x = np.clip(array.astype(np.float32) / 65535.0, 0.0, 1.0)
    elif np.issubdtype(array.dtype, np.floating):
        x = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
    else:
        raise ImageReadError(f"cannot read image {str(path)!r}: unsupported pixel type {array.dtype}")
    channels = x.shape[-1]
    if channels in (2, 4):
        colour, a = x[..., :-1], x[..., -1:]
        if alpha == "white":
            colour = colour * a + (1.0 - a)
        elif alpha == "black":
            colour = colour * a
        x = colour
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x.astype(np.float32, copy=False)


def _png16(path: Path) -> np.ndarray | None:
    """Decode a non-interlaced 16-bit PNG at full precision; ``None`` for every other file."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour_type)
    if depth != 16 or channels is None:
        return None
    if width == 0 or height == 0:
        raise ImageReadError(f"cannot read image {str(path)!r}: it is empty ({width}x{height} pixels)")
    _check_pixel_limit(path, width, height)
    if interlace:
        warnings.warn(f"{path}: interlaced 16-bit PNG, read at 8-bit precision by Pillow", stacklevel=3)
        return None
    stride = width * channels * 2
    expected = height * (stride + 1)
    data = path.read_bytes()
    chunks, pos = [], 8
    try:
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            if len(body) != length:
                raise ValueError(f"chunk {kind!r} is cut short ({len(body)} of {length} bytes)")
            if kind == b"IDAT":
                chunks.append(body)
            elif kind == b"IEND":
                break
            pos += 12 + length
        else:
            raise ValueError("no IEND chunk (the file is cut short)")
        # Never inflate more than the header's picture needs (+1 byte to notice extra data).
        raw = zlib.decompressobj().decompress(b"".join(chunks), expected + 1)
    except (ValueError, zlib.error, struct.error) as e:
        raise ImageReadError(f"cannot read image {str(path)!r}: truncated or corrupt PNG ({e})") from e
    if len(raw) != expected:
        raise ImageReadError(f"cannot read image {str(path)!r}: truncated or corrupt PNG (expected "
                             f"{expected} decompressed bytes, found {len(raw)}{'+' if len(raw) > expected else ''})")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    if int(rows[:, 0].max(initial=0)) > 4:
        raise ImageReadError(f"cannot read image {str(path)!r}: corrupt PNG (unknown filter type)")
    out = _png_unfilter()(rows, channels * 2)
    return out.view(">u2").astype(np.uint16).reshape(height, width, channels)


def _unfilter_rows(rows: np.ndarray, bpp: int) -> np.ndarray:  # pragma: no cover - runs compiled
    """The PNG scan-line un-filter (RFC 2083 section 6): ``(H, 1 + stride)`` filtered rows (filter
    type first) -> ``(H, stride)`` bytes. Compiled with numba by :func:`_png_unfilter`."""
    h, n = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((h, n), dtype=np.uint8)
    for i in range(h):
        ftype = rows[i, 0]
        for j in range(n):
            x = np.int32(rows[i, j + 1])
            a = np.int32(out[i, j - bpp]) if j >= bpp else 0
            b = np.int32(out[i - 1, j]) if i > 0 else 0
            c = np.int32(out[i - 1, j - bpp]) if (i > 0 and j >= bpp) else 0
            if ftype == 1:
                x += a
            elif ftype == 2:
                x += b
            elif ftype == 3:
                x += (a + b) // 2
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc:
                    x += a
                elif pb <= pc:
                    x += b
                else:
                    x += c
            out[i, j] = x & 255
    return out


_UNFILTER = None


def _png_unfilter():
    """:func:`_unfilter_rows` compiled once (and cached on disk) with numba.

    The Sub, Average and Paeth filters depend on the already decoded bytes to the left, so they
    cannot be vectorised with numpy; numba runs the byte loop at C speed.
    """
    global _UNFILTER
    if _UNFILTER is None:
        import numba

        _UNFILTER = numba.njit(cache=True)(_unfilter_rows)
    return _UNFILTER


def image_to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """An image in any of the library's layouts -> ``(H, W, 3)`` (or ``(H, W)``) uint8 numpy.

    Accepts ``(3, H, W)`` / ``(1, H, W)`` / ``(H, W)`` tensors or arrays and ``(H, W, 3|1)`` arrays;
    float data is taken to be in ``[0, 1]`` (clipped, rounded), uint8 is kept. A 3-D *tensor* whose
    first axis has 1 or 3 entries is channels-first (the library convention); a 3-D *numpy array*
    whose last axis has 1, 3 or 4 entries is channels-last (the imageio convention). An alpha
    channel (4 channels) is dropped.

    Raises:
        ValueError: another shape, with the shape in the message.
    """
    is_tensor = isinstance(image, Tensor)
    a = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
    if a.ndim == 3:
        first, last = a.shape[0] in (1, 3, 4), a.shape[-1] in (1, 3, 4)
        if first and (is_tensor or not last):
            a = a.transpose(1, 2, 0)
        elif not last:
            raise ValueError(f"image must be (3, H, W), (H, W, 3) or (H, W); got shape {tuple(a.shape)}")
        a = a[..., :3]
        if a.shape[-1] == 1:
            a = a[..., 0]
    elif a.ndim != 2:
        raise ValueError(f"image must be (3, H, W), (H, W, 3) or (H, W); got shape {tuple(a.shape)}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.floating):
        return np.ascontiguousarray(np.round(np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0)
                                    .astype(np.uint8))
    raise ValueError(f"image must be float in [0, 1] or uint8; got dtype {a.dtype}")


def write_image(path: str | Path, image: Tensor | np.ndarray, quality: int = 95) -> Path:
    """Write an image file (format from the extension), creating parent folders.

    Args:
        path: ``.png``, ``.jpg``, ``.bmp``, ``.webp``, ... (8 bits per channel).
        image: ``(3, H, W)`` or ``(H, W, 3)`` float in ``[0, 1]`` or uint8, or greyscale
            ``(H, W)`` / ``(1, H, W)``; see :func:`image_to_uint8` for the layout rule.
        quality: JPEG/WebP quality (1-100); ignored for lossless formats.

    Returns:
        The path written.
    """
    import imageio.v3 as iio

    path = Path(path)
    array = image_to_uint8(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": int(quality)} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    iio.imwrite(path, array, plugin="pillow", **kwargs)
    return path


# ---------------------------------------------------------------------------------------------
# videos
# ---------------------------------------------------------------------------------------------


class Video(NamedTuple):
    """A decoded clip: ``frames`` ``(T, 3, H, W)`` float32 in [0, 1] and ``fps`` (frames/second)."""

    frames: Tensor
    fps: float


class VideoInfo(NamedTuple):
    """What the container says about a video, without decoding it.

    ``num_frames`` is ``round(duration * fps)``, an estimate (exact for constant-rate files such
    as the test clip); count decoded frames when it matters.
    """

    fps: float
    width: int
    height: int
    duration: float
    num_frames: int
    has_audio: bool


def _check_video_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "no such file"
        raise ImageReadError(f"cannot read video {str(path)!r}: {reason}")
    return path


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, size, duration and an estimated frame count of a video file.

    Raises:
        ImageReadError: missing file or not a video ffmpeg can open.
    """
    import imageio.v3 as iio

    path = _check_video_path(path)
    try:
        meta = iio.immeta(path, plugin="FFMPEG")
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(f"cannot read video {str(path)!r}: {_reason(e)}") from e
    fps = float(meta.get("fps") or 0.0)
    width, height = (int(s) for s in meta.get("size", (0, 0)))
    duration = float(meta.get("duration") or 0.0)
    if fps <= 0 or width <= 0 or height <= 0:
        raise ImageReadError(f"cannot read video {str(path)!r}: no video stream (fps={fps}, "
                             f"size={width}x{height})")
    return VideoInfo(fps=fps, width=width, height=height, duration=duration,
                     num_frames=int(round(duration * fps)), has_audio=bool(meta.get("audio_codec")))


def iter_video(path: str | Path, chunk: int = 32, max_frames: int | None = None) -> Iterator[Tensor]:
    """Decode a video in chunks, so that long clips never sit in memory whole.

    Args:
        path: any container/codec ffmpeg reads (mp4, mov, avi, mkv, webm, ...).
        chunk: frames per yielded tensor (the last one may be shorter).
        max_frames: stop after this many frames (``None``: all).

    Yields:
        ``(n, 3, H, W)`` float32 tensors in ``[0, 1]``, ``1 <= n <= chunk``.

    Raises:
        ImageReadError: missing file, not a video, or a decoding error; also when no frame at
            all can be decoded.

    Warns:
        TruncatedVideoWarning: the stream ended well short of the frame count its header
            announces (a truncated file); the frames there are were yielded.
    """
    for block in _iter_uint8(path, chunk, max_frames):
        yield _frames_to_tensor(block)


def _iter_uint8(path: str | Path, chunk: int, max_frames: int | None) -> Iterator[np.ndarray]:
    """:func:`iter_video` on uint8 ``(n, H, W, 3)`` blocks (4x less memory than float); warns
    (:func:`_check_frame_count`) when the whole stream was read and came out short."""
    import imageio.v3 as iio

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None; got {max_frames}")
    path = _check_video_path(path)
    if max_frames == 0:
        return
    buffer: list[np.ndarray] = []
    count = 0
    frames = None
    try:
        frames = iio.imiter(path, plugin="FFMPEG")
        for frame in frames:
            buffer.append(np.asarray(frame)[..., :3])
            count += 1
            done = max_frames is not None and count >= max_frames
            if len(buffer) == chunk or done:
                yield np.stack(buffer)
                buffer = []
            if done:
                break
    except Exception as e:  # noqa: BLE001 - ffmpeg/imageio errors of every kind
        raise ImageReadError(f"cannot read video {str(path)!r} (after {count} frames): {_reason(e)}") from e
    finally:
        if frames is not None:
            frames.close()  # stops the ffmpeg process also when the caller breaks out early
    if count == 0:
        raise ImageReadError(f"cannot read video {str(path)!r}: no frame could be decoded")
    if max_frames is None or count < max_frames:  # the stream ended: did it end where its header says?
        _check_frame_count(path, count)
    if buffer:
        yield np.stack(buffer)


def _check_frame_count(path: Path, decoded: int) -> None:
    """Warn (:class:`~morphface.errors.TruncatedVideoWarning`) when ``decoded`` frames are fewer than
    the header's ``duration * fps`` by more than ``max(2, 2%)`` (a truncated download or copy: the
    container still announces the whole clip, the data stops early). The margin allows for
    rounding and for an audio track a little longer than the video (the header's duration is the
    longest stream's)."""
    from .errors import TruncatedVideoWarning

    try:
        expected = probe_video(path).num_frames
    except ImageReadError:
        return
    if decoded < expected - max(2, round(0.02 * expected)):
        warnings.warn(TruncatedVideoWarning(
            f"video {str(path)!r}: decoded {decoded} frames but its header announces {expected} "
            f"({expected - decoded} missing); the file is probably truncated", decoded, expected), stacklevel=3)


def _frames_to_tensor(frames: np.ndarray) -> Tensor:
    """``(n, H, W, 3)`` uint8 -> ``(n, 3, H, W)`` float32 in [0, 1]."""
    # Transpose while still uint8 (4x fewer bytes to move), then convert once.
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def read_video(path: str | Path, max_frames: int | None = None) -> Video:
    """Decode a whole video (or its first ``max_frames`` frames).

    Returns:
        :class:`Video` ``(frames (T, 3, H, W) float32 in [0, 1], fps)``; unpacks as a tuple.
        Memory is ``T * 3 * H * W * 4`` bytes: use :func:`iter_video` for long clips.

    Raises:
        ImageReadError: as :func:`iter_video`.

    Warns:
        TruncatedVideoWarning: as :func:`iter_video`.
    """
    info = probe_video(path)
    blocks = list(_iter_uint8(path, chunk=256, max_frames=max_frames))
    if not blocks:  # max_frames == 0
        return Video(torch.zeros(0, 3, info.height, info.width), info.fps)
    return Video(_frames_to_tensor(np.concatenate(blocks) if len(blocks) > 1 else blocks[0]), info.fps)


class VideoWriter:
    """Stream frames into an H.264 mp4 (``with VideoWriter(path, fps) as w: w.write(chunk)``).

    Args:
        path: output file (parent folders are created); ``.mp4``/``.mov``/``.mkv``.
        fps: frame rate (frames per second, may be fractional, e.g. 30000/1001).
        crf: libx264 constant rate factor, 0 (lossless) .. 51 (worst); 18 is visually lossless.
        audio_path: a file whose first audio track is copied into the output (e.g. the driving
            video of a reenactment); the file ends with the shorter of the two streams.

    All frames must have the size of the first one. Odd sizes are padded to even (module doc).
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 18, audio_path: str | Path | None = None):
        if not fps > 0:
            raise ValueError(f"fps must be > 0; got {fps}")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf must be in [0, 51]; got {crf}")
        if audio_path is not None:
            _check_video_path(audio_path)
        self.path = Path(path)
        self.fps = fps
        self.crf = int(crf)
        self.audio_path = None if audio_path is None else str(audio_path)
        self.size: tuple[int, int] | None = None  # (H, W) of the input frames
        self.frames_written = 0
        self._gen = None

    def _open(self, h: int, w: int) -> None:
        import imageio_ffmpeg

        self.size = (h, w)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._gen = imageio_ffmpeg.write_frames(
            str(self.path), (w + w % 2, h + h % 2), fps=self.fps, codec="libx264", quality=None,
            macro_block_size=1, pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            output_params=["-crf", str(self.crf)] + (["-shortest"] if self.audio_path else []),
            audio_path=self.audio_path)
        self._gen.send(None)

    def write(self, frames: Tensor | np.ndarray) -> None:
        """Append frames: ``(T, 3, H, W)`` / ``(3, H, W)`` float [0, 1] tensors, or ``(T, H, W, 3)``
        / ``(H, W, 3)`` uint8 or float numpy arrays (same layout rule as :func:`image_to_uint8`)."""
        is_tensor = isinstance(frames, Tensor)
        ndim = frames.dim() if is_tensor else np.ndim(frames)
        if ndim == 3:
            frames = frames[None]
        elif ndim != 4:
            raise ValueError(f"frames must be (T, 3, H, W) or (T, H, W, 3); got shape {tuple(frames.shape)}")
        for frame in frames:
            rgb = image_to_uint8(frame)
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[..., None], 3, axis=-1)
            h, w = rgb.shape[:2]
            if self._gen is None:
                self._open(h, w)
            elif (h, w) != self.size:
                raise ValueError(f"all frames must have the size of the first, {self.size}; got {(h, w)}")
            if h % 2 or w % 2:
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            self._gen.send(np.ascontiguousarray(rgb).tobytes())
            self.frames_written += 1

    def close(self) -> None:
        """Finish the file (flushes ffmpeg). Idempotent."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: Tensor | np.ndarray, fps: float, crf: int = 18,
                audio_path: str | Path | None = None) -> Path:
    """Write frames to an H.264 mp4 (see :class:`VideoWriter` for the arguments).

    Args:
        frames: ``(T, 3, H, W)`` float in [0, 1] (tensor) or ``(T, H, W, 3)`` uint8/float array.

    Returns:
        The path written.
    """
    n = frames.shape[0] if frames.ndim == 4 else 0
    if n == 0:
        raise ValueError(f"frames must be a non-empty (T, 3, H, W) or (T, H, W, 3) stack; got shape "
                         f"{tuple(frames.shape)}")
    with VideoWriter(path, fps, crf=crf, audio_path=audio_path) as writer:
        writer.write(frames)
    return Path(path)


def write_mesh(path: str | Path, verts: Tensor | np.ndarray, faces: Tensor | np.ndarray,
               uv: Tensor | np.ndarray | None = None) -> Path:
    """Write a triangle mesh (``.obj``, ``.ply`` or ``.glb``, by extension) through trimesh.

    Args:
        verts: ``(V, 3)`` positions (mm in morphface's frames).
        faces: ``(F, 3)`` 0-based vertex ids, counter-clockwise seen from outside.
        uv: optional ``(V, 2)`` per-vertex texture coordinates (u right, v up), written as ``vt``.
    """
    import trimesh

    def arr(x):
        return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    visual = trimesh.visual.TextureVisuals(uv=arr(uv)) if uv is not None else None
    mesh = trimesh.Trimesh(vertices=arr(verts), faces=arr(faces), visual=visual, process=False)
    if path.suffix.lower() == ".obj":
        # vt lines only: no material file or texture image next to every mesh
        text = trimesh.exchange.obj.export_obj(mesh, include_normals=False, write_texture=False,
                                               header="morphface")
        lines = [ln for ln in text.splitlines() if not ln.startswith(("mtllib", "usemtl"))]
        path.write_text("\n".join(lines) + "\n")
    else:
        mesh.export(path)
    return path
