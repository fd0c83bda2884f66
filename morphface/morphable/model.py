"""`MorphableModel`: a linear 3D face model as a batched, differentiable ``nn.Module``.

Shape (millimetres, model frame of ``morphface.camera``)::

    S(alpha, beta) = mean + sum_k alpha_k * id_std_k * id_basis_k + sum_j beta_j * exp_std_j * exp_basis_j

Identity coefficients ``alpha`` are in standard-deviation units (prior N(0, I)). The expression
part comes in two kinds, told apart by ``exp_kind``:

* ``"pca"`` (BFM/Exp_Pca, BFM 2017/2019, Deep3DFaceRecon): ``beta`` in std units, prior N(0, I).
* ``"blendshape"`` (the embedded ICT default): ``beta`` are blendshape weights meant to lie in
  ``[0, 1]``, ``exp_std`` is all ones and ``exp_names`` names each target (``jawOpen``, ...).

Albedo (optional): ``albedo = mean_albedo + sum_k gamma_k * albedo_std_k * albedo_basis_k`` in
linear RGB ``[0, 1]``. Models without an albedo model return a constant skin tone.

All tensors are buffers, so ``model.to(device, dtype)`` moves the whole model. Coefficient vectors
may be shorter than a basis (the first K components are used); missing coefficients mean zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ModelFormatError

__all__ = ["MorphableModel", "DEFAULT_SKIN_ALBEDO"]

#: Linear-RGB albedo used by models that have no albedo model.
DEFAULT_SKIN_ALBEDO = (0.72, 0.55, 0.46)

_NATIVE_FORMAT = "morphface-3dmm"
_NATIVE_VERSION = 1


def _as_tensor(x, dtype) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


class MorphableModel(nn.Module):
    """A linear 3D morphable face model.

    Args:
        mean: ``(V, 3)`` mean shape, mm.
        triangles: ``(F, 3)`` vertex ids, 0-based, counter-clockwise seen from outside.
        id_basis: ``(K_id, V, 3)`` identity components (mm per unit of ``id_std``).
        id_std: ``(K_id,)`` standard deviations; ones when ``id_basis`` is already scaled.
        exp_basis: ``(K_exp, V, 3)`` expression components or blendshape deltas, mm.
        exp_std: ``(K_exp,)``; ones for blendshapes.
        exp_kind: ``"pca"`` or ``"blendshape"``.
        exp_names: names of the expression components (blendshape models).
        albedo_mean: ``(V, 3)`` linear RGB in ``[0, 1]``.
        albedo_basis: ``(K_tex, V, 3)`` in ``[0, 1]`` units per std.
        albedo_std: ``(K_tex,)``.
        uv: ``(V, 2)`` per-vertex UVs, or ``(T, 2)`` UV table when ``uv_faces`` is given; u to the
            right, v **up** (OBJ convention; image row = ``(1 - v) * H``).
        uv_faces: ``(F, 3)`` indices into ``uv`` per triangle corner (layouts with seams).
        landmarks: ``(68,)`` vertex ids of the iBUG/300-W points, ``-1`` where a point is absent.
        vertex_sets: named ordered vertex-id lists (``"narrow_face"``, ``"skin"``, jawline chains...).
        name: a short description, kept in saved files.
    """

    mean: Tensor
    triangles: Tensor
    id_basis: Tensor
    id_std: Tensor
    exp_basis: Tensor
    exp_std: Tensor
    albedo_mean: Tensor
    albedo_basis: Tensor
    albedo_std: Tensor
    uv: Tensor
    uv_faces: Tensor
    landmarks: Tensor

    def __init__(
        self,
        mean,
        triangles,
        id_basis=None,
        id_std=None,
        exp_basis=None,
        exp_std=None,
        exp_kind: str = "pca",
        exp_names: list[str] | None = None,
        albedo_mean=None,
        albedo_basis=None,
        albedo_std=None,
        uv=None,
        uv_faces=None,
        landmarks=None,
        vertex_sets: Mapping[str, object] | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        f32 = torch.float32
        mean = _as_tensor(mean, f32)
        if mean.dim() != 2 or mean.shape[1] != 3:
            raise ModelFormatError(f"mean shape must be (V, 3); got {tuple(mean.shape)}")
        V = mean.shape[0]
        tri = _as_tensor(triangles, torch.int64)
        if tri.dim() != 2 or tri.shape[1] != 3:
            raise ModelFormatError(f"triangles must be (F, 3); got {tuple(tri.shape)}")
        if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= V):
            raise ModelFormatError(f"triangle indices must lie in [0, {V}); got [{int(tri.min())}, {int(tri.max())}]")
        if exp_kind not in ("pca", "blendshape"):
            raise ValueError(f"exp_kind must be 'pca' or 'blendshape'; got {exp_kind!r}")

        def basis(b, std, what):
            b = torch.zeros(0, V, 3) if b is None else _as_tensor(b, f32)
            if b.dim() != 3 or b.shape[1:] != (V, 3):
                raise ModelFormatError(f"{what} basis must be (K, {V}, 3); got {tuple(b.shape)}")
            s = torch.ones(b.shape[0]) if std is None else _as_tensor(std, f32).reshape(-1)
            if s.shape[0] != b.shape[0]:
                raise ModelFormatError(f"{what} std must have {b.shape[0]} entries; got {s.shape[0]}")
            return b.contiguous(), s

        self.register_buffer("mean", mean.contiguous())
        self.register_buffer("triangles", tri.contiguous())
        for what, b, s in (("id", id_basis, id_std), ("exp", exp_basis, exp_std)):
            b, s = basis(b, s, what)
            self.register_buffer(f"{what}_basis", b)
            self.register_buffer(f"{what}_std", s)
        self.exp_kind = exp_kind
        self.exp_names = list(exp_names) if exp_names is not None else []
        if self.exp_names and len(self.exp_names) != self.exp_basis.shape[0]:
            raise ModelFormatError(f"{len(self.exp_names)} exp_names for {self.exp_basis.shape[0]} components")

        if albedo_mean is None and albedo_basis is not None:
            raise ModelFormatError("an albedo basis needs an albedo mean")
        am = torch.zeros(0, 3) if albedo_mean is None else _as_tensor(albedo_mean, f32)
        if am.numel() and am.shape != (V, 3):
            raise ModelFormatError(f"albedo mean must be ({V}, 3); got {tuple(am.shape)}")
        self.register_buffer("albedo_mean", am)
        ab, as_ = basis(albedo_basis, albedo_std, "albedo")
        self.register_buffer("albedo_basis", ab)
        self.register_buffer("albedo_std", as_)

        uvt = torch.zeros(0, 2) if uv is None else _as_tensor(uv, f32)
        uvf = torch.zeros(0, 3, dtype=torch.int64) if uv_faces is None else _as_tensor(uv_faces, torch.int64)
        if uvt.numel():
            if uvt.dim() != 2 or uvt.shape[1] != 2:
                raise ModelFormatError(f"uv must be (T, 2); got {tuple(uvt.shape)}")
            if uvf.numel() == 0 and uvt.shape[0] != V:
                raise ModelFormatError(f"per-vertex uv must be ({V}, 2); got {tuple(uvt.shape)} (pass uv_faces "
                                       f"for a layout with seams)")
            if uvf.numel() and (uvf.shape != tri.shape or int(uvf.max()) >= uvt.shape[0] or int(uvf.min()) < 0):
                raise ModelFormatError(f"uv_faces must be {tuple(tri.shape)} with ids < {uvt.shape[0]}")
        self.register_buffer("uv", uvt)
        self.register_buffer("uv_faces", uvf)

        lm = torch.zeros(0, dtype=torch.int64) if landmarks is None else _as_tensor(landmarks, torch.int64).reshape(-1)
        if lm.numel() and (int(lm.max()) >= V or int(lm.min()) < -1):
            raise ModelFormatError(f"landmark ids must lie in [-1, {V}); got [{int(lm.min())}, {int(lm.max())}]")
        self.register_buffer("landmarks", lm)

        self._set_names: list[str] = []
        for key, ids in (vertex_sets or {}).items():
            self.add_vertex_set(key, ids)
        self.name = name

    # ------------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_faces(self) -> int:
        return self.triangles.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[0]

    @property
    def n_tex(self) -> int:
        return self.albedo_basis.shape[0]

    @property
    def has_albedo(self) -> bool:
        return self.albedo_mean.numel() > 0

    @property
    def has_uv(self) -> bool:
        return self.uv.numel() > 0

    @property
    def has_landmarks(self) -> bool:
        return self.landmarks.numel() > 0

    @property
    def vertex_set_names(self) -> list[str]:
        return list(self._set_names)

    def face_uvs(self) -> tuple[Tensor, Tensor]:
        """UV table ``(T, 2)`` and per-corner indices ``(F, 3)`` (per-vertex layouts: ``T = V``)."""
        if not self.has_uv:
            raise ModelFormatError(f"model {self.name!r} has no UV layout (morphface.uv can generate one)")
        return self.uv, (self.uv_faces if self.uv_faces.numel() else self.triangles)

    def vertex_set(self, name: str) -> Tensor:
        """Ordered vertex ids of a named set, ``(N,)`` int64."""
        if name not in self._set_names:
            raise KeyError(f"model {self.name!r} has no vertex set {name!r}; it has {self._set_names}")
        return getattr(self, f"vset_{name}")

    def vertex_mask(self, name: str) -> Tensor:
        """``(V,)`` bool mask of a named vertex set."""
        mask = torch.zeros(self.n_vertices, dtype=torch.bool, device=self.mean.device)
        mask[self.vertex_set(name)] = True
        return mask

    def add_vertex_set(self, name: str, ids) -> None:
        """Add or replace a named vertex set (ids ``(N,)`` or a ``(V,)`` bool mask)."""
        t = torch.as_tensor(np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids))
        if t.dtype == torch.bool:
            if t.shape != (self.n_vertices,):
                raise ModelFormatError(f"mask for vertex set {name!r} must be ({self.n_vertices},)")
            t = torch.nonzero(t).reshape(-1)
        t = t.to(torch.int64).reshape(-1)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.n_vertices):
            raise ModelFormatError(f"vertex set {name!r} has ids outside [0, {self.n_vertices})")
        self.register_buffer(f"vset_{name}", t.to(self.mean.device))
        if name not in self._set_names:
            self._set_names.append(name)

    # ------------------------------------------------------------------ evaluation
    def _coeffs(self, coeffs: Tensor | None, basis: Tensor, what: str) -> Tensor | None:
        if coeffs is None:
            return None
        if not isinstance(coeffs, Tensor):
            coeffs = torch.as_tensor(coeffs, dtype=self.mean.dtype, device=self.mean.device)
        if coeffs.dim() == 1:
            coeffs = coeffs.unsqueeze(0)
        if coeffs.dim() != 2:
            raise ValueError(f"{what} coefficients must be (B, K); got {tuple(coeffs.shape)}")
        if coeffs.shape[1] > basis.shape[0]:
            raise ValueError(f"{what} coefficients have width {coeffs.shape[1]} but model {self.name!r} has "
                             f"{basis.shape[0]} {what} components (pass at most that many)")
        if not bool(torch.isfinite(coeffs).all()):
            raise ValueError(f"{what} coefficients of shape {tuple(coeffs.shape)} contain NaN or inf")
        return coeffs

    @staticmethod
    def _batch_size(*coeffs: Tensor | None) -> int:
        sizes = {c.shape[0] for c in coeffs if c is not None}
        if len(sizes) > 1:
            shapes = [tuple(c.shape) for c in coeffs if c is not None]
            raise ValueError(f"coefficient batch sizes differ: {shapes}")
        return sizes.pop() if sizes else 1

    @staticmethod
    def _combine(base: Tensor, coeffs: Tensor | None, std: Tensor, basis: Tensor) -> Tensor:
        if coeffs is None or coeffs.shape[1] == 0:
            return base
        K = coeffs.shape[1]
        w = (coeffs * std[:K].to(coeffs.dtype)).to(basis.dtype)
        return base + (w @ basis[:K].reshape(K, -1)).reshape(base.shape[0], *basis.shape[1:])

    def forward(self, id_coeffs: Tensor | None = None, exp_coeffs: Tensor | None = None) -> Tensor:
        """Vertices ``(B, V, 3)`` in mm for identity ``(B, K_id')`` and expression ``(B, K_exp')``
        coefficients (``K' <=`` the model's K; either may be ``None``: zeros)."""
        ic = self._coeffs(id_coeffs, self.id_basis, "identity")
        ec = self._coeffs(exp_coeffs, self.exp_basis, "expression")
        B = self._batch_size(ic, ec)
        verts = self.mean.expand(B, -1, -1)
        verts = self._combine(verts, ic, self.id_std, self.id_basis)
        verts = self._combine(verts, ec, self.exp_std, self.exp_basis)
        return verts

    def identity(self, id_coeffs: Tensor | None = None) -> Tensor:
        """Neutral-expression vertices ``(B, V, 3)`` mm."""
        return self.forward(id_coeffs, None)

    def albedo(self, tex_coeffs: Tensor | None = None, batch_size: int | None = None) -> Tensor:
        """Per-vertex linear-RGB albedo ``(B, V, 3)`` in ``[0, 1]``.

        Models without an albedo model return :data:`DEFAULT_SKIN_ALBEDO` everywhere and reject
        non-empty ``tex_coeffs``.
        """
        tc = self._coeffs(tex_coeffs, self.albedo_basis, "albedo")
        B = batch_size if tc is None and batch_size is not None else self._batch_size(tc)
        if not self.has_albedo:
            return self.mean.new_tensor(DEFAULT_SKIN_ALBEDO).expand(B, self.n_vertices, 3)
        alb = self._combine(self.albedo_mean.expand(B, -1, -1), tc, self.albedo_std, self.albedo_basis)
        return alb.clamp(0.0, 1.0)

    # ------------------------------------------------------------------ editing
    def subset(self, vertex_mask) -> MorphableModel:
        """A cropped copy keeping the vertices in ``vertex_mask``.

        Args:
            vertex_mask: ``(V,)`` bool mask, an index tensor, or the name of a vertex set.

        Triangles with any dropped vertex are removed and the rest re-indexed; per-vertex UVs,
        bases and albedo are cropped; per-corner UV tables are kept whole; landmarks whose vertex
        is dropped become ``-1``; vertex sets keep their surviving members in order.
        """
        if isinstance(vertex_mask, str):
            vertex_mask = self.vertex_mask(vertex_mask)
        m = torch.as_tensor(vertex_mask, device=self.mean.device)
        if m.dtype != torch.bool:
            idx = m.to(torch.int64).reshape(-1)
            m = torch.zeros(self.n_vertices, dtype=torch.bool, device=self.mean.device)
            m[idx] = True
        if m.shape != (self.n_vertices,):
            raise ValueError(f"vertex_mask must be ({self.n_vertices},); got {tuple(m.shape)}")
        new_id = torch.full((self.n_vertices,), -1, dtype=torch.int64, device=m.device)
        new_id[m] = torch.arange(int(m.sum()), device=m.device)
        keep_f = m[self.triangles].all(dim=1)
        tri = new_id[self.triangles[keep_f]]
        per_corner = self.uv_faces.numel() > 0
        uv = self.uv if (per_corner or not self.has_uv) else self.uv[m]
        uvf = self.uv_faces[keep_f] if per_corner else None
        lm = torch.where(self.landmarks >= 0, new_id[self.landmarks.clamp(min=0)], self.landmarks)
        sets = {}
        for n in self._set_names:
            mapped = new_id[self.vertex_set(n)]
            sets[n] = mapped[mapped >= 0].cpu()
        return MorphableModel(
            mean=self.mean[m], triangles=tri,
            id_basis=self.id_basis[:, m], id_std=self.id_std,
            exp_basis=self.exp_basis[:, m], exp_std=self.exp_std, exp_kind=self.exp_kind,
            exp_names=self.exp_names,
            albedo_mean=self.albedo_mean[m] if self.has_albedo else None,
            albedo_basis=self.albedo_basis[:, m] if self.has_albedo else None,
            albedo_std=self.albedo_std if self.has_albedo else None,
            uv=uv if uv.numel() else None, uv_faces=uvf,
            landmarks=lm if lm.numel() else None, vertex_sets=sets, name=self.name,
        ).to(self.mean.device)

    def truncate(self, n_id: int | None = None, n_exp: int | None = None, n_tex: int | None = None) -> MorphableModel:
        """A copy keeping only the first ``n_id``/``n_exp``/``n_tex`` components."""
        out = self.subset(torch.ones(self.n_vertices, dtype=torch.bool, device=self.mean.device))
        for what, n in (("id", n_id), ("exp", n_exp), ("albedo", n_tex)):
            if n is not None:
                setattr(out, f"{what}_basis", getattr(out, f"{what}_basis")[:n].contiguous())
                setattr(out, f"{what}_std", getattr(out, f"{what}_std")[:n].contiguous())
        if n_exp is not None and out.exp_names:
            out.exp_names = out.exp_names[:n_exp]
        return out

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, V={self.n_vertices}, F={self.n_faces}, K_id={self.n_id}, "
                f"K_exp={self.n_exp} ({self.exp_kind}), K_tex={self.n_tex}, uv={self.has_uv}, "
                f"landmarks={self.landmarks.numel()}")

    # ------------------------------------------------------------------ native format
    def save(self, path: str | Path) -> None:
        """Write the native format: one ``.safetensors`` file (tensors + JSON metadata), atomically (a
        temporary file renamed over ``path``: a failed or interrupted write leaves ``path`` as it was)."""
        from safetensors.torch import save_file

        from ..io import atomic_write

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.named_buffers()}
        meta = {
            "format": _NATIVE_FORMAT, "version": str(_NATIVE_VERSION), "name": self.name,
            "exp_kind": self.exp_kind, "exp_names": json.dumps(self.exp_names),
            "vertex_sets": json.dumps(self._set_names), "units": "mm",
        }
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> MorphableModel:
        """Read a file written by :meth:`save`.

        Raises:
            ModelFormatError: missing or unreadable file, another format, missing tensors, or a NaN/inf
                value in any floating-point tensor (checked here, as the ``.mat``/``.h5`` loaders do).
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ModelFormatError(f"{path}: no such model file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise ModelFormatError(f"{path}: not a readable safetensors model file ({e})") from e
        if meta.get("format") != _NATIVE_FORMAT:
            raise ModelFormatError(f"{path}: metadata 'format' is {meta.get('format')!r}, expected {_NATIVE_FORMAT!r}")
        required = ["mean", "triangles", "id_basis", "id_std", "exp_basis", "exp_std"]
        missing = [k for k in required if k not in tensors]
        if missing:
            raise ModelFormatError(f"{path}: missing tensors {missing}")
        for key, t in tensors.items():
            # A float64 sum is finite when every value is (one pass, no mask); the exact count only otherwise
            # (a float64 tensor of huge finite values may overflow the sum: then nothing is bad).
            if t.is_floating_point() and not bool(torch.isfinite(t.sum(dtype=torch.float64))):
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    raise ModelFormatError(f"{path}: tensor {key!r} contains NaN or inf ({bad} of {t.numel()} "
                                           "values)")

        def opt(k):
            t = tensors.get(k)
            return t if t is not None and t.numel() else None

        set_names = json.loads(meta.get("vertex_sets", "[]"))
        has_albedo = opt("albedo_mean") is not None
        return cls(
            mean=tensors["mean"], triangles=tensors["triangles"],
            id_basis=tensors["id_basis"], id_std=tensors["id_std"],
            exp_basis=tensors["exp_basis"], exp_std=tensors["exp_std"],
            exp_kind=meta.get("exp_kind", "pca"), exp_names=json.loads(meta.get("exp_names", "[]")) or None,
            albedo_mean=opt("albedo_mean"), albedo_basis=opt("albedo_basis") if has_albedo else None,
            albedo_std=opt("albedo_std") if has_albedo else None,
            uv=opt("uv"), uv_faces=opt("uv_faces"), landmarks=opt("landmarks"),
            vertex_sets={n: tensors[f"vset_{n}"] for n in set_names}, name=meta.get("name", ""),
        )
