"""The photo around a re-posed face: move it so that it meets the new face where it met the old one.

:func:`frontalize` renders a turned face frontally; the hair, ears, neck and background around it
come from the photo, moved by an output-to-input pixel map (a *source* map, ``(B, H', W', 2)``
input pixel positions ``(x, y)``, pixel centres at ``+0.5``). Three maps compose it:

- :func:`surroundings_source`: a radial correspondence between the old face outline and the new one,
  fading to no motion a third of a face width away (:func:`warp_surroundings` applies it);
- :func:`~morphface.uv.head_flow`: the fitted 3D head in both poses, for the scalp and the ears;
- :func:`even_head_outline`: an output-to-output map that evens out a turned head's hair outline
  around the frontal face: a head seen turned shows the back of the head on one side and hardly
  anything beyond the temple on the other; turned to the front, the side showing the back of the head
  is narrowed toward the mean of the two (:func:`resample_source` composes it with the others).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .headwarp import _smoothstep

__all__ = ["warp_surroundings", "surroundings_source", "sample_pixels", "even_head_outline", "resample_source"]

def _pixel_centres(size: tuple[int, int], like: Tensor) -> Tensor:
    """``(H, W, 2)`` pixel centres ``(x, y)`` of an image of ``size``."""
    H, W = size
    x = torch.arange(W, dtype=like.dtype, device=like.device) + 0.5
    y = torch.arange(H, dtype=like.dtype, device=like.device) + 0.5
    return torch.stack([x.expand(H, W), y[:, None].expand(H, W)], dim=-1)


def _radial_profile(mask: Tensor, bins: int, centre: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Centre ``(B, 2)`` (default: the centroid) and outline radius per angle bin ``(B, bins)`` of
    ``(B, 1, H, W)`` masks; bin ``k`` covers angles ``-pi + 2 pi [k, k + 1) / bins`` (``atan2(y, x)``,
    image y down).

    A bin's radius is that of the outermost pixel centre in it, then the largest of it and its two
    neighbours (a narrow bin can miss the outermost pixels), then a 5-bin circular mean.
    """
    B = mask.shape[0]
    q = _pixel_centres(tuple(mask.shape[-2:]), mask)
    # Only the masks' bounding box holds pixels that count.
    rows = torch.nonzero((mask > 0).any(0).any(0).any(1)).flatten()
    cols = torch.nonzero((mask > 0).any(0).any(0).any(0)).flatten()
    if rows.numel():
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        mask, q = mask[..., box[0], box[1]], q[box]
    q = q.reshape(-1, 2)
    m = mask.reshape(B, -1)
    if centre is None:
        centre = (m @ q) / m.sum(1, keepdim=True).clamp(min=1.0)
    d = q[None] - centre[:, None]  # (B, P, 2)
    r = d.norm(dim=-1)
    k = ((torch.atan2(d[..., 1], d[..., 0]) + torch.pi) / (2 * torch.pi) * bins).long().clamp(0, bins - 1)
    radius = torch.zeros(B, bins, dtype=mask.dtype, device=mask.device)
    radius = radius.scatter_reduce(1, k, torch.where(m > 0.5, r, torch.zeros_like(r)), "amax")
    # Bins no pixel fell in (tiny masks) take the neighbours' radius; then a light circular smoothing.
    empty = radius <= 0
    if bool(empty.any()):
        fill = torch.where(empty, torch.full_like(radius, float("nan")), radius)
        for _ in range(bins):
            if not bool(torch.isnan(fill).any()):
                break
            fill = torch.where(
                torch.isnan(fill),
                torch.maximum(fill.roll(1, 1).nan_to_num(-1), fill.roll(-1, 1).nan_to_num(-1)).clamp(min=0),
                fill,
            )
        radius = fill.nan_to_num(0.0)
    radius = F.max_pool1d(F.pad(radius[:, None], (1, 1), mode="circular"), 3, stride=1)
    kernel = torch.ones(1, 1, 5, dtype=mask.dtype, device=mask.device) / 5
    radius = F.conv1d(F.pad(radius, (2, 2), mode="circular"), kernel)[:, 0]
    return centre, radius


def _lookup(radius: Tensor, angle: Tensor) -> Tensor:
    """Linear interpolation of per-bin values ``(B, K)`` (or ``(B, C, K)``) at angles ``(B, P)``
    (radians, -pi..pi) -> ``(B, P)`` (or ``(B, C, P)``)."""
    K = radius.shape[-1]
    t = (angle + torch.pi) / (2 * torch.pi) * K - 0.5
    i0 = torch.floor(t)
    a = t - i0
    i0 = i0.long() % K
    if radius.dim() == 3:
        i0, a = i0[:, None].expand(-1, radius.shape[1], -1), a[:, None]
    r0 = radius.gather(-1, i0)
    r1 = radius.gather(-1, (i0 + 1) % K)
    return r0 * (1 - a) + r1 * a


def warp_surroundings(
    images: Tensor,
    old_mask: Tensor,
    new_mask: Tensor,
    falloff: float = 0.35,
    inset: float = 0.05,
    bins: int = 360,
) -> Tensor:
    """Move the hair, ears and background around a face from its old outline to its new one.

    Both face masks are star-shaped about their centroids. Seen from its centroid, the new face's
    outline is at radius ``r_new(theta)`` and the old one's at ``r_old(theta)``. An output pixel at
    ``(theta, r)`` outside the new face samples the input at radius ``r_old + (r - r_new)`` around
    the old centroid, so the pixels just outside the new face are those that were just outside
    the old one: nothing of the old, turned face is left beside the frontal one. The displacement
    fades to zero (smoothstep) over ``max(falloff * face width, 2 * |r_new - r_old|)`` pixels
    (wide enough that the warp never folds), so the rest of the photo is untouched. Inside the new
    face (seen only under the blending seam) radii are scaled by ``(r_old - inset * width) / r_new``:
    the seam mixes the rendered face with the old face's skin from a little inside its outline,
    not with the outline itself (which, on the far side, is half background). This is the
    idea of the background-preserving frontalisation of Zhu et al. (CVPR 2015), with a radial
    correspondence instead of a background mesh.

    Args:
        images: ``(B, 3, H, W)`` input photos.
        old_mask: ``(B, 1, H, W)`` the face's coverage in the input.
        new_mask: ``(B, 1, H', W')`` its coverage in the output.
        falloff: fading distance in face widths.
        inset: how far inside the old outline the new outline samples from inside, in face widths.
        bins: the most angle bins of the outlines (fewer for small faces: about 3 pixels of outline
            per bin).

    Returns:
        ``(B, 3, H', W')`` the warped photos.
    """
    return sample_pixels(images, surroundings_source(old_mask, new_mask, falloff, inset, bins))


def sample_pixels(images: Tensor, source: Tensor) -> Tensor:
    """``(B, 3, H, W)`` images sampled bilinearly at ``(B, H', W', 2)`` input pixel positions ``(x, y)``
    (pixel centres at ``+0.5``; positions outside take the border's colour) -> ``(B, 3, H', W')``.
    For another output size the images are resized (antialiased) first."""
    H, W = images.shape[-2:]
    Ho, Wo = source.shape[1:3]
    if (Ho, Wo) != (H, W):
        images = F.interpolate(images, size=(Ho, Wo), mode="bilinear", align_corners=False, antialias=True)
        source = source * source.new_tensor([Wo / W, Ho / H])
        H, W = Ho, Wo
    grid = torch.stack([source[..., 0] * (2.0 / W) - 1.0, source[..., 1] * (2.0 / H) - 1.0], dim=-1)
    return F.grid_sample(images, grid.to(images), mode="bilinear", padding_mode="border", align_corners=False)


def surroundings_source(
    old_mask: Tensor, new_mask: Tensor, falloff: float = 0.35, inset: float = 0.05, bins: int = 360
) -> Tensor:
    """The radial correspondence of :func:`warp_surroundings`: for each output pixel, the input pixel
    ``(x, y)`` it shows, ``(B, H', W', 2)`` (arguments as there; input pixel units)."""
    H, W = old_mask.shape[-2:]
    Ho, Wo = new_mask.shape[-2:]
    dtype = old_mask.dtype if old_mask.dtype.is_floating_point else torch.float32
    q_all = _pixel_centres((Ho, Wo), torch.empty(0, dtype=dtype, device=old_mask.device))
    identity = (q_all * q_all.new_tensor([W / Wo, H / Ho])).expand(new_mask.shape[0], Ho, Wo, 2).clone()
    if not bool(new_mask.any()) or not bool(old_mask.any()):
        return identity
    # About 3 pixels of outline per angle bin at the larger face, at most ``bins``.
    extent = max(float(m.sum(dim=(1, 2, 3)).max()) for m in (old_mask, new_mask)) ** 0.5
    bins = int(min(bins, max(32, round(2 * math.pi * extent / 1.77 / 3))))
    c_old, r_old = _radial_profile(old_mask.to(dtype), bins)
    c_new, r_new = _radial_profile(new_mask.to(dtype), bins)
    B = new_mask.shape[0]
    width = 2 * r_new.amax(1, keepdim=True)
    span = torch.maximum(falloff * width, 2 * (r_new - r_old).abs().amax(1, keepdim=True)).clamp(min=1.0)
    # Only pixels within the fading distance of the new face move: compute that box alone.
    reach = (r_new.amax(1) + span[:, 0]).amax() + 2
    lo = (c_new - reach).amin(0).floor().clamp(min=0)
    hi = (c_new + reach).amax(0).ceil()
    x0, y0 = int(lo[0]), int(lo[1])
    x1, y1 = min(Wo, int(hi[0])), min(Ho, int(hi[1]))
    if x1 <= x0 or y1 <= y0:
        return identity
    q = q_all[y0:y1, x0:x1].reshape(1, -1, 2)
    d = q - c_new[:, None]
    r = d.norm(dim=-1).clamp(min=1e-6)
    theta = torch.atan2(d[..., 1], d[..., 0])
    rn = _lookup(r_new, theta).clamp(min=1.0)
    ro = _lookup(r_old, theta)
    t = ((r - rn) / span).clamp(0, 1)
    fade = 1 - t * t * (3 - 2 * t)
    ro_in = torch.maximum(ro - inset * width, 0.5 * ro)
    r_src = torch.where(r < rn, r * ro_in / rn, r + fade * (ro - rn))
    # The centre moves with the fade too, so that far pixels map to themselves.
    centre = torch.where(
        (r < rn)[..., None],
        c_old[:, None].expand(B, r.shape[1], 2),
        c_new[:, None] + fade[..., None] * (c_old - c_new)[:, None],
    )
    src = centre + (d / r[..., None]) * r_src[..., None]
    src = torch.where((r >= rn)[..., None] & (fade[..., None] <= 0), q.expand(B, -1, -1), src)
    identity[:, y0:y1, x0:x1] = src.view(B, y1 - y0, x1 - x0, 2) * src.new_tensor([W / Wo, H / Ho])
    return identity


def resample_source(source: Tensor, at: Tensor) -> Tensor:
    """Compose two pixel maps: ``source`` ``(B, H, W, 2)`` (output pixel -> input position) read at
    ``at`` ``(B, H, W, 2)`` (output pixel -> output position), bilinearly, both in pixel units with
    centres at ``+0.5`` -> ``(B, H, W, 2)`` output pixel -> input position."""
    H, W = source.shape[1:3]
    grid = torch.stack([at[..., 0] * (2.0 / W) - 1.0, at[..., 1] * (2.0 / H) - 1.0], dim=-1).to(source)
    out = F.grid_sample(source.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def _outline_beyond(person: Tensor, centre: Tensor, r_in: Tensor, reach: int) -> Tensor:
    """``(B, K)`` how far (pixels) ``person`` ``(B, 1, H, W)`` stays above 1/2 along each angle bin's ray
    from ``centre`` ``(B, 2)``, starting at radius ``r_in`` ``(B, K)``; ``reach`` where it never drops
    within ``reach`` pixels. Past the image border the border's pixel counts: a head cut by the border
    has no outline there."""
    B, K = r_in.shape
    H, W = person.shape[-2:]
    theta = (torch.arange(K, dtype=r_in.dtype, device=r_in.device) + 0.5) * (2 * math.pi / K) - math.pi
    steps = torch.arange(reach, dtype=r_in.dtype, device=r_in.device) + 0.5
    r = r_in[..., None] + steps  # (B, K, reach)
    x = centre[:, 0, None, None] + torch.cos(theta)[:, None] * r
    y = centre[:, 1, None, None] + torch.sin(theta)[:, None] * r
    grid = torch.stack([x * (2.0 / W) - 1.0, y * (2.0 / H) - 1.0], dim=-1).to(person)
    inside = F.grid_sample(person, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0] >= 0.5
    first_out = torch.where(~inside, torch.arange(reach, device=person.device), reach).amin(-1)
    return first_out.to(r_in.dtype)


def even_head_outline(
    person: Tensor,
    head: Tensor,
    centre: Tensor,
    width: Tensor,
    strength: Tensor | float = 1.0,
    limits: tuple[float, float] = (0.5, 1.0),
    below: float = 45.0,
    falloff: float = 0.35,
    bins: int = 180,
    reach: float = 1.0,
) -> Tensor:
    """Even out the hair around a frontal head: an output-to-output pixel map (module doc).

    Seen from ``centre``, the re-posed head (``head``: the frontal face and what moves with it) ends at
    radius ``r_in(theta)`` and the person beyond it (hair, the back of the head, ears) at ``r_in + e``.
    The target extent is the mean of the two sides, ``e_t = (e(theta) + e(pi - theta)) / 2`` (mirror
    about the vertical through ``centre``), kept within ``limits`` times ``e``, and applied in
    proportion to ``strength``. By default a side is only narrowed, never widened: stretched to twice
    its width, the few curls on the far side of a turned head became a smear, and a bare temple
    cannot be widened into hair it does not have. An output pixel at ``r_in + u`` along ``theta``
    then shows ``r_in + u e / e_t`` for ``u <= e_t`` (the hair band
    squeezed or stretched to its new extent) and ``r_in + u + fade (e - e_t)`` beyond (the background
    just outside the new outline is what was just outside the old one; ``fade`` falls from 1 to 0 over
    ``max(falloff * width, 2 |e - e_t|)``, so the map never folds, and the rest of the photo does not
    move). Only the head is evened out, not the shoulders: the target fades back to ``e`` for rays
    pointing more than ``below`` degrees under the horizontal. Where the person does not end within
    ``reach`` face widths (a head cut by the image border, shoulders), nothing changes on either side.

    Args:
        person: ``(B, 1, H, W)`` person probability in the output frame (the photo's mask moved as the
            photo is: its source map applied).
        head: ``(B, 1, H, W)`` the pixels that are not to move (the frontal face, the head model).
        centre: ``(B, 2)`` output pixels: where rays start; the mirror axis is the vertical through it.
        width: ``(B,)`` the face's width, pixels.
        strength: scalar or ``(B,)`` in ``[0, 1]``: 0 leaves every pixel where it is.
        limits: ``(lo, hi)``: the new extent is at least ``lo`` and at most ``max(hi, 1)`` times the old
            (``hi > 1`` widens the narrower side).
        below: degrees under the horizontal over which the change fades out (smoothstep).
        falloff: how far (face widths) beyond the new outline the background is still moved.
        bins: angle bins (even).
        reach: how far beyond ``r_in`` the outline is looked for, in face widths.

    Returns:
        ``(B, H, W, 2)`` for each output pixel, the output position ``(x, y)`` (pixel centres at
        ``+0.5``) whose content it is to show: compose it with a source map by :func:`resample_source`.
    """
    if person.dim() != 4 or person.shape[1] != 1 or head.shape != person.shape:
        raise ValueError(
            f"person and head must both be (B, 1, H, W); got {tuple(person.shape)} and {tuple(head.shape)}"
        )
    if bins % 2:
        raise ValueError(f"bins must be even (bins mirror onto bins); got {bins}")
    B, _, H, W = person.shape
    dtype = person.dtype if person.dtype.is_floating_point else torch.float32
    dev = person.device
    centre = centre.to(device=dev, dtype=dtype).reshape(B, 2)
    width = torch.as_tensor(width, device=dev, dtype=dtype).reshape(-1).expand(B)
    strength = torch.as_tensor(strength, device=dev, dtype=dtype).reshape(-1).expand(B)
    q = _pixel_centres((H, W), person.new_empty(0, dtype=dtype)).expand(B, H, W, 2)
    if not bool((strength > 0).any()) or not bool(head.any()):
        return q.clone()
    _, r_in = _radial_profile((head > 0.5).to(dtype), bins, centre)
    steps = max(1, int(math.ceil(reach * float(width.max()))))
    e = _outline_beyond(person.to(dtype), centre, r_in, steps)
    # Bins without an outline and their neighbours (the 7-bin mean below reaches them) are left alone,
    # and the change fades in over 11 bins beyond them.
    found = -F.max_pool1d(F.pad(-(e < steps).to(dtype)[:, None], (8, 8), mode="circular"), 17, stride=1)
    found = F.avg_pool1d(F.pad(found, (5, 5), mode="circular"), 11, stride=1)[:, 0]
    # A 7-bin circular mean: single bins catch strands of hair; the outline is smooth at this scale.
    box = torch.ones(1, 1, 7, dtype=dtype, device=dev) / 7
    e = F.conv1d(F.pad(e[:, None], (3, 3), mode="circular"), box)[:, 0]

    def mirror(v: Tensor) -> Tensor:
        # Bin k's mirror (pi - theta) is bin K/2 - 1 - k (mod K).
        return torch.flip(v, [1]).roll(bins // 2, 1)

    lo, hi = limits
    target = (0.5 * (e + mirror(e))).clamp(min=lo * e)
    target = torch.minimum(target, torch.maximum(hi * e, e))
    theta = (torch.arange(bins, dtype=dtype, device=dev) + 0.5) * (2 * math.pi / bins) - math.pi
    down = torch.rad2deg(theta).clamp(min=0)
    down = torch.minimum(down, 180 - down)  # degrees under the horizontal, 0 for rays pointing up
    weight = (1 - _smoothstep(down / max(below, 1e-6)))[None] * found * mirror(found) * strength[:, None]
    target = e + weight * (target - e)

    # Pixels move only within the fading distance of the outlines: compute that box alone.
    moves = (target - e).abs() > 1e-3
    out = q.clone()
    if not bool(moves.any()):
        return out
    span = torch.maximum(falloff * width[:, None], 2 * (e - target).abs()).clamp(min=1.0)
    extent = (r_in + torch.maximum(e, target) + span + 2) * moves
    first = (centre - extent.amax(1, keepdim=True)).amin(0).floor().clamp(min=0)
    last = (centre + extent.amax(1, keepdim=True)).amax(0).ceil()
    x0, y0, x1, y1 = int(first[0]), int(first[1]), min(W, int(last[0])), min(H, int(last[1]))
    if x1 <= x0 or y1 <= y0:
        return out
    qb = q[:, y0:y1, x0:x1].reshape(B, -1, 2)
    d = qb - centre[:, None]
    r = d.norm(dim=-1).clamp(min=1e-6)
    ang = torch.atan2(d[..., 1], d[..., 0])
    ri, ee, et, sp = _lookup(torch.stack([r_in, e, target, span], 1), ang).unbind(1)
    u = r - ri
    ratio = torch.where(et >= 1.0, ee / et.clamp(min=1.0), torch.ones_like(et))
    fade = 1 - _smoothstep((u - et) / sp)
    u_src = torch.where(u <= et, u * ratio, u + fade * (ee - et))
    shift = torch.where(u > 0, u_src - u, torch.zeros_like(u))  # along the ray; exactly 0 where nothing moves
    out[:, y0:y1, x0:x1] = (qb + d / r[..., None] * shift[..., None]).view(B, y1 - y0, x1 - x0, 2)
    return out
