"""Loaders of distributed model files, tested on small synthetic files in the exact on-disk layouts.

Each writer below builds a file with the variable names, dtypes, 2-D shapes, index bases, units,
winding and byte order of the real file (``shared/assets/FORMATS.md``), only with fewer vertices
and components, and returns the ground truth in morphface's conventions. The expected vertices
are computed with each format's own model equation (e.g. BFM's ``coef2object``), independently of
the loader's reshaping.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.io
import torch

from morphface import MorphableModel, load_default_model
from morphface.errors import BackendUnavailableError, ModelFormatError
from morphface.morphable import loaders as L
from morphface.morphable.loaders import (
    LANDMARKS_BFM2009,
    LANDMARKS_BFM_53215,
    load_bfm2009,
    load_bfm_h5,
    load_deep3d,
    load_lsfm,
    load_model,
)

NX, NY = 5, 7  # 35 vertices, 48 triangles


# ------------------------------------------------------------------------------------ geometry
def face_grid(nx=NX, ny=NY):
    """A height-field "face" in mm (model frame: z out of the face, nose tip at the centre) and its
    triangles counter-clockwise seen from +z (outside)."""
    x, y = np.meshgrid(np.linspace(-70, 70, nx), np.linspace(-90, 90, ny))
    z = 60 + 50 * np.exp(-(x**2 + y**2) / (2 * 35.0**2))
    mean = np.stack([x, y, z], -1).reshape(-1, 3)
    tri = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a, b, c, d = j * nx + i, j * nx + i + 1, (j + 1) * nx + i + 1, (j + 1) * nx + i
            tri += [(a, b, c), (a, c, d)]
    return mean, np.array(tri, dtype=np.int64)


def outward_fraction(mean, tri):
    n = np.cross(mean[tri[:, 1]] - mean[tri[:, 0]], mean[tri[:, 2]] - mean[tri[:, 0]])
    return float((n[:, 2] > 0).mean())


def orthonormal(rows, cols, rng):
    q, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    return q


def t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def close(a, b, rtol=1e-5, atol=1e-4):
    torch.testing.assert_close(torch.as_tensor(a).float(), t(b), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------ writers
def write_bfm2009(folder, rng, k_id=4, k_tex=3, mean_mm=None, tri=None, tex=True, **override):
    """``01_MorphableModel.mat``: micrometres, (3N, 1) float32 vectors, 1-based CW ``tl`` (double)."""
    if mean_mm is None:
        mean_mm, tri = face_grid()
    n = len(mean_mm)
    d = {
        "shapeMU": (mean_mm * 1000).reshape(-1, 1).astype(np.float32),
        "shapePC": orthonormal(3 * n, k_id, rng).astype(np.float32),
        "shapeEV": rng.uniform(1e3, 3e4, size=(k_id, 1)).astype(np.float32),
        "tl": (tri[:, [0, 2, 1]] + 1).astype(np.float64),  # clockwise, 1-based, MATLAB double
        "segbin": (rng.random((n, 4)) < 0.3).astype(np.float64),
    }
    if tex:
        d |= {
            "texMU": rng.uniform(60, 220, size=(3 * n, 1)).astype(np.float32),
            "texPC": orthonormal(3 * n, k_tex, rng).astype(np.float32),
            "texEV": rng.uniform(5, 40, size=(k_tex, 1)).astype(np.float32),
        }
    d |= override
    path = folder / "01_MorphableModel.mat"
    scipy.io.savemat(path, {k: v for k, v in d.items() if v is not None})
    return path, d


def write_exp(folder, rng, trim, k_exp=3, n_exp=None, endian="<"):
    """``Exp_Pca.bin`` (int32 K, float32 expMU, K component-major blocks), ``std_exp.txt`` (one line,
    no newline) and ``BFM_exp_idx.mat`` (``trimIndex`` (N, 1) uint16, 1-based)."""
    n_exp = len(trim) if n_exp is None else n_exp
    exp_mu = rng.normal(size=3 * n_exp).astype(np.float32) * 1e3
    comps = rng.normal(size=(k_exp, 3 * n_exp)).astype(np.float32)
    comps /= np.linalg.norm(comps, axis=1, keepdims=True)
    with open(folder / "Exp_Pca.bin", "wb") as fh:
        fh.write(np.array([k_exp], dtype=f"{endian}i4").tobytes())
        fh.write(exp_mu.astype(f"{endian}f4").tobytes())
        fh.write(comps.astype(f"{endian}f4").tobytes())
    std = np.sort(rng.uniform(300, 5e5, size=k_exp))[::-1]
    (folder / "std_exp.txt").write_text(" ".join(f"{s:.6f}" for s in std))
    scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (np.asarray(trim) + 1).astype(np.uint16)[:, None]})
    std = np.array([float(f"{s:.6f}") for s in std])
    return folder / "Exp_Pca.bin", comps, std


def write_deep3d(folder, rng, k_id=5, k_exp=4, k_tex=3, **override):
    """``BFM_model_front.mat``: decimetres, not centred, bases x std, (1, 3N) means, float32 1-based ids,
    ``exBase`` float64, ``tri_mask2`` local to ``frontmask2_idx``."""
    mean_mm, tri = face_grid()
    n, f = len(mean_mm), len(tri)
    offset_dm = np.array([0.1, -0.3, 0.9])
    front = np.flatnonzero((np.abs(mean_mm[:, 0]) < 50) & (np.abs(mean_mm[:, 1]) < 70))
    local = np.full(n, -1)
    local[front] = np.arange(front.size)
    in_front = (local[tri] >= 0).all(1)
    point_buf = np.full((n, 8), f + 1, dtype=np.float32)  # padding = F + 1
    d = {
        "meanshape": (mean_mm / 100 + offset_dm).reshape(1, -1).astype(np.float32),
        "idBase": rng.normal(size=(3 * n, k_id)).astype(np.float32) * 0.05,
        "exBase": rng.normal(size=(3 * n, k_exp)) * 0.02,  # float64 on disk
        "meantex": rng.uniform(60, 220, size=(1, 3 * n)).astype(np.float32),
        "texBase": rng.normal(size=(3 * n, k_tex)).astype(np.float32) * 3,
        "tri": (tri + 1).astype(np.float32),  # CCW
        "point_buf": point_buf,
        "tri_mask2": (local[tri[in_front]] + 1).astype(np.float32),
        "keypoints": rng.choice(n, 68).reshape(1, 68).astype(np.float32) + 1,
        "frontmask2_idx": (front + 1).astype(np.float32).reshape(-1, 1),
        "skinmask": (rng.random((1, n)) < 0.4).astype(np.float32),
    }
    d |= override
    path = folder / "BFM_model_front.mat"
    scipy.io.savemat(path, {k: v for k, v in d.items() if v is not None})
    return path, d, front, tri[in_front]


def write_h5(path, rng, k_id=4, k_exp=3, k_tex=2, cw=False, color_255=False, legacy=False, expression=True,
             cells_dtype=np.int32, scale=1.0):
    """statismo/scalismo-faces MoMo layout: (3N,) means, (3N, K) bases, variances, (3, N) points,
    0-based (3, F) cells; geometry in mm times ``scale``. The returned truth is in mm."""
    h5py = pytest.importorskip("h5py")
    mean_mm, tri = face_grid()
    n = len(mean_mm)
    cells = tri[:, [0, 2, 1]] if cw else tri
    truth = {"tri": tri}

    def pca(g, mean, k, var_scale):
        u = orthonormal(3 * n, k, rng)
        var = rng.uniform(0.2, 1.0, size=k) * var_scale
        m = g.create_group("model")
        m["mean"] = mean.astype(np.float32)
        m["pcaBasis"] = (u * np.sqrt(var) if legacy else u).astype(np.float32)
        m["pcaVariance"] = var.astype(np.float32)
        m["noiseVariance"] = np.array([1e-4], dtype=np.float32)
        if not legacy:
            v = g.create_group("version")
            v["majorVersion"], v["minorVersion"] = 0, 9
        info = g.create_group("modelinfo")
        info["build-time"] = "Thu Jan 01 00:00:00 CET 2017"
        info["scores"] = np.zeros((1, 1), dtype=np.float32)
        r = g.create_group("representer")
        r.attrs["name"] = f"gravis::Mesh{g.name[1:].capitalize()}Representer"
        r.attrs["datasetType"] = "POLYGON_MESH"
        r["points"] = (mean_mm * scale).T.astype(np.float32)
        r["cells"] = cells.T.astype(cells_dtype)
        return u.astype(np.float32).astype(np.float64), var.astype(np.float32).astype(np.float64)

    with h5py.File(path, "w") as f:
        if not legacy:
            f["version/majorVersion"], f["version/minorVersion"] = 0, 9
        for part in ("MorphableModel", "MorphableModel.shape", "MorphableModel.color"):
            f[f"catalog/{part}/modelType"] = "POLYGON_MESH_MODEL"
            f[f"catalog/{part}/modelPath"] = "/"
        truth["mean_s"] = mean_mm.reshape(-1)
        truth["U_s"], truth["var_s"] = pca(f.create_group("shape"), truth["mean_s"] * scale, k_id, 25.0 * scale**2)
        truth["mean_c"] = rng.uniform(0.25, 0.85, size=3 * n) * (255 if color_255 else 1)
        truth["U_c"], truth["var_c"] = pca(f.create_group("color"), truth["mean_c"], k_tex,
                                           (20.0 if color_255 else 0.01) ** 2)
        f["color/representer/colorspace"] = np.array(b"RGB\0", dtype="S4")  # NUL-terminated, as statismo
        if expression:
            truth["mean_e"] = rng.normal(size=3 * n) * 0.5
            truth["U_e"], truth["var_e"] = pca(f.create_group("expression"), truth["mean_e"] * scale, k_exp,
                                               4.0 * scale**2)
        f["metadata/landmarks/json"] = '[{"id": "center.nose.tip", "coordinates": [0, 0, 110]}]'
    for k in ("mean_s", "mean_c", "mean_e"):
        if k in truth:
            s = scale if k != "mean_c" else 1.0
            truth[k] = (truth[k] * s).astype(np.float32).astype(np.float64) / s
    for k in ("var_s", "var_e"):
        if k in truth:
            truth[k] = truth[k] / scale**2
    return path, truth


def write_lsfm(path, rng, k=4, scale=1.0, cw=False, n_mean=None, extra=None):
    """LSFM ``.mat`` as ``export_lsfm_model`` writes it: 1-D arrays (savemat makes them (1, n)),
    ``components`` (3N, K) unit eigenvectors, ``eigenvalues`` variances, 0-based ``trilist``."""
    mean_mm, tri = face_grid()
    n = len(mean_mm)
    comps = orthonormal(3 * n, k, rng)
    var = rng.uniform(10, 400, size=k) * scale**2
    var_cum = np.cumsum(var) / var.sum() * 0.9971
    d = {
        "components": comps, "eigenvalues": var, "cumulative_explained_variance": var_cum,
        "mean": (mean_mm * scale).reshape(-1), "n_training_samples": 8402,
        "trilist": (tri[:, [0, 2, 1]] if cw else tri).astype(np.uint32),
    }
    d |= extra or {}
    scipy.io.savemat(path, d)
    return path, {"mean": mean_mm, "tri": tri, "comps": comps, "var": var}


# ------------------------------------------------------------------------------------ BFM 2009
def test_bfm2009_values(tmp_path):
    rng = np.random.default_rng(1)
    path, d = write_bfm2009(tmp_path, rng)
    mean_mm, tri = face_grid()
    m = load_bfm2009(path)
    n = len(mean_mm)
    assert (m.n_vertices, m.n_faces, m.n_id, m.n_exp, m.n_tex) == (n, len(tri), 4, 0, 3)
    close(m.mean, mean_mm)  # micrometres -> mm
    assert torch.equal(m.triangles, torch.as_tensor(tri))  # 1-based CW -> 0-based CCW
    assert outward_fraction(m.mean.numpy(), m.triangles.numpy()) == 1.0
    # interleaved columns -> (K, V, 3): vertex v, axis c of component k is row 3v + c
    pc = d["shapePC"]
    for k, v, c in [(0, 0, 0), (1, 7, 2), (3, n - 1, 1), (2, 20, 1)]:
        assert m.id_basis[k, v, c].item() == pytest.approx(pc[3 * v + c, k], abs=1e-7)
    close(m.id_std, d["shapeEV"].ravel() / 1000, atol=1e-6)  # std devs in um -> mm
    # coef2object: shape = shapeMU + shapePC (coef * shapeEV), in um; compare in mm
    alpha = rng.normal(size=(2, 4))
    ref = (d["shapeMU"].astype(np.float64).T + (alpha * d["shapeEV"].ravel()) @ pc.T.astype(np.float64)) / 1000
    close(m(t(alpha)), ref.reshape(2, n, 3), atol=1e-3)
    # albedo: [0, 255] -> [0, 1]
    gamma = rng.normal(size=(1, 3)) * 0.5
    ref_tex = (d["texMU"].T + (gamma * d["texEV"].ravel()) @ d["texPC"].T) / 255
    close(m.albedo_mean, d["texMU"].reshape(n, 3) / 255, atol=1e-6)
    close(m.albedo(t(gamma)), np.clip(ref_tex, 0, 1).reshape(1, n, 3), atol=1e-5)
    # segbin columns nose/eyes/mouth/rest
    for j, name in enumerate(["nose", "eyes", "mouth", "rest"]):
        assert m.vertex_set(name).tolist() == np.flatnonzero(d["segbin"][:, j]).tolist()
    assert not m.has_landmarks  # the 68-point list only applies to the real 53,490 vertices
    with pytest.raises(ValueError, match="expression"):
        m(exp_coeffs=torch.zeros(1, 1))


def test_bfm2009_with_exp_pca_crops_to_trimmed_topology(tmp_path):
    rng = np.random.default_rng(2)
    path, d = write_bfm2009(tmp_path, rng)
    mean_mm, tri = face_grid()
    n = len(mean_mm)
    trim = np.setdiff1d(np.arange(n), [0, 1, 5, 34])  # "neck/ear" vertices removed
    exp_path, comps, std = write_exp(tmp_path, rng, trim, k_exp=3)
    m = load_bfm2009(path, exp_path=exp_path)  # aux files found next to Exp_Pca.bin
    ne = len(trim)
    assert (m.n_vertices, m.n_id, m.n_exp, m.n_tex) == (ne, 4, 3, 3)
    close(m.mean, mean_mm[trim])
    # triangles: those with all three corners kept, renumbered in trimIndex order, still CCW
    new = np.full(n, -1)
    new[trim] = np.arange(ne)
    kept = new[tri][(new[tri] >= 0).all(1)]
    assert torch.equal(m.triangles, torch.as_tensor(kept))
    assert m.n_faces < len(tri)
    # Exp_Pca is component-major and interleaved; expMU is discarded; std in um -> mm
    close(m.exp_basis, comps.reshape(3, ne, 3), atol=1e-7)
    close(m.exp_std, std / 1000, atol=1e-6)
    alpha, beta = rng.normal(size=(1, 4)), rng.normal(size=(1, 3))
    shape_um = d["shapeMU"].astype(np.float64).T + (alpha * d["shapeEV"].ravel()) @ d["shapePC"].T
    ref = shape_um.reshape(n, 3)[trim] / 1000 + ((beta * std) @ comps).reshape(ne, 3) / 1000
    close(m(t(alpha), t(beta))[0], ref, atol=1e-3)
    close(m.albedo_mean, d["texMU"].reshape(n, 3)[trim] / 255, atol=1e-6)
    seg_nose = np.flatnonzero(d["segbin"][:, 0])
    assert m.vertex_set("nose").tolist() == new[seg_nose][new[seg_nose] >= 0].tolist()


def test_bfm2009_folder_and_explicit_aux_paths(tmp_path):
    rng = np.random.default_rng(3)
    path, _ = write_bfm2009(tmp_path, rng)
    trim = np.arange(2, 35)
    aux = tmp_path / "aux"
    aux.mkdir()
    exp_path, comps, std = write_exp(aux, rng, trim)
    # explicit paths
    m = load_bfm2009(path, exp_path=exp_path, std_exp_path=aux / "std_exp.txt",
                     trim_index_path=aux / "BFM_exp_idx.mat")
    assert m.n_vertices == len(trim) and m.n_exp == 3
    # a folder with 01_MorphableModel.mat + Exp_Pca.bin + aux files gets the expression model
    for f in aux.iterdir():
        f.rename(tmp_path / f.name)
    m2 = load_model(tmp_path)
    assert m2.n_exp == 3 and torch.equal(m2.exp_basis, m.exp_basis) and torch.equal(m2.mean, m.mean)
    # a file path means exactly that file: identity + albedo only
    assert load_model(path).n_exp == 0


def test_exp_pca_big_endian_is_recognised(tmp_path):
    rng = np.random.default_rng(4)
    path, _ = write_bfm2009(tmp_path, rng)
    exp_path, comps, _ = write_exp(tmp_path, rng, np.arange(35), endian=">")
    m = load_bfm2009(path, exp_path=exp_path)
    close(m.exp_basis, comps.reshape(3, 35, 3), atol=1e-7)


@pytest.mark.parametrize("change", ["extra_bytes", "truncated", "other_topology", "empty"])
def test_exp_pca_size_mismatch(tmp_path, change):
    rng = np.random.default_rng(5)
    path, _ = write_bfm2009(tmp_path, rng)
    trim = np.arange(35)
    n_exp = 30 if change == "other_topology" else None
    exp_path, _, _ = write_exp(tmp_path, rng, trim, n_exp=n_exp)
    raw = exp_path.read_bytes()
    exp_path.write_bytes({"extra_bytes": raw + b"\0\0\0\0", "truncated": raw[:-10], "other_topology": raw,
                          "empty": b""}[change])
    with pytest.raises(ModelFormatError, match="Exp_Pca.bin"):
        load_bfm2009(path, exp_path=exp_path)


def test_exp_pca_missing_aux_files(tmp_path):
    rng = np.random.default_rng(6)
    path, _ = write_bfm2009(tmp_path, rng)
    exp_path, _, _ = write_exp(tmp_path, rng, np.arange(35))
    (tmp_path / "BFM_exp_idx.mat").unlink()
    with pytest.raises(ModelFormatError, match="BFM_exp_idx.mat"):
        load_bfm2009(path, exp_path=exp_path)
    write_exp(tmp_path, rng, np.arange(35))
    (tmp_path / "std_exp.txt").write_text("1 2")  # K = 3 components but 2 std devs
    with pytest.raises(ModelFormatError, match="2 std devs"):
        load_bfm2009(path, exp_path=exp_path)


def _consistent_trim_index():
    """A sorted 53,215-of-53,490 trimIndex (0-based) that maps the 53,215 landmark list onto the
    53,490 one, as the real BFM_exp_idx.mat does: it exists only if the two published lists are
    consistent (same order, drop counts non-decreasing), which this also checks."""
    l2, l3 = np.asarray(LANDMARKS_BFM_53215), np.asarray(LANDMARKS_BFM2009)
    order = np.argsort(l3)
    l2, l3 = l2[order], l3[order]
    drops = l3 - l2  # vertices removed before each landmark
    assert (np.diff(l2) >= 0).all() and (np.diff(drops) >= 0).all() and drops[-1] <= 275
    removed, prev_l3, prev_drop = [], -1, 0
    for a, b in zip(l3, drops):
        need = b - prev_drop
        candidates = [v for v in range(prev_l3 + 1, a) if v not in set(l3)]
        assert len(candidates) >= need
        removed += candidates[:need]
        prev_l3, prev_drop = a, b
    tail = [v for v in range(53489, l3[-1], -1)][: 275 - len(removed)]
    keep = np.setdiff1d(np.arange(53490), removed + tail)
    assert keep.size == 53215
    return keep


def test_bfm2009_landmarks_on_real_sized_topology(tmp_path):
    """Real vertex counts (K = 1): the 53,490 landmark list, and after trimming the 53,215 list."""
    rng = np.random.default_rng(7)
    n = 53490
    mean = rng.uniform(-80, 80, size=(n, 3))
    tri = np.array([[0, 1, 2], [3, 4, 5]])
    path, _ = write_bfm2009(tmp_path, rng, k_id=1, mean_mm=mean, tri=tri, tex=False)
    m = load_bfm2009(path)
    assert m.n_vertices == n and m.n_tex == 0 and not m.has_albedo
    assert m.landmarks.tolist() == list(LANDMARKS_BFM2009)
    trim = _consistent_trim_index()
    exp_path, _, _ = write_exp(tmp_path, rng, trim, k_exp=1)
    m2 = load_bfm2009(path, exp_path=exp_path)
    assert m2.n_vertices == 53215
    assert m2.landmarks.tolist() == list(LANDMARKS_BFM_53215)
    close(m2.mean[m2.landmarks], m.mean[m.landmarks])


def test_bfm2009_bad_files(tmp_path):
    rng = np.random.default_rng(8)
    path, d = write_bfm2009(tmp_path, rng, shapePC=None)
    with pytest.raises(ModelFormatError, match="missing variable 'shapePC'"):
        load_bfm2009(path)
    path, d = write_bfm2009(tmp_path, rng, shapePC=np.zeros((10, 4), np.float32))
    with pytest.raises(ModelFormatError, match=r"'shapePC' must have shape \(105, K\); found \(10, 4\)"):
        load_bfm2009(path)
    path, d = write_bfm2009(tmp_path, rng, shapeEV=np.ones((3, 1), np.float32))
    with pytest.raises(ModelFormatError, match="shapeEV"):
        load_bfm2009(path)
    _, tri = face_grid()
    path, d = write_bfm2009(tmp_path, rng, tl=tri.astype(np.float64))  # 0-based: a 0 appears
    with pytest.raises(ModelFormatError, match=r"'tl' \(1-based\) must lie in \[1, 35\]"):
        load_bfm2009(path)
    path, d = write_bfm2009(tmp_path, rng, tl=tri.astype(np.float64) + 1.5)
    with pytest.raises(ModelFormatError, match="integer"):
        load_bfm2009(path)
    path, d = write_bfm2009(tmp_path, rng, texPC=None)
    with pytest.raises(ModelFormatError, match="texPC"):
        load_bfm2009(path)
    path, d = write_bfm2009(tmp_path, rng, segbin=np.ones((35, 3)))
    with pytest.raises(ModelFormatError, match="segbin"):
        load_bfm2009(path)


# ------------------------------------------------------------------------------------ Deep3DFaceRecon
def test_deep3d_values(tmp_path):
    rng = np.random.default_rng(10)
    path, d, front, front_tri = write_deep3d(tmp_path, rng)
    mean_mm, tri = face_grid()
    n = len(mean_mm)
    m = load_deep3d(path)
    assert (m.n_vertices, m.n_faces, m.n_id, m.n_exp, m.n_tex) == (n, len(tri), 5, 4, 3)
    # decimetres -> mm, recentred on the vertex centroid (the on-disk offset disappears)
    close(m.mean, mean_mm - mean_mm.mean(0), atol=1e-3)
    assert torch.equal(m.triangles, torch.as_tensor(tri))  # 1-based float32, already CCW
    assert torch.equal(m.id_std, torch.ones(5)) and torch.equal(m.exp_std, torch.ones(4))
    for k, v, c in [(0, 0, 0), (4, 12, 2), (2, n - 1, 1)]:
        assert m.id_basis[k, v, c].item() == pytest.approx(100 * d["idBase"][3 * v + c, k], rel=1e-6)
    # Deep3DFaceRecon's compute_shape/compute_texture, in dm and [0, 255]
    alpha, beta, gamma = rng.normal(size=(2, 5)), rng.normal(size=(2, 4)), rng.normal(size=(2, 3)) * 0.3
    ms = d["meanshape"].astype(np.float64).reshape(-1, 3)
    ref = (alpha @ d["idBase"].T + beta @ d["exBase"].T).reshape(2, n, 3) + (ms - ms.mean(0))
    close(m(t(alpha), t(beta)), ref * 100, atol=1e-3)
    ref_tex = (d["meantex"] + gamma @ d["texBase"].T).reshape(2, n, 3) / 255
    close(m.albedo(t(gamma)), np.clip(ref_tex, 0, 1), atol=1e-5)
    assert m.landmarks.tolist() == (d["keypoints"].ravel().astype(int) - 1).tolist()
    assert m.vertex_set("front").tolist() == front.tolist()
    assert m.vertex_set("skin").tolist() == np.flatnonzero(d["skinmask"]).tolist()
    # the front region holds exactly the tri_mask2 triangles, mapped to global ids
    sub = m.subset("front")
    glob = front[sub.triangles.numpy()]
    assert sorted(map(tuple, glob)) == sorted(map(tuple, front_tri))


def test_deep3d_tri_mask2_read_as_global_is_rejected(tmp_path):
    rng = np.random.default_rng(11)
    _, tri = face_grid()
    _, _, front, front_tri = write_deep3d(tmp_path, rng)
    # a file whose tri_mask2 holds global ids (the upstream renderer's reading) is inconsistent
    path, *_ = write_deep3d(tmp_path, rng, tri_mask2=(front_tri + 1).astype(np.float32))
    with pytest.raises(ModelFormatError, match="tri_mask2"):
        load_deep3d(path)


def test_deep3d_bad_files(tmp_path):
    rng = np.random.default_rng(12)
    path, *_ = write_deep3d(tmp_path, rng, idBase=None)
    with pytest.raises(ModelFormatError, match="missing variable 'idBase'"):
        load_deep3d(path)
    path, *_ = write_deep3d(tmp_path, rng, keypoints=np.ones((1, 5), np.float32))
    with pytest.raises(ModelFormatError, match="'keypoints' must be a vector of 68"):
        load_deep3d(path)
    path, *_ = write_deep3d(tmp_path, rng, exBase=np.zeros((3, 4)))
    with pytest.raises(ModelFormatError, match="exBase"):
        load_deep3d(path)
    path, *_ = write_deep3d(tmp_path, rng, tri=np.zeros((4, 3), np.float32))  # 0 in a 1-based list
    with pytest.raises(ModelFormatError, match="'tri'"):
        load_deep3d(path)


# ------------------------------------------------------------------------------------ BFM 2017/2019
def _check_h5(m, truth, rng):
    n = len(truth["mean_s"]) // 3
    alpha, beta = rng.normal(size=(2, truth["U_s"].shape[1])), rng.normal(size=(2, truth["U_e"].shape[1]))
    ref = (truth["mean_s"] + truth["mean_e"] + (alpha * np.sqrt(truth["var_s"])) @ truth["U_s"].T
           + (beta * np.sqrt(truth["var_e"])) @ truth["U_e"].T)
    close(m(t(alpha), t(beta)), ref.reshape(2, n, 3), atol=2e-3)
    close(m.id_std, np.sqrt(truth["var_s"]), atol=1e-5)  # variances -> std
    close(m.id_basis, truth["U_s"].T.reshape(-1, n, 3), atol=1e-5)
    assert torch.equal(m.triangles, torch.as_tensor(truth["tri"]))


def test_bfm_h5_values(tmp_path):
    rng = np.random.default_rng(20)
    path, truth = write_h5(tmp_path / "model2017-1_bfm_nomouth.h5", rng)
    m = load_bfm_h5(path)
    n = len(truth["mean_s"]) // 3
    assert (m.n_vertices, m.n_id, m.n_exp, m.n_tex) == (n, 4, 3, 2) and not m.has_landmarks
    _check_h5(m, truth, rng)
    # colour already in [0, 1]
    close(m.albedo_mean, truth["mean_c"].reshape(n, 3), atol=1e-6)
    close(m.albedo_std, np.sqrt(truth["var_c"]), atol=1e-6)
    assert torch.equal(load_model(path).mean, m.mean)


def test_bfm_h5_cw_cells_255_colour_uint16(tmp_path):
    rng = np.random.default_rng(21)
    path, truth = write_h5(tmp_path / "m.h5", rng, cw=True, color_255=True, cells_dtype=np.uint16)
    m = load_bfm_h5(path)
    n = len(truth["mean_s"]) // 3
    _check_h5(m, truth, rng)  # clockwise cells flipped by the nose-normal check
    close(m.albedo_mean, truth["mean_c"].reshape(n, 3) / 255, atol=1e-6)
    close(m.albedo_std, np.sqrt(truth["var_c"]) / 255, atol=1e-6)


def test_bfm_h5_legacy_basis_renormalised(tmp_path):
    rng = np.random.default_rng(22)
    path, truth = write_h5(tmp_path / "legacy.h5", rng, legacy=True)  # no version -> statismo 0.8
    _check_h5(load_bfm_h5(path), truth, rng)


def test_bfm_h5_without_expression_in_micrometres(tmp_path):
    rng = np.random.default_rng(23)
    path, truth = write_h5(tmp_path / "model2009-publicmm1-bfm.h5", rng, expression=False, scale=1000.0)
    m = load_bfm_h5(path)
    assert m.n_exp == 0 and "micrometres" in m.name
    close(m.mean.reshape(-1), truth["mean_s"], atol=1e-3)
    close(m.id_std, np.sqrt(truth["var_s"]), atol=1e-4)


def test_bfm_h5_bad_files(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(24)
    path, _ = write_h5(tmp_path / "m.h5", rng)
    with h5py.File(path, "a") as f:
        del f["shape/model/pcaVariance"]
    with pytest.raises(ModelFormatError, match="/shape/model/pcaVariance"):
        load_bfm_h5(path)
    path, _ = write_h5(tmp_path / "m.h5", rng)
    with h5py.File(path, "a") as f:
        del f["shape/representer/cells"]
        f["shape/representer/cells"] = np.zeros((48, 3), np.int32)
    with pytest.raises(ModelFormatError, match=r"coordinate-major \(3, F\)"):
        load_bfm_h5(path)
    path, _ = write_h5(tmp_path / "m.h5", rng)
    with h5py.File(path, "a") as f:
        f["shape/version/minorVersion"][()] = 3
    with pytest.raises(ModelFormatError, match="version 0.3"):
        load_bfm_h5(path)
    raw = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFormatError, match="cut.h5"):
        load_model(tmp_path / "cut.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)  # simulate a missing optional dependency
    with pytest.raises(BackendUnavailableError, match=r"pip install morphface\[bfm\]"):
        load_bfm_h5(path)


# ------------------------------------------------------------------------------------ LSFM
@pytest.mark.parametrize("scale,unit", [(1.0, "mm"), (1000.0, "micrometres")])
@pytest.mark.parametrize("cw", [False, True])
def test_lsfm_values(tmp_path, scale, unit, cw):
    rng = np.random.default_rng(30)
    path, truth = write_lsfm(tmp_path / "all_all_all.mat", rng, scale=scale, cw=cw)
    m = load_lsfm(path)
    n = len(truth["mean"])
    assert (m.n_vertices, m.n_id, m.n_exp, m.n_tex) == (n, 4, 0, 0) and unit in m.name
    close(m.mean, truth["mean"], atol=1e-3)
    assert torch.equal(m.triangles, torch.as_tensor(truth["tri"]))  # CW trilists are flipped
    close(m.id_std, np.sqrt(truth["var"]) / scale, atol=1e-4)  # eigenvalues are variances
    alpha = rng.normal(size=(1, 4))
    ref = (truth["mean"].reshape(-1) * scale + (alpha * np.sqrt(truth["var"])) @ truth["comps"].T) / scale
    close(m(t(alpha))[0], ref.reshape(n, 3), atol=1e-3)
    assert not m.has_landmarks


def test_lsfm_cropped_landmarks(tmp_path):
    rng = np.random.default_rng(31)
    n = NX * NY
    lm = np.asarray(LANDMARKS_BFM_53215)
    others = rng.choice(np.setdiff1d(np.arange(53215), lm), n - 10, replace=False)
    full_ids = np.concatenate([lm[:10], others])  # the first ten landmarks survive the crop
    full_to_crop = np.full(53215, -1)
    full_to_crop[full_ids] = np.arange(n)
    path, _ = write_lsfm(tmp_path / "all_all_all_cropped.mat", rng, extra={
        "map_cropped_to_full": full_ids, "map_full_to_cropped": full_to_crop})
    m = load_lsfm(path)
    assert m.landmarks.tolist() == full_to_crop[lm].tolist()
    assert m.landmarks[:10].tolist() == list(range(10)) and bool((m.landmarks[10:] == -1).all())


def test_lsfm_bad_files(tmp_path):
    rng = np.random.default_rng(32)
    path, _ = write_lsfm(tmp_path / "bad.mat", rng, scale=0.3e-3)  # 0.045 units wide: no known unit
    with pytest.raises(ModelFormatError, match="cannot detect the unit"):
        load_lsfm(path)
    path, _ = write_lsfm(tmp_path / "bad.mat", rng, extra={"eigenvalues": np.ones(3)})
    with pytest.raises(ModelFormatError, match="'eigenvalues' must be a vector of 4"):
        load_lsfm(path)
    path, _ = write_lsfm(tmp_path / "bad.mat", rng, extra={"trilist": np.full((4, 3), 35)})
    with pytest.raises(ModelFormatError, match=r"'trilist' \(0-based\) must lie in \[0, 34\]"):
        load_lsfm(path)


# ------------------------------------------------------------------------------------ dispatch
def test_load_model_native_and_ict(tmp_path):
    from morphface.morphable.default import default_model_path

    ref = load_default_model()
    m = load_model(default_model_path())  # the ICT .npz layout
    for key in ("mean", "triangles", "id_basis", "id_std", "exp_basis", "uv", "landmarks"):
        assert torch.equal(getattr(m, key), getattr(ref, key)), key
    assert m.exp_kind == "blendshape" and m.exp_names == ref.exp_names
    assert m.vertex_set_names == ref.vertex_set_names
    m.save(tmp_path / "ict.safetensors")
    back = load_model(tmp_path / "ict.safetensors")
    assert torch.equal(back.exp_basis, m.exp_basis) and back.exp_names == m.exp_names
    # recognised by content even with an unusual extension
    (tmp_path / "ict.safetensors").rename(tmp_path / "ict.model")
    assert torch.equal(load_model(tmp_path / "ict.model").mean, m.mean)


def test_load_model_recognises_each_mat(tmp_path):
    rng = np.random.default_rng(40)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    bfm, _ = write_bfm2009(tmp_path / "a", rng)
    d3d, *_ = write_deep3d(tmp_path / "b", rng)
    lsfm, _ = write_lsfm(tmp_path / "male_all_all.mat", rng)
    assert load_model(bfm).n_tex == 3 and "2009" in load_model(bfm).name
    assert load_model(d3d).vertex_set_names == ["front", "skin"]
    assert load_model(tmp_path / "b").n_exp == 4  # folder with BFM_model_front.mat
    assert "LSFM" in load_model(lsfm).name


def test_load_model_errors(tmp_path):
    rng = np.random.default_rng(41)
    with pytest.raises(ModelFormatError, match="no such file"):
        load_model(tmp_path / "nothing.mat")
    (tmp_path / "x.xyz").write_bytes(rng.bytes(300))
    with pytest.raises(ModelFormatError, match="x.xyz: unrecognised model format"):
        load_model(tmp_path / "x.xyz")
    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.ones(3)})
    with pytest.raises(ModelFormatError, match=r"other.mat: unrecognised .mat model: found variables \['foo'\]"):
        load_model(tmp_path / "other.mat")
    path, _ = write_bfm2009(tmp_path, rng)
    raw = path.read_bytes()
    (tmp_path / "cut.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFormatError, match="cut.mat"):
        load_model(tmp_path / "cut.mat")
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty.mat"):
        load_model(tmp_path / "empty.mat")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04" + rng.bytes(100))
    with pytest.raises(ModelFormatError, match="garbage.npz"):
        load_model(tmp_path / "garbage.npz")
    np.savez(tmp_path / "partial.npz", mean=np.zeros((3, 3)))
    with pytest.raises(ModelFormatError, match="missing array 'triangles'"):
        load_model(tmp_path / "partial.npz")
    write_exp(tmp_path, rng, np.arange(35))
    with pytest.raises(ModelFormatError, match="not a model on its own"):
        load_model(tmp_path / "Exp_Pca.bin")
    with pytest.raises(ModelFormatError, match="index file"):
        load_model(tmp_path / "BFM_exp_idx.mat")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ModelFormatError, match="no known model file"):
        load_model(empty)
    write_deep3d(tmp_path, rng)  # now 01_MorphableModel.mat and BFM_model_front.mat side by side
    with pytest.raises(ModelFormatError, match="several model files"):
        load_model(tmp_path)


# ------------------------------------------------------------------------------------ CLI
def _write_any(kind, folder, rng):
    if kind == "bfm2009+exp":
        write_bfm2009(folder, rng)
        write_exp(folder, rng, np.arange(3, 35))
        return folder
    if kind == "deep3d":
        return write_deep3d(folder, rng)[0]
    if kind == "h5":
        return write_h5(folder / "model2019_bfm.h5", rng)[0]
    if kind == "lsfm":
        return write_lsfm(folder / "all_all_all.mat", rng)[0]
    from morphface.morphable.default import default_model_path

    return default_model_path()


@pytest.mark.parametrize("kind", ["bfm2009+exp", "deep3d", "h5", "lsfm", "ict"])
def test_convert_model_cli(tmp_path, kind, monkeypatch, capsys):
    import morphface.cli as cli

    if kind == "h5":
        pytest.importorskip("h5py")
    # only this subcommand, so the test does not depend on other subcommands' modules
    monkeypatch.setattr(cli, "SUBCOMMANDS", ["convert_model"])
    src = _write_any(kind, tmp_path, np.random.default_rng(50))
    dst = tmp_path / "out" / "model.safetensors"
    assert cli.main(["convert-model", str(src), str(dst)]) == 0
    assert "wrote" in capsys.readouterr().out
    ref, back = load_model(src), MorphableModel.load(dst)
    for key, buf in ref.named_buffers():
        assert torch.equal(buf, getattr(back, key)), key
    assert back.vertex_set_names == ref.vertex_set_names and back.name == ref.name


def test_convert_model_cli_reports_bad_input(tmp_path, monkeypatch, capsys):
    import morphface.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ["convert_model"])
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50)
    assert cli.main(["convert-model", str(tmp_path / "bad.mat"), str(tmp_path / "o.safetensors")]) == 1
    assert "bad.mat" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_orientation_check_on_random_order():
    """The winding check flips CW meshes and keeps CCW ones, whatever the triangle order."""
    mean, tri = face_grid(9, 11)
    perm = np.random.default_rng(60).permutation(len(tri))
    out, flipped = L._orient_outward(mean, tri[perm])
    assert not flipped and np.array_equal(out, tri[perm])
    out, flipped = L._orient_outward(mean, tri[perm][:, [1, 0, 2]])
    assert flipped and outward_fraction(mean, out) == 1.0
