"""Texture extraction: the colours of a photo mapped into the model's UV space, with visibility.

For every texel of the layout (:func:`morphface.uv.texel_map`) the surface point it shows is put in
the fitted pose, projected with the fitted camera, and the image is sampled there (bilinear,
differentiable w.r.t. the image). A texel is *valid* only if

* its point projects inside the image,
* its surface faces the camera (``cos = n . v > min_cosine``, ``n`` the interpolated vertex normal,
  ``v`` the unit vector toward the camera), and
* it is the surface the camera actually sees there: the mesh is rasterised from the fitted camera
  (a z-buffer of triangle ids and depths), and at the pixel the texel's point falls in, either the
  visible triangle is the texel's own triangle or the visible depth is within ``depth_tolerance``
  mm of the texel's depth. Occluded texels (the far cheek behind the nose, ...) are therefore never
  sampled, which is where naive projection-only unwrapping goes wrong.

The confidence of a valid texel is ``max(0, cos)^power``: 1 where the surface faces the camera,
falling to 0 at the silhouette, where one pixel is smeared over many texels. It is further
lowered next to depth discontinuities of the z-buffer (the face's outline against the background,
the nose's outline against the cheek): a fit is never pixel-exact, and there a few pixels of error
sample the background or the occluder. Within ``edge_margin / 2`` (a fraction of the face's width
in the image) of a discontinuity a texel is invalid; up to ``edge_margin`` its confidence is halved.
The mesh's outline against the background counts only where the surface is seen at more than 60
degrees (a silhouette): where the mesh merely ends (a face mask's rim facing the camera) the head
continues in the photo and nothing is occluded.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fitting.result import FitResult
from ..morphable.model import MorphableModel
from ..render import rasterize, vertex_normals
from .texel import texel_map

__all__ = ["UnwrapResult", "unwrap"]


class UnwrapResult(NamedTuple):
    """A UV texture extracted from images.

    Attributes:
        texture: ``(B, 3, S, S)`` RGB in ``[0, 1]``; 0 where ``mask`` is 0.
        confidence: ``(B, 1, S, S)`` in ``[0, 1]``, ``max(0, n . v)^power`` where valid, else 0.
        mask: ``(B, 1, S, S)`` float in ``{0, 1}``: 1 where the texel was seen.
    """

    texture: Tensor
    confidence: Tensor
    mask: Tensor


def _check_image(image: Tensor, fit: FitResult) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must have shape (B, 3, H, W) or (3, H, W); got {shape}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1]; got dtype {image.dtype}")
    if tuple(image.shape[-2:]) != tuple(fit.image_size):
        raise ValueError(
            f"image is {tuple(image.shape[-2:])} pixels but the fit is for {tuple(fit.image_size)}"
        )
    if fit.batch_size not in (1, image.shape[0]):
        raise ValueError(f"the fit has {fit.batch_size} faces for {image.shape[0]} images")
    return image


def _edge_trust(depth: Tensor, covered: Tensor, margin: float, step: float) -> tuple[Tensor, Tensor]:
    """Distance classes (1: far, 0.5: near, 0: next to) ``(B, H, W)`` from the z-buffer's depth steps
    between covered pixels, and from the coverage's outline (mesh against background)."""
    from .blend import dilate

    one = torch.ones_like(depth)
    if margin <= 0 or not bool(covered.any()):
        return one, one
    width = float(covered.any(dim=1).sum(-1).amax())
    r2 = max(1, int(round(margin * width)))
    r1 = max(1, r2 // 2)
    # Work in the box around the covered pixels: everything further out is far from any edge.
    H, W = depth.shape[-2:]
    rows, cols = (
        torch.nonzero(covered.any(0).any(1)).flatten(),
        torch.nonzero(covered.any(0).any(0)).flatten(),
    )
    y0, y1 = max(0, int(rows[0]) - r2 - 2), min(H, int(rows[-1]) + r2 + 3)
    x0, x1 = max(0, int(cols[0]) - r2 - 2), min(W, int(cols[-1]) + r2 + 3)
    cov = covered[:, None, y0:y1, x0:x1].to(depth.dtype)
    d = depth.detach()[:, None, y0:y1, x0:x1] * cov
    # Depth step within a 3x3 window, among covered pixels only (uncovered ones are skipped by
    # giving them -inf for the max and +inf for the min).
    big = torch.finfo(d.dtype).max
    hi = dilate(torch.where(cov > 0, d, torch.full_like(d, -big)), 1)
    lo = -dilate(torch.where(cov > 0, -d, torch.full_like(d, -big)), 1)
    internal = ((hi - lo) > step) & (cov > 0)
    outline = (dilate(cov, 1) > 0) & (dilate(-cov, 1) > -1)  # a covered and an uncovered pixel nearby

    def classes(edge: Tensor) -> Tensor:
        near1 = dilate(edge.to(depth.dtype), r1)
        out = one.clone()
        out[:, y0:y1, x0:x1] = (1.0 - 0.5 * near1 - 0.5 * dilate(near1, r2 - r1))[:, 0]
        return out

    return classes(internal), classes(outline)


def unwrap(
    image: Tensor,
    fit: FitResult,
    model: MorphableModel,
    size: int = 256,
    depth_tolerance: float = 4.0,
    confidence_power: float = 2.0,
    min_cosine: float = 0.0,
    edge_margin: float = 0.03,
    edge_depth: float = 15.0,
    verts: Tensor | None = None,
    foreground: Tensor | None = None,
    foreground_range: tuple[float, float] = (0.5, 0.9),
    backend: str = "auto",
) -> UnwrapResult:
    """Extract a UV texture from images given fitted geometry and cameras.

    Args:
        image: ``(B, 3, H, W)`` (or ``(3, H, W)``) RGB in ``[0, 1]``, the images that were fitted.
        fit: their :class:`~morphface.fitting.FitResult` (batch ``B`` or 1), for ``model``.
        model: the morphable model (its UVs, or a generated layout; see :func:`model_uv_layout`).
        size: texture resolution ``S``.
        depth_tolerance: mm; how far behind the visible surface a texel may be and still count as
            visible (covers the sub-pixel offset between the texel's point and the pixel centre on
            steep surfaces).
        confidence_power: exponent ``p`` of the confidence ``max(0, cos)^p``.
        min_cosine: texels whose surface is seen at a grazing angle with ``cos <= min_cosine`` are
            invalid.
        edge_margin: width of the band along depth discontinuities where texels are distrusted, as
            a fraction of the face's width in the image (0 disables it).
        edge_depth: mm; a depth step larger than this between neighbouring pixels is a discontinuity.
        verts: ``(B, V, 3)`` model-frame vertices to use instead of ``fit.vertices(model)``.
        foreground: ``(B, 1, H, W)`` probability that a pixel shows the subject
            (:class:`~morphface.fitting.PersonSegmenter`): texels that land on the background are not
            sampled, wherever the fit put them (the nose tip of a profile fitted a little too far out).
        foreground_range: ``(lo, hi)``: a texel's confidence is scaled by
            ``clamp((p - lo) / (hi - lo), 0, 1)`` of the foreground probability ``p`` at its pixel;
            at ``p <= lo`` it is invalid.
        backend: rasteriser backend for the z-buffer.

    Returns:
        :class:`UnwrapResult` in the dtype and on the device of ``image``; ``texture`` is
        differentiable w.r.t. ``image`` (and the geometry, through the sample positions).
    """
    image = _check_image(image, fit)
    B, _, H, W = image.shape
    dtype, device = image.dtype, image.device
    if verts is None:
        verts = fit.to(device=model.mean.device).vertices(model)
    fit = fit.to(device=device, dtype=dtype)
    cam = fit.camera
    v = verts.to(device)
    if v.dim() != 3 or v.shape[1:] != (model.n_vertices, 3) or v.shape[0] not in (1, B):
        raise ValueError(f"verts must have shape ({B}, {model.n_vertices}, 3); got {tuple(v.shape)}")
    v = v.to(dtype).expand(B, -1, -1)
    faces = model.triangles.to(device)

    tmap = texel_map(model, size)
    vid = tmap.vertex_ids.to(device)
    w = tmap.weights.to(device=device, dtype=dtype)[None, :, :, None]  # (1, N, 3, 1)
    points = (v[:, vid] * w).sum(2)  # (B, N, 3)
    normals = F.normalize((vertex_normals(v, faces)[:, vid] * w).sum(2), dim=-1, eps=1e-12)
    cos = (normals * cam.view_directions(points).expand(B, -1, -1)).sum(-1)  # (B, N)
    pix, depth = cam.project(points)
    pix, depth = pix.expand(B, -1, -1), depth.expand(B, -1)

    with torch.no_grad():
        ndc = cam.to_ndc(v)
        frags = rasterize(
            ndc,
            faces,
            (H, W),
            perspective=cam.is_perspective,
            backend=backend,
            znear=float(getattr(cam, "znear", 1.0)),
        )
        ix = torch.floor(pix[..., 0].detach()).to(torch.int64)
        iy = torch.floor(pix[..., 1].detach()).to(torch.int64)
        inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & torch.isfinite(pix.detach()).all(-1)
        flat = iy.clamp(0, H - 1) * W + ix.clamp(0, W - 1)  # (B, N)
        seen_face = frags.pix_to_face.reshape(B, -1).gather(1, flat)
        seen_depth = frags.depth.reshape(B, -1).gather(1, flat)
        own_face = tmap.face.reshape(-1)[tmap.index].to(device)[None]
        same = (seen_face == own_face) | ((seen_depth - depth.detach()).abs() <= depth_tolerance)
        valid = inside & (seen_face >= 0) & same & (cos.detach() > min_cosine)
        t_in, t_out = _edge_trust(frags.depth, frags.mask, edge_margin, edge_depth)
        t_in = t_in.reshape(B, -1).gather(1, flat)
        t_out = t_out.reshape(B, -1).gather(1, flat)
        # The mesh's own rim is no occlusion where it faces the camera (the head goes on beyond it):
        # only a rim seen at a grazing angle, i.e. a true silhouette, is distrusted.
        trust = torch.minimum(t_in, torch.where(cos.detach() < 0.5, t_out, torch.ones_like(t_out)))
        valid &= trust > 0
        if foreground is not None:
            if foreground.dim() != 4 or foreground.shape[1] != 1 or tuple(foreground.shape[-2:]) != (H, W) or (
                foreground.shape[0] not in (1, B)
            ):
                raise ValueError(f"foreground must have shape ({B}, 1, {H}, {W}); got {tuple(foreground.shape)}")
            lo, hi = foreground_range
            p = foreground.to(device=device, dtype=dtype).expand(B, -1, -1, -1).reshape(B, -1).gather(1, flat)
            person = ((p - lo) / max(hi - lo, 1e-6)).clamp(0, 1)
            valid &= person > 0
            trust = trust * person

    grid = torch.stack([pix[..., 0] * (2.0 / W) - 1.0, pix[..., 1] * (2.0 / H) - 1.0], dim=-1)
    colours = F.grid_sample(image, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    colours = colours[:, :, 0].transpose(1, 2)  # (B, N, 3)
    m = valid.to(dtype)[..., None]
    conf = cos.clamp(min=0.0).pow(confidence_power)[..., None] * m * trust[..., None].to(dtype)
    return UnwrapResult(
        texture=tmap.scatter(colours * m), confidence=tmap.scatter(conf), mask=tmap.scatter(m)
    )
