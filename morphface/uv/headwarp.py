"""Where each pixel of a re-posed head comes from in the photo: a dense flow from the fitted 3D head.

When :func:`~morphface.uv.frontalize` turns a face, the hair on the scalp, the ears and the top of
the neck should turn with it. :func:`head_flow` rasterises the fitted head (the model with its ears,
front scalp and neck; the face model alone works too) in the new pose and, for every pixel it
covers, finds the same surface point in the old pose: its projection there is where the pixel's
colour comes from, if the old view saw that point (a z-buffer test). Points the old view did not see
(the far ear and temple of a turned head) take the colour of their mirror image through the model's
symmetry plane, as the texture completion does. This is the "soft symmetry" warp of Hassner et al.
(CVPR 2015), applied to the whole head instead of the face alone.

A real neck does not turn with the head (the shoulders stay), and the model's jaw and neck seldom
match the photo's closely enough to carry its pixels, so the flow's weight fades from 1 at the nose
to 0 at the mouth (``neck_mm``); points the old view saw edge-on (a few input pixels spread over many
output pixels) get a low weight too, and outside the head the weight fades to 0 over ``reach`` head
widths. Where the weight is low, :func:`~morphface.uv.frontalize` uses its surroundings warp instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fitting.result import FitResult
from ..morphable.model import MorphableModel
from ..render import rasterize
from .blend import blur
from .complete import push_pull_fill, symmetry_map

__all__ = ["HeadFlow", "head_flow"]


class HeadFlow(NamedTuple):
    """What :func:`head_flow` returns.

    Attributes:
        source: ``(B, H', W', 2)`` float: for each output pixel, the input pixel ``(x, y)`` its colour
            comes from (pixel units of the input image, pixel centres at ``+0.5``); extended past the
            head smoothly (push-pull) where ``weight`` is 0.
        weight: ``(B, H', W')`` float in ``[0, 1]``: how much ``source`` is to be trusted: 1 on the
            head above the nose where the old view saw the point (or its mirror) squarely enough,
            fading to 0 at the mouth, where it was seen edge-on, and outside the head.
        coverage: ``(B, H', W')`` bool: the head's pixels in the new pose.
    """

    source: Tensor
    weight: Tensor
    coverage: Tensor


def _smoothstep(t: Tensor) -> Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _at_corners(values: Tensor, corners: Tensor) -> Tensor:
    """``(B, V, C)`` per-vertex values at ``(B, H, W, 3)`` vertex ids -> ``(B, H, W, 3, C)``."""
    B, H, W, _ = corners.shape
    C = values.shape[-1]
    out = values.gather(1, corners.reshape(B, -1, 1).expand(-1, -1, C))
    return out.view(B, H, W, 3, C)


def _neck_weight(head: MorphableModel, neck_mm: tuple[float, float], like: Tensor) -> Tensor:
    """``(V,)``: 1 at and above ``neck_mm[0]`` mm over the chin's height (model frame, y up), smoothstep
    to 0 at ``neck_mm[1]``."""
    mean = head.mean.to(like)
    top, bottom = neck_mm
    if not head.has_landmarks or top <= bottom:
        return torch.ones(mean.shape[0], dtype=like.dtype, device=like.device)
    chin = mean[head.landmarks[8].clamp(min=0), 1]
    return _smoothstep((mean[:, 1] - chin - bottom) / (top - bottom))


def head_flow(
    fit: FitResult,
    front: FitResult,
    head: MorphableModel,
    neck_mm: tuple[float, float] = (70.0, 30.0),
    depth_tolerance: float = 8.0,
    reach: float = 0.1,
    mirror: bool | Tensor = True,
    footprint: tuple[float, float] = (0.15, 0.4),
    backend: str = "auto",
) -> HeadFlow:
    """The input pixel that each output pixel of the head in pose ``front`` shows (module doc).

    Args:
        fit: the fit of the input images ``(H, W)`` for ``head``'s coefficients.
        front: the new pose (same coefficients space; its ``image_size`` ``(H', W')`` is the output's).
        head: the model to rasterise: ``fit``'s model or a larger one with the same bases (the
            embedded model's full region with ears and neck for its narrow face).
        neck_mm: ``(top, bottom)``: the flow's weight is 1 on points at least ``top`` mm above the
            chin (model frame, y up) and falls to 0 at ``bottom`` mm above it. The default leaves the
            mouth, jaw and neck to the surroundings warp: a real neck does not turn with the head, and
            the model's jaw and neck seldom match the photo's closely enough to carry its pixels.
            ``top <= bottom`` turns the fade off.
        depth_tolerance: a point counts as seen in the old view if it is at most this far (mm)
            behind the farthest surface within a pixel of its projection.
        reach: outside the head the weight fades to 0 over this fraction of the head's width.
        mirror: ``bool`` or ``(B,)`` bool: let points the old view saw badly take their mirror's
            pixel. Off for nearly frontal faces: both sides of the head are edge-on there, and
            mirrored patches of ear or hair would show.
        footprint: ``(lo, hi)``: bounds on the input area that one output pixel samples (input
            pixels at the output's scale; 1 for an unmoved point, small where the old view saw the
            surface edge-on): below ``lo`` a point is not trusted (weight 0, rising to 1 at ``hi``),
            and its mirror is used instead if that is seen with a larger footprint (direct views
            above ``hi`` are always kept).
        backend: rasteriser backend.

    Returns:
        :class:`HeadFlow` on the device and dtype of ``fit``'s camera.
    """
    if head.n_id != fit.id_coeffs.shape[-1] or head.n_exp != fit.exp_coeffs.shape[-1]:
        raise ValueError(
            f"head has {head.n_id} identity / {head.n_exp} expression coefficients; the fit has "
            f"{fit.id_coeffs.shape[-1]} / {fit.exp_coeffs.shape[-1]}"
        )
    cam_old, cam_new = fit.camera, front.camera
    like = cam_old.R
    H, W = cam_old.image_size
    Ho, Wo = cam_new.image_size
    tris = head.triangles.to(like.device)
    with torch.no_grad():
        # Coefficients meet the model's bases on the model's device; the cameras work where the fit is.
        v_old = fit.to(device=head.mean.device).vertices(head).to(like)
        v_new = front.to(device=head.mean.device).vertices(head).to(like)
        pix_old, depth_old = cam_old.project(v_old)
        old = rasterize(cam_old.to_ndc(v_old), tris, (H, W), perspective=cam_old.is_perspective, backend=backend)
        new = rasterize(cam_new.to_ndc(v_new), tris, (Ho, Wo), perspective=cam_new.is_perspective, backend=backend)
        B = v_old.shape[0]
        corners = tris[new.pix_to_face.clamp(min=0)]  # (B, Ho, Wo, 3)
        bary = new.bary[..., None]
        per_vertex = torch.cat([pix_old, depth_old[..., None]], -1)  # (B, V, 3)
        direct = (_at_corners(per_vertex, corners) * bary).sum(-2)
        mirrored = (_at_corners(per_vertex, symmetry_map(head).to(like.device)[corners]) * bary).sum(-2)

        # The farthest surface within a pixel of each pixel: a point on a surface seen edge-on (depth
        # changing fast from pixel to pixel) still counts as seen.
        farthest = torch.cat([old.depth[:, None], old.mask[:, None].to(like)], 1)
        farthest = F.max_pool2d(farthest, 3, stride=1, padding=1)

        def seen(p: Tensor) -> Tensor:
            grid = torch.stack([p[..., 0] * (2.0 / W) - 1.0, p[..., 1] * (2.0 / H) - 1.0], dim=-1)
            zb, hit = F.grid_sample(farthest, grid, mode="nearest", align_corners=False).unbind(1)
            return (hit > 0.5) & (p[..., 2] <= zb + depth_tolerance)

        def pixels_per_pixel(p: Tensor) -> Tensor:
            # Input pixels per output pixel: small where the old view saw the surface edge-on.
            dx = torch.diff(p, dim=2, append=p[:, :, -1:])
            dy = torch.diff(p, dim=1, append=p[:, -1:])
            return (dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]).abs() * (Ho * Wo) / (H * W)

        area_d = torch.where(seen(direct), pixels_per_pixel(direct[..., :2]), torch.zeros_like(direct[..., 0]))
        mirror = torch.as_tensor(mirror, dtype=torch.bool, device=like.device).reshape(-1, 1, 1)
        area_m = torch.where(seen(mirrored) & mirror, pixels_per_pixel(mirrored[..., :2]), torch.zeros_like(area_d))
        use_direct = (area_d >= area_m) | (area_d >= footprint[1])
        source = torch.where(use_direct[..., None], direct[..., :2], mirrored[..., :2])
        area = torch.maximum(area_d, area_m)
        valid = new.mask & (area > 0)
        neck = _neck_weight(head, neck_mm, like)
        weight = (_at_corners(neck[None, :, None].expand(B, -1, 1), corners) * bary).sum((-2, -1))
        weight = weight * valid * _smoothstep((area - footprint[0]) / (footprint[1] - footprint[0]))

        # Extend past the head and across unseen pixels: the displacement (smooth), and past the head the
        # weight, faded by the distance from it.
        x = torch.arange(Wo, dtype=like.dtype, device=like.device) + 0.5
        y = torch.arange(Ho, dtype=like.dtype, device=like.device) + 0.5
        q = torch.stack([x.expand(Ho, Wo) * (W / Wo), y[:, None].expand(Ho, Wo) * (H / Ho)], dim=-1)
        # Only seen points carry the flow past the outline: a mirrored source continued outward would
        # fold back on itself (the reflection runs the other way), a strip of hair drawn twice.
        known = (valid & use_direct)[:, None].to(like)
        outside = push_pull_fill(
            torch.cat([torch.where(valid[..., None], source - q, torch.zeros_like(source)).permute(0, 3, 1, 2),
                       weight[:, None]], 1),
            known,
            fallback=0.0,
        )
        shift = torch.where(valid[..., None], source - q, outside[:, :2].permute(0, 2, 3, 1))
        # On the head, unseen points stay untrusted; past its outline the weight carries on outward.
        weight = torch.where(new.mask, weight, outside[:, 2])
        cover = new.mask[:, None].to(like)
        fade = torch.empty_like(weight)
        for b in range(B):  # each image's own head width: its result does not depend on its batch
            width = float(new.mask[b].any(0).sum())
            spread = blur(cover[b : b + 1], max(reach * width / 2, 0.5))
            fade[b] = torch.maximum(cover[b], _smoothstep(2 * spread)[0])[0]
    return HeadFlow(source=q + shift, weight=(weight * fade).clamp(0.0, 1.0), coverage=new.mask)
