"""Fused CPU solver for :func:`~morphface.fitting.fit_landmarks`: the same fit, one numba call per batch.

The torch solver in :mod:`.landmark_fit` spends nearly all of a single-face fit on dispatching ~1500
small tensor operations. This module runs the identical algorithm (weak-perspective alternation,
pose-only Levenberg-Marquardt steps, joint LM with box-constrained blendshape weights, Tikhonov
prior, optional depth residuals; see the module docstring of :mod:`.landmark_fit`) face by face
inside one jitted function, in float64.

Two rewrites make it cheap without changing the math:

* **Per-model constants.** Every normal-equation block of the shape coefficients has the form
  ``sum_l w_l B_l^T N_l B_l`` with ``B_l`` the ``(3, K)`` basis rows of point ``l`` and ``N_l`` a
  3x3 metric. For the weak-perspective solves and for the constant part of the LM metric
  (``R^T diag(1, 1, depth_weight) R``) ``N`` is the same for every point, so the block is
  ``sum_ab N_ab C_ab`` with the nine ``C_ab = sum_l w_l B_la B_lb^T`` computed once per
  (model, landmark vertices, weights) and cached: ``O(K^2)`` per step instead of ``O(L K^2)``.
  The weighted centring of the depth rows only subtracts a rank-one term.
* **Perspective cross term.** The remaining, point-dependent part of the perspective metric is
  ``e3 q_l^T + q_l e3^T`` in camera coordinates (``q_l = (x_l/d_l, y_l/d_l, (x_l^2 + y_l^2)/2d_l^2)``,
  the projected point's normalised image coordinates), a single ``(L, K)^T (L, K)`` product per
  step, done in float32 (it is ~10 % of the matrix, so float32 rounding there is ~1e-8 of the
  whole).

Everything else (Jacobian rows, gradients, Cholesky solves with an LU fallback, the accept/reject
and damping schedule, kornia's Rodrigues/Taylor rotation update) follows the torch code line by
line. A fixed rotation (``fit_landmarks(angles=...)``) is handled as in torch: the weak-perspective
stage keeps the affine camera's scale and translation but solves the shape with the given rotation,
and the Levenberg-Marquardt steps leave the three rotation unknowns out of the system (torch gives
them identity rows and a zero gradient, so the others' solution is the same).
:func:`fast_path_problem` says whether a call qualifies (CPU, no autograd, float32 or integer inputs,
one weight row for the batch, no fixed identity, no shared identity).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import types
from numba.np.linalg import _BLAS, _LAPACK, F_INT_nptype
from torch import Tensor

from ..morphable import MorphableModel

__all__ = ["LandmarkRows", "landmark_rows", "fast_fit", "fast_path_problem"]

# reassociation lets the reductions vectorise; no assumptions about NaN/inf (cost comparisons
# rely on them behaving as in torch)
_FM = {"reassoc", "contract", "nsz"}


@dataclass
class LandmarkRows:
    """Model rows of one landmark set, in float64, with the per-point-constant normal-matrix pieces.

    Attributes:
        mean: ``(L, 3)`` mm, mean shape at the landmark vertices.
        basis: ``(3, L, K)`` mm per std unit, coordinate-major (``basis[a, l]`` is coordinate ``a``
            of point ``l`` for every coefficient), identity modes first.
        gram: ``(6, K, K)`` ``C_xx, C_yy, C_zz, C_xy + C_yx, C_xz + C_zx, C_yz + C_zy`` with
            ``C_ab = sum_l w_l basis[a, l] basis[b, l]^T``.
        wmean: ``(3, K)`` weighted mean over the points of ``basis[a]`` (weights ``w / sum w``).
        weights: ``(L,)`` the weights the pieces were built with.
        n_id, n_exp: identity and expression modes.
    """

    mean: np.ndarray
    basis: np.ndarray
    gram: np.ndarray
    wmean: np.ndarray
    weights: np.ndarray
    n_id: int
    n_exp: int
    basis32: np.ndarray  # float32 copy of ``basis`` for the perspective cross term
    basis_t: np.ndarray  # ``(K, 3L)`` ``basis`` transposed, for the pose/shape coupling


# model -> {key: LandmarkRows}; weak keys so a dropped model frees its entries
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_PER_MODEL = 8


def _model_version(model: MorphableModel) -> tuple:
    """Changes whenever a tensor the rows are built from is replaced or modified in place."""
    ts = (model.mean, model.id_basis, model.id_std, model.exp_basis, model.exp_std)
    return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in ts)


def landmark_rows(model: MorphableModel, ids: Tensor, weights: np.ndarray, n_id: int, n_exp: int) -> LandmarkRows:
    """The cached :class:`LandmarkRows` of ``model`` at vertices ``ids (L,)`` (non-negative) with
    per-point ``weights (L,)`` (>= 0). The first call for a key costs a few ms (the ``(3K)^2`` Gram
    matrix over the points); later calls are a dictionary look-up."""
    ids_np = ids.detach().cpu().numpy().astype(np.int64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    key = (_model_version(model), ids_np.tobytes(), w.tobytes(), n_id, n_exp)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.pop(key, None)
    if hit is None:
        with torch.no_grad():
            idt = torch.as_tensor(ids_np, device=model.mean.device)
            mean = model.mean[idt].detach().double().cpu().numpy()
            id_b = (model.id_basis[:n_id, idt] * model.id_std[:n_id, None, None]).detach().double().cpu().numpy()
            exp_b = (model.exp_basis[:n_exp, idt] * model.exp_std[:n_exp, None, None]).detach().double().cpu().numpy()
        B = np.concatenate([id_b, exp_b], axis=0)  # (K, L, 3)
        basis = np.ascontiguousarray(B.transpose(2, 1, 0))  # (3, L, K)
        K, L = B.shape[0], B.shape[1]
        X = (np.sqrt(w)[:, None, None] * B.transpose(1, 2, 0)).reshape(L, 3 * K)  # (L, 3K): sqrt(w) basis
        G = X.T @ X
        C = [[G[a * K:(a + 1) * K, b * K:(b + 1) * K] for b in range(3)] for a in range(3)]
        gram = np.ascontiguousarray(np.stack([C[0][0], C[1][1], C[2][2], C[0][1] + C[1][0], C[0][2] + C[2][0],
                                              C[1][2] + C[2][1]]))
        wz = w / max(w.sum(), 1e-12)
        wmean = np.einsum("l,alk->ak", wz, basis)
        hit = LandmarkRows(np.ascontiguousarray(mean), basis, gram, np.ascontiguousarray(wmean), w, n_id, n_exp,
                           basis.astype(np.float32), np.ascontiguousarray(basis.reshape(3 * L, K).T))
    per_model[key] = hit  # most recently used last
    while len(per_model) > _CACHE_PER_MODEL:
        per_model.pop(next(iter(per_model)))
    return hit


def fast_path_problem(landmarks: Tensor, model: MorphableModel, weights, focal, camera: str, id_coeffs,
                      shared_identity: bool, angles) -> str | None:
    """Why the fused solver cannot run this :func:`~morphface.fitting.fit_landmarks` call (``None``: it can).

    ``landmarks``: the ``(B, L, 2)`` tensor the solve works on (on the model's device, float32 unless
    float64 was given). Per-image weights are checked by the caller; fixed ``angles`` are supported."""
    if camera not in ("perspective", "weak_perspective"):
        return f"camera {camera!r}"
    if id_coeffs is not None or shared_identity:
        return "fixed identity or a shared identity (torch solver only)"
    # angles join the checks: on the GPU or in the autograd graph they keep the fit in torch
    tensors = [t for t in (landmarks, weights, focal, angles) if isinstance(t, Tensor)]
    tensors += [model.mean, model.id_basis, model.id_std, model.exp_basis, model.exp_std]
    if any(t.device.type != "cpu" for t in tensors):
        return "a tensor is not on the CPU"
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd: a tensor requires grad"
    if landmarks.dtype == torch.float64:
        return "float64 landmarks (solved by the torch solver in float64)"
    return None


# --------------------------------------------------------------------------- jitted kernels
# LAPACK/BLAS through numba's own symbol-named wrappers (the ones behind its np.linalg): unlike ctypes
# pointers they can be cached, and unlike np.linalg they compile in a fraction of the time (np.linalg's
# generic implementations made the first, uncached call take ~40 s).
_LAPACK()  # registers the symbols, also before cached code is loaded
_BLAS()
_potrf = _LAPACK.numba_xxpotrf(types.float64)
_gesv = _LAPACK.numba_xgesv(types.float64)
_gesdd = _LAPACK.numba_ez_gesdd(types.float64)
_sgemm = _BLAS.numba_xxgemm(types.float32)
_D, _S, _L, _N, _T, _A = ord("d"), ord("s"), ord("L"), ord("n"), ord("t"), ord("A")


@numba.njit(cache=True)
def _sym_cross_f32(P3: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``Q^T P3`` (float32 BLAS) for C-ordered ``P3, Q (n, k)``; the caller only uses the symmetric part
    ``P3^T Q + Q^T P3``."""
    nl, ns = P3.shape
    X = np.zeros((ns, ns), dtype=np.float32)
    if nl == 0 or ns == 0:
        return X
    ab = np.array([1.0, 0.0], dtype=np.float32)
    # column-major view: Q -> Q^T (ns x nl), P3 -> P3^T; X (col-major) = Q^T P3^T^T = (P3^T Q)^T
    _sgemm(_S, _N, _T, ns, ns, nl, ab[0:].ctypes, Q.ctypes, ns, P3.ctypes, ns, ab[1:].ctypes, X.ctypes, ns)
    return X


@numba.njit(cache=True, fastmath=_FM)
def _cho_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A x = b`` for symmetric positive-definite ``A (n, n)``, ``b (n, m)``: Cholesky, LU where
    ``A`` is not positive definite (as ``landmark_fit.spd_solve``)."""
    n, m = b.shape
    if n == 0:
        return np.empty((0, m))
    Uc = A.copy()  # column-major "L" factor of the symmetric matrix = its transpose in our upper triangle
    if _potrf(_D, _L, n, Uc.ctypes, n) != 0:  # ("L" runs ~10 % faster than "U" here)
        a = A.T.copy()  # column-major A
        x = b.T.copy()  # column-major b, solved in place
        ipiv = np.empty(n, dtype=F_INT_nptype)
        _gesv(_D, n, m, a.ctypes, n, ipiv.ctypes, x.ctypes, n)
        return x.T.copy()
    x = np.empty((n, m))
    y = np.empty(n)
    for r in range(m):
        for i in range(n):  # L y = b, L[i, j] = Uc[j, i]
            s = b[i, r]
            for j in range(i):
                s -= Uc[j, i] * y[j]
            y[i] = s / Uc[i, i]
        for i in range(n - 1, -1, -1):  # L^T x = y
            s = y[i]
            for j in range(i + 1, n):
                s -= Uc[i, j] * x[j, r]
            x[i, r] = s / Uc[i, i]
    return x


@numba.njit(cache=True)
def _mat3(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A @ B`` for 3x3 matrices."""
    C = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            C[i, j] = A[i, 0] * B[0, j] + A[i, 1] * B[1, j] + A[i, 2] * B[2, j]
    return C


@numba.njit(cache=True)
def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    """``U diag(1, 1, sign det(U Vh)) Vh`` from the SVD ``M = U S Vh`` (as ``landmark_fit._nearest_rotation``)."""
    a = M.T.copy()  # column-major M
    sv = np.empty(3)
    u = np.empty((3, 3))
    vt = np.empty((3, 3))
    _gesdd(_D, _A, 3, 3, a.ctypes, 3, sv.ctypes, u.ctypes, 3, vt.ctypes, 3)
    U, Vh = u.T.copy(), vt.T.copy()  # back to row-major
    P = _mat3(U, Vh)
    det = (P[0, 0] * (P[1, 1] * P[2, 2] - P[1, 2] * P[2, 1]) - P[0, 1] * (P[1, 0] * P[2, 2] - P[1, 2] * P[2, 0])
           + P[0, 2] * (P[1, 0] * P[2, 1] - P[1, 1] * P[2, 0]))
    d = np.sign(det)
    for j in range(3):
        U[j, 2] *= d
    return _mat3(U, Vh)


@numba.njit(cache=True, fastmath=_FM)
def _solve1(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cho_solve(A, b.reshape(-1, 1))[:, 0]


@numba.njit(cache=True, fastmath=_FM)
def _shape(mean: np.ndarray, basis: np.ndarray, c: np.ndarray, S: np.ndarray) -> None:
    """``S (L, 3) = mean + basis c`` (``basis (3, L, K)``)."""
    L, K = basis.shape[1], basis.shape[2]
    for a in range(3):
        for i in range(L):
            s = mean[i, a]
            for k in range(K):
                s += basis[a, i, k] * c[k]
            S[i, a] = s


@numba.njit(cache=True, fastmath=_FM)
def _backproject(basis: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """``out (K,) = sum_l basis[:, l]^T y_l`` for ``y (L, 3)``."""
    L, K = basis.shape[1], basis.shape[2]
    out[:] = 0.0
    for a in range(3):
        for i in range(L):
            ya = y[i, a]
            if ya != 0.0:
                for k in range(K):
                    out[k] += basis[a, i, k] * ya


@numba.njit(cache=True, fastmath=_FM)
def _thin_product(F: np.ndarray, basis_t: np.ndarray, out: np.ndarray) -> None:
    """``out (7, K) = F (7, 3L) @ basis_t.T`` with ``basis_t (K, 3L)``: dot products, two basis rows at
    a time so each ``F`` load feeds two FMAs (a BLAS call with 7 rows spends its time packing the basis)."""
    K, J = basis_t.shape
    k = 0
    while k < K:
        k2 = min(k + 1, K - 1)  # an odd last row is done twice
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = 0.0
        t0 = t1 = t2 = t3 = t4 = t5 = t6 = 0.0
        for j in range(J):
            b, e = basis_t[k, j], basis_t[k2, j]
            f0, f1, f2, f3, f4, f5, f6 = F[0, j], F[1, j], F[2, j], F[3, j], F[4, j], F[5, j], F[6, j]
            s0 += b * f0
            s1 += b * f1
            s2 += b * f2
            s3 += b * f3
            s4 += b * f4
            s5 += b * f5
            s6 += b * f6
            t0 += e * f0
            t1 += e * f1
            t2 += e * f2
            t3 += e * f3
            t4 += e * f4
            t5 += e * f5
            t6 += e * f6
        out[0, k], out[1, k], out[2, k], out[3, k], out[4, k], out[5, k], out[6, k] = s0, s1, s2, s3, s4, s5, s6
        out[0, k2], out[1, k2], out[2, k2], out[3, k2], out[4, k2], out[5, k2], out[6, k2] = t0, t1, t2, t3, t4, t5, t6
        k += 2


@numba.njit(cache=True, fastmath=_FM)
def _gram_combine(gram: np.ndarray, N: np.ndarray, out: np.ndarray) -> None:
    """``out (K, K) = sum_ab N_ab C_ab`` for symmetric ``N (3, 3)`` (``gram`` as in LandmarkRows)."""
    coef = np.array([N[0, 0], N[1, 1], N[2, 2], N[0, 1], N[0, 2], N[1, 2]])
    K = gram.shape[1]
    for i in range(K):
        for j in range(i, K):
            s = 0.0
            for q in range(6):
                s += coef[q] * gram[q, i, j]
            out[i, j] = s
            out[j, i] = s


@numba.njit(cache=True, fastmath=_FM)
def _rot_from_axis_angle(v: np.ndarray) -> np.ndarray:
    """kornia's ``axis_angle_to_rotation_matrix``: Rodrigues, or its series to theta^2 when theta^2 <= 1e-6."""
    rx, ry, rz = v[0], v[1], v[2]
    t2 = rx * rx + ry * ry + rz * rz
    R = np.empty((3, 3))
    if t2 > 1e-6:
        t = np.sqrt(t2)
        wx, wy, wz = rx / t, ry / t, rz / t
        ct, st = np.cos(t), np.sin(t)
        omc = 1.0 - ct
        R[0, 0] = ct + wx * wx * omc
        R[0, 1] = wx * wy * omc - wz * st
        R[0, 2] = wy * st + wx * wz * omc
        R[1, 0] = wz * st + wx * wy * omc
        R[1, 1] = ct + wy * wy * omc
        R[1, 2] = -wx * st + wy * wz * omc
        R[2, 0] = -wy * st + wx * wz * omc
        R[2, 1] = wx * st + wy * wz * omc
        R[2, 2] = ct + wz * wz * omc
    else:
        a = 1.0 - t2 / 6.0
        b = 0.5 - t2 / 24.0
        R[0, 0] = 1.0 - b * (ry * ry + rz * rz)
        R[0, 1] = -a * rz + b * rx * ry
        R[0, 2] = a * ry + b * rx * rz
        R[1, 0] = a * rz + b * rx * ry
        R[1, 1] = 1.0 - b * (rx * rx + rz * rz)
        R[1, 2] = -a * rx + b * ry * rz
        R[2, 0] = -a * ry + b * rx * rz
        R[2, 1] = a * rx + b * ry * rz
        R[2, 2] = 1.0 - b * (rx * rx + ry * ry)
    return R


@numba.njit(cache=True, fastmath=_FM)
def _affine_camera(S: np.ndarray, x: np.ndarray, w: np.ndarray):
    """Weighted LS affine camera ``x ~ A S + b`` -> scale, nearest rotation, 2D translation."""
    A4 = np.zeros((4, 4))
    r4 = np.zeros((4, 2))
    h = np.empty(4)
    for i in range(S.shape[0]):
        h[0], h[1], h[2], h[3] = S[i, 0], S[i, 1], S[i, 2], 1.0
        for p in range(4):
            wp = w[i] * h[p]
            for q in range(4):
                A4[p, q] += wp * h[q]
            r4[p, 0] += wp * x[i, 0]
            r4[p, 1] += wp * x[i, 1]
    for p in range(4):
        A4[p, p] += 1e-9
    P = _cho_solve(A4, r4)  # (4, 2): column j is row j of the affine camera
    n0 = np.sqrt(P[0, 0] ** 2 + P[1, 0] ** 2 + P[2, 0] ** 2)
    n1 = np.sqrt(P[0, 1] ** 2 + P[1, 1] ** 2 + P[2, 1] ** 2)
    s = 0.5 * (n0 + n1)
    M = np.empty((3, 3))
    for j in range(3):
        M[0, j] = P[j, 0] / n0
        M[1, j] = -P[j, 1] / n1  # image v points down: flip the second row
    M[2, 0] = M[0, 1] * M[1, 2] - M[0, 2] * M[1, 1]
    M[2, 1] = M[0, 2] * M[1, 0] - M[0, 0] * M[1, 2]
    M[2, 2] = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    return s, _nearest_rotation(M), P[3, 0], P[3, 1]


@numba.njit(cache=True, fastmath=_FM)
def _evaluate(S, R, cam, x, depth, w, wz, dw, has_depth, persp, f, ppx, ppy, reg_c, RS, proj, mm, res, qa, qb):
    """Residuals (mm) at pose ``R, cam`` of shape ``S (L, 3)``; fills ``RS, proj, mm, res (L, 3), qa, qb``
    (``x / d``, ``y / d`` in the camera frame, perspective) and returns the cost (``reg_c``: the prior
    part, already summed)."""
    L = S.shape[0]
    for i in range(L):
        for a in range(3):
            RS[i, a] = R[a, 0] * S[i, 0] + R[a, 1] * S[i, 1] + R[a, 2] * S[i, 2]
    cost = 0.0
    if persp:
        for i in range(L):
            X, Y, Z = RS[i, 0] + cam[0], RS[i, 1] + cam[1], RS[i, 2] + cam[2]
            d = max(-Z, 1e-3)
            qa[i], qb[i] = X / d, Y / d
            proj[i, 0] = ppx + f * X / d
            proj[i, 1] = ppy - f * Y / d
            mm[i] = d / f
    else:
        s = np.exp(cam[2])
        for i in range(L):
            proj[i, 0] = cam[0] + s * RS[i, 0]
            proj[i, 1] = cam[1] - s * RS[i, 1]
            mm[i] = 1.0 / s
            qa[i], qb[i] = 0.0, 0.0
    for i in range(L):
        res[i, 0] = (proj[i, 0] - x[i, 0]) * mm[i]
        res[i, 1] = (proj[i, 1] - x[i, 1]) * mm[i]
        cost += (res[i, 0] ** 2) * w[i] + (res[i, 1] ** 2) * w[i]
    if has_depth:
        ms, mz = 0.0, 0.0
        for i in range(L):
            ms += wz[i] * mm[i]
            mz += wz[i] * RS[i, 2]
        mt = 0.0
        for i in range(L):
            mt += wz[i] * (depth[i] * ms)
        for i in range(L):
            res[i, 2] = (RS[i, 2] - mz) + (depth[i] * ms - mt)
            cost += (res[i, 2] ** 2) * (w[i] * dw)
    return cost + reg_c


@numba.njit(cache=True, fastmath=_FM)
def _normal_equations(RS, res, qa, qb, mm, w, live, wz, dw, has_depth, persp, R, c, reg, n_id, box, mr, wsum, shape,
                      H, g, idx, Jp, E, F, HG, y, mp):
    """Gauss-Newton ``H = J^T W J + prior`` and ``g = J^T W res + prior c`` of :func:`_levenberg_marquardt`
    at the current point (``RS, res, qa, qb, mm`` from :func:`_evaluate`), reduced to the unknowns that
    move this step: writes ``H[:n, :n]``, ``g[:n]`` and their indices ``idx[:n]`` into the unknowns
    (pose 0-5, coefficient ``k`` at ``6 + k``) and returns ``n``. ``live``: the points of positive
    weight; ``F, HG, Jp, E, y, mp`` are work arrays."""
    _, basis, basis32, basis_t, gram, wmean = mr
    L, K = basis.shape[1], basis.shape[2]
    H[:6, :6] = 0.0
    g[:6] = 0.0
    mrz = 0.0
    if has_depth:
        # weighted means of the depth rows' pose part (Y, -X, 0, 0, 0, 0) and of the depth residual
        mp[:] = 0.0
        mrz = 0.0
        for i in range(L):
            mp[0] += wz[i] * RS[i, 1]
            mp[1] -= wz[i] * RS[i, 0]
            mrz += wz[i] * res[i, 2]
    for i in range(L):
        X, Y, Z = RS[i, 0], RS[i, 1], RS[i, 2]
        # camera-frame rows: du = (1, 0, a), dv = (0, -1, -b) (perspective) or (1, 0, 0), (0, -1, 0)
        du0, du2 = 1.0, qa[i]
        dv1, dv2 = -1.0, -qb[i]
        # rotation part: e^T (-[RS]x) = (RS x e)^T
        Jp[0, 0], Jp[0, 1], Jp[0, 2] = Y * du2, Z * du0 - X * du2, -Y * du0
        Jp[1, 0], Jp[1, 1], Jp[1, 2] = Y * dv2 - Z * dv1, -X * dv2, X * dv1
        if persp:
            Jp[0, 3], Jp[0, 4], Jp[0, 5] = du0, 0.0, du2
            Jp[1, 3], Jp[1, 4], Jp[1, 5] = 0.0, dv1, dv2
        else:
            inv = mm[i]
            Jp[0, 3], Jp[0, 4], Jp[0, 5] = inv, 0.0, X
            Jp[1, 3], Jp[1, 4], Jp[1, 5] = 0.0, inv, -Y
        nr = 2
        wi = w[i]
        if has_depth:
            nr = 3
            Jp[2, 0], Jp[2, 1] = Y - mp[0], -X - mp[1]
            Jp[2, 2], Jp[2, 3], Jp[2, 4], Jp[2, 5] = 0.0, 0.0, 0.0, 0.0
        for r in range(nr):
            wr = wi if r < 2 else wi * dw
            rr = res[i, r] if r < 2 else res[i, 2] - mrz
            for p in range(6):
                wp = wr * Jp[r, p]
                for q in range(p, 6):
                    H[p, q] += wp * Jp[r, q]
                g[p] += wp * rr
        if shape:
            for a in range(3):
                E[0, a] = R[0, a] * du0 + R[2, a] * du2
                E[1, a] = R[1, a] * dv1 + R[2, a] * dv2
                E[2, a] = R[2, a]
                y[a] = wi * (E[0, a] * res[i, 0] + E[1, a] * res[i, 1])
            if has_depth:
                for a in range(3):
                    y[a] += wi * dw * E[2, a] * (res[i, 2] - mrz)
            for a in range(3):
                for p in range(6):
                    s = wi * (Jp[0, p] * E[0, a] + Jp[1, p] * E[1, a])
                    if has_depth:
                        s += wi * dw * Jp[2, p] * E[2, a]
                    F[p, a * L + i] = s
                F[6, a * L + i] = y[a]
    for p in range(6):
        for q in range(p):
            H[p, q] = H[q, p]
    nf = 6
    for p in range(6):
        idx[p] = p
    if not shape:
        return nf
    # coupling and shape gradient: (7, 3L) @ (3L, K)
    _thin_product(F, basis_t, HG)
    # projected Newton (blendshapes): weights at a bound whose gradient pushes outward stay fixed this
    # step; their rows and columns drop out of the system (the torch solver's identity rows and zero
    # gradient give them a zero step, and leave the other unknowns' system unchanged)
    cols = np.empty(K, dtype=np.int64)
    ns = 0
    for k in range(K):
        gk = HG[6, k] + reg[k] * c[k]
        if box and k >= n_id and ((c[k] <= 0.0 and gk > 0.0) or (c[k] >= 1.0 and gk < 0.0)):
            continue
        cols[ns] = k
        idx[6 + ns] = 6 + k
        g[6 + ns] = gk
        for p in range(6):
            H[p, 6 + ns] = HG[p, k]
            H[6 + ns, p] = HG[p, k]
        ns += 1
    nf = 6 + ns
    # shape block, for all coefficients (contiguous loops and one BLAS call beat gathering the free
    # ones first), then the free rows and columns are copied out:
    # per-point-constant metric R^T diag(1, 1, dw) R from the cached Gram pieces ...
    N = np.empty((3, 3))
    dwe = dw if has_depth else 0.0
    for a in range(3):
        for b in range(3):
            N[a, b] = R[0, a] * R[0, b] + R[1, a] * R[1, b] + dwe * R[2, a] * R[2, b]
    Hss = np.empty((K, K))
    _gram_combine(gram, N, Hss)
    if has_depth:  # ... less the rank-one centring of the depth rows ...
        pc = np.zeros(K)
        for a in range(3):
            for k in range(K):
                pc[k] += R[2, a] * wmean[a, k]
        sw = dw * wsum
        for k in range(K):
            for j in range(K):
                Hss[k, j] -= sw * pc[k] * pc[j]
    if persp:  # ... plus the point-dependent part e3 q^T + q e3^T of the perspective metric
        nl = live.shape[0]
        P3 = np.empty((nl, K), dtype=np.float32)
        Q = np.empty((nl, K), dtype=np.float32)
        r0, r1, r2 = np.float32(R[2, 0]), np.float32(R[2, 1]), np.float32(R[2, 2])
        for li in range(nl):
            i = live[li]
            q0, q1 = qa[i], qb[i]
            q2 = 0.5 * (q0 * q0 + q1 * q1)
            n0 = np.float32(w[i] * (R[0, 0] * q0 + R[1, 0] * q1 + R[2, 0] * q2))
            n1 = np.float32(w[i] * (R[0, 1] * q0 + R[1, 1] * q1 + R[2, 1] * q2))
            n2 = np.float32(w[i] * (R[0, 2] * q0 + R[1, 2] * q1 + R[2, 2] * q2))
            bx, by, bz = basis32[0, i], basis32[1, i], basis32[2, i]
            p3, q = P3[li], Q[li]
            for k in range(K):
                p3[k] = r0 * bx[k] + r1 * by[k] + r2 * bz[k]
                q[k] = n0 * bx[k] + n1 * by[k] + n2 * bz[k]
        X32 = _sym_cross_f32(P3, Q)
        for k in range(K):
            for j in range(K):
                Hss[k, j] += X32[k, j] + X32[j, k]
    for j1 in range(ns):
        k1 = cols[j1]
        H[6 + j1, 6 + j1] = Hss[k1, k1] + reg[k1]
        for j2 in range(j1):
            H[6 + j1, 6 + j2] = H[6 + j2, 6 + j1] = Hss[k1, cols[j2]]
    return nf


@numba.njit(cache=True, fastmath=_FM)
def _levenberg_marquardt(mr, wsum, reg, n_id, blendshape, c, R, cam, x, depth, w, dw, has_depth, persp, f, ppx, ppy,
                         steps, shape, fixed_rot, history):
    """:func:`landmark_fit._levenberg_marquardt` for one face (``shared = 0``).

    Updates ``c (K,)``, ``R (3, 3)`` (kept as given when ``fixed_rot``), ``cam (3,)`` in place; writes
    the cost before and after each step into ``history (steps + 1,)``; returns the projected points
    ``(L, 2)``. ``mr``: the model rows ``(mean, basis, basis32, basis_t, gram, wmean)`` of
    :class:`LandmarkRows`."""
    rows_mean, basis = mr[0], mr[1]
    L, K = basis.shape[1], basis.shape[2]
    Ks = K if shape else 0
    n_exp = K - n_id
    box = shape and blendshape and n_exp > 0
    wz = w / max(wsum, 1e-12)
    S = np.empty((L, 3))
    _shape(rows_mean, basis, c, S)
    # state: current (accepted) and trial
    RS, proj, mm, res, qa, qb = (np.empty((L, 3)), np.empty((L, 2)), np.empty(L), np.zeros((L, 3)), np.empty(L),
                                 np.empty(L))
    RS2, proj2, mm2, res2, qa2, qb2 = (np.empty((L, 3)), np.empty((L, 2)), np.empty(L), np.zeros((L, 3)),
                                       np.empty(L), np.empty(L))
    reg_c = 0.0
    for k in range(Ks):
        reg_c += reg[k] * c[k] ** 2
    cost = _evaluate(S, R, cam, x, depth, w, wz, dw, has_depth, persp, f, ppx, ppy, reg_c, RS, proj, mm, res, qa, qb)
    mu = 1e-3
    history[0] = cost
    n = 6 + Ks
    H = np.zeros((n, n))
    g = np.zeros(n)
    Jp = np.empty((3, 6))  # pose rows u, v, z of one point
    E = np.empty((3, 3))  # model-frame directions R^T e of the rows u, v, z
    F = np.zeros((7, 3 * L))  # per-point pose/shape coupling and gradient rows, (a, l) columns
    HG = np.empty((7, K))
    idx = np.empty(n, dtype=np.int64)
    live = np.nonzero(w > 0)[0]
    nf = 0
    fresh = True
    y = np.empty(3)
    Sn = np.empty((L, 3))
    mp = np.zeros(6)
    # a fixed rotation: its unknowns (0-2) drop out of the system. torch keeps them with identity rows
    # and a zero gradient, which decouples them exactly and gives them a zero step.
    p0 = 3 if fixed_rot else 0
    for t in range(steps):
        if fresh:  # after a rejected trial the point, H and g are the same: only the damping changes
            nf = _normal_equations(RS, res, qa, qb, mm, w, live, wz, dw, has_depth, persp, R, c, reg, n_id, box, mr,
                                   wsum, shape, H, g, idx, Jp, E, F, HG, y, mp)
        nd = nf - p0
        Hd = np.empty((nd, nd))
        for p in range(nd):
            for q in range(nd):
                Hd[p, q] = H[p0 + p, p0 + q]
            Hd[p, p] += mu * H[p0 + p, p0 + p] + 1e-9
        dr = _solve1(Hd, g[p0:nf])
        delta = np.zeros(n)
        for p in range(nd):
            delta[idx[p0 + p]] = -dr[p]
        Rn = R.copy() if fixed_rot else _mat3(_rot_from_axis_angle(delta[:3]), R)
        camn = cam + delta[3:6]
        cn = c.copy()
        reg_n = 0.0
        if shape:
            for k in range(K):
                cn[k] = c[k] + delta[6 + k]
                if box and k >= n_id:
                    cn[k] = min(max(cn[k], 0.0), 1.0)
                reg_n += reg[k] * cn[k] ** 2
            _shape(rows_mean, basis, cn, Sn)
        else:
            Sn[:] = S
        cost_n = _evaluate(Sn, Rn, camn, x, depth, w, wz, dw, has_depth, persp, f, ppx, ppy, reg_n, RS2, proj2, mm2,
                           res2, qa2, qb2)
        if cost_n < cost:
            R[:] = Rn
            cam[:] = camn
            c[:] = cn
            S[:] = Sn
            cost = cost_n
            RS, RS2 = RS2, RS
            proj, proj2 = proj2, proj
            mm, mm2 = mm2, mm
            res, res2 = res2, res
            qa, qa2 = qa2, qa
            qb, qb2 = qb2, qb
            mu = max(mu / 3.0, 1e-7)
            fresh = True
        else:
            mu = min(mu * 4.0, 1e7)
            fresh = False
        history[t + 1] = cost
    return proj.copy()


@numba.njit(cache=True, fastmath=_FM)
def _weak_perspective_init(x, w, mr, reg, n_id, blendshape, iterations, c, hist_weak, Rfix, fixed_rot):
    """The alternation of affine camera and shape solves of :func:`fit_landmarks` for one face: writes
    ``c (K,)`` and ``hist_weak (iterations,)``, returns the final camera ``s, R, b0, b1``. With
    ``fixed_rot`` the shape solves use ``Rfix (3, 3)`` instead of the affine camera's rotation (its
    scale and translation are kept, as in torch); the returned ``R`` is still the affine camera's."""
    rows_mean, basis, _, _, gram, _ = mr
    L, K = basis.shape[1], basis.shape[2]
    n_exp = K - n_id
    c[:] = 0.0
    S = np.empty((L, 3))
    y = np.empty((L, 3))
    A = np.empty((K, K))
    rhs = np.empty(K)
    N = np.empty((3, 3))
    r = np.empty((L, 2))
    _shape(rows_mean, basis, c, S)
    for it in range(iterations):
        s, Rw, b0, b1 = _affine_camera(S, x, w)
        if fixed_rot:
            Rw = Rfix
        # weak-perspective shape system: rows R[0] B_l and -R[1] B_l (v flipped), targets r
        for a in range(3):
            for bb in range(3):
                N[a, bb] = Rw[0, a] * Rw[0, bb] + Rw[1, a] * Rw[1, bb]
        _gram_combine(gram, N, A)
        for k in range(K):
            A[k, k] += reg[k]
        for i in range(L):
            m0 = Rw[0, 0] * rows_mean[i, 0] + Rw[0, 1] * rows_mean[i, 1] + Rw[0, 2] * rows_mean[i, 2]
            m1 = Rw[1, 0] * rows_mean[i, 0] + Rw[1, 1] * rows_mean[i, 1] + Rw[1, 2] * rows_mean[i, 2]
            r[i, 0] = (x[i, 0] - b0) / s - m0
            r[i, 1] = (x[i, 1] - b1) / s + m1
            for a in range(3):
                y[i, a] = w[i] * (Rw[0, a] * r[i, 0] - Rw[1, a] * r[i, 1])
        _backproject(basis, y, rhs)
        c[:] = _solve1(A, rhs)
        if blendshape and n_exp > 0:
            pinned = False
            for k in range(n_id, K):
                if c[k] < 0.0 or c[k] > 1.0:
                    pinned = True
            if pinned:
                dmax = 1.0
                for k in range(K):
                    dmax = max(dmax, abs(A[k, k]))
                stiff = 1e6 * dmax
                for k in range(n_id, K):
                    if c[k] < 0.0 or c[k] > 1.0:
                        A[k, k] += stiff
                        rhs[k] += stiff * min(max(c[k], 0.0), 1.0)
                c[:] = _solve1(A, rhs)
            for k in range(n_id, K):
                c[k] = min(max(c[k], 0.0), 1.0)
        # the weak stage's cost, sum w (M c - r)^2
        _shape(rows_mean, basis, c, S)
        h = 0.0
        for i in range(L):
            u0, u1 = -rows_mean[i, 0] + S[i, 0], -rows_mean[i, 1] + S[i, 1]
            u2 = -rows_mean[i, 2] + S[i, 2]
            e0 = Rw[0, 0] * u0 + Rw[0, 1] * u1 + Rw[0, 2] * u2 - r[i, 0]
            e1 = -(Rw[1, 0] * u0 + Rw[1, 1] * u1 + Rw[1, 2] * u2) - r[i, 1]
            h += w[i] * (e0 * e0 + e1 * e1)
        hist_weak[it] = h
    return _affine_camera(S, x, w)


@numba.njit(cache=True)
def _fit_batch(x, depth, has_depth, mr, w, reg, n_id, blendshape, persp, f, ppx, ppy, dw, iterations, pose_steps,
               gn_steps, Rfix, fixed_rot, c, R, cam, proj, hist_weak, hist_lm):
    """The whole :func:`fit_landmarks` solve, face by face, for ``x (B, L, 2)``; writes ``c, R, cam,
    proj`` and the histories; ``fixed_rot``: keep the rotations ``Rfix (B, 3, 3)``. (A flat call tree:
    numba re-optimises every caller with its callees, so each extra level or specialisation adds seconds
    to the first, uncached compilation.)"""
    wsum = w.sum()
    pose_hist = np.empty(pose_steps + 1)
    for b in range(x.shape[0]):
        s, Rw, b0, b1 = _weak_perspective_init(x[b], w, mr, reg, n_id, blendshape, iterations, c[b], hist_weak[b],
                                               Rfix[b], fixed_rot)
        R[b] = Rfix[b] if fixed_rot else Rw
        if persp:  # the model origin at depth f / s
            cam[b, 0], cam[b, 1], cam[b, 2] = (b0 - ppx) / s, -(b1 - ppy) / s, -f[b] / s
        else:
            cam[b, 0], cam[b, 1], cam[b, 2] = b0, b1, np.log(s)
        for stage in range(2):  # the pose alone (perspective), then everything; one compiled specialisation
            shape = stage == 1
            if shape or persp:
                hist = hist_lm[b] if shape else pose_hist
                pb = _levenberg_marquardt(mr, wsum, reg, n_id, blendshape, c[b], R[b], cam[b], x[b], depth[b], w, dw,
                                          has_depth, persp, f[b], ppx, ppy, gn_steps if shape else pose_steps, shape,
                                          fixed_rot, hist)
                if shape:
                    proj[b] = pb


def fast_fit(rows: LandmarkRows, x: np.ndarray, depth: np.ndarray | None, reg: np.ndarray, blendshape: bool,
             camera: str, focal: np.ndarray | None, image_size: tuple[int, int], depth_weight: float, iterations: int,
             pose_steps: int, gn_steps: int, rotation: np.ndarray | None = None):
    """Fit every face of ``x (B, L, 2)`` pixels (float64) with the fused solver.

    Args:
        rows: the model's landmark rows (:func:`landmark_rows`) with the fit's per-point weights.
        depth: ``(B, L)`` relative depths in pixels, or ``None`` (no depth residuals).
        reg: ``(K,)`` prior weights (mm^2).
        focal: ``(B,)`` pixels (perspective).
        rotation: ``(B, 3, 3)`` a known rotation per face, kept fixed (``fit_landmarks(angles=...)``), or
            ``None`` (fitted).

    Returns:
        ``c (B, K)``, ``R (B, 3, 3)``, ``cam (B, 3)`` (translation mm, or ``tx, ty, log s``), ``proj
        (B, L, 2)`` pixels, ``hist_weak (B, iterations)``, ``hist_lm (B, gn_steps + 1)``; float64.
    """
    B, L = x.shape[:2]
    K = rows.basis.shape[2]
    persp = camera == "perspective"
    H, W = image_size
    has_depth = depth is not None
    depth = np.zeros((B, L)) if depth is None else np.ascontiguousarray(depth, dtype=np.float64)
    f = np.zeros(B) if focal is None else np.ascontiguousarray(np.broadcast_to(focal, (B,)), dtype=np.float64)
    c, R, cam = np.zeros((B, K)), np.zeros((B, 3, 3)), np.zeros((B, 3))
    proj = np.zeros((B, L, 2))
    hist_weak, hist_lm = np.zeros((B, iterations)), np.zeros((B, gn_steps + 1))
    fixed_rot = rotation is not None
    # always an array, so that both cases share one compiled specialisation
    Rfix = np.zeros((B, 3, 3)) if rotation is None else np.ascontiguousarray(np.broadcast_to(rotation, (B, 3, 3)),
                                                                             dtype=np.float64)
    mr = (rows.mean, rows.basis, rows.basis32, rows.basis_t, rows.gram, rows.wmean)
    _fit_batch(np.ascontiguousarray(x, dtype=np.float64), depth, has_depth, mr, rows.weights,
               np.ascontiguousarray(reg, dtype=np.float64), rows.n_id, blendshape, persp, f, W / 2.0, H / 2.0,
               float(depth_weight), iterations, pose_steps, gn_steps, Rfix, fixed_rot, c, R, cam, proj, hist_weak,
               hist_lm)
    return c, R, cam, proj, hist_weak, hist_lm
