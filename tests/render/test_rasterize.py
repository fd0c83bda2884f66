"""rasterize: visibility, fill rule, barycentrics and depth against closed forms, edge cases."""

from __future__ import annotations

import pytest
import torch

from morphface.camera import PerspectiveCamera, WeakPerspectiveCamera
from morphface.errors import BackendUnavailableError
from morphface.render import Fragments, rasterize

from .conftest import grid_mesh


def pix_ndc(i: int, j: int, H: int, W: int) -> tuple[float, float]:
    return (2 * j + 1) / W - 1, (2 * i + 1) / H - 1


def screen_bary(tri_xy: torch.Tensor, p: tuple[float, float]) -> torch.Tensor:
    """Screen-space barycentrics of point p in a 2D triangle, by solving the 2x2 system."""
    a, b, c = tri_xy.double()
    M = torch.stack([b - a, c - a], dim=1)
    l12 = torch.linalg.solve(M, torch.tensor(p, dtype=torch.float64) - a)
    return torch.cat([1 - l12.sum().view(1), l12])


def test_two_overlapping_triangles_nearest_wins(backend):
    H, W = 16, 20
    verts = torch.tensor([[[-0.9, -0.9, 20.0], [0.9, -0.9, 20.0], [-0.9, 0.9, 20.0],   # far, big
                           [-0.5, -0.6, 10.0], [0.6, -0.4, 10.0], [-0.3, 0.7, 10.0]]],  # near, inside
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for order in (faces, faces.flip(0)):  # the result must not depend on drawing order
        fr = rasterize(verts, order, (H, W), perspective=True, backend=backend)
        assert isinstance(fr, Fragments)
        near_id = int((order == 3).any(1).nonzero())
        for i, j in [(6, 8), (8, 7), (4, 6)]:
            assert int(fr.pix_to_face[0, i, j]) == near_id
            expect = screen_bary(verts[0, 3:, :2], pix_ndc(i, j, H, W))  # constant depth: screen = persp
            corner_order = order[near_id] - 3
            torch.testing.assert_close(fr.bary[0, i, j], expect[corner_order], atol=1e-12, rtol=0)
            assert float(fr.depth[0, i, j]) == pytest.approx(10.0, abs=1e-12)
        # Covered by the far triangle only.
        i, j = 13, 2
        assert int(fr.pix_to_face[0, i, j]) == 1 - near_id
        far_order = order[1 - near_id]
        torch.testing.assert_close(fr.bary[0, i, j], screen_bary(verts[0, :3, :2], pix_ndc(i, j, H, W))[far_order],
                                   atol=1e-12, rtol=0)
        # Background.
        assert int(fr.pix_to_face[0, 15, 19]) == -1 and not bool(fr.mask[0, 15, 19])
        assert float(fr.depth[0, 15, 19]) == 0 and bool((fr.bary[0, 15, 19] == 0).all())


def test_perspective_correct_barycentrics_and_depth_match_ray_plane_intersection(backend):
    """A tilted plane seen by a pinhole camera: depth = exact ray/plane hit, bary = exact 3D weights."""
    H, W = 24, 32
    cam = PerspectiveCamera(image_size=(H, W), focal=torch.tensor([30.0], dtype=torch.float64),
                            t=torch.tensor([[0.0, 0.0, -100.0]], dtype=torch.float64))
    world = torch.tensor([[[-60.0, -40.0, -30.0], [70.0, -30.0, 40.0], [-20.0, 50.0, 10.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    fr = rasterize(cam.to_ndc(world), faces, (H, W), perspective=True, backend=backend)
    assert int(fr.mask.sum()) > 50
    P = cam.world_to_view(world)[0]  # camera-frame corners
    n = torch.linalg.cross(P[1] - P[0], P[2] - P[0])
    f, (cx, cy) = 30.0, (W / 2, H / 2)
    ii, jj = fr.mask[0].nonzero(as_tuple=True)
    for i, j in zip(ii.tolist(), jj.tolist()):
        d = torch.tensor([(j + 0.5 - cx) / f, -(i + 0.5 - cy) / f, -1.0], dtype=torch.float64)  # ray, depth 1
        t = (n @ P[0]) / (n @ d)  # hit point t * d, at depth t
        assert float(fr.depth[0, i, j]) == pytest.approx(float(t), rel=1e-9)
        X = t * d
        l12 = torch.linalg.lstsq(torch.stack([P[1] - P[0], P[2] - P[0]], 1), (X - P[0])[:, None]).solution[:, 0]
        expect = torch.cat([1 - l12.sum().view(1), l12])
        torch.testing.assert_close(fr.bary[0, i, j], expect, atol=1e-9, rtol=0)


def test_orthographic_depth_is_linear_and_may_be_negative(backend):
    H, W = 10, 10
    verts = torch.tensor([[[-1.0, -1.0, -5.0], [1.0, -1.0, 5.0], [-1.0, 1.0, -5.0], [1.0, 1.0, 5.0]]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 3], [0, 3, 2]])
    fr = rasterize(verts, faces, (H, W), perspective=False, backend=backend)
    assert bool(fr.mask.all())
    x = torch.tensor([pix_ndc(0, j, H, W)[0] for j in range(W)], dtype=torch.float64)
    torch.testing.assert_close(fr.depth[0], (5.0 * x).expand(H, W), atol=1e-12, rtol=0)


def test_shared_edges_and_vertices_are_covered_exactly_once(backend):
    """Every pixel centre of a grid lies on edges/vertices; each must belong to exactly one triangle."""
    H = W = 8
    # A 9x9 grid in NDC with spacing 0.25 puts vertices on pixel corners; offset it by half a pixel
    # so that vertices and edges fall exactly on pixel centres.
    verts, faces = grid_mesh(n=9, size=1.0)
    verts = verts.clone()
    verts[..., :2] += 1.0 / W
    cover = torch.zeros(1, H, W, dtype=torch.int64)
    for f in range(faces.shape[0]):
        cover += rasterize(verts, faces[f:f + 1], (H, W), perspective=False, backend=backend).mask.long()
    whole = rasterize(verts, faces, (H, W), perspective=False, backend=backend)
    # Pixel centres strictly inside the grid's extent [-0.875, 1.125] x [...]: all but none here,
    # so every pixel is covered, once.
    assert int(cover.max()) == 1
    assert torch.equal(cover.bool(), whole.mask)
    assert bool(whole.mask.all())
    # Also with the opposite winding for half of the triangles.
    mixed = faces.clone()
    mixed[::2] = mixed[::2].flip(1)
    cover2 = sum(rasterize(verts, mixed[f:f + 1], (H, W), perspective=False, backend=backend).mask.long()
                 for f in range(mixed.shape[0]))
    assert torch.equal(cover2, cover)


def test_grid_mesh_has_no_cracks_at_random_offsets(backend):
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        verts, faces = grid_mesh(n=13, size=0.8)
        verts = verts + torch.cat([torch.rand(1, 1, 2, generator=g, dtype=torch.float64) * 0.1,
                                   torch.zeros(1, 1, 1, dtype=torch.float64)], -1)
        fr = rasterize(verts, faces, (37, 41), perspective=False, backend=backend)
        H, W = 37, 41
        x0, y0 = float(verts[0, :, 0].min()), float(verts[0, :, 1].min())
        x1, y1 = float(verts[0, :, 0].max()), float(verts[0, :, 1].max())
        cols = torch.tensor([pix_ndc(0, j, H, W)[0] for j in range(W)])
        rows = torch.tensor([pix_ndc(i, 0, H, W)[1] for i in range(H)])
        inside = ((rows > y0) & (rows < y1))[:, None] & ((cols > x0) & (cols < x1))[None, :]
        assert torch.equal(fr.mask[0], inside)


def test_triangle_partly_behind_the_camera_is_dropped(backend):
    verts = torch.tensor([[[-0.5, -0.5, 10.0], [0.5, -0.5, 10.0], [0.0, 0.5, 10.0],
                           [-0.9, -0.9, 5.0], [0.9, -0.9, -5.0], [0.0, 0.9, 5.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fr = rasterize(verts, faces, (12, 12), perspective=True, backend=backend, znear=1.0)
    assert set(fr.pix_to_face.unique().tolist()) == {-1, 0}
    assert all(torch.isfinite(t).all() for t in (fr.bary, fr.depth))
    # A vertex in front of the camera but nearer than znear also drops its triangle.
    in_front = verts.clone()
    in_front[..., 2] = in_front[..., 2].abs()  # the second triangle's nearest vertex is at depth 5
    fr2 = rasterize(in_front, faces, (12, 12), perspective=True, backend=backend, znear=6.0)
    assert set(fr2.pix_to_face.unique().tolist()) == {-1, 0}


def test_empty_and_offscreen_meshes(backend):
    empty = rasterize(torch.zeros(2, 0, 3), torch.zeros(0, 3, dtype=torch.int64), (5, 7), backend=backend)
    assert empty.pix_to_face.shape == (2, 5, 7) and bool((empty.pix_to_face == -1).all())
    assert empty.bary.shape == (2, 5, 7, 3) and empty.depth.shape == (2, 5, 7) and not bool(empty.mask.any())
    no_faces = rasterize(torch.rand(1, 4, 3) + 2, torch.zeros(0, 3, dtype=torch.int64), (5, 7), backend=backend)
    assert not bool(no_faces.mask.any())
    verts, faces = grid_mesh(n=5, size=0.5)
    for shift in ([3.0, 0.0], [0.0, -3.0], [-1.6, 1.6]):
        moved = verts.clone()
        moved[..., :2] += torch.tensor(shift, dtype=torch.float64)
        fr = rasterize(moved, faces, (9, 9), backend=backend)
        assert not bool(fr.mask.any()) and bool((fr.depth == 0).all())


def test_far_away_vertices_do_not_overflow(backend):
    """A huge triangle covering the image from far outside it, and one entirely far away."""
    verts = torch.tensor([[[-1e20, -1e20, 5.0], [1e20, -1e20, 5.0], [0.0, 1e20, 5.0],
                           [3e30, 3e30, 1.0], [4e30, 3e30, 1.0], [3e30, 4e30, 1.0]]], dtype=torch.float64)
    fr = rasterize(verts, torch.tensor([[0, 1, 2], [3, 4, 5]]), (6, 6), perspective=False, backend=backend)
    assert bool((fr.pix_to_face == 0).all())
    assert bool(torch.isfinite(fr.bary).all()) and torch.allclose(fr.depth, torch.tensor(5.0, dtype=torch.float64))


def test_degenerate_and_non_finite_triangles_never_win(backend):
    verts = torch.tensor([[[-0.8, -0.8, 10.0], [0.8, -0.8, 10.0], [0.0, 0.8, 10.0],
                           [-0.9, 0.0, 1.0], [0.9, 0.0, 1.0], [0.0, 0.0, 1.0],        # zero area, nearer
                           [-0.9, -0.9, 2.0], [0.9, -0.9, 2.0], [0.0, 0.0, 2.0],      # same point repeated
                           [float("nan"), 0.0, 2.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [8, 8, 8], [9, 6, 7]])
    for persp in (True, False):
        fr = rasterize(verts, faces, (16, 16), perspective=persp, backend=backend)
        assert set(fr.pix_to_face.unique().tolist()) == {-1, 0}
        assert all(torch.isfinite(t).all() for t in (fr.bary, fr.depth))


def test_backface_culling_uses_the_ccw_outside_convention(backend):
    """A world triangle CCW seen from the camera is kept; its mirror winding is culled."""
    cam = PerspectiveCamera(image_size=(16, 16), focal=torch.tensor([16.0]))
    world = torch.tensor([[[-200.0, -200.0, 0.0], [200.0, -200.0, 0.0], [0.0, 200.0, 0.0]]])  # normal +z
    front, back = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    ndc = cam.to_ndc(world)
    assert rasterize(ndc, front, (16, 16), backend=backend, cull_backfaces=True).mask.any()
    assert not rasterize(ndc, back, (16, 16), backend=backend, cull_backfaces=True).mask.any()
    assert rasterize(ndc, back, (16, 16), backend=backend).mask.any()  # no culling by default


def test_weak_perspective_camera_pixels(backend):
    """Pixel (i, j) covered iff its centre lies in the projected square (pixel-unit geometry)."""
    cam = WeakPerspectiveCamera(image_size=(10, 12), scale=torch.tensor([1.0]), translation=torch.tensor([[6.0, 5.0]]))
    world = torch.tensor([[[-2.2, -1.2, 0.0], [3.2, -1.2, 0.0], [3.2, 2.7, 0.0], [-2.2, 2.7, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fr = rasterize(cam.to_ndc(world), faces, cam.image_size, perspective=False, backend=backend)
    # u in [3.8, 9.2] -> columns 4..8; v = 5 - y in [2.3, 6.2] -> rows 2..5.
    expect = torch.zeros(10, 12, dtype=torch.bool)
    expect[2:6, 4:9] = True
    assert torch.equal(fr.mask[0], expect)


def test_dtype_device_and_batch_follow_the_input(backend):
    verts, faces = grid_mesh(n=3, size=0.7)
    v32 = torch.cat([verts, verts * torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)]).float()
    fr = rasterize(v32, faces.int(), (8, 8), backend=backend)
    assert fr.bary.dtype == torch.float32 and fr.depth.dtype == torch.float32 and fr.pix_to_face.dtype == torch.int64
    assert fr.mask.shape == (2, 8, 8) and int(fr.mask[0].sum()) > int(fr.mask[1].sum())


def test_bad_inputs_raise_with_shapes():
    verts, faces = grid_mesh(n=3)
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        rasterize(verts[0], faces, (4, 4))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        rasterize(verts, faces[:, :2], (4, 4))
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        rasterize(verts, faces + 5, (4, 4))
    with pytest.raises(ValueError, match="integer"):
        rasterize(verts, faces.double(), (4, 4))
    with pytest.raises(ValueError, match="image_size"):
        rasterize(verts, faces, (0, 4))
    with pytest.raises(ValueError, match="znear"):
        rasterize(verts, faces, (4, 4), znear=0.0)
    with pytest.raises(ValueError, match="unknown rasterisation backend"):
        rasterize(verts, faces, (4, 4), backend="opengl")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            rasterize(verts, faces, (4, 4), backend="nvdiffrast")
