"""Model-file loaders: BFM 2009 (+ Guo et al.'s Exp_Pca), Deep3DFaceRecon, BFM 2017/2019, LSFM.

Every loader reads a file **exactly as distributed** (layouts in ``shared/assets/FORMATS.md``) and
returns a :class:`~morphface.morphable.MorphableModel` in morphface's conventions:

* geometry in millimetres, model frame x toward the subject's left, y up, z out of the face (the
  BFM family already uses this frame, so only units change);
* triangles 0-based and counter-clockwise seen from outside;
* coefficients in standard-deviation units (prior N(0, I)): bases hold unit-free orthonormal
  components with ``*_std`` in mm (or albedo units), or bases pre-scaled by the std with
  ``*_std = 1`` where the file is distributed that way;
* albedo in linear RGB [0, 1].

:func:`load_model` is the one entry point: it recognises the format from the file's magic bytes,
extension and variable/dataset names (or, for a folder, from the known file names in it). It also
takes a **model name** (:data:`MODEL_FILES`: ``"bfm2009"``, ``"bfm2017"``, ``"bfm2019"``,
``"deep3d"``, ``"lsfm"``), looked up by :func:`find_model` in, in order: the folder(s) named by the
environment variable ``MORPHFACE_MODEL_DIR`` (``os.pathsep``-separated), ``assets/bfm/`` under the
working directory, the repository's top-level ``assets/bfm/`` (a source checkout) and the package's
``morphface/assets/bfm/``. Licensed model files cannot ship with morphface: the README in those
folders says which files go there and where to request them.

Error messages name the file and what was expected; lists of what was found (variable names of an
unrecognised ``.mat``, files of a folder) are capped to a few entries, and quoted reasons to a few
hundred characters, so that a garbage file never produces a garbage-sized message.

Format-specific choices
-----------------------
**BFM 2009** (``01_MorphableModel.mat``): micrometres -> mm; ``shapeEV``/``texEV`` are standard
deviations (not variances); ``texMU``/``texPC`` are in [0, 255]; ``tl`` is 1-based and clockwise
(EOS, the official ``plywrite.m`` and LSFM all swap two corners), so it is always flipped.
``segbin`` columns become the vertex sets ``nose``, ``eyes``, ``mouth``, ``rest``.

**Exp_Pca expression basis** (Guo et al.): defined only on the 53,215-vertex trimmed topology
(``BFM_exp_idx.mat`` -> ``trimIndex``). With an expression file the model is **cropped to that
topology** (triangles are kept when all three corners survive) rather than padding the basis with
zeros on the 275 neck/ear vertices: zero expression motion there would pin the neck and ears while
the jaw next to them moves, tearing the skin along the border, and the 53,215 topology is the one
that Deep3DFaceRecon, 3DDFA, face3d and LSFM use, so vertex ids and landmarks stay compatible with
them. The file's mean expression offset (``expMU``) is discarded, as both Deep3DFaceRecon readers
do, so that zero coefficients give BFM's mean face. ``std_exp.txt`` (shipped in
Deep3DFaceRecon's ``BFM/`` folder) is required: without it coefficients would not be in std units.

**Deep3DFaceRecon** (``BFM_model_front.mat``): decimetres -> mm (x100). The vertex centroid of
``meanshape`` is subtracted, as Deep3DFaceRecon does (``recenter=True``), so its pose/translation
coefficients transfer unchanged; the model's origin is therefore the centroid of the 35,709 front
vertices, not BFM's origin. The bases are pre-multiplied by the std (``*_std`` = 1). ``tri_mask2``
is 1-based and *local* to ``frontmask2_idx``; it is mapped to global ids and checked to be a set
of triangles of ``tri`` inside the ``front`` vertex set (so ``model.subset("front")`` gives the
photometric-loss region). ``point_buf`` is not needed (morphface computes normals from the
triangles).

**BFM 2017/2019** (statismo ``.h5``, needs ``h5py``): points/cells coordinate-major; variances ->
std = sqrt; the expression model's mean is added to the mean shape; colour is divided by 255 when
its mean exceeds [0, 1]; legacy statismo 0.8 bases (stored as U * sqrt(variance)) are
re-normalised column by column, as scalismo-faces does; a missing version means 0.8 (idem). The
unit is checked from the face width like LSFM's (2017/2019 are in mm; a statismo export of BFM 2009
may be in micrometres). No 68-point landmark list exists for these topologies, so ``landmarks`` is
empty.

**LSFM** (``.mat``): ``components`` orthonormal, ``eigenvalues`` are variances, ``trilist``
0-based. The unit is not documented and is detected from the face width (~150 -> mm,
~1.5e5 -> micrometres; cm, dm and m are recognised too).

Winding that no source confirms (BFM 2017/2019 cells, LSFM trilist) is checked on the mean shape:
the triangles nearest the nose tip (the vertex with the largest z) must face +z; if less than half
of their area does, all triangles are flipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, ModelFormatError
from .model import MorphableModel

__all__ = [
    "load_model",
    "find_model",
    "model_dirs",
    "MODEL_FILES",
    "MODEL_DIR_ENV",
    "load_bfm2009",
    "load_deep3d",
    "load_bfm_h5",
    "load_lsfm",
    "load_ict_npz",
    "LANDMARKS_BFM2009",
    "LANDMARKS_BFM_53215",
    "BFM2009_N_VERTICES",
    "BFM_TRIMMED_N_VERTICES",
]

PathLike = str | os.PathLike

#: Vertex count of the original BFM 2009 (``01_MorphableModel.mat``).
BFM2009_N_VERTICES = 53490
#: Vertex count of the trimmed BFM topology (Exp_Pca, 3DDFA, face3d, LSFM full).
BFM_TRIMMED_N_VERTICES = 53215

#: iBUG-68 landmarks on the original 53,490-vertex BFM 2009, 0-based (3DDFA/Zhu et al. keypoints
#: mapped through ``trimIndex``; FORMATS.md (f) item 3).
LANDMARKS_BFM2009: tuple[int, ...] = (
    22148, 22424, 21928, 21311, 43511, 45193, 46441, 47410, 48189, 48970, 49942, 51199, 52888, 33953,
    33280, 32744, 32984, 38970, 39667, 40057, 40262, 40429, 41168, 41334, 41542, 41936, 42642, 8290,
    8306, 8316, 8321, 6525, 7300, 8333, 9364, 10137, 2215, 3886, 4920, 5828, 4801, 3640, 10730, 11628,
    12658, 14341, 12928, 11767, 5522, 6025, 7570, 8344, 9118, 10669, 11070, 9792, 9019, 8374, 7729,
    6954, 5909, 7450, 8352, 9256, 10812, 9012, 8367, 7722,
)

#: The same 68 points on the 53,215-vertex trimmed topology, 0-based (3DDFA / face3d ``kpt_ind``,
#: Exp_Pca, LSFM full; FORMATS.md (f) item 2).
LANDMARKS_BFM_53215: tuple[int, ...] = (
    21873, 22149, 21653, 21036, 43236, 44918, 46166, 47135, 47914, 48695, 49667, 50924, 52613, 33678,
    33005, 32469, 32709, 38695, 39392, 39782, 39987, 40154, 40893, 41059, 41267, 41661, 42367, 8161,
    8177, 8187, 8192, 6515, 7243, 8204, 9163, 9883, 2215, 3886, 4920, 5828, 4801, 3640, 10455, 11353,
    12383, 14066, 12653, 11492, 5522, 6025, 7495, 8215, 8935, 10395, 10795, 9555, 8836, 8236, 7636,
    6915, 5909, 7384, 8223, 9064, 10537, 8829, 8229, 7629,
)

#: Model names :func:`load_model` accepts, with the files looked for in each model folder, in order of
#: preference (a converted ``<name>.safetensors`` first: it loads in well under a second).
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "bfm2009": ("bfm2009.safetensors", "01_MorphableModel.mat", "PublicMM1/01_MorphableModel.mat"),
    "bfm2017": ("bfm2017.safetensors", "model2017-1_bfm_nomouth.h5", "model2017-1_face12_nomouth.h5"),
    "bfm2019": ("bfm2019.safetensors", "model2019_bfm.h5", "model2019_face12.h5", "model2019_fullHead.h5"),
    "deep3d": ("deep3d.safetensors", "BFM_model_front.mat", "BFM/BFM_model_front.mat"),
    "lsfm": ("lsfm.safetensors", "lsfm.mat", "all_all_all.mat", "all_all_all_cropped.mat"),
}
#: Environment variable naming extra model folders (searched first).
MODEL_DIR_ENV = "MORPHFACE_MODEL_DIR"

_BFM2009_SEGMENTS = ("nose", "eyes", "mouth", "rest")
_MAX_LISTED = 8  # names quoted in an error message
_MAX_NAME = 40  # characters per quoted name
_MAX_REASON = 300  # characters of a quoted exception message
_UM_TO_MM = 1e-3
_DM_TO_MM = 100.0

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"

_BFM2009_WHAT = "a BFM 2009 01_MorphableModel.mat (shapeMU, shapePC, shapeEV, tl; texMU, texPC, texEV)"
_DEEP3D_WHAT = ("a Deep3DFaceRecon BFM_model_front.mat (meanshape, idBase, exBase, meantex, texBase, tri, "
                "keypoints, ...)")
_LSFM_WHAT = "an LSFM .mat (mean, components, eigenvalues, trilist)"
_H5_WHAT = "a statismo/scalismo-faces BFM 2017/2019 .h5 (/shape/model/mean, pcaBasis, pcaVariance, ...)"


# ---------------------------------------------------------------------------------------- helpers
def _fail(path: Path, msg: str) -> ModelFormatError:
    return ModelFormatError(f"{path}: {msg}")


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())  # one line
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _listing(names) -> str:
    """At most :data:`_MAX_LISTED` names, each clipped, then "... and N more": a bounded string."""
    names = sorted(names, key=str)
    shown = ", ".join(repr(_clip(n, _MAX_NAME)) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


def _reason(e: BaseException) -> str:
    return _clip(f"{type(e).__name__}: {e}", _MAX_REASON)


def _loadmat(path: Path, names: Sequence[str] | None, what: str) -> dict:
    """``scipy.io.loadmat`` with every failure turned into a :class:`ModelFormatError`."""
    from scipy.io import loadmat

    if not path.is_file():
        raise _fail(path, f"no such file (expected {what})")
    try:
        return loadmat(str(path), variable_names=list(names) if names is not None else None)
    except NotImplementedError as e:  # scipy's answer to MATLAB v7.3 (HDF5-based) files
        raise _fail(path, f"MATLAB v7.3 (HDF5) .mat files are not supported; expected a v5 .mat, {what} "
                          f"({_clip(e, _MAX_REASON)})") from e
    except Exception as e:  # truncated/garbage files raise a zoo of types (ValueError, OSError, ...)
        raise _fail(path, f"not a readable MATLAB .mat file ({_reason(e)}); expected {what}") from e


def _whosmat(path: Path) -> list[str]:
    from scipy.io import whosmat

    try:
        return [name for name, _, _ in whosmat(str(path))]
    except NotImplementedError as e:
        raise _fail(path, "MATLAB v7.3 (HDF5) .mat files are not supported; re-save it with "
                          "save(..., '-v7')") from e
    except Exception as e:
        raise _fail(path, f"not a readable MATLAB .mat file ({_reason(e)})") from e


def _require(d: Mapping, key: str, path: Path, what: str) -> np.ndarray:
    if key not in d:
        raise _fail(path, f"missing variable {key!r}; expected {what}")
    a = d[key]
    if hasattr(a, "toarray"):  # scipy.sparse (MATLAB sparse logical/double)
        a = a.toarray()
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise _fail(path, f"{key!r} must be a numeric array; found dtype {a.dtype} with shape {a.shape}")
    return a


def _vector(a: np.ndarray, n: int | None, key: str, path: Path) -> np.ndarray:
    """A vector stored as ``(n,)``, ``(1, n)`` or ``(n, 1)`` (savemat/MATLAB make 1-D arrays 2-D)."""
    is_vec = a.ndim == 1 or (a.ndim == 2 and 1 in a.shape)
    if not is_vec or (n is not None and a.size != n):
        want = f"{n}" if n is not None else "n"
        raise _fail(path, f"{key!r} must be a vector of {want} values, shaped ({want},), (1, {want}) or "
                          f"({want}, 1); found shape {a.shape}")
    return a.reshape(-1)


def _matrix(a: np.ndarray, rows: int, key: str, path: Path, cols: int | None = None) -> np.ndarray:
    if a.ndim != 2 or a.shape[0] != rows or (cols is not None and a.shape[1] != cols):
        want = f"({rows}, {cols if cols is not None else 'K'})"
        raise _fail(path, f"{key!r} must have shape {want}; found {a.shape}")
    return a


def _indices(
    a: np.ndarray, key: str, path: Path, base: int, upper: int, allow: int | None = None
) -> np.ndarray:
    """Integer ids from an index array of any numeric dtype, shifted to 0-based and range-checked.

    ``allow`` is one extra permitted value after shifting (e.g. ``-1`` for "no match").
    """
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise _fail(path, f"{key!r} must hold integer ids; found non-integer values (dtype {a.dtype})")
    ids = a.astype(np.int64) - base
    ok = (ids >= 0) & (ids < upper)
    if allow is not None:
        ok |= ids == allow
    if ids.size and not ok.all():
        bad = ids[~ok]
        extra = f" or {allow + base}" if allow is not None else ""
        raise _fail(path, f"{key!r} ({base}-based) must lie in [{base}, {upper - 1 + base}]{extra}; "
                          f"found values in [{int(bad.min()) + base}, {int(bad.max()) + base}]")
    return ids


def _triangles(a: np.ndarray, key: str, path: Path, base: int, n_vertices: int) -> np.ndarray:
    if a.ndim != 2 or a.shape[1] != 3:
        raise _fail(path, f"{key!r} must be a triangle list of shape (F, 3); found {a.shape}")
    return _indices(a, key, path, base, n_vertices)


def _per_vertex(flat: np.ndarray, n: int) -> np.ndarray:
    """Interleaved ``(3n,)`` -> ``(n, 3)``."""
    return flat.reshape(n, 3)


def _basis_columns(pc: np.ndarray, n: int) -> np.ndarray:
    """``(3n, K)`` interleaved components (one per column) -> ``(K, n, 3)`` float32."""
    return np.ascontiguousarray(pc.T, dtype=np.float32).reshape(pc.shape[1], n, 3)


def _check_finite(path: Path, **arrays: np.ndarray) -> None:
    for key, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _fail(path, f"{key!r} contains NaN or inf ({int((~np.isfinite(a)).sum())} values)")


def _orient_outward(mean: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, bool]:
    """Flip the winding of all triangles if those around the nose tip face into the head.

    The nose tip is the vertex with the largest z (model frame: z out of the face); its nearest
    triangles (by centroid) vote with their area for ``n_z > 0``. Returns ``(triangles, flipped)``.
    """
    if len(tri) == 0:
        return tri, False
    m = mean.astype(np.float64)
    tip = m[int(np.argmax(m[:, 2]))]
    v0, v1, v2 = m[tri[:, 0]], m[tri[:, 1]], m[tri[:, 2]]
    n = np.cross(v1 - v0, v2 - v0)  # length = twice the area
    dist = np.linalg.norm((v0 + v1 + v2) / 3.0 - tip, axis=1)
    k = min(len(tri), int(np.clip(len(tri) // 100, 10, 2000)))
    near = np.argpartition(dist, k - 1)[:k]
    area = np.linalg.norm(n[near], axis=1)
    front = area[n[near, 2] > 0].sum()
    if front >= 0.5 * area.sum():
        return tri, False
    return np.ascontiguousarray(tri[:, [0, 2, 1]]), True


_UNITS = (("micrometres", 1e-3), ("mm", 1.0), ("cm", 10.0), ("dm", 100.0), ("m", 1000.0))


def _detect_unit_scale(mean: np.ndarray, path: Path) -> tuple[float, str]:
    """Scale to millimetres from the face width (x extent), which is ~150 mm for every BFM-like model."""
    width = float(np.ptp(mean[:, 0])) if len(mean) else 0.0
    if not np.isfinite(width) or width <= 0:
        raise _fail(path, f"cannot detect the unit: the mean shape has x extent {width}")
    name, scale = min(_UNITS, key=lambda u: abs(np.log10(width * u[1] / 150.0)))
    if abs(np.log10(width * scale / 150.0)) > 0.5:
        raise _fail(path, f"cannot detect the unit: the mean face is {width:g} units wide, which is not "
                          f"~150 in any of micrometres, mm, cm, dm or m")
    return scale, name


def _ensure_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file (expected {what})")


# ---------------------------------------------------------------------------------------- BFM 2009
def _read_exp_pca(path: Path, n_vertices: int) -> np.ndarray:
    """Read Guo et al.'s ``Exp_Pca.bin``: int32 K, float32 expMU (3N), K float32 components of 3N.

    Returns the components ``(K, N, 3)`` float32 (expMU is discarded, see the module docstring).
    The byte order is native in the reference readers (little-endian in practice); a big-endian
    file is recognised by its size.
    """
    _ensure_file(path, "Guo et al.'s Exp_Pca.bin")
    size = path.stat().st_size
    n3 = 3 * n_vertices
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) < 4:
        raise _fail(path, f"file is {size} bytes; expected an int32 component count followed by "
                          f"float32 data (4 + 4*{n3}*(K+1) bytes)")
    for order in ("<", ">"):
        k = int(np.frombuffer(head, dtype=f"{order}i4")[0])
        if 0 < k and size == 4 + 4 * n3 * (k + 1):
            break
    else:
        k = int(np.frombuffer(head, dtype="<i4")[0])
        raise _fail(path, f"size is {size} bytes but the Exp_Pca layout 4 + 4*{n3}*(K+1) with K = {k} "
                          f"(from its header) needs {4 + 4 * n3 * (k + 1)} bytes: a truncated or different "
                          f"file, or a basis for another topology than trimIndex's {n_vertices} vertices")
    data = np.fromfile(path, dtype=f"{order}f4", count=n3 * (k + 1), offset=4)
    comps = data[n3:].reshape(k, n_vertices, 3).astype(np.float32)  # component-major, interleaved xyz
    _check_finite(path, Exp_Pca=comps)
    return comps


def _find_aux(name: str, explicit: PathLike | None, folders: Sequence[Path], what: str) -> Path:
    if explicit is not None:
        p = Path(explicit)
        _ensure_file(p, what)
        return p
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(f / name) for f in dict.fromkeys(folders))
    raise ModelFormatError(f"the Exp_Pca expression basis needs {what}; looked for {looked} (pass its path "
                           f"explicitly; it ships in Deep3DFaceRecon's BFM/ folder)")


def load_bfm2009(
    mat_path: PathLike,
    exp_path: PathLike | None = None,
    std_exp_path: PathLike | None = None,
    trim_index_path: PathLike | None = None,
) -> MorphableModel:
    """Load the Basel Face Model 2009 (``PublicMM1/01_MorphableModel.mat``), optionally with expressions.

    Args:
        mat_path: ``01_MorphableModel.mat`` as distributed (micrometres, 1-based clockwise ``tl``).
        exp_path: Guo et al.'s ``Exp_Pca.bin``. When given, the model is cropped to the 53,215-vertex
            trimmed topology the expression basis lives on (see the module docstring for why).
        std_exp_path: ``std_exp.txt`` (K per-component std devs, micrometres); default: next to
            ``exp_path`` or ``mat_path``.
        trim_index_path: ``BFM_exp_idx.mat`` (``trimIndex``, 1-based BFM ids of the trimmed
            topology); default: next to ``exp_path`` or ``mat_path``.

    Returns:
        A model with ``V = 53,490`` (``K_exp = 0``; identity + albedo) or, with ``exp_path``,
        ``V = len(trimIndex) = 53,215`` and ``K_exp = K`` of the file. Identity std in mm, albedo
        in [0, 1], vertex sets ``nose``/``eyes``/``mouth``/``rest`` from ``segbin``, and the 68
        iBUG landmarks when the vertex count is the real BFM's.

    Raises:
        ModelFormatError: missing variable, wrong shape, bad ids, or an Exp_Pca file whose size
            does not match ``4 + 4 * 3N * (K + 1)``.
    """
    mat_path = Path(mat_path)
    d = _loadmat(mat_path, ["shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl", "segbin"],
                 _BFM2009_WHAT)
    mu = _require(d, "shapeMU", mat_path, _BFM2009_WHAT)
    mu = _vector(mu, None, "shapeMU", mat_path)
    if mu.size == 0 or mu.size % 3:
        raise _fail(mat_path, f"'shapeMU' must hold 3N interleaved coordinates; found {mu.size} values")
    n = mu.size // 3
    pc = _matrix(_require(d, "shapePC", mat_path, _BFM2009_WHAT), 3 * n, "shapePC", mat_path)
    ev = _vector(_require(d, "shapeEV", mat_path, _BFM2009_WHAT), pc.shape[1], "shapeEV", mat_path)
    tri = _triangles(_require(d, "tl", mat_path, _BFM2009_WHAT), "tl", mat_path, base=1, n_vertices=n)
    tri = np.ascontiguousarray(tri[:, [0, 2, 1]])  # clockwise on disk (3 independent sources)
    _check_finite(mat_path, shapeMU=mu, shapePC=pc, shapeEV=ev)

    mean = _per_vertex(mu.astype(np.float64) * _UM_TO_MM, n)
    id_basis = _basis_columns(pc, n)
    id_std = ev.astype(np.float64) * _UM_TO_MM

    tex_keys = [k for k in ("texMU", "texPC", "texEV") if k in d]
    albedo = None
    if tex_keys:
        if len(tex_keys) != 3:
            missing = sorted({"texMU", "texPC", "texEV"} - set(tex_keys))
            raise _fail(mat_path, f"has {tex_keys} but not {missing}; the colour model needs all three")
        tmu = _vector(_require(d, "texMU", mat_path, _BFM2009_WHAT), 3 * n, "texMU", mat_path)
        tpc = _matrix(_require(d, "texPC", mat_path, _BFM2009_WHAT), 3 * n, "texPC", mat_path)
        tev = _vector(_require(d, "texEV", mat_path, _BFM2009_WHAT), tpc.shape[1], "texEV", mat_path)
        _check_finite(mat_path, texMU=tmu, texPC=tpc, texEV=tev)
        albedo = (_per_vertex(tmu.astype(np.float64) / 255.0, n), _basis_columns(tpc, n),
                  tev.astype(np.float64) / 255.0)

    sets: dict[str, np.ndarray] = {}
    if "segbin" in d:
        seg = _matrix(_require(d, "segbin", mat_path, _BFM2009_WHAT), n, "segbin", mat_path, cols=4)
        for j, name in enumerate(_BFM2009_SEGMENTS):
            sets[name] = np.flatnonzero(seg[:, j])
    landmarks = np.asarray(LANDMARKS_BFM2009) if n == BFM2009_N_VERTICES else None
    name = "Basel Face Model 2009 (PublicMM1)"

    exp_basis = exp_std = None
    if exp_path is not None:
        exp_path = Path(exp_path)
        folders = [exp_path.parent, mat_path.parent]
        trim_file = _find_aux("BFM_exp_idx.mat", trim_index_path, folders, "BFM_exp_idx.mat (trimIndex)")
        tdict = _loadmat(trim_file, ["trimIndex"], "BFM_exp_idx.mat with 'trimIndex'")
        trim_raw = _require(tdict, "trimIndex", trim_file, "BFM_exp_idx.mat with 'trimIndex'")
        trim = _indices(_vector(trim_raw, None, "trimIndex", trim_file), "trimIndex", trim_file, 1, n)
        if np.unique(trim).size != trim.size:
            raise _fail(trim_file, "'trimIndex' must list distinct vertex ids; found duplicates")
        comps = _read_exp_pca(exp_path, trim.size)
        std_file = _find_aux("std_exp.txt", std_exp_path, folders, "std_exp.txt (expression std devs)")
        try:
            std = np.loadtxt(std_file, dtype=np.float64).reshape(-1)
        except ValueError as e:
            raise _fail(std_file, f"expected whitespace-separated numbers ({_clip(e, _MAX_REASON)})") from e
        if std.size != comps.shape[0]:
            raise _fail(std_file, f"has {std.size} std devs but {exp_path.name} has {comps.shape[0]} "
                                  f"components")
        _check_finite(std_file, std_exp=std)

        # Crop to the trimmed topology in trimIndex order (which is the Exp_Pca vertex order).
        new_id = np.full(n, -1, dtype=np.int64)
        new_id[trim] = np.arange(trim.size)
        mapped = new_id[tri]
        tri = np.ascontiguousarray(mapped[(mapped >= 0).all(axis=1)])
        mean, id_basis = mean[trim], id_basis[:, trim]
        if albedo is not None:
            albedo = (albedo[0][trim], albedo[1][:, trim], albedo[2])
        sets = {k: new_id[v][new_id[v] >= 0] for k, v in sets.items()}
        if landmarks is not None:
            landmarks = new_id[landmarks]  # -1 where trimIndex drops a landmark vertex
        exp_basis, exp_std = comps, std * _UM_TO_MM
        name += " + Exp_Pca expressions (Guo et al.), trimmed topology"

    return MorphableModel(
        mean=mean.astype(np.float32), triangles=tri,
        id_basis=id_basis, id_std=id_std,
        exp_basis=exp_basis, exp_std=exp_std, exp_kind="pca",
        albedo_mean=None if albedo is None else albedo[0].astype(np.float32),
        albedo_basis=None if albedo is None else albedo[1],
        albedo_std=None if albedo is None else albedo[2],
        landmarks=landmarks, vertex_sets=sets, name=name,
    )


# ---------------------------------------------------------------------------------------- Deep3D
def load_deep3d(path: PathLike) -> MorphableModel:
    """Load Deep3DFaceRecon's ``BFM/BFM_model_front.mat`` (35,709 vertices, 80 id / 64 exp / 80 tex).

    Geometry decimetres -> mm, recentred on the vertex centroid of ``meanshape`` as
    Deep3DFaceRecon does; bases are already scaled by the std (``*_std = 1``); albedo /255.

    Returns:
        A model with landmarks from ``keypoints``, and vertex sets ``front``
        (``frontmask2_idx``, the photometric-loss region) and ``skin`` (``skinmask``) when present.

    Raises:
        ModelFormatError: missing variable, wrong shape, bad ids, or a ``tri_mask2`` that is not
            a set of ``tri`` triangles once mapped through ``frontmask2_idx``.
    """
    path = Path(path)
    keys = ["meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints", "frontmask2_idx",
            "tri_mask2", "skinmask"]
    d = _loadmat(path, keys, _DEEP3D_WHAT)
    ms = _vector(_require(d, "meanshape", path, _DEEP3D_WHAT), None, "meanshape", path)
    if ms.size == 0 or ms.size % 3:
        raise _fail(path, f"'meanshape' must hold 3N interleaved coordinates; found {ms.size} values")
    n = ms.size // 3
    id_b = _matrix(_require(d, "idBase", path, _DEEP3D_WHAT), 3 * n, "idBase", path)
    ex_b = _matrix(_require(d, "exBase", path, _DEEP3D_WHAT), 3 * n, "exBase", path)
    mt = _vector(_require(d, "meantex", path, _DEEP3D_WHAT), 3 * n, "meantex", path)
    tx_b = _matrix(_require(d, "texBase", path, _DEEP3D_WHAT), 3 * n, "texBase", path)
    tri = _triangles(_require(d, "tri", path, _DEEP3D_WHAT), "tri", path, base=1, n_vertices=n)
    kp = _require(d, "keypoints", path, _DEEP3D_WHAT)
    landmarks = _indices(_vector(kp, 68, "keypoints", path), "keypoints", path, 1, n)
    _check_finite(path, meanshape=ms, idBase=id_b, exBase=ex_b, meantex=mt, texBase=tx_b)

    mean = _per_vertex(ms.astype(np.float64), n)
    mean = (mean - mean.mean(axis=0)) * _DM_TO_MM  # Deep3DFaceRecon's recenter=True

    sets: dict[str, np.ndarray] = {}
    if "frontmask2_idx" in d:
        front = _vector(np.asarray(d["frontmask2_idx"]), None, "frontmask2_idx", path)
        front = _indices(front, "frontmask2_idx", path, 1, n)
        sets["front"] = front
        if "tri_mask2" in d:
            local = _triangles(np.asarray(d["tri_mask2"]), "tri_mask2", path, base=1, n_vertices=front.size)
            _check_front_triangles(front[local], tri, n, path)
    if "skinmask" in d:
        skin = _vector(np.asarray(d["skinmask"]), n, "skinmask", path)
        sets["skin"] = np.flatnonzero(skin)

    return MorphableModel(
        mean=mean.astype(np.float32), triangles=tri,
        id_basis=_basis_columns(id_b.astype(np.float64) * _DM_TO_MM, n),
        exp_basis=_basis_columns(ex_b.astype(np.float64) * _DM_TO_MM, n), exp_kind="pca",
        albedo_mean=_per_vertex(mt.astype(np.float64) / 255.0, n).astype(np.float32),
        albedo_basis=_basis_columns(tx_b.astype(np.float64) / 255.0, n),
        landmarks=landmarks, vertex_sets=sets,
        name="Deep3DFaceRecon BFM front model (BFM 2009 + Exp_Pca), recentred",
    )


def _check_front_triangles(front_tri: np.ndarray, tri: np.ndarray, n: int, path: Path) -> None:
    """Every mapped ``tri_mask2`` triangle must be a triangle of ``tri`` (corner order ignored)."""

    def keys(t: np.ndarray) -> np.ndarray:
        s = np.sort(t, axis=1)
        return (s[:, 0] * n + s[:, 1]) * n + s[:, 2]

    missing = ~np.isin(keys(front_tri), keys(tri))
    if missing.any():
        raise _fail(path, f"{int(missing.sum())} of {len(front_tri)} 'tri_mask2' triangles are not "
                          f"triangles of 'tri' after mapping through 'frontmask2_idx' (expected 1-based ids "
                          f"local to frontmask2_idx)")


# ---------------------------------------------------------------------------------------- BFM 2017/2019
def _h5_get(f, key: str, path: Path) -> np.ndarray:
    if key not in f:
        raise _fail(path, f"missing dataset /{key}; expected {_H5_WHAT}")
    obj = f[key]
    if not hasattr(obj, "shape"):
        raise _fail(path, f"/{key} is a group; expected a dataset")
    a = np.asarray(obj[()])
    if a.dtype.kind not in "biuf":
        raise _fail(path, f"/{key} must be numeric; found dtype {a.dtype}")
    return a


def _h5_version(f, group: str, path: Path) -> tuple[int, int]:
    # scalismo-faces reads the per-model version and treats a missing one as legacy 0.8
    def get(name, default):
        key = f"{group}/version/{name}"
        return int(np.asarray(f[key][()]).reshape(-1)[0]) if key in f else default

    return get("majorVersion", 0), get("minorVersion", 8)


def _h5_pca(f, group: str, n3: int, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean (3N,), orthonormal basis (3N, K), std (K,))`` of one statismo model group."""
    k_mean, k_basis, k_var = (f"{group}/model/{k}" for k in ("mean", "pcaBasis", "pcaVariance"))
    mean = _vector(_h5_get(f, k_mean, path), n3, f"/{k_mean}", path)
    basis = _matrix(_h5_get(f, k_basis, path), n3, f"/{k_basis}", path)
    var = _vector(_h5_get(f, k_var, path), basis.shape[1], f"/{k_var}", path)
    _check_finite(path, **{f"/{k_mean}": mean, f"/{k_basis}": basis, f"/{k_var}": var})
    if (var < 0).any():
        raise _fail(path, f"/{k_var} must be variances (>= 0); found min {float(var.min())}")
    version = _h5_version(f, group, path)
    basis = basis.astype(np.float64)
    if version == (0, 8):
        # legacy statismo stored U * sqrt(variance): normalise the columns back to unit length
        norms = np.linalg.norm(basis, axis=0)
        basis = basis / np.where(norms > 0, norms, 1.0)
    elif not (version[0] == 1 or version == (0, 9)):
        raise _fail(path, f"/{group} has statismo format version {version[0]}.{version[1]}; "
                          f"supported: 0.8, 0.9, 1.x")
    return mean.astype(np.float64), basis, np.sqrt(var.astype(np.float64))


def _h5_triangles(f, group: str, n: int, path: Path) -> np.ndarray:
    rep = f"{group}/representer"
    if f"{rep}/cells" in f:
        cells = _h5_get(f, f"{rep}/cells", path)
        if cells.ndim != 2 or cells.shape[0] != 3:
            raise _fail(path, f"/{rep}/cells must be coordinate-major (3, F); found {cells.shape}")
        return _indices(np.ascontiguousarray(cells.T), f"/{rep}/cells", path, 0, n)
    legacy = f"{rep}/reference-mesh/triangle-list"
    if legacy in f:  # statismo 0.8 "gravis::Mesh Shape Representer": (F, 3)
        return _triangles(_h5_get(f, legacy, path), f"/{legacy}", path, base=0, n_vertices=n)
    raise _fail(path, f"missing dataset /{rep}/cells (or legacy /{legacy}); expected {_H5_WHAT}")


def load_bfm_h5(path: PathLike) -> MorphableModel:
    """Load a BFM 2017/2019 (or the BFM 2009 statismo) ``.h5`` model file (needs ``h5py``).

    ``shape = mean_s + mean_e + B_s (alpha * sqrt(var_s)) + B_e (beta * sqrt(var_e))``; colour as
    stored, or /255 when the mean colour exceeds 1. Geometry is expected in mm; the unit is
    checked from the face width (~150) like LSFM's, so a micrometre file is converted too. The
    winding of the cells is checked on the mean shape (no source confirms it).

    Raises:
        BackendUnavailableError: h5py is not installed.
        ModelFormatError: not an HDF5 file, a missing dataset, a wrong shape or an unknown version.
    """
    try:
        import h5py
    except ImportError as e:
        raise BackendUnavailableError("reading BFM 2017/2019 .h5 model files needs h5py: "
                                      "pip install morphface[bfm]") from e
    path = Path(path)
    _ensure_file(path, _H5_WHAT)
    try:
        f = h5py.File(str(path), "r")
    except OSError as e:
        raise _fail(path, f"not a readable HDF5 file ({_clip(e, _MAX_REASON)}); expected {_H5_WHAT}") from e
    try:
        with f:
            mu = _h5_get(f, "shape/model/mean", path)
            if mu.size == 0 or mu.size % 3:
                raise _fail(path, f"/shape/model/mean must hold 3N interleaved coordinates; "
                                  f"found shape {mu.shape}")
            n = mu.size // 3
            mean_s, basis_s, std_s = _h5_pca(f, "shape", 3 * n, path)
            tri = _h5_triangles(f, "shape", n, path)
            mean = mean_s
            exp = None
            if "expression" in f:
                mean_e, basis_e, std_e = _h5_pca(f, "expression", 3 * n, path)
                mean = mean + mean_e
                exp = (_basis_columns(basis_e, n), std_e)
            albedo = None
            if "color" in f:
                mean_c, basis_c, std_c = _h5_pca(f, "color", 3 * n, path)
                # a [0, 1] mean never exceeds 1 by much; a [0, 255] skin mean is ~100-250
                if mean_c.max() > 2.0:
                    mean_c, std_c = mean_c / 255.0, std_c / 255.0
                albedo = (_per_vertex(mean_c, n).astype(np.float32), _basis_columns(basis_c, n), std_c)
    except OSError as e:  # truncated datasets fail on read, not on open
        raise _fail(path, f"HDF5 read error ({_clip(e, _MAX_REASON)}); the file may be truncated") from e
    mean = _per_vertex(mean, n)
    # BFM 2017/2019 are in mm, but the statismo export of BFM 2009 may keep its micrometres
    scale, unit = _detect_unit_scale(mean, path)
    mean = mean * scale
    tri, _ = _orient_outward(mean, tri)
    return MorphableModel(
        mean=mean.astype(np.float32), triangles=tri,
        id_basis=_basis_columns(basis_s, n), id_std=std_s * scale,
        exp_basis=None if exp is None else exp[0], exp_std=None if exp is None else exp[1] * scale,
        exp_kind="pca",
        albedo_mean=None if albedo is None else albedo[0],
        albedo_basis=None if albedo is None else albedo[1],
        albedo_std=None if albedo is None else albedo[2],
        name=f"Basel Face Model ({path.name})" + ("" if unit == "mm" else f" (file unit: {unit})"),
    )


# ---------------------------------------------------------------------------------------- LSFM
def load_lsfm(path: PathLike) -> MorphableModel:
    """Load an LSFM model (``GENDER_ETHNICITY_AGE{_cropped}.mat``): shape only, no expressions/albedo.

    The unit is detected from the face width. Landmarks: the 53,215-topology list for full
    models, mapped through ``map_full_to_cropped`` for cropped ones (``-1`` where a point is
    cropped away).

    Raises:
        ModelFormatError: missing variable, wrong shape, bad ids, or an undetectable unit.
    """
    path = Path(path)
    keys = ["mean", "components", "eigenvalues", "trilist", "map_full_to_cropped"]
    d = _loadmat(path, keys, _LSFM_WHAT)
    mu = _vector(_require(d, "mean", path, _LSFM_WHAT), None, "mean", path)
    if mu.size == 0 or mu.size % 3:
        raise _fail(path, f"'mean' must hold 3N interleaved coordinates; found {mu.size} values")
    n = mu.size // 3
    comps = _matrix(_require(d, "components", path, _LSFM_WHAT), 3 * n, "components", path)
    var = _vector(_require(d, "eigenvalues", path, _LSFM_WHAT), comps.shape[1], "eigenvalues", path)
    tri = _triangles(_require(d, "trilist", path, _LSFM_WHAT), "trilist", path, base=0, n_vertices=n)
    _check_finite(path, mean=mu, components=comps, eigenvalues=var)
    if (var < 0).any():
        raise _fail(path, f"'eigenvalues' must be variances (>= 0); found min {float(var.min())}")

    mean = _per_vertex(mu.astype(np.float64), n)
    scale, unit = _detect_unit_scale(mean, path)
    mean = mean * scale
    tri, _ = _orient_outward(mean, tri)

    landmarks = None
    if n == BFM_TRIMMED_N_VERTICES:
        landmarks = np.asarray(LANDMARKS_BFM_53215)
    elif "map_full_to_cropped" in d:
        m = _vector(_require(d, "map_full_to_cropped", path, _LSFM_WHAT), BFM_TRIMMED_N_VERTICES,
                    "map_full_to_cropped", path)
        m = _indices(m, "map_full_to_cropped", path, 0, n, allow=-1)
        landmarks = m[np.asarray(LANDMARKS_BFM_53215)]
    return MorphableModel(
        mean=mean.astype(np.float32), triangles=tri,
        id_basis=_basis_columns(comps, n), id_std=np.sqrt(var.astype(np.float64)) * scale,
        landmarks=landmarks, name=f"LSFM {path.stem} (file unit: {unit})",
    )


# ---------------------------------------------------------------------------------------- ICT npz
_ICT_SETS = {
    "fitting": "fitting_vertices",
    "jaw_right_sub": "landmarks_68_jaw_right_sub",
    "jaw_left_sub": "landmarks_68_jaw_left_sub",
    "jawline_right_ext": "jawline_right_ext",
    "jawline_left_ext": "jawline_left_ext",
}
_ICT_WHAT = ("an ICT-FaceKit .npz in morphface's layout (mean, triangles, id_basis, id_std, exp_basis, "
             "exp_names)")


def load_ict_npz(path: PathLike) -> MorphableModel:
    """Load an ICT-FaceKit model ``.npz`` in the layout of ``morphface/assets/ict_facekit/model.npz``
    (mm, 0-based CCW triangles, std-scaled identity, blendshape expressions, per-vertex UVs)."""
    path = Path(path)
    _ensure_file(path, _ICT_WHAT)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/np raise several types for truncated archives
        raise _fail(path, f"not a readable .npz archive ({_reason(e)}); "
                          f"expected {_ICT_WHAT}") from e
    for key in ("mean", "triangles", "id_basis", "id_std", "exp_basis", "exp_names"):
        if key not in d:
            raise _fail(path, f"missing array {key!r}; expected {_ICT_WHAT}")
    sets = {name: d[key] for name, key in _ICT_SETS.items() if key in d}
    if "narrow_n_vertices" in d:
        sets = {"narrow_face": np.arange(int(d["narrow_n_vertices"])), **sets}
    return MorphableModel(
        mean=d["mean"], triangles=d["triangles"], id_basis=d["id_basis"], id_std=d["id_std"],
        exp_basis=d["exp_basis"], exp_kind="blendshape", exp_names=[str(s) for s in d["exp_names"]],
        uv=d.get("uv"), landmarks=d.get("landmarks_68"), vertex_sets=sets,
        name=f"ICT-FaceKit ({path.name})",
    )


# ---------------------------------------------------------------------------------------- dispatch
def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= size - 8 and head[8:9] == b"{"


def _load_mat(p: Path) -> MorphableModel:
    names = set(_whosmat(p))
    if {"shapeMU", "shapePC", "tl"} <= names:
        return load_bfm2009(p)
    if {"meanshape", "idBase"} <= names:
        return load_deep3d(p)
    if {"mean", "components", "trilist"} <= names:
        return load_lsfm(p)
    if "trimIndex" in names:
        raise _fail(p, "this is BFM_exp_idx.mat, an index file, not a model: pass the folder with "
                       "01_MorphableModel.mat and Exp_Pca.bin, or 01_MorphableModel.mat")
    hint = (" (a face3d/3DDFA BFM.mat struct is not supported; load 01_MorphableModel.mat instead)"
            if "model" in names else "")
    raise _fail(p, f"unrecognised .mat model: found variables {_listing(names)}; expected {_BFM2009_WHAT}, "
                   f"{_DEEP3D_WHAT}, or {_LSFM_WHAT}{hint}")


def _load_dir(p: Path) -> MorphableModel:
    found = []
    if (p / "01_MorphableModel.mat").is_file():
        found.append(p / "01_MorphableModel.mat")
    if (p / "BFM_model_front.mat").is_file():
        found.append(p / "BFM_model_front.mat")
    found += sorted(q for q in p.iterdir() if q.suffix in (".h5", ".safetensors") and q.is_file())
    if not found:
        raise ModelFormatError(f"{p}: folder holds no known model file; expected 01_MorphableModel.mat "
                               f"(+ Exp_Pca.bin), BFM_model_front.mat, a BFM 2017/2019 .h5 or a .safetensors")
    if len(found) > 1:
        raise ModelFormatError(f"{p}: folder holds several model files {_listing(q.name for q in found)}; pass one "
                               f"file (or, for BFM 2009 + Exp_Pca, a folder with only 01_MorphableModel.mat)")
    q = found[0]
    if q.name == "01_MorphableModel.mat":
        exp = p / "Exp_Pca.bin"
        return load_bfm2009(q, exp_path=exp if exp.is_file() else None)
    return load_model(q)


def model_dirs() -> list[Path]:
    """The folders :func:`find_model` searches, in order (module doc); duplicates removed."""
    dirs = [Path(d).expanduser() for d in os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep) if d.strip()]
    dirs.append(Path.cwd() / "assets" / "bfm")
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():  # a source checkout (not site-packages)
        dirs.append(repo / "assets" / "bfm")
    dirs.append(Path(__file__).resolve().parents[1] / "assets" / "bfm")
    unique: dict[Path, Path] = {}
    for d in dirs:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def find_model(name: str) -> Path:
    """The file of a named model (:data:`MODEL_FILES`): the first of its file names found in the
    first folder of :func:`model_dirs` holding one.

    Raises:
        ValueError: an unknown name.
        ModelFormatError: found nowhere; the message lists every folder and file name looked for.
    """
    key = name.lower()
    if key not in MODEL_FILES:
        raise ValueError(f"unknown model name {name!r}; expected one of {list(MODEL_FILES)}")
    dirs = model_dirs()
    for d in dirs:
        for fname in MODEL_FILES[key]:
            if (d / fname).is_file():
                return d / fname
    env = os.environ.get(MODEL_DIR_ENV)
    env_note = "" if env else f" (set {MODEL_DIR_ENV} to a folder to look there too)"
    raise ModelFormatError(
        f"model {name!r} not found: looked for {', '.join(MODEL_FILES[key])} in {', '.join(map(str, dirs))}"
        f"{env_note}; the licence forbids shipping it: request it from its owner (assets/bfm/README.md says "
        f"where), put the file in one of these folders, or pass its path")


def load_model(path_or_dir: PathLike) -> MorphableModel:
    """Load any supported model file, recognising its format from its content.

    Args:
        path_or_dir: a file: native ``.safetensors`` (:meth:`MorphableModel.save`), an ICT
            ``.npz``, BFM 2009 ``01_MorphableModel.mat`` (identity + albedo only), Deep3DFaceRecon
            ``BFM_model_front.mat``, an LSFM ``.mat``, or a BFM 2017/2019 ``.h5``; or a folder
            holding exactly one of the known files: ``01_MorphableModel.mat`` (with
            ``Exp_Pca.bin``, ``std_exp.txt`` and ``BFM_exp_idx.mat`` beside it, the expression
            model is added; see :func:`load_bfm2009`), ``BFM_model_front.mat``, ``*.h5``,
            ``*.safetensors``; or a model name (:data:`MODEL_FILES`: ``"bfm2009"``, ``"bfm2017"``,
            ``"bfm2019"``, ``"deep3d"``, ``"lsfm"``), found by :func:`find_model` in the model
            folders (module doc) unless a file or folder of that name exists.

    Raises:
        ModelFormatError: missing path, a model name found in no model folder (the message lists
            every place looked in), unknown/garbage/truncated file, ambiguous folder, or a file
            with a missing key or wrong shape (the message names the file and the key).
    """
    p = Path(path_or_dir)
    if not p.exists() and isinstance(path_or_dir, str) and path_or_dir.lower() in MODEL_FILES:
        q = find_model(path_or_dir)
        if q.name == "01_MorphableModel.mat":  # with Exp_Pca.bin beside it: the expression model too
            exp = q.parent / "Exp_Pca.bin"
            return load_bfm2009(q, exp_path=exp if exp.is_file() else None)
        return load_model(q)
    if p.is_dir():
        return _load_dir(p)
    if not p.is_file():
        raise ModelFormatError(f"{p}: no such file or folder (expected a model file, a folder holding one, or "
                               f"a model name: {', '.join(MODEL_FILES)})")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(128)
    suffix = p.suffix.lower()
    if head.startswith(b"MATLAB") or suffix == ".mat":
        return _load_mat(p)
    if head.startswith(_HDF5_MAGIC) or suffix in (".h5", ".hdf5"):
        return load_bfm_h5(p)
    if head.startswith(_ZIP_MAGIC) or suffix == ".npz":
        return load_ict_npz(p)
    if suffix == ".safetensors" or _is_safetensors(head, size):
        return MorphableModel.load(p)
    if suffix == ".bin":
        raise _fail(p, "an Exp_Pca.bin expression basis is not a model on its own: pass the folder holding "
                       "it and 01_MorphableModel.mat, or use load_bfm2009(mat_path, exp_path=...)")
    raise _fail(p, f"unrecognised model format ({size} bytes, starts with {head[:16]!r}); expected a "
                   f".safetensors, .npz, .mat (BFM 2009, Deep3DFaceRecon, LSFM) or .h5 (BFM 2017/2019) "
                   f"model file")
