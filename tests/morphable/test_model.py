import time

import numpy as np
import pytest
import torch

from morphface import MorphableModel, load_default_model
from morphface.errors import ModelFormatError


def _toy(seed=0, V=10, K_id=4, K_exp=3, K_tex=2):
    g = torch.Generator().manual_seed(seed)
    return MorphableModel(
        mean=torch.randn(V, 3, generator=g), triangles=torch.tensor([[0, 1, 2], [1, 2, 3], [4, 5, 6], [7, 8, 9]]),
        id_basis=torch.randn(K_id, V, 3, generator=g), id_std=torch.rand(K_id, generator=g) + 0.5,
        exp_basis=torch.randn(K_exp, V, 3, generator=g), exp_std=torch.rand(K_exp, generator=g) + 0.5,
        albedo_mean=torch.rand(V, 3, generator=g) * 0.5 + 0.25,
        albedo_basis=torch.randn(K_tex, V, 3, generator=g) * 0.01, albedo_std=torch.ones(K_tex),
        uv=torch.rand(V, 2, generator=g), landmarks=torch.tensor([0, 3, 9, 5]),
        vertex_sets={"front": [1, 2, 3, 9], "chain": torch.tensor([9, 2, 4])}, name="toy",
    )


def test_forward_matches_explicit_sum():
    m = _toy()
    a, b = torch.randn(3, 4), torch.randn(3, 3)
    v = m(a, b)
    ref = m.mean + torch.einsum("bk,kvc->bvc", a * m.id_std, m.id_basis) + torch.einsum(
        "bk,kvc->bvc", b * m.exp_std, m.exp_basis)
    torch.testing.assert_close(v, ref)
    assert v.shape == (3, 10, 3)


def test_short_and_missing_coefficients_mean_zero():
    m = _toy()
    a = torch.randn(2, 2)
    torch.testing.assert_close(m(a), m(torch.cat([a, torch.zeros(2, 2)], 1), torch.zeros(2, 3)))
    torch.testing.assert_close(m()[0], m.mean)
    torch.testing.assert_close(m(exp_coeffs=torch.zeros(1, 1))[0], m.mean)


def test_albedo_in_range_and_formula():
    m = _toy()
    c = torch.randn(5, 2)
    alb = m.albedo(c)
    assert alb.shape == (5, 10, 3) and alb.min() >= 0 and alb.max() <= 1
    ref = m.albedo_mean + torch.einsum("bk,kvc->bvc", c * m.albedo_std, m.albedo_basis)
    torch.testing.assert_close(alb, ref.clamp(0, 1))


def test_differentiable():
    m = _toy().double()
    a = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: m(x, y), (a, b))


@pytest.mark.parametrize("bad, match", [
    (dict(id_coeffs=torch.zeros(2, 5)), "width 5"),
    (dict(id_coeffs=torch.zeros(2, 4), exp_coeffs=torch.zeros(3, 3)), "batch sizes differ"),
    (dict(exp_coeffs=torch.tensor([[float("nan"), 0.0, 0.0]])), "NaN"),
    (dict(id_coeffs=torch.zeros(2, 2, 2)), r"\(B, K\)"),
])
def test_bad_coefficients(bad, match):
    with pytest.raises(ValueError, match=match):
        _toy()(**bad)


def test_bad_construction():
    with pytest.raises(ModelFormatError, match="triangle indices"):
        MorphableModel(mean=torch.zeros(3, 3), triangles=[[0, 1, 3]])
    with pytest.raises(ModelFormatError, match=r"\(K, 3, 3\)"):
        MorphableModel(mean=torch.zeros(3, 3), triangles=[[0, 1, 2]], id_basis=torch.zeros(2, 4, 3))
    with pytest.raises(ModelFormatError, match="std"):
        MorphableModel(mean=torch.zeros(3, 3), triangles=[[0, 1, 2]], id_basis=torch.zeros(2, 3, 3),
                       id_std=torch.ones(3))


def test_subset_reindexes_everything():
    m = _toy()
    keep = torch.tensor([False, True, True, True, True, True, True, False, False, True])
    s = m.subset(keep)
    assert s.n_vertices == 7
    # triangles [1,2,3] and [4,5,6] survive, re-indexed into the 7 kept vertices
    torch.testing.assert_close(s.triangles, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    torch.testing.assert_close(s.mean, m.mean[keep])
    torch.testing.assert_close(s.uv, m.uv[keep])
    torch.testing.assert_close(s.landmarks, torch.tensor([-1, 2, 6, 4]))
    torch.testing.assert_close(s.vertex_set("front"), torch.tensor([0, 1, 2, 6]))
    torch.testing.assert_close(s.vertex_set("chain"), torch.tensor([6, 1, 3]))
    a = torch.randn(1, 4)
    torch.testing.assert_close(s(a), m(a)[:, keep])
    torch.testing.assert_close(s.albedo(torch.ones(1, 2)), m.albedo(torch.ones(1, 2))[:, keep])


def test_subset_per_corner_uv():
    m = _toy()
    uv_table = torch.rand(20, 2)
    uvf = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    m2 = MorphableModel(mean=m.mean, triangles=m.triangles, uv=uv_table, uv_faces=uvf)
    s = m2.subset(torch.tensor([0, 1, 2, 3]))
    torch.testing.assert_close(s.uv_faces, uvf[:2])
    torch.testing.assert_close(s.face_uvs()[0], uv_table)


def test_truncate():
    t = _toy().truncate(n_id=2, n_exp=1)
    assert (t.n_id, t.n_exp, t.n_tex) == (2, 1, 2)


def test_save_load_round_trip(tmp_path):
    m = _toy()
    m.save(tmp_path / "toy.safetensors")
    r = MorphableModel.load(tmp_path / "toy.safetensors")
    for k, v in m.named_buffers():
        torch.testing.assert_close(dict(r.named_buffers())[k], v)
    assert r.vertex_set_names == ["front", "chain"] and r.exp_kind == "pca" and r.name == "toy"


def test_load_errors(tmp_path):
    with pytest.raises(ModelFormatError, match="no such model file"):
        MorphableModel.load(tmp_path / "missing.safetensors")
    p = tmp_path / "trunc.safetensors"
    _toy().save(p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ModelFormatError, match="trunc.safetensors"):
        MorphableModel.load(p)


def test_to_moves_all_buffers():
    m = _toy().to(torch.float64)
    assert m.mean.dtype == torch.float64 and m.triangles.dtype == torch.int64
    assert m.vertex_set("front").dtype == torch.int64


def test_default_model_is_plausible(default_model):
    m = default_model
    assert (m.n_vertices, m.n_faces, m.n_id, m.n_exp) == (9409, 18460, 100, 53)
    assert m.exp_kind == "blendshape" and "jawOpen" in m.exp_names and not m.has_albedo
    lm = m.mean[m.landmarks]
    # iBUG order: point 0 is the subject's right jaw (-x), 16 the left (+x), 30 the nose tip (max z)
    assert lm[0, 0] < 0 < lm[16, 0]
    assert int(torch.argmax(lm[:, 2])) in (30, 31, 32, 33, 34, 35, 29)
    # eyes are ~90 mm apart, face is mm-scaled
    iod = torch.linalg.norm(lm[36] - lm[45])
    assert 80 < iod < 100
    # triangles wind counter-clockwise seen from outside: nose-region normals point to +z
    v = m.mean
    tri = m.triangles[: int(m.vertex_set("narrow_face").numel())]
    n = torch.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]], dim=1)
    centre = v[tri].mean(1)
    front = (centre[:, 1].abs() < 40) & (centre[:, 0].abs() < 30)
    assert (n[front, 2] > 0).float().mean() > 0.95
    # +-3 sigma identity and an expression stay face-sized
    v3 = m(torch.tensor([[3.0, -3.0]]), torch.tensor([[0.0] * m.exp_names.index("jawOpen") + [1.0]]))
    ext = v3[0].max(0).values - v3[0].min(0).values
    assert torch.all(ext > 100) and torch.all(ext < 400)
    # jawOpen moves the chin down
    assert v3[0, m.landmarks[8], 1] < m(torch.tensor([[3.0, -3.0]]))[0, m.landmarks[8], 1] - 5


def test_default_narrow_region(default_model):
    n = load_default_model("narrow")
    assert n.n_vertices == 6706 and n.n_faces == 13120
    assert bool((n.landmarks >= 0).all())
    torch.testing.assert_close(n.mean[n.landmarks], default_model.mean[default_model.landmarks])
    with pytest.raises(ValueError):
        load_default_model("bogus")


def test_default_model_loads_fast():
    t = time.perf_counter()
    load_default_model()
    assert time.perf_counter() - t < 2.0


def test_converted_bfm_sized_model_loads_fast(tmp_path):
    V, F = 35709, 70789
    rng = np.random.default_rng(0)
    m = MorphableModel(mean=rng.normal(size=(V, 3)), triangles=rng.integers(0, V, size=(F, 3)),
                       id_basis=rng.normal(size=(80, V, 3)), exp_basis=rng.normal(size=(64, V, 3)),
                       albedo_mean=rng.random((V, 3)), albedo_basis=rng.normal(size=(80, V, 3)))
    m.save(tmp_path / "bfm.safetensors")
    t = time.perf_counter()
    MorphableModel.load(tmp_path / "bfm.safetensors")
    assert time.perf_counter() - t < 1.0
