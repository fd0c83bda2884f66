"""Backends agree with the torch reference; registry behaviour; optional GPU/pytorch3d backends."""

from __future__ import annotations

import math

import pytest
import torch

from morphface.camera import PerspectiveCamera, WeakPerspectiveCamera, euler_to_matrix
from morphface.errors import BackendUnavailableError
from morphface.render import available_backends, interpolate, ncc_code, rasterize
from morphface.render.backends import get_backend, resolve_backend

POSES_DEG = [(0.0, 0.0, 0.0), (10.0, -35.0, 5.0), (-15.0, 60.0, -10.0), (5.0, 90.0, 0.0)]


def _default_model_ndc(model, perspective: bool, size=(96, 80)):
    angles = torch.tensor([[math.radians(a) for a in p] for p in POSES_DEG])
    R = euler_to_matrix(angles)
    verts = model(torch.randn(len(POSES_DEG), 10) * 0.5)
    if perspective:
        cam = PerspectiveCamera(image_size=size, focal=torch.tensor([size[1] * 3.0]), R=R,
                                t=torch.tensor([[0.0, -10.0, -800.0]]))
    else:
        cam = WeakPerspectiveCamera(image_size=size, scale=torch.tensor([size[1] / 220.0]), R=R)
    return cam.to_ndc(verts)


def _agreement(a, b, attrs, faces):
    covered = a.mask | b.mask
    same = (a.pix_to_face == b.pix_to_face) & covered
    frac = float(same.sum()) / max(int(covered.sum()), 1)
    ia, ib = interpolate(attrs, faces, a), interpolate(attrs, faces, b)
    err = float((ia - ib).abs()[same].max()) if bool(same.any()) else 0.0
    return frac, err


@pytest.mark.parametrize("perspective", [True, False])
def test_cpu_and_torch_backends_agree_on_the_default_model(default_model, perspective):
    ndc = _default_model_ndc(default_model, perspective)
    faces = default_model.triangles
    ref = rasterize(ndc, faces, (96, 80), perspective=perspective, backend="torch")
    out = rasterize(ndc, faces, (96, 80), perspective=perspective, backend="cpu")
    assert int(ref.mask.sum()) > 4 * 1500
    frac, err = _agreement(ref, out, ncc_code(default_model)[None], faces)
    assert frac >= 0.995
    assert err <= 1e-4
    # Identical arithmetic: in practice they agree exactly.
    assert torch.equal(ref.pix_to_face, out.pix_to_face)


def test_torch_backend_chunking_does_not_change_the_result(default_model):
    from morphface.render.backends.torchref import TorchBackend

    ndc = _default_model_ndc(default_model, True, size=(40, 40))[:2]
    faces = default_model.triangles
    ref = rasterize(ndc, faces, (40, 40), backend="torch")
    small = TorchBackend(chunk_pixels=257)
    from morphface.render.backends import RasterInputs
    from morphface.render.rasterizer import face_validity

    valid = face_validity(ndc, faces, True, 1.0, False)
    ids = small.visibility(RasterInputs(ndc, faces, valid, (40, 40), True))
    assert torch.equal(ids, ref.pix_to_face)


def test_registry_and_auto_selection():
    names = available_backends()
    assert "cpu" in names and "torch" in names
    assert resolve_backend("auto", torch.device("cpu")).name == "cpu"
    assert get_backend("torch") is get_backend("torch")
    with pytest.raises(ValueError, match="unknown"):
        get_backend("vulkan")
    if "pytorch3d" not in names:
        with pytest.raises(BackendUnavailableError, match="pytorch3d"):
            resolve_backend("pytorch3d", torch.device("cpu"))


def test_pack_depth_id_orders_like_depth_then_id():
    from morphface.render.backends.torchref import pack_depth_id

    depth = torch.tensor([-3.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 0.5, 7.0, 1e30])
    ids = torch.tensor([4, 2, 9, 1, 3, 8, 5, 0, 6])
    keys = pack_depth_id(depth, ids)
    order = sorted(range(len(ids)), key=lambda k: (float(depth[k]), int(ids[k])))
    assert keys.argsort().tolist() == order
    assert int(keys[6] & 0xFFFFFFFF) == 5


@pytest.mark.skipif("pytorch3d" not in available_backends(), reason="pytorch3d is not importable here")
def test_pytorch3d_backend_agrees_with_torch(default_model):
    ndc = _default_model_ndc(default_model, True, size=(64, 96))
    faces = default_model.triangles
    ref = rasterize(ndc, faces, (64, 96), backend="torch")
    out = rasterize(ndc, faces, (64, 96), backend="pytorch3d")
    frac, err = _agreement(ref, out, ncc_code(default_model)[None], faces)
    assert frac >= 0.99 and err <= 1e-4


@pytest.mark.parametrize("name", ["torch", "auto"])
def test_backends_on_the_device_match_cpu_ids_and_gradients(default_model, device, name):
    """``--device``: the torch backend and the device's default (``auto``: nvdiffrast on CUDA when importable)
    give the CPU backend's triangle ids, and the same gradients through the interpolated attributes."""
    ndc = _default_model_ndc(default_model, True).float()
    faces = default_model.triangles
    code = ncc_code(default_model)[None].float()
    w = torch.rand(ndc.shape[0], 96, 80, 3, generator=torch.Generator().manual_seed(0))

    def run(verts, dev, backend):
        verts = verts.detach().to(dev).requires_grad_(True)
        fr = rasterize(verts, faces.to(dev), (96, 80), backend=backend)
        (interpolate(code.to(dev), faces.to(dev), fr) * w.to(dev)).sum().backward()
        return type(fr)(*(t.detach().cpu() for t in fr)), verts.grad.cpu()

    ref, g_ref = run(ndc, "cpu", "cpu")
    out, g_out = run(ndc, device, name)
    frac, err = _agreement(ref, out, code, faces)
    assert frac >= 0.995 and err <= 1e-4
    # a few silhouette pixels may differ between backends: compare the gradients as directions
    cos = torch.nn.functional.cosine_similarity(g_ref.flatten(), g_out.flatten(), dim=0)
    assert float(cos) > 0.99


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif("nvdiffrast" not in available_backends(), reason="nvdiffrast is not importable here")
@pytest.mark.parametrize("perspective", [True, False])
def test_nvdiffrast_backend_agrees_with_torch(default_model, perspective):
    ndc = _default_model_ndc(default_model, perspective).cuda()
    faces = default_model.triangles.cuda()
    ref = rasterize(ndc, faces, (96, 80), perspective=perspective, backend="torch")
    out = rasterize(ndc, faces, (96, 80), perspective=perspective, backend="nvdiffrast")
    frac, err = _agreement(ref, out, ncc_code(default_model).cuda()[None], faces)
    assert frac >= 0.99 and err <= 1e-4
    # Invalid (too near) triangles are removed through the unshared-corner path.
    near = ndc.clone()
    near[:, :100, 2] = 0.5
    ref2 = rasterize(near, faces, (96, 80), backend="torch")
    out2 = rasterize(near, faces, (96, 80), backend="nvdiffrast")
    assert _agreement(ref2, out2, ncc_code(default_model).cuda()[None], faces)[0] >= 0.99


def test_pytorch3d_ndc_conversion_hits_its_pixel_centres():
    """Our pixel centres land on PyTorch3D's (its formula transcribed), also for non-square images."""
    from morphface.render.backends.pytorch3d_backend import Pytorch3dBackend

    def p3d_centre(i, S1, S2):  # pytorch3d's pix_to_non_square_ndc
        rng = 2.0 * (S1 / S2 if S1 > S2 else 1.0)
        return -rng / 2 + (rng * i + rng / 2) / S1

    for H, W in [(6, 10), (10, 6), (7, 7)]:
        jj, ii = torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(H, dtype=torch.float64),
                                indexing="xy")
        ours = torch.stack([(2 * jj + 1) / W - 1, (2 * ii + 1) / H - 1, torch.full_like(jj, 5.0)], -1)
        p3d = Pytorch3dBackend.to_pytorch3d_ndc(ours.reshape(1, -1, 3), (H, W), perspective=True).view(H, W, 3)
        # PyTorch3D samples pixel (i, j) at x = f(W - 1 - j, W, H), y = f(H - 1 - i, H, W).
        torch.testing.assert_close(p3d[..., 0].double(), p3d_centre(W - 1 - jj, W, H))
        torch.testing.assert_close(p3d[..., 1].double(), p3d_centre(H - 1 - ii, H, W))


def test_nvdiffrast_clip_space_keeps_ndc_and_depth_order():
    from morphface.render.backends.nvdiffrast_backend import NvdiffrastBackend

    ndc = torch.rand(2, 50, 3) * 2 - 1
    ndc[..., 2] = torch.rand(2, 50) * 300 + 800
    faces = torch.randint(0, 50, (30, 3))
    valid = torch.ones(2, 30, dtype=torch.bool)
    for perspective in (True, False):
        depth = ndc[..., 2] if perspective else ndc[..., 2] - 1000  # orthographic depths may be negative
        v = torch.cat([ndc[..., :2], depth[..., None]], -1)
        clip = NvdiffrastBackend.to_clip(v, valid, faces, perspective)
        w = clip[..., 3]
        torch.testing.assert_close(clip[..., :2] / w[..., None], v[..., :2])
        z = clip[..., 2] / w
        used = torch.zeros(2, 50, dtype=torch.bool)
        used[:, faces.unique()] = True
        assert bool((z[used].abs() < 1).all())
        for b in range(2):
            order = depth[b][used[b]].argsort()
            assert bool((z[b][used[b]][order].diff() > 0).all())  # strictly monotone in depth
