"""Analysis-by-synthesis refinement: fit shape, expression, pose, albedo and SH light to images.

The objective follows Deep3DFaceRecon (Deng et al. 2019), whose parameterisation this uses: a
perspective camera (focal length fixed), identity / expression / albedo coefficients, Euler angles,
a translation, and 27 second-order spherical-harmonic light coefficients (their ``init_lit`` 0.8
DC offset is stored inside ``FitResult.sh``)::

    L = w_photo * mean_{skin pixels} ||I_render - I||_2            (per-pixel L2 norm, as D3D)
      + w_landmark * mean_l ||x_l - x^_l||^2 * (224 / S)^2          (pixels rescaled to a 224 image)
      + w_id ||alpha||^2 + w_exp ||beta||^2 + w_tex ||gamma||^2    (std-unit coefficients)
      + w_light * ||sh - mean_channel(sh)||^2                       (prefer white light)
      + w_smooth * mean_edges ||a_i - a_j||^2                       (per-vertex albedo only)
      + w_silhouette * mean_v d(x_v)^2 * (224 / S)^2                (with a person mask)
      + w_rotation * ||R - R_init||_F^2                             (keep a trusted start rotation)

**Why the silhouette term.** With landmarks alone the photometric term cannot move the pose: a free
per-vertex albedo is started from the image colours at the projected vertices, so whatever the
landmark fit got wrong is painted into the albedo and the rendering already matches. A person mask
(:mod:`morphface.fitting.segmentation`) is evidence the landmarks do not carry: every vertex of the
face must project onto the person. ``d(x)`` is the distance (pixels) from ``x`` to the mask (0 on the
person; a Euclidean distance transform, sampled bilinearly, so it has a gradient), so vertices the
landmark fit put on the background (a profile's nose or far cheek reaching past the real outline,
where detectors place an average profile) are pulled back and the pose follows. The term is
one-sided: an outline inside the person (hair, neck) is left to the landmarks. It does not help against
a bias that keeps the face inside the person: MediaPipe's pull toward a frontal pose (renders of known
pose, ``bench/photometric_pose.py``: pose error unchanged; ``pose="regressed"`` is what corrects that).

**Stopping and the report.** The loop stops when the pose has settled (rotation and translation moved
less than ``pose_tol`` over the last ``patience`` steps) and the loss improves by less than ``10 * tol``
relatively, or when the loss stops improving (``tol``). With ``return_report=True`` a
:class:`PhotometricReport` says what the refinement changed: steps run, rotation and translation
change, landmark RMSE and silhouette overflow before and after.

Models without an albedo basis (the embedded ICT default) get a free per-vertex albedo, started
from the image colours at the projected vertices and regularised by the edge-smoothness term.

Scale ambiguity: the camera's focal length is fixed (the landmark fit's), so distance is the only
scale-like pose parameter, and the identity prior keeps size-like modes (ICT's first mode) near
zero unless the shading and landmarks ask for them.

The skin region excludes the eyes and the mouth (:func:`morphface.render.face_region_labels`),
where the model's surface does not match the image (eyeballs, teeth, mouth interior).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import euler_to_matrix
from ..errors import FitError
from ..morphable import MorphableModel
from ..render import ambient_sh, face_region_labels, interpolate, render_shaded, sh_shading, vertex_normals
from ..render._camera import rasterize_with_camera, to_camera_frame
from ._images import check_image_values
from .dense import dense_correspondence_for, fit_dense_landmarks
from .landmark_fit import check_landmarks, fit_landmarks
from .result import FitResult

__all__ = ["fit_photometric", "render_fit", "mesh_edges", "PhotometricReport", "outside_distance"]


class PhotometricReport(NamedTuple):
    """What :func:`fit_photometric` changed (per image unless noted).

    Attributes:
        steps: optimisation steps run (all images together).
        converged: the stopping rule fired before ``steps`` ran out.
        rotation_change_deg: ``(B,)`` angle of the rotation from the init to the result, degrees.
        translation_change_mm: ``(B,)`` translation change, mm.
        landmark_rmse_before, landmark_rmse_after: ``(B,)`` pixels (NaN without landmarks).
        outside_before, outside_after: ``(B,)`` mean distance (pixels) of the face's vertices from the
            person mask, 0 when the face lies on the person (NaN without a mask).
    """

    steps: int
    converged: bool
    rotation_change_deg: Tensor
    translation_change_mm: Tensor
    landmark_rmse_before: Tensor
    landmark_rmse_after: Tensor
    outside_before: Tensor
    outside_after: Tensor


def outside_distance(person: Tensor, level: float = 0.5) -> Tensor:
    """Distance (pixels) of each pixel from the person: ``(B, 1, H, W)`` probabilities -> ``(B, 1, H, W)``.

    0 where the probability is at least ``level``; elsewhere the Euclidean distance to the nearest such
    pixel (``scipy.ndimage.distance_transform_edt``). An image with no person pixel gets zeros (no term).
    """
    from scipy.ndimage import distance_transform_edt

    on = (person.detach() >= level).cpu().numpy()[:, 0]
    out = np.zeros(on.shape, dtype=np.float32)
    for i, m in enumerate(on):  # one distance transform per image (scipy has no batched one)
        if m.any():
            out[i] = distance_transform_edt(~m)
    return torch.from_numpy(out)[:, None].to(person)


def mesh_edges(faces: Tensor) -> Tensor:
    """Unique undirected edges ``(E, 2)`` of a triangle mesh ``(F, 3)``."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    n = int(faces.max()) + 1 if faces.numel() else 1
    key = torch.unique(e[:, 0] * n + e[:, 1])  # 1-D unique is far faster than unique(dim=0)
    return torch.stack([key // n, key % n], dim=1)


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() not in (3, 4) or images.shape[-3] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, 3, H, W) with RGB in [0, 1]; got {shape}")
    images = images if images.dim() == 4 else images[None]
    check_image_values(images, "images")
    return images


def _sample_at(maps: Tensor, pixels: Tensor) -> Tensor:
    """Bilinear samples ``(B, N, C)`` of ``(B, C, H, W)`` maps at ``(B, N, 2)`` pixel positions (border)."""
    H, W = maps.shape[-2:]
    grid = torch.stack([pixels[..., 0] * (2.0 / W) - 1.0, pixels[..., 1] * (2.0 / H) - 1.0], dim=-1)
    out = F.grid_sample(maps, grid[:, :, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


@torch.enable_grad()  # its own optimisation needs gradients, also when called under torch.no_grad()
def fit_photometric(
    model: MorphableModel,
    images: Tensor,
    init: FitResult | None = None,
    landmarks: Tensor | None = None,
    steps: int = 100,
    lr: float = 0.01,
    w_photo: float = 1.92,
    w_landmark: float = 1.6e-3,
    w_id: float = 3e-4,
    w_exp: float = 2.4e-4,
    w_tex: float = 5e-6,
    w_light: float = 1e-4,
    w_smooth: float = 5.0,
    fit_identity: bool = True,
    tol: float = 1e-4,
    patience: int = 10,
    backend: str = "auto",
    progress: bool = False,
    person_mask: Tensor | None = None,
    w_silhouette: float = 2e-3,
    w_rotation: float = 0.0,
    pose_tol: float = 0.05,
    return_report: bool = False,
) -> FitResult | tuple[FitResult, PhotometricReport]:
    """Refine a fit by rendering the model and comparing it with the images.

    Args:
        model: the morphable model (use a face-only region, e.g. ``load_default_model("narrow")``).
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        init: a perspective :class:`FitResult` to start from; default: :func:`fit_landmarks` on
            ``landmarks``.
        landmarks: ``(B, 68, 2)`` pixels (or MediaPipe's ``(B, 468, 2)``, through the model's
            dense-correspondence table); default: ``init.target_landmarks``. Without landmarks the
            landmark term is off.
        steps: the most optimisation steps (Adam).
        lr: base step size; pose and light use scaled versions of it.
        w_*: loss weights (module docstring); the defaults are Deep3DFaceRecon's ratios.
        fit_identity: also refine the identity (off: keep ``init.id_coeffs``, e.g. in video fitting).
        tol, patience: stop early when the mean loss improved by less than ``tol`` (relative) over
            the last ``patience`` steps (module docstring).
        backend: rasteriser backend.
        progress: show a tqdm bar.
        person_mask: ``(B, 1, H, W)`` or ``(B, H, W)`` person probabilities
            (:meth:`~morphface.fitting.PersonSegmenter.segment`); turns on the silhouette term.
        w_silhouette: its weight (squared pixels at 224^2).
        w_rotation: pull toward the init's rotation, for a start whose rotation is better than what the
            landmark term would make of it (``fit_dense_landmarks(pose="regressed")``: the landmark term
            alone drifts back toward the detector's biased pose).
        pose_tol: degrees (rotation) and millimetres (translation): the pose counts as settled when it
            moved less over the last ``patience`` steps.
        return_report: also return a :class:`PhotometricReport`.

    Returns:
        A :class:`FitResult` with coefficients, pose, ``sh`` ``(B, 27)``, ``tex_coeffs`` (albedo-basis
        models) or ``vertex_albedo`` ``(B, V, 3)``, fitted landmarks and the loss history; with
        ``return_report``, ``(fit, report)``.

    Gradients are enabled inside (``torch.enable_grad``), so it also runs when called under
    ``torch.no_grad()``; the result's tensors are detached either way.

    Raises:
        FitError: the optimisation produced non-finite values from the start.
        ValueError: images that are not float RGB in [0, 1] (e.g. [0, 255]) or hold NaN/inf.
    """
    images = _check_images(images)
    B, _, H, W = images.shape
    if landmarks is None and init is not None:
        landmarks = init.target_landmarks
    lm_ids, lm_valid = model.landmarks, (model.landmarks >= 0).to(images.dtype)
    if landmarks is not None:
        landmarks = check_landmarks(landmarks).to(images)
        if landmarks.shape[1] != model.landmarks.numel():
            # Dense points (MediaPipe's 468, from fit_image / fit_video) go through the model's table.
            table = dense_correspondence_for(model, landmarks.shape[1])
            if table is None:
                raise ValueError(f"expected {model.landmarks.numel()} landmarks per image (one per model landmark "
                                 f"vertex) or points of a dense-correspondence table; got {landmarks.shape[1]}")
            lm_ids = table.vertex_ids(model)
            lm_valid = table.weights().to(images) * (lm_ids >= 0).to(images)
        if landmarks.shape[0] != B:
            raise ValueError(f"landmarks batch {landmarks.shape[0]} != images batch {B}")
    if init is None:
        if landmarks is None:
            raise ValueError("fit_photometric needs init (a FitResult) or landmarks (B, 68, 2)")
        dense = landmarks.shape[1] != model.landmarks.numel()
        init = fit_dense_landmarks(model, landmarks, (H, W)) if dense else fit_landmarks(model, landmarks, (H, W))
    if init.camera_kind != "perspective":
        raise ValueError("fit_photometric needs a perspective init (fit_landmarks(camera='perspective'))")
    if init.batch_size != B or tuple(init.image_size) != (H, W):
        raise ValueError(f"init is for {init.batch_size} images of {init.image_size}; got {B} of {(H, W)}")
    init = init.detach().to(device=images.device, dtype=images.dtype)
    R_init = init.rotation
    outside = None
    if person_mask is not None:
        person_mask = person_mask if person_mask.dim() == 4 else person_mask[:, None]
        if person_mask.shape != (B, 1, H, W):
            raise ValueError(f"person_mask must be ({B}, 1, {H}, {W}) probabilities; got {tuple(person_mask.shape)}")
        outside = outside_distance(person_mask.to(images))

    faces = model.triangles
    skin = face_region_labels(model)["skin"].to(images.dtype)[None, :, None]
    lm_ids = lm_ids.clamp(min=0).to(images.device)
    lm_valid = lm_valid.to(images)
    lm_scale = (224.0 / max(H, W)) ** 2

    # ---- parameters
    params = {
        "id": init.id_coeffs.clone().requires_grad_(fit_identity),
        "exp": init.exp_coeffs.clone().requires_grad_(True),
        "angles": init.angles.clone().requires_grad_(True),
        "t": init.translation.clone().requires_grad_(True),
        "sh": (init.sh.clone() if init.sh is not None else ambient_sh(B, dtype=images.dtype, device=images.device))
        .requires_grad_(True),
    }
    groups = [
        {"params": [params["exp"]], "lr": lr},
        {"params": [params["angles"]], "lr": lr * 0.2},
        {"params": [params["t"]], "lr": lr * 100.0},  # millimetres
        {"params": [params["sh"]], "lr": lr},
    ]
    if fit_identity:
        groups.append({"params": [params["id"]], "lr": lr})
    use_basis = model.has_albedo and model.n_tex > 0
    edges = None
    if use_basis:
        tex0 = init.tex_coeffs if init.tex_coeffs is not None else images.new_zeros(B, model.n_tex)
        params["tex"] = tex0.clone().requires_grad_(True)
        groups.append({"params": [params["tex"]], "lr": lr})
    else:
        if init.vertex_albedo is not None:
            alb0 = init.vertex_albedo
        else:
            with torch.no_grad():
                pix, _ = init.camera.project(init.vertices(model))
                # The image colour divided by the ambient light level: a shading-free starting albedo.
                alb0 = _sample_at(images, pix) / 0.8
        params["albedo"] = alb0.clamp(0.0, 1.0).clone().requires_grad_(True)
        groups.append({"params": [params["albedo"]], "lr": lr})
        edges = mesh_edges(faces)
    opt = torch.optim.Adam(groups)

    def evaluate(p):
        cam = type(init)(id_coeffs=p["id"], exp_coeffs=p["exp"], angles=p["angles"], translation=p["t"],
                         focal=init.focal, principal_point=init.principal_point, image_size=(H, W)).camera
        verts = model(p["id"], p["exp"])
        frags = rasterize_with_camera(verts, faces, cam, backend=backend)
        albedo = model.albedo(p["tex"]) if use_basis else p["albedo"]
        n_cam = to_camera_frame(vertex_normals(verts, faces), cam)
        colour = sh_shading(n_cam, p["sh"], albedo)
        attrs = torch.cat([colour, skin.expand(B, -1, -1)], dim=-1)
        pix_attrs = interpolate(attrs, faces, frags)  # (B, H, W, 4)
        rendered = pix_attrs[..., :3].clamp(0.0, 1.0)
        mask = frags.mask.to(images.dtype) * (pix_attrs[..., 3] > 0.5).to(images.dtype)
        target = images.permute(0, 2, 3, 1)
        diff = torch.sqrt(((rendered - target) ** 2).sum(-1) + 1e-8)
        photo = (diff * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1.0)
        losses = {"photo": w_photo * photo}
        if landmarks is not None:
            pix, _ = cam.project(verts[:, lm_ids])
            lm = (((pix - landmarks) ** 2).sum(-1) * lm_valid).sum(1) / lm_valid.sum()
            losses["landmark"] = w_landmark * lm_scale * lm
        if w_rotation > 0:
            losses["rotation"] = w_rotation * (euler_to_matrix(p["angles"]) - R_init).pow(2).sum((1, 2))
        if outside is not None:
            all_pix, _ = cam.project(verts)
            losses["silhouette"] = w_silhouette * lm_scale * _sample_at(outside, all_pix)[..., 0].pow(2).mean(1)
        losses["reg"] = w_id * (p["id"] ** 2).sum(1) + w_exp * (p["exp"] ** 2).sum(1)
        if use_basis:
            losses["reg"] = losses["reg"] + w_tex * (p["tex"] ** 2).sum(1)
        else:
            a = p["albedo"]
            losses["smooth"] = w_smooth * ((a[:, edges[:, 0]] - a[:, edges[:, 1]]) ** 2).sum(-1).mean(1)
        gamma = p["sh"].reshape(B, 3, 9)
        losses["light"] = w_light * ((gamma - gamma.mean(1, keepdim=True)) ** 2).sum((1, 2))
        total = sum(losses.values())
        return total, losses, cam, verts

    history: list[float] = []
    best = {k: v.detach().clone() for k, v in params.items()}
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="fit_photometric", leave=False)
    poses: list[Tensor] = []  # (B, 6): rotation vector (deg) and translation (mm) per step
    converged = False
    for _step in it:
        opt.zero_grad(set_to_none=True)
        total, _, _, _ = evaluate(params)
        loss = total.sum()
        if not bool(torch.isfinite(loss)):
            if not history:
                raise FitError("fit_photometric: the initial loss is not finite (check the images and init)")
            break  # keep the last finite parameters
        loss.backward()
        for v in params.values():
            if v.grad is not None:
                v.grad.nan_to_num_(0.0, 0.0, 0.0)
        best = {k: v.detach().clone() for k, v in params.items()}
        history.append(float(total.detach().mean()))
        opt.step()
        with torch.no_grad():
            params["exp"].clamp_(*((0.0, 1.0) if model.exp_kind == "blendshape" else (-float("inf"), float("inf"))))
            if "albedo" in params:
                params["albedo"].clamp_(0.0, 1.0)
        with torch.no_grad():
            poses.append(torch.cat([params["angles"] * (180.0 / math.pi), params["t"]], dim=1))
        if len(history) > patience:
            gain = history[-patience - 1] - history[-1]
            settled = float((poses[-1] - poses[-patience - 1]).abs().amax()) < pose_tol
            if gain < tol * abs(history[-patience - 1]) or (settled and gain < 10 * tol * abs(history[-patience - 1])):
                converged = True
                break

    with torch.no_grad():
        total, _, cam, verts = evaluate(best)
        pix, _ = cam.project(verts[:, lm_ids])
        history.append(float(total.mean()))
        residuals = None
        if landmarks is not None:
            residuals = torch.sqrt((((pix - landmarks) ** 2).sum(-1) * lm_valid).sum(1) / lm_valid.sum())
    result = FitResult(
        id_coeffs=best["id"], exp_coeffs=best["exp"], angles=best["angles"], translation=best["t"],
        focal=init.focal, principal_point=init.principal_point, image_size=(H, W), camera_kind="perspective",
        tex_coeffs=best.get("tex"), vertex_albedo=best.get("albedo"), sh=best["sh"], landmarks=pix,
        target_landmarks=landmarks, residuals=residuals, history=history,
    )
    result.check_finite()
    if not return_report:
        return result
    with torch.no_grad():
        before, after = _landmark_rmse_and_outside(model, init, lm_ids, lm_valid, landmarks, outside), \
            _landmark_rmse_and_outside(model, result, lm_ids, lm_valid, landmarks, outside)
        rel = init.rotation.transpose(1, 2) @ result.rotation
        cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
        report = PhotometricReport(
            steps=len(history) - 1, converged=converged, rotation_change_deg=torch.rad2deg(cos.acos()),
            translation_change_mm=(result.translation - init.translation).norm(dim=1),
            landmark_rmse_before=before[0], landmark_rmse_after=after[0],
            outside_before=before[1], outside_after=after[1])
    return result, report


def _landmark_rmse_and_outside(model: MorphableModel, fit: FitResult, lm_ids: Tensor, lm_valid: Tensor,
                               landmarks: Tensor | None, outside: Tensor | None) -> tuple[Tensor, Tensor]:
    """Landmark RMSE (px) and mean vertex distance from the person (px) of a fit, ``(B,)`` each (NaN: no data)."""
    verts = fit.vertices(model)
    nan = verts.new_full((fit.batch_size,), float("nan"))
    rmse = nan
    if landmarks is not None:
        pix, _ = fit.camera.project(verts[:, lm_ids])
        rmse = torch.sqrt((((pix - landmarks) ** 2).sum(-1) * lm_valid).sum(1) / lm_valid.sum())
    out = nan if outside is None else _sample_at(outside, fit.camera.project(verts)[0])[..., 0].mean(1)
    return rmse, out


def render_fit(model: MorphableModel, fit: FitResult, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Render a fit's shaded face: image ``(B, 3, H, W)`` in [0, 1] and mask ``(B, 1, H, W)``."""
    verts = fit.vertices(model)
    if fit.vertex_albedo is not None:
        albedo = fit.vertex_albedo
    else:
        albedo = model.albedo(fit.tex_coeffs, batch_size=fit.batch_size)
    sh = fit.sh if fit.sh is not None else ambient_sh(fit.batch_size, dtype=verts.dtype, device=verts.device)
    out = render_shaded(verts, model.triangles, fit.camera, sh, albedo=albedo, backend=backend)
    return out.image, out.mask

