"""Square face crops: choosing the box, resampling the crop, mapping results back.

The crop is an axis-aligned similarity (isotropic scale + offset, no rotation) from original
image pixels to crop pixels, both in ``morphface.camera`` pixel units (origin at the top-left
corner, pixel centres at +0.5)::

    crop_xy = scale * original_xy + offset

so a box ``(x0, y0, x1, y1)`` of side ``s`` maps onto ``[0, size]^2`` exactly, with
``scale = size / s`` and ``offset = -scale * (x0, y0)``. Because both frames put the origin at
a corner, resizing is a pure scale (no half-pixel terms) and :meth:`CropTransform.inverse` is
exact.

**Box rule** (:func:`crop_box_from_landmarks`, FOMM / VoxCeleb style): a square centred on the
landmark bounding box, with side ``scale * max(landmark box width, height)`` (default 1.8, which
keeps the whole head, some hair and the neck, as in the 256x256 VoxCeleb crops of FOMM), and the
centre moved up by ``shift * max side`` (default 0.1) because the 68 landmarks stop at the brows
and the forehead would otherwise be cut. The box may extend past the image; the crop then pads.

**Video rule** (:func:`smooth_crop_track`): one box for the whole clip so the face does not
jitter: the square around the *union* of the per-frame boxes (the VoxCeleb/FOMM preprocessing
rule), which contains every frame's box; or, with ``mode="median"``, a square of the median
side at the median centre (robust to a few bad detections, but it need not contain every box).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import NoFaceError

__all__ = ["CropTransform", "crop_box_from_landmarks", "smooth_crop_track", "square_box"]


def _check_boxes(name: str, boxes: Tensor) -> None:
    if not isinstance(boxes, Tensor) or boxes.shape[-1] != 4 or boxes.dim() not in (1, 2):
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must have shape (4,) or (B, 4) as x0, y0, x1, y1; got {shape}")


def square_box(boxes: Tensor) -> Tensor:
    """``(..., 4)`` boxes -> the squares with the same centres and side ``max(w, h)``."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]).amax(dim=-1, keepdim=True) / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def crop_box_from_landmarks(landmarks: Tensor, image_size: tuple[int, int] | None = None, scale: float = 1.8,
                            shift: float = 0.1, keep_inside: bool = False) -> Tensor:
    """A square crop box around a face's landmarks (rule in the module doc).

    Args:
        landmarks: ``(N, 2|3)`` or ``(B, N, 2|3)`` pixel coordinates (68 iBUG points, or any set
            spanning the face; a depth column is ignored).
        image_size: ``(H, W)`` of the image; needed only for ``keep_inside``.
        scale: box side over the landmark box's longer side.
        shift: upward move of the centre, in units of the landmark box's longer side.
        keep_inside: move (never shrink) the box to lie inside the image where it fits; along an
            axis where the box is longer than the image it is centred on the image.

    Returns:
        ``(4,)`` or ``(B, 4)`` ``x0, y0, x1, y1`` in pixels, same dtype/device as ``landmarks``;
        may extend beyond the image.
    """
    if not isinstance(landmarks, Tensor) or landmarks.dim() not in (2, 3) or landmarks.shape[-1] not in (2, 3):
        shape = tuple(landmarks.shape) if isinstance(landmarks, Tensor) else type(landmarks).__name__
        raise ValueError(f"landmarks must have shape (N, 2|3) or (B, N, 2|3); got {shape}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0; got {scale}")
    pts = landmarks[..., :2]
    lo, hi = pts.amin(dim=-2), pts.amax(dim=-2)
    side = (hi - lo).amax(dim=-1, keepdim=True)
    centre = (lo + hi) / 2 - torch.cat([torch.zeros_like(side), shift * side], dim=-1)
    half = scale * side / 2
    box = torch.cat([centre - half, centre + half], dim=-1)
    if keep_inside:
        if image_size is None:
            raise ValueError("keep_inside=True needs image_size=(H, W)")
        H, W = image_size
        limit = box.new_tensor([W, H])
        lo_b, hi_b = box[..., :2], box[..., 2:]
        # Shift so that the box starts at >= 0 and ends at <= limit; centre it where it is too long.
        move = (-lo_b).clamp(min=0) - (hi_b - limit).clamp(min=0)
        too_long = (hi_b - lo_b) > limit
        move = torch.where(too_long, limit / 2 - (lo_b + hi_b) / 2, move)
        box = box + torch.cat([move, move], dim=-1)
    return box


def smooth_crop_track(boxes: Tensor, mode: str = "union") -> Tensor:
    """One crop box for a whole clip from per-frame boxes (rule in the module doc).

    Args:
        boxes: ``(T, 4)`` per-frame boxes ``x0, y0, x1, y1`` in pixels; rows with a NaN (frames
            without a detection) are ignored.
        mode: ``"union"`` (square around the union, contains every box) or ``"median"``.

    Returns:
        ``(4,)`` square box.

    Raises:
        NoFaceError: no frame has a box.
    """
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must have shape (T, 4); got {shape}")
    if mode not in ("union", "median"):
        raise ValueError(f"mode must be 'union' or 'median'; got {mode!r}")
    valid = boxes[torch.isfinite(boxes).all(dim=-1)]
    if valid.shape[0] == 0:
        raise NoFaceError(f"no frame of the track has a box ({boxes.shape[0]} frames, all NaN)")
    if mode == "union":
        union = torch.cat([valid[:, :2].amin(dim=0), valid[:, 2:].amax(dim=0)])
        return square_box(union)
    centre = ((valid[:, :2] + valid[:, 2:]) / 2).median(dim=0).values
    half = (valid[:, 2:] - valid[:, :2]).amax(dim=-1).median() / 2
    return torch.cat([centre - half, centre + half])


def _warp(src: Tensor, a: Tensor, b: Tensor, out_hw: tuple[int, int], padding: str | float,
          antialias: bool) -> Tensor:
    """Resample ``src`` ``(B, C, H, W)`` into ``(B, C, *out_hw)`` where ``dst_xy = a * src_xy + b``.

    ``a``: ``(Bt,)`` scale, ``b``: ``(Bt, 2)``, ``Bt`` in ``{1, B}`` (or ``B == 1``: several warps of
    one image). Pixel-centre bilinear sampling with ``align_corners=False``, whose normalised
    coordinates are exactly the corner-origin pixel convention (``x_norm = 2 x / W - 1``).

    When shrinking by 2x or more and ``antialias`` is set, the source is first reduced by the
    integer factor ``k = floor(1 / a)`` with a k x k box average (area resize), which maps
    coordinates by exactly ``1 / k``; bilinear sampling then shrinks by less than 2x, which
    hardly aliases. (``F.interpolate(antialias=True)`` was not used: its truncated filter windows
    shift positions by up to ~0.05 px for non-integer factors.)
    """
    if isinstance(padding, str) and padding not in ("border", "zeros", "reflection"):
        raise ValueError(f"padding must be 'border', 'zeros', 'reflection' or a number; got {padding!r}")
    B = src.shape[0]
    Bt = a.shape[0]
    if B == 1 and Bt > 1:  # several crops of one image
        src, B = src.expand(Bt, -1, -1, -1), Bt
    if Bt not in (1, B):
        raise ValueError(f"the transform has batch {Bt} and the images {B}; expected equal batches or one of them 1")
    if not antialias or bool((a.detach() > 0.5).all()):
        return _sample(src, a, b, out_hw, padding, 1)
    if Bt == 1:
        return _warp_prescaled(src, a, b, out_hw, padding)
    return torch.cat([_warp_prescaled(src[i:i + 1], a[i:i + 1], b[i:i + 1], out_hw, padding) for i in range(B)])


def _warp_prescaled(src: Tensor, a: Tensor, b: Tensor, out_hw, padding) -> Tensor:
    H, W = src.shape[-2:]
    k = int(1.0 / float(a.detach().max()))
    if k < 2:
        return _sample(src, a, b, out_hw, padding, 1)
    # Pad the right/bottom to whole k x k blocks with what lies outside the image (the edge for
    # "border"/"reflection", the constant otherwise), so the last blocks average the right values.
    pad = (0, -W % k, 0, -H % k)
    if isinstance(padding, str) and padding != "zeros":
        src = F.pad(src, pad, mode="replicate")
    else:
        src = F.pad(src, pad, value=0.0 if padding == "zeros" else float(padding))
    return _sample(F.avg_pool2d(src, k), a, b, out_hw, padding, k)


def _sample(src: Tensor, a: Tensor, b: Tensor, out_hw, padding, k: int) -> Tensor:
    """Bilinear sampling; ``src`` is the source reduced ``k`` times (``k = 1``: not reduced)."""
    B, C, Hs, Ws = src.shape
    Ho, Wo = out_hw
    dtype, device = src.dtype, src.device
    ys = torch.arange(Ho, dtype=dtype, device=device) + 0.5
    xs = torch.arange(Wo, dtype=dtype, device=device) + 0.5
    a = a.to(dtype)[:, None, None] * k
    b = b.to(dtype)
    # destination pixel centres -> pixels of the (reduced) source -> normalised [-1, 1]
    sx = (xs[None, None, :] - b[:, None, None, 0]) / a
    sy = (ys[None, :, None] - b[:, None, None, 1]) / a
    grid = torch.stack(torch.broadcast_tensors(sx * (2.0 / Ws) - 1.0, sy * (2.0 / Hs) - 1.0), dim=-1)
    grid = grid.expand(B, Ho, Wo, 2)
    if isinstance(padding, str):
        return F.grid_sample(src, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    fill = float(padding)
    return F.grid_sample(src - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _as_batch(image: Tensor, name: str) -> tuple[Tensor, bool]:
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a float tensor (C, H, W) or (B, C, H, W); got {shape}")
    return (image[None], True) if image.dim() == 3 else (image, False)


@dataclass
class CropTransform:
    """Original pixels -> crop pixels: ``crop_xy = scale * xy + offset`` (module doc).

    Attributes:
        scale: ``(B,)`` crop pixels per original pixel.
        offset: ``(B, 2)`` crop pixels.
        size: crop side in pixels (the crop is ``size x size``).

    ``B`` may be 1 and then broadcasts against batched images/points. Tensors may require grad;
    every method is differentiable with respect to them and to the images.
    """

    scale: Tensor
    offset: Tensor
    size: int

    def __post_init__(self) -> None:
        if self.scale.dim() == 0:
            self.scale = self.scale[None]
        if self.offset.dim() == 1:
            self.offset = self.offset[None]
        if self.scale.dim() != 1 or self.offset.shape != (self.scale.shape[0], 2):
            raise ValueError(f"expected scale (B,) and offset (B, 2); got {tuple(self.scale.shape)} and "
                             f"{tuple(self.offset.shape)}")
        self.size = int(self.size)
        if self.size < 1:
            raise ValueError(f"size must be >= 1; got {self.size}")

    @classmethod
    def from_box(cls, box: Tensor, size: int = 256) -> CropTransform:
        """The transform that maps ``box`` onto the ``size x size`` crop.

        Args:
            box: ``(4,)`` or ``(B, 4)`` ``x0, y0, x1, y1`` pixels; a non-square box is first made
                square around its centre (side ``max(w, h)``), since the map is isotropic.
            size: crop side in pixels.
        """
        _check_boxes("box", box)
        box = square_box(box.reshape(-1, 4))
        side = box[:, 2] - box[:, 0]
        if bool((side.detach() <= 0).any()):
            raise ValueError(f"box must have positive size; got {box.tolist()}")
        scale = size / side
        return cls(scale=scale, offset=-scale[:, None] * box[:, :2], size=size)

    @classmethod
    def from_landmarks(cls, landmarks: Tensor, size: int = 256, **box_kwargs) -> CropTransform:
        """:meth:`from_box` of :func:`crop_box_from_landmarks` (keyword arguments go to it)."""
        return cls.from_box(crop_box_from_landmarks(landmarks, **box_kwargs), size)

    @property
    def batch_size(self) -> int:
        return self.scale.shape[0]

    @property
    def box(self) -> Tensor:
        """``(B, 4)``: the crop's square in original pixels."""
        x0 = -self.offset / self.scale[:, None]
        return torch.cat([x0, x0 + self.size / self.scale[:, None]], dim=-1)

    def matrix(self) -> Tensor:
        """``(B, 3, 3)`` homogeneous matrix of the map (original -> crop), e.g. for kornia."""
        B = self.batch_size
        m = torch.zeros(B, 3, 3, dtype=self.scale.dtype, device=self.scale.device)
        m[:, 0, 0] = self.scale
        m[:, 1, 1] = self.scale
        m[:, :2, 2] = self.offset
        m[:, 2, 2] = 1
        return m

    def to(self, *args, **kwargs) -> CropTransform:
        """A copy with the tensors moved/cast like ``Tensor.to``."""
        return replace(self, scale=self.scale.to(*args, **kwargs), offset=self.offset.to(*args, **kwargs))

    def __getitem__(self, index) -> CropTransform:
        """Select batch entries (keeps a batch axis)."""
        s, o = self.scale[index], self.offset[index]
        return replace(self, scale=s.reshape(-1), offset=o.reshape(-1, 2))

    def _points(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(points, Tensor) or points.dim() not in (2, 3) or points.shape[-1] < 2:
            shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
            raise ValueError(f"points must have shape (N, 2+) or (B, N, 2+); got {shape}")
        s = self.scale.to(points.dtype)
        o = self.offset.to(points.dtype)
        if points.dim() == 2:
            if self.batch_size != 1:
                raise ValueError(f"unbatched points (N, 2) need a transform of batch 1; it has {self.batch_size}")
            return s[0], o[0], points
        return s[:, None, None], o[:, None, :], points

    def apply(self, points: Tensor) -> Tensor:
        """Original pixels -> crop pixels.

        Args:
            points: ``(N, 2+)`` or ``(B, N, 2+)``; x, y are mapped, further columns (a depth in
                pixel units) are multiplied by the scale.
        """
        s, o, p = self._points(points)
        xy = p[..., :2] * s + o
        return torch.cat([xy, p[..., 2:] * s], dim=-1) if p.shape[-1] > 2 else xy

    def inverse(self, points: Tensor) -> Tensor:
        """Crop pixels -> original pixels (exact inverse of :meth:`apply`)."""
        s, o, p = self._points(points)
        xy = (p[..., :2] - o) / s
        return torch.cat([xy, p[..., 2:] / s], dim=-1) if p.shape[-1] > 2 else xy

    def crop(self, image: Tensor, padding: str | float = "border", antialias: bool = True) -> Tensor:
        """Resample the crop, differentiably (``grid_sample``).

        Args:
            image: ``(C, H, W)`` or ``(B, C, H, W)`` float, e.g. RGB in [0, 1].
            padding: outside the image: ``"border"`` (replicate the edge), ``"zeros"``,
                ``"reflection"``, or a number (constant fill).
            antialias: when the crop shrinks the image 2x or more, area-average it first (the
                integer part of the reduction) so that bilinear sampling does not alias.

        Returns:
            ``(B, C, size, size)``, dtype/device of ``image``; ``(C, size, size)`` for an
            unbatched image and a transform of batch 1 (a batch-``B`` transform of one image gives
            ``B`` crops).
        """
        src, unbatched = _as_batch(image, "image")
        out = _warp(src, self.scale.to(src), self.offset.to(src), (self.size, self.size), padding, antialias)
        return out[0] if unbatched and self.batch_size == 1 else out

    def uncrop(self, crop_image: Tensor, original_size: tuple[int, int], antialias: bool = True
               ) -> tuple[Tensor, Tensor]:
        """Map a crop-sized image back into the original frame.

        Args:
            crop_image: ``(C, size, size)`` or ``(B, C, size, size)``.
            original_size: ``(H, W)`` of the original image.

        Returns:
            ``(image, coverage)`` (unbatched like :meth:`crop`): ``(B, C, H, W)`` the crop content in original pixels,
            premultiplied by the coverage (0 outside the crop), and ``(B, 1, H, W)`` the coverage
            in [0, 1] (1 inside the crop square, a soft edge one crop pixel wide at its border).
            ``image + original * (1 - coverage)`` pastes
            the crop back (:meth:`paste_back`).
        """
        src, unbatched = _as_batch(crop_image, "crop_image")
        if tuple(src.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"crop_image must be {self.size}x{self.size}; got {tuple(src.shape[-2:])}")
        a = 1.0 / self.scale.to(src)
        b = -self.offset.to(src) * a[:, None]
        H, W = (int(v) for v in original_size)
        ones = torch.ones_like(src[:, :1])
        both = _warp(torch.cat([src, ones], dim=1), a, b, (H, W), "zeros", antialias)
        out, cover = both[:, :-1], both[:, -1:].clamp(0, 1)
        return (out[0], cover[0]) if unbatched and self.batch_size == 1 else (out, cover)

    def paste_back(self, crop_image: Tensor, original: Tensor, mask: Tensor | None = None,
                   antialias: bool = True) -> Tensor:
        """Composite a (processed) crop over the original image.

        Args:
            crop_image: ``(C, size, size)`` or ``(B, C, size, size)``.
            original: ``(C, H, W)`` or ``(B, C, H, W)`` the image the crop came from.
            mask: optional ``(1, size, size)`` / ``(B, 1, size, size)`` crop-space alpha in [0, 1]
                (e.g. a rendered face mask) limiting what is pasted; default: the whole crop.

        Returns:
            The composite, shaped like ``original``.
        """
        orig, unbatched = _as_batch(original, "original")
        crop_b, _ = _as_batch(crop_image, "crop_image")
        if mask is not None:
            m, _ = _as_batch(mask, "mask")
            crop_b = torch.cat([crop_b * m, m.expand(crop_b.shape[0], 1, -1, -1)], dim=1)
            warped, _ = self.uncrop(crop_b, tuple(orig.shape[-2:]), antialias)
            # uncrop's output is premultiplied by the coverage, so this is the "over" operator
            out = warped[:, :-1] + orig * (1 - warped[:, -1:].clamp(0, 1))
        else:
            warped, cover = self.uncrop(crop_b, tuple(orig.shape[-2:]), antialias)
            out = warped + orig * (1 - cover)
        return out[0] if unbatched else out
