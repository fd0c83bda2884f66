import math

import pytest
import torch

from morphface.camera import (
    PerspectiveCamera,
    WeakPerspectiveCamera,
    axis_angle_to_matrix,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    ndc_to_pixels,
    pixels_to_ndc,
)


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def test_euler_matches_elementary_rotations():
    p, y, r = 0.3, -0.7, 1.1
    R = euler_to_matrix(torch.tensor([p, y, r], dtype=torch.float64))
    torch.testing.assert_close(R, _rz(r) @ _ry(y) @ _rx(p))


def test_euler_sign_conventions():
    nose = torch.tensor([0.0, 0.0, 1.0])
    # yaw > 0: nose turns toward +x (the subject's left, the image's right)
    assert (euler_to_matrix(torch.tensor([0.0, 0.3, 0.0])) @ nose)[0] > 0
    # pitch > 0: nose goes down (looks down)
    assert (euler_to_matrix(torch.tensor([0.3, 0.0, 0.0])) @ nose)[1] < 0
    # roll > 0: +x rotates toward +y
    assert (euler_to_matrix(torch.tensor([0.0, 0.0, 0.3])) @ torch.tensor([1.0, 0, 0]))[1] > 0


def test_euler_round_trip_batched():
    g = torch.Generator().manual_seed(1)
    angles = (torch.rand(500, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([3.0, 2.9, 6.0],
                                                                                        dtype=torch.float64)
    R = euler_to_matrix(angles)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(500, dtype=torch.float64))
    torch.testing.assert_close(matrix_to_euler(R), angles)


def test_euler_gimbal_lock_gives_same_matrix():
    angles = torch.tensor([[0.4, math.pi / 2, 0.2], [0.1, -math.pi / 2, -0.3]], dtype=torch.float64)
    R = euler_to_matrix(angles)
    torch.testing.assert_close(euler_to_matrix(matrix_to_euler(R)), R, atol=1e-6, rtol=0)


def test_axis_angle_round_trip_and_agrees_with_euler():
    aa = torch.tensor([[0.0, 0.5, 0.0], [0.2, -0.1, 0.3]], dtype=torch.float64)
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(matrix_to_axis_angle(R), aa)
    torch.testing.assert_close(R[0], euler_to_matrix(torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)))


def test_perspective_projection_hand_computed():
    cam = PerspectiveCamera(image_size=(200, 300), focal=torch.tensor([500.0]),
                            principal_point=torch.tensor([[150.0, 100.0]]), t=torch.tensor([[0.0, 0.0, -1000.0]]))
    pts = torch.tensor([[[0.0, 0.0, 0.0], [10.0, 20.0, 0.0], [0.0, 0.0, 500.0]]])
    pix, depth = cam.project(pts)
    # origin -> principal point; (10, 20, 0) -> u = 150 + 500*10/1000, v = 100 - 500*20/1000
    torch.testing.assert_close(pix[0], torch.tensor([[150.0, 100.0], [155.0, 90.0], [150.0, 100.0]]))
    torch.testing.assert_close(depth[0], torch.tensor([1000.0, 1000.0, 500.0]))
    ndc = cam.to_ndc(pts)
    torch.testing.assert_close(ndc[0, 1], torch.tensor([2 * 155 / 300 - 1, 2 * 90 / 200 - 1, 1000.0]))


def test_perspective_with_rotation_and_view_dirs():
    R = euler_to_matrix(torch.tensor([[0.0, 0.5, 0.0]]))
    cam = PerspectiveCamera(image_size=(64, 64), R=R, t=torch.tensor([[5.0, -3.0, -800.0]]))
    p = torch.tensor([[[10.0, 20.0, 30.0]]])
    Xc = (R[0] @ p[0, 0]) + torch.tensor([5.0, -3.0, -800.0])
    pix, depth = cam.project(p)
    torch.testing.assert_close(depth[0, 0], -Xc[2])
    torch.testing.assert_close(pix[0, 0, 0], 32 + 64 * Xc[0] / -Xc[2])
    # the direction toward the camera centre, mapped into the camera frame, points at the origin
    d = cam.view_directions(p)[0, 0]
    torch.testing.assert_close(R[0] @ d, torch.nn.functional.normalize(-Xc, dim=0))


def test_weak_perspective_projection():
    cam = WeakPerspectiveCamera(image_size=(100, 100), scale=torch.tensor([2.0]),
                                translation=torch.tensor([[40.0, 60.0]]))
    pix, depth = cam.project(torch.tensor([[[1.0, 2.0, 3.0]]]))
    torch.testing.assert_close(pix[0, 0], torch.tensor([42.0, 56.0]))
    torch.testing.assert_close(depth[0, 0], torch.tensor(-3.0))
    torch.testing.assert_close(cam.view_directions(torch.zeros(1, 2, 3))[0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_pixel_ndc_round_trip():
    pix = torch.tensor([[0.5, 0.5], [99.5, 49.5]])
    ndc = pixels_to_ndc(pix, (50, 100))
    torch.testing.assert_close(ndc[0], torch.tensor([-1 + 1 / 100, -1 + 1 / 50]))
    torch.testing.assert_close(ndc_to_pixels(ndc, (50, 100)), pix)


def test_projection_gradcheck():
    pts = torch.randn(2, 5, 3, dtype=torch.float64) * 50
    pts.requires_grad_(True)
    angles = torch.tensor([[0.1, 0.2, 0.3], [-0.2, 0.4, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 2.0, -700.0], [0.0, 0.0, -900.0]], dtype=torch.float64, requires_grad=True)
    f = torch.tensor([600.0, 800.0], dtype=torch.float64, requires_grad=True)

    def persp(p, a, tt, ff):
        cam = PerspectiveCamera(image_size=(256, 256), focal=ff, R=euler_to_matrix(a), t=tt)
        pix, d = cam.project(p)
        return pix, d

    assert torch.autograd.gradcheck(persp, (pts, angles, t, f))

    s = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True)
    tr = torch.tensor([[10.0, 20.0], [5.0, 5.0]], dtype=torch.float64, requires_grad=True)

    def weak(p, a, ss, trr):
        return WeakPerspectiveCamera(image_size=(64, 64), scale=ss, translation=trr, R=euler_to_matrix(a)).project(p)

    assert torch.autograd.gradcheck(weak, (pts, angles, s, tr))
    assert torch.autograd.gradcheck(lambda a: matrix_to_euler(euler_to_matrix(a)), (angles,))


def test_camera_batch_broadcast_index_and_to():
    cam = PerspectiveCamera(image_size=(32, 32), t=torch.tensor([[0.0, 0.0, -500.0], [0.0, 0.0, -600.0]]))
    assert cam.batch_size == 2
    pix, depth = cam.project(torch.zeros(2, 4, 3))
    assert pix.shape == (2, 4, 2) and depth[1, 0] == 600
    one = cam[1]
    assert one.t.shape == (1, 3) and one.focal.shape == (1,)
    assert cam.to(torch.float64).t.dtype == torch.float64


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        euler_to_matrix(torch.zeros(4, 2))
    cam = PerspectiveCamera(image_size=(8, 8))
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        cam.project(torch.zeros(5, 3))
