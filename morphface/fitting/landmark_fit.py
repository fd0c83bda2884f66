"""Closed-form 3DMM fitting to 2D landmarks (HeadGAN, Appendix A, generalised).

The fit alternates two linear problems, batched over images with no Python loop over the batch:

1. **Camera given shape.** An affine camera ``x = A S + b`` is solved by weighted least squares and
   decomposed into scale, rotation (nearest rotation by SVD) and 2D translation. On the first
   iteration ``S`` is the mean shape, which is HeadGAN's Procrustes-to-the-mean step.
2. **Shape given camera.** Identity and expression coefficients come from a Tikhonov-regularised
   linear solve. Coefficients are in std units, so the prior is ``||c||^2`` and its weight is the
   squared landmark noise ``landmark_sigma`` (mm): the solve is the MAP estimate under Gaussian
   landmark noise. Blendshape expressions (the ICT default) are bounded to ``[0, 1]``: components
   that leave the box are clamped and pinned by a stiff penalty in a second solve.

The alternation converges slowly because pose and shape are coupled, so it only initialises a
joint Levenberg-Marquardt refinement of rotation, camera and shape with the same prior. With
``camera="perspective"`` the weak-perspective solution is converted (the model origin placed at depth
``focal / scale``) and the pose is refined alone for a few steps before the joint steps; the focal
length stays fixed. Residuals are measured in millimetres at the face (pixels times depth / focal,
or divided by the scale), the units of the prior.

Scale ambiguity: the ICT model's first identity mode is mostly global size, which trades off against
camera distance (perspective) or scale (weak perspective). The N(0, I) prior resolves it: the size
mode only moves when the landmarks' proportions demand it, never to absorb overall scale.

Two implementations: the batched torch code below (CUDA, autograd, float64, fixed identity, shared
identity) and, for everything else on the CPU (fixed angles included), the same algorithm fused into
one numba call in :mod:`._fast_fit` (float64 inside, ~10x faster for one face);
``fit_landmarks(backend=...)`` chooses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..camera import axis_angle_to_matrix, euler_to_matrix, matrix_to_euler
from ..errors import FitError
from ..morphable import MorphableModel
from ._fast_fit import fast_fit, fast_path_problem, landmark_rows
from .result import FitResult, default_focal

__all__ = ["fit_landmarks", "check_landmarks"]


def check_landmarks(landmarks: Tensor, n_expected: int | None = None) -> Tensor:
    """Validate a ``(B, L, 2)`` (or ``(L, 2)``) landmark tensor; returns it batched."""
    if not isinstance(landmarks, Tensor):
        landmarks = torch.as_tensor(landmarks, dtype=torch.float32)
    if landmarks.dim() == 2:
        landmarks = landmarks.unsqueeze(0)
    if landmarks.dim() != 3 or landmarks.shape[-1] not in (2, 3):
        raise ValueError(f"landmarks must have shape (B, L, 2); got {tuple(landmarks.shape)}")
    if n_expected is not None and landmarks.shape[1] != n_expected:
        raise ValueError(f"expected {n_expected} landmarks per image (one per model landmark vertex); "
                         f"got {landmarks.shape[1]}")
    if not bool(torch.isfinite(landmarks).all()):
        raise ValueError(f"landmarks of shape {tuple(landmarks.shape)} contain NaN or inf")
    return landmarks[..., :2]


def spd_solve(A: Tensor, b: Tensor) -> Tensor:
    """Solve ``A x = b`` for symmetric positive-definite ``A (..., n, n)``, ``b (..., n)`` or ``(..., n, k)``.

    Cholesky: half the work of LU, and no row pivoting. (Besides, MKL's batched LU in torch 2.13 was
    seen failing, "Parameter 6 was incorrect on entry to SLASWP", after ``torch.set_num_threads``
    changed the thread count in the same process.) Falls back to LU where ``A`` is not positive
    definite.
    """
    vec = b.dim() == A.dim() - 1
    rhs = b[..., None] if vec else b
    L, info = torch.linalg.cholesky_ex(A)
    x = torch.cholesky_solve(rhs, L) if not bool((info > 0).any()) else torch.linalg.solve(A, rhs)
    return x[..., 0] if vec else x


def _weighted_solve(M: Tensor, r: Tensor, w: Tensor, reg: Tensor, pin: Tensor | None = None,
                    pin_to: Tensor | None = None) -> Tensor:
    """Batched ``argmin_c sum_i w_i (M_i c - r_i)^2 + sum_k reg_k c_k^2 (+ pins)``.

    M ``(B, N, K)``, r ``(B, N)``, w ``(B, N)``, reg ``(K,)``; pin ``(B, K)`` bool with targets.
    """
    Mw = M * w[..., None]
    A = Mw.transpose(1, 2) @ M + torch.diag_embed(reg.expand(M.shape[0], -1))
    rhs = (Mw.transpose(1, 2) @ r[..., None])[..., 0]
    if pin is not None:
        stiff = 1e6 * A.diagonal(dim1=1, dim2=2).abs().amax(dim=1, keepdim=True).clamp(min=1.0)
        A = A + torch.diag_embed(pin * stiff)
        rhs = rhs + pin * stiff * pin_to
    return spd_solve(A, rhs)


def _nearest_rotation(M: Tensor) -> Tensor:
    U, _, Vh = torch.linalg.svd(M)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return U @ D @ Vh


class _Problem:
    """The landmark rows of the model, weights and priors, shared by the solver steps."""

    def __init__(self, model: MorphableModel, vertex_ids: Tensor, n_id: int, n_exp: int,
                 landmark_sigma: float, exp_reg: float, dtype, device, fixed_id: Tensor | None = None) -> None:
        self.mean = model.mean[vertex_ids].to(dtype)[None]  # (1, L, 3)
        if fixed_id is not None:
            # A known identity becomes part of the mean; only expressions are then solved for.
            k = fixed_id.shape[1]
            id_fixed = (model.id_basis[:k, vertex_ids] * model.id_std[:k, None, None]).to(dtype)
            self.mean = self.mean + torch.einsum("bk,klc->blc", fixed_id.to(dtype), id_fixed)
            n_id = 0
        id_b = (model.id_basis[:n_id, vertex_ids] * model.id_std[:n_id, None, None]).to(dtype)
        exp_b = (model.exp_basis[:n_exp, vertex_ids] * model.exp_std[:n_exp, None, None]).to(dtype)
        self.basis = torch.cat([id_b, exp_b], dim=0)  # (K, L, 3)
        self.n_id, self.n_exp = n_id, n_exp
        self.blendshape = model.exp_kind == "blendshape"
        sig2 = landmark_sigma ** 2
        self.reg = torch.cat([torch.full((n_id,), sig2), torch.full((n_exp,), sig2 * exp_reg)]).to(dtype).to(device)

    def shape(self, c: Tensor) -> Tensor:
        """``(B, L, 3)`` landmark vertices for stacked coefficients ``(B, K)``."""
        K = self.basis.shape[0]
        return self.mean + (c @ self.basis.reshape(K, -1)).reshape(c.shape[0], -1, 3)

    def solve(self, M: Tensor, r: Tensor, w: Tensor) -> Tensor:
        """Regularised coefficients; blendshape weights are kept in [0, 1]."""
        c = _weighted_solve(M, r, w, self.reg)
        if not (self.blendshape and self.n_exp):
            return c
        exp = c[:, self.n_id:]
        pin = torch.zeros_like(c, dtype=torch.bool)
        pin[:, self.n_id:] = (exp < 0) | (exp > 1)
        target = torch.zeros_like(c)
        target[:, self.n_id:] = exp.clamp(0, 1)
        c = _weighted_solve(M, r, w, self.reg, pin.to(c.dtype), target)
        c[:, self.n_id:] = c[:, self.n_id:].clamp(0, 1)
        return c


def _affine_camera(S: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted LS affine camera ``x ~ A S + b``, decomposed into scale, rotation, 2D translation."""
    B, L, _ = S.shape
    Sh = torch.cat([S, torch.ones_like(S[..., :1])], dim=-1)  # (B, L, 4)
    Sw = Sh * w[..., None]
    P = spd_solve(Sw.transpose(1, 2) @ Sh + 1e-9 * torch.eye(4, dtype=S.dtype, device=S.device),
                           Sw.transpose(1, 2) @ x).transpose(1, 2)  # (B, 2, 4)
    A, b = P[..., :3], P[..., 3]
    n0, n1 = A[:, 0].norm(dim=-1), A[:, 1].norm(dim=-1)
    s = 0.5 * (n0 + n1)
    r1, r2 = A[:, 0] / n0[:, None], -A[:, 1] / n1[:, None]  # image v points down: flip the second row
    R = _nearest_rotation(torch.stack([r1, r2, torch.cross(r1, r2, dim=-1)], dim=1))
    return s, R, b


def _weak_shape_system(P: _Problem, s: Tensor, R: Tensor, b: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows (mm) of ``(x - b)/s = Pi R (mean + basis c)`` with ``Pi = diag(1, -1)``."""
    flip = x.new_tensor([1.0, -1.0])
    RB = torch.einsum("bij,klj->bkli", R[:, :2], P.basis)  # (B, K, L, 2)
    M = (RB * flip).permute(0, 2, 3, 1).reshape(x.shape[0], -1, RB.shape[1])  # (B, 2L, K)
    Rm = torch.einsum("bij,blj->bli", R[:, :2], P.mean.expand(x.shape[0], -1, -1)) * flip
    r = ((x - b[:, None]) / s[:, None, None] - Rm).reshape(x.shape[0], -1)
    return M, r


def _camera_terms(kind: str, S: Tensor, R: Tensor, cam: Tensor, f: Tensor | None, pp: Tensor | None):
    """Projection of ``S (B, L, 3)`` and the pieces of the residual Jacobian for one camera kind.

    ``cam`` is the translation ``(B, 3)`` mm (perspective) or ``(tx, ty, log s)`` (weak perspective).
    Residuals are pixels times ``1 / (pixels per mm)`` at each point, i.e. millimetres at the face.

    Returns:
        proj ``(B, L, 2)`` pixels, mm_per_px ``(B, L)``, dres/dX ``(B, L, 2, 3)`` where X = R S
        rotated points, and dres/dcam ``(B, L, 2, 3)``.
    """
    RS = S @ R.transpose(1, 2)
    ones, zeros = torch.ones_like(RS[..., 0]), torch.zeros_like(RS[..., 0])
    if kind == "perspective":
        Xc = RS + cam[:, None]
        d = (-Xc[..., 2]).clamp(min=1e-3)
        proj = torch.stack([pp[:, None, 0] + f[:, None] * Xc[..., 0] / d,
                            pp[:, None, 1] - f[:, None] * Xc[..., 1] / d], -1)
        mm_per_px = d / f[:, None]
        du = torch.stack([ones, zeros, Xc[..., 0] / d], -1)
        dv = torch.stack([zeros, -ones, -Xc[..., 1] / d], -1)
        dX = torch.stack([du, dv], dim=2)
        return proj, mm_per_px, dX, dX, RS  # dXc/dt = I
    s = cam[:, 2].exp()
    proj = torch.stack([cam[:, None, 0] + s[:, None] * RS[..., 0], cam[:, None, 1] - s[:, None] * RS[..., 1]], -1)
    mm_per_px = (1.0 / s)[:, None].expand_as(ones)
    dX = torch.stack([torch.stack([ones, zeros, zeros], -1), torch.stack([zeros, -ones, zeros], -1)], dim=2)
    inv = mm_per_px
    dcam = torch.stack([torch.stack([inv, zeros, RS[..., 0]], -1), torch.stack([zeros, inv, -RS[..., 1]], -1)], dim=2)
    return proj, mm_per_px, dX, dcam, RS


def _depth_residuals(RS: Tensor, depth: Tensor, mm_per_px: Tensor, wz: Tensor) -> Tensor:
    """``(B, L)`` mm: the model's camera-frame z of each point (toward the camera), less its weighted
    mean, plus the measured relative depth ``depth`` (pixels, larger = farther) in mm at the face (one
    scale per image: the weighted mean of the points' millimetres per pixel)."""
    z = RS[..., 2]
    zt = depth * (wz * mm_per_px).sum(1, keepdim=True)
    return (z - (wz * z).sum(1, keepdim=True)) + (zt - (wz * zt).sum(1, keepdim=True))


def _levenberg_marquardt(P: _Problem, kind: str, c: Tensor, x: Tensor, w: Tensor, R: Tensor, cam: Tensor,
                         f: Tensor | None, pp: Tensor | None, steps: int, shape: bool = True, shared: int = 0,
                         depth: Tensor | None = None, depth_weight: float = 0.0, fixed_rotation: bool = False):
    """Levenberg-Marquardt on rotation, camera and (optionally) shape coefficients, batched.

    Residuals are in millimetres at the face (see :func:`_camera_terms`), the units of the prior,
    so the prior weight means the same as in the linear solves. Rotation updates are
    left-multiplied, ``R <- exp(omega) R`` (pivoting on the model origin); blendshape weights are
    kept in ``[0, 1]`` by projected steps with the active bounds frozen. Each image keeps its own
    damping and only accepts steps that lower its cost.

    With ``shared = n`` the first ``n`` shape coefficients (the identity) are one vector shared by
    the whole batch (the frames of one person), with its prior counted once. The normal equations
    then have an arrow structure, solved by the Schur complement of the per-image blocks; steps
    are accepted or rejected for the batch as a whole.

    With ``depth`` ``(B, L)`` (relative depths in pixels, see :func:`fit_landmarks`) one more residual
    per point compares the model's depth, less its weighted mean, with ``depth`` times the point's
    millimetres per pixel, weighted by ``depth_weight`` times the point's weight. ``fixed_rotation``
    keeps ``R`` as given.
    """
    B, L, _ = x.shape
    w2 = w.repeat_interleave(2, dim=1)
    wz = w / w.sum(1, keepdim=True).clamp(min=1e-12)  # weights of the depth centring
    if depth is not None:
        w2 = torch.cat([w2, w * depth_weight], dim=1)
    K = c.shape[1] if shape else 0
    reg = P.reg[:K]
    zeros6 = torch.zeros(6, dtype=x.dtype, device=x.device)
    # prior in the per-image blocks; a shared identity's prior is added once, below
    local_reg = reg.clone()
    local_reg[:shared] = 0
    prior = torch.cat([zeros6, local_reg])

    def evaluate(c, R, cam):
        proj, mm_per_px, dX, dcam, RS = _camera_terms(kind, P.shape(c), R, cam, f, pp)
        res = ((proj - x) * mm_per_px[..., None]).reshape(B, -1)
        if depth is not None:
            res = torch.cat([res, _depth_residuals(RS, depth, mm_per_px, wz)], dim=1)
        cost = (res ** 2 * w2).sum(1) + (local_reg * c[:, :K] ** 2).sum(1)
        if shared:  # the batch is one problem: every image carries the total cost
            cost = (cost.sum() + (reg[:shared] * c[0, :shared] ** 2).sum()).expand(B)
        return res, cost, (dX, dcam, RS)

    res, cost, terms = evaluate(c, R, cam)
    mu = torch.full((B, 1), 1e-3, dtype=x.dtype, device=x.device)
    history = [float(cost.mean()) / (B if shared else 1)]
    for _ in range(steps):
        dX, dcam, RS = terms
        X, Y, Z = RS.unbind(-1)
        zeros = torch.zeros_like(X)
        neg_skew = torch.stack([torch.stack([zeros, Z, -Y], -1), torch.stack([-Z, zeros, X], -1),
                                torch.stack([Y, -X, zeros], -1)], dim=-2)  # d(exp(w) R S)/dw = -[R S]x
        blocks = [dX @ neg_skew, dcam]
        if shape:
            blocks.append(dX @ torch.einsum("bij,klj->blik", R, P.basis[:K]))  # d(R S)/dc = R basis
        J = torch.cat(blocks, dim=-1)  # (B, L, 2, P)
        if depth is not None:
            # d(depth residual)/d(R S) = (0, 0, 1): rotation row z of -[R S]x, no translation (it is
            # centred away), shape R[2] . basis; then the weighted mean over points is removed
            dz = [neg_skew[..., 2, :], torch.zeros_like(neg_skew[..., 2, :])]
            if shape:
                dz.append(torch.einsum("bj,klj->blk", R[:, 2], P.basis[:K]))
            Jz = torch.cat(dz, dim=-1)
            Jz = Jz - (wz[..., None] * Jz).sum(1, keepdim=True)
            J = torch.cat([J.reshape(B, 2 * L, -1), Jz], dim=1)
        else:
            J = J.reshape(B, 2 * L, -1)
        JtW = J.transpose(1, 2) * w2[:, None]
        H = JtW @ J + torch.diag_embed(prior.expand(B, -1))
        g = (JtW @ res[..., None])[..., 0]
        if shape:
            g = g + torch.cat([torch.zeros_like(g[:, :6]), local_reg * c[:, :K]], dim=1)
        if shape and P.blendshape and P.n_exp:
            # Projected Newton: weights at a bound whose gradient pushes outward stay fixed this step.
            active = torch.zeros_like(g, dtype=torch.bool)
            e, ge = c[:, P.n_id:], g[:, 6 + P.n_id:]
            active[:, 6 + P.n_id:] = ((e <= 0) & (ge > 0)) | ((e >= 1) & (ge < 0))
            free = (~active).to(x.dtype)
            H = H * free[:, :, None] * free[:, None, :] + torch.diag_embed(active.to(x.dtype))
            g = g * free
        if fixed_rotation:
            keep = torch.ones_like(g)
            keep[:, :3] = 0
            H = H * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(1 - keep)
            g = g * keep
        damp = torch.diag_embed(mu * H.diagonal(dim1=1, dim2=2) + 1e-9)
        if shared:
            sl = torch.cat([torch.arange(6), torch.arange(6 + shared, 6 + K)]).to(x.device)
            ss = torch.arange(6, 6 + shared, device=x.device)
            Hd = H + damp
            Hll, Hls = Hd[:, sl][:, :, sl], Hd[:, sl][:, :, ss]
            Hss = Hd[:, ss][:, :, ss].sum(0) + torch.diag(reg[:shared] * (1 + mu[0]))
            gl, gs = g[:, sl], g[:, ss].sum(0) + reg[:shared] * c[0, :shared]
            Hll_inv_Hls = spd_solve(Hll, torch.cat([Hls, gl[..., None]], dim=2))
            S = Hss - (Hls.transpose(1, 2) @ Hll_inv_Hls[..., :shared]).sum(0)
            rhs = gs - (Hls.transpose(1, 2) @ Hll_inv_Hls[..., shared:]).sum(0)[:, 0]
            ds = -spd_solve(S, rhs)
            dl = -(Hll_inv_Hls[..., shared] + (Hll_inv_Hls[..., :shared] @ ds[:, None])[..., 0])
            delta = torch.zeros_like(g)
            delta[:, sl] = dl
            delta[:, ss] = ds
        else:
            delta = -spd_solve(H + damp, g)
        R_new = axis_angle_to_matrix(delta[:, :3]) @ R
        cam_new = cam + delta[:, 3:6]
        c_new = c
        if shape:
            c_new = c + delta[:, 6:]
            if P.blendshape and P.n_exp:
                c_new[:, P.n_id:] = c_new[:, P.n_id:].clamp(0, 1)
        res_new, cost_new, terms_new = evaluate(c_new, R_new, cam_new)
        ok = cost_new < cost
        okc = ok[:, None]
        R = torch.where(okc[..., None], R_new, R)
        cam = torch.where(okc, cam_new, cam)
        c = torch.where(okc, c_new, c)
        res = torch.where(okc, res_new, res)
        cost = torch.where(ok, cost_new, cost)
        terms = tuple(torch.where(ok.reshape(-1, *[1] * (a.dim() - 1)), a, b) for a, b in zip(terms_new, terms))
        mu = torch.where(okc, mu / 3, mu * 4).clamp(1e-7, 1e7)
        history.append(float(cost.mean()) / (B if shared else 1))
    proj = _camera_terms(kind, P.shape(c), R, cam, f, pp)[0]
    return c, R, cam, proj, history


def fit_landmarks(
    model: MorphableModel,
    landmarks: Tensor,
    image_size: tuple[int, int],
    camera: str = "perspective",
    focal: float | Tensor | None = None,
    vertex_ids: Tensor | None = None,
    weights: Tensor | None = None,
    n_id: int | None = None,
    n_exp: int | None = None,
    landmark_sigma: float = 2.0,
    exp_reg: float = 1.0,
    iterations: int = 2,
    pose_steps: int = 2,
    gn_steps: int = 8,
    id_coeffs: Tensor | None = None,
    shared_identity: bool = False,
    depth_weight: float = 0.0,
    angles: Tensor | None = None,
    backend: str = "auto",
) -> FitResult:
    """Fit identity, expression and camera to 2D landmarks in closed form.

    Args:
        model: the morphable model.
        landmarks: ``(B, L, 2)`` pixel coordinates (``morphface.camera`` pixel convention), or
            ``(B, L, 3)`` with a relative depth per point in the third column (pixels at the scale of
            x, larger = farther from the camera, any offset: MediaPipe's ``z``), used when
            ``depth_weight > 0``.
        image_size: ``(H, W)`` of the images.
        camera: ``"perspective"`` (focal fixed, pose and shape fitted) or ``"weak_perspective"``.
        focal: focal length in pixels (perspective); default :func:`default_focal`.
        vertex_ids: ``(L,)`` model vertex of each landmark (default: ``model.landmarks``). Entries of
            ``-1`` (landmarks a cropped model lacks) are ignored.
        weights: ``(L,)`` or ``(B, L)`` per-landmark weights (default 1).
        n_id, n_exp: how many identity/expression components to fit (default: all).
        landmark_sigma: expected landmark error in mm at the face; the prior weight is its square.
        exp_reg: multiplier of the expression prior relative to the identity prior.
        iterations: alternations of the weak-perspective camera and shape solves.
        pose_steps: Levenberg-Marquardt steps on the pose alone after the weak-perspective stage
            (perspective only).
        gn_steps: joint Levenberg-Marquardt steps on pose, camera and shape.
        id_coeffs: ``(B|1, K)`` a known identity to keep fixed (e.g. one shared by a video's
            frames); then only expression and pose are fitted.
        shared_identity: the batch shows one person (e.g. a video's frames): fit one identity for
            all images jointly with per-image expression and pose. The prior then counts once,
            and views from several poses pin the identity down far better than any single one.
        depth_weight: weight of the depth residuals relative to the image residuals (0: depths
            ignored). A regressor's 2D points can be biased toward frontal at large head pitch while
            its depths still carry the turn; the depths are compared after removing their weighted
            mean, in mm at the face (see :func:`_levenberg_marquardt`).
        angles: ``(B|1, 3)`` radians, a known head rotation (pitch, yaw, roll) kept fixed; then only
            translation, scale/camera and shape are fitted.
        backend: ``"auto"`` (default): the fused CPU solver (:mod:`._fast_fit`, the same algorithm in
            one numba call, float64 inside) where the call qualifies (CPU tensors, no autograd,
            float32/integer landmarks, one weight row for the batch, no ``id_coeffs``/
            ``shared_identity``; fixed ``angles`` are fine), else the batched torch solver; ``"torch"``: always torch;
            ``"numba"``: the fused solver or a ``ValueError`` saying why it cannot run.

    Returns:
        A :class:`FitResult` whose ``landmarks`` are the fitted model landmarks in pixels and whose
        ``residuals`` are the per-image reprojection RMSE in pixels.
    """
    if camera not in ("perspective", "weak_perspective"):
        raise ValueError(f"camera must be 'perspective' or 'weak_perspective'; got {camera!r}")
    if backend not in ("auto", "torch", "numba"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numba'; got {backend!r}")
    ids = model.landmarks if vertex_ids is None else torch.as_tensor(vertex_ids, device=model.mean.device)
    if ids.numel() == 0:
        raise ValueError(f"model {model.name!r} has no landmark vertices; pass vertex_ids")
    depth = None
    if depth_weight > 0 and torch.as_tensor(landmarks).shape[-1] == 3:
        depth = torch.as_tensor(landmarks)[..., 2].reshape(-1, ids.numel())
    x = check_landmarks(landmarks, ids.numel())
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    # The prior keeps the normal equations well conditioned (cond < 1e5), so float32 is accurate enough
    # for float32 inputs; float64 inputs are solved in float64.
    dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    x = x.to(dtype=dtype, device=model.mean.device)
    if depth is not None:
        depth = depth.to(dtype=dtype, device=x.device)
    B, L = x.shape[:2]
    w = torch.ones(B, L, dtype=dtype, device=x.device)
    if weights is not None:
        w = w * torch.as_tensor(weights, dtype=dtype, device=x.device).expand(B, L)
    valid = ids >= 0
    w = w * valid.to(dtype)
    if int((w[0] > 0).sum()) < 6:
        raise ValueError(f"need at least 6 landmarks with positive weight; got {int((w[0] > 0).sum())}")
    ids = ids.clamp(min=0)
    n_id = model.n_id if n_id is None else min(n_id, model.n_id)
    n_exp = model.n_exp if n_exp is None else min(n_exp, model.n_exp)
    if angles is not None:
        n_rows = torch.as_tensor(angles).reshape(-1, 3).shape[0]
        if n_rows not in (1, B):
            raise ValueError(f"angles must have shape (1, 3) or ({B}, 3); got {tuple(torch.as_tensor(angles).shape)}")
    if backend != "torch":
        # x: the landmarks as the solve sees them (on the model's device, float32 unless given as float64)
        why = fast_path_problem(x, model, weights, focal, camera, id_coeffs, shared_identity, angles)
        if why is None and not (bool((w == w[:1]).all()) and bool((w >= 0).all())):
            why = "per-image or negative weights"
        if why is None:
            return _fit_fused(model, x, depth, w[0], ids, n_id, n_exp, landmark_sigma, exp_reg, camera, focal,
                              image_size, depth_weight, iterations, pose_steps, gn_steps, out_dtype, angles)
        if backend == "numba":
            raise ValueError(f"backend='numba' cannot fit this call: {why}")
    fixed = None
    if id_coeffs is not None:
        fixed = model._coeffs(id_coeffs, model.id_basis, "identity").to(dtype=dtype, device=x.device)
        if fixed.shape[0] not in (1, B):
            raise ValueError(f"id_coeffs batch must be 1 or {B}; got {tuple(fixed.shape)}")
        fixed = fixed.expand(B, -1)
    P = _Problem(model, ids, n_id, n_exp, landmark_sigma, exp_reg, dtype, x.device, fixed_id=fixed)
    n_id = P.n_id
    c = torch.zeros(B, n_id + n_exp, dtype=dtype, device=x.device)
    w2 = w.repeat_interleave(2, dim=1)

    R_fixed = None
    if angles is not None:
        R_fixed = euler_to_matrix(torch.as_tensor(angles, dtype=dtype, device=x.device).reshape(-1, 3)).expand(B, 3, 3)
    history = []
    for _ in range(iterations):
        s, R, b = _affine_camera(P.shape(c), x, w)
        R = R if R_fixed is None else R_fixed
        M, r = _weak_shape_system(P, s, R, b, x)
        c = P.solve(M, r, w2)
        history.append(float((((M @ c[..., None])[..., 0] - r) ** 2 * w2).sum(1).mean()))
    s, R, b = _affine_camera(P.shape(c), x, w)
    R = R if R_fixed is None else R_fixed

    H, W = image_size
    if camera == "weak_perspective":
        f = pp = None
        cam = torch.cat([b, s.log()[:, None]], dim=1)
    else:
        f = torch.as_tensor(default_focal(image_size) if focal is None else focal, dtype=dtype,
                            device=x.device).reshape(-1).expand(B).clone()
        pp = x.new_tensor([W / 2.0, H / 2.0]).expand(B, 2).clone()
        # weak perspective -> perspective: the model origin sits at depth f / s
        cam = torch.stack([(b[:, 0] - pp[:, 0]) / s, -(b[:, 1] - pp[:, 1]) / s, -f / s], dim=-1)
        # the pose alone first: the weak-perspective shape is good, its pose is biased by perspective
        c, R, cam, proj, _ = _levenberg_marquardt(P, camera, c, x, w, R, cam, f, pp, pose_steps, shape=False,
                                                  depth=depth, depth_weight=depth_weight,
                                                  fixed_rotation=R_fixed is not None)
    shared = 0
    if shared_identity and fixed is None:
        shared = n_id
        c[:, :n_id] = c[:, :n_id].mean(0, keepdim=True)
    c, R, cam, proj, hist = _levenberg_marquardt(P, camera, c, x, w, R, cam, f, pp, gn_steps, shared=shared,
                                                 depth=depth, depth_weight=depth_weight,
                                                 fixed_rotation=R_fixed is not None)
    history += hist
    if camera == "weak_perspective":
        trans, foc = cam[:, :2], cam[:, 2].exp()
    else:
        trans, foc = cam, f

    err = ((proj - x) ** 2).sum(-1)
    rmse = torch.sqrt((err * w).sum(1) / w.sum(1))
    id_out = c[:, :n_id] if fixed is None else fixed
    result = FitResult(
        id_coeffs=id_out.to(out_dtype), exp_coeffs=c[:, n_id:].to(out_dtype),
        angles=matrix_to_euler(R).to(out_dtype), translation=trans.to(out_dtype), focal=foc.to(out_dtype),
        principal_point=None if pp is None else pp.to(out_dtype), image_size=(H, W), camera_kind=camera,
        landmarks=proj.to(out_dtype), target_landmarks=x.to(out_dtype), residuals=rmse.to(out_dtype),
        history=history,
    )
    result.check_finite()
    return result


def _euler_np(R: np.ndarray) -> np.ndarray:
    """:func:`~morphface.camera.matrix_to_euler` on ``(B, 3, 3)`` numpy rotations: ``(B, 3)`` radians."""
    yaw = np.arcsin(np.clip(-R[:, 2, 0], -1.0, 1.0))
    locked = np.sqrt(R[:, 2, 1] ** 2 + R[:, 2, 2] ** 2) < 1e-6
    pitch = np.where(locked, np.arctan2(-R[:, 1, 2], R[:, 1, 1]), np.arctan2(R[:, 2, 1], R[:, 2, 2]))
    roll = np.where(locked, 0.0, np.arctan2(R[:, 1, 0], R[:, 0, 0]))
    return np.stack([pitch, yaw, roll], axis=-1)


def _fit_fused(model: MorphableModel, x: Tensor, depth: Tensor | None, w: Tensor, ids: Tensor, n_id: int, n_exp: int,
               landmark_sigma: float, exp_reg: float, camera: str, focal, image_size: tuple[int, int],
               depth_weight: float, iterations: int, pose_steps: int, gn_steps: int, out_dtype,
               angles: Tensor | None = None) -> FitResult:
    """:func:`fit_landmarks` through the fused solver (``x (B, L, 2)`` px, ``w (L,)`` the shared weights,
    ``angles (B|1, 3)`` radians: a rotation kept fixed, or ``None``).

    The results are assembled in numpy and converted once: with ~100 small torch operations this
    part alone took as long as a 68-point solve."""
    B = x.shape[0]
    H, W = image_size
    wn = w.double().numpy()
    rows = landmark_rows(model, ids, wn, n_id, n_exp)
    sig2 = landmark_sigma ** 2
    reg = np.concatenate([np.full(n_id, sig2), np.full(n_exp, sig2 * exp_reg)])
    f = None
    if camera == "perspective":
        f = np.broadcast_to(np.asarray(default_focal(image_size) if focal is None
                                       else torch.as_tensor(focal).double().numpy(), dtype=np.float64).reshape(-1),
                            (B,))
    xn = x.double().numpy()
    rotation = None
    if angles is not None:  # in float64 whatever the input's precision (the solver's precision)
        a64 = torch.as_tensor(angles).detach().to(dtype=torch.float64, device="cpu").reshape(-1, 3)
        rotation = euler_to_matrix(a64).expand(B, 3, 3).numpy()
    c, R, cam, proj, hist_weak, hist_lm = fast_fit(
        rows, xn, None if depth is None else depth.double().numpy(), reg, model.exp_kind == "blendshape", camera, f,
        (H, W), depth_weight, iterations, pose_steps, gn_steps, rotation)
    if camera == "weak_perspective":
        trans, foc, pp = cam[:, :2], np.exp(cam[:, 2]), None
    else:
        trans, foc, pp = cam, f, np.broadcast_to(np.array([W / 2.0, H / 2.0]), (B, 2))
    rmse = np.sqrt((((proj - xn) ** 2).sum(-1) * wn).sum(1) / wn.sum())
    out = {"id_coeffs": c[:, :n_id], "exp_coeffs": c[:, n_id:], "angles": _euler_np(R), "translation": trans,
           "focal": foc, "principal_point": pp, "landmarks": proj, "residuals": rmse}
    for k, v in out.items():  # FitResult.check_finite, before the conversion
        if v is not None and not np.isfinite(v).all():
            raise FitError(f"fit produced non-finite values in {k!r}")
    np_dtype = np.float64 if out_dtype == torch.float64 else np.float32
    out = {k: None if v is None else torch.from_numpy(np.ascontiguousarray(v, dtype=np_dtype)) for k, v in out.items()}
    return FitResult(**out, image_size=(H, W), camera_kind=camera, target_landmarks=x.to(out_dtype),
                     history=[float(h) for h in hist_weak.mean(0)] + [float(h) for h in hist_lm.mean(0)])
