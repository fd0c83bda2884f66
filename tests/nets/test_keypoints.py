"""The 3D-keypoint core: shapes, dtypes, devices, eq. 3.1, Jacobians = rotations, identity warps, losses."""

import math

import pytest
import torch

from morphface.camera import euler_to_matrix
from morphface.errors import InputShapeError
from morphface.nets.keypoints import (
    AppearanceConfig,
    AppearanceFeatureExtractor,
    AUDeformationConfig,
    AUDeformationEstimator,
    AudioDeformationConfig,
    AudioDeformationEstimator,
    CanonicalKeypointConfig,
    CanonicalKeypointDetector,
    HeadPoseConfig,
    HeadPoseEstimator,
    MotionFieldConfig,
    MotionFieldEstimator,
    OcclusionAwareGenerator,
    OcclusionAwareGeneratorConfig,
    affine_warp,
    coordinate_grid,
    deformation_prior_loss,
    equivariance_loss,
    head_pose_loss,
    keypoint_prior_loss,
    part_segmentation_loss,
    pose_to_rotation,
    random_affine,
    rotation_to_pose,
    sparse_motions,
    transform_keypoints,
    warp_image_by_volume_flow,
    warp_volume,
)

K = 6  # keypoints in the tests
S = 64
DEPTH = 4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _nets():
    torch.manual_seed(0)
    app = AppearanceFeatureExtractor(AppearanceConfig(base_channels=8, feature_channels=4, depth=DEPTH,
                                                      num_res_blocks=1))
    det = CanonicalKeypointDetector(CanonicalKeypointConfig(num_keypoints=K, base_channels=8, max_channels=32,
                                                            num_blocks=2, depth=DEPTH, volume_channels=4))
    pose = HeadPoseEstimator(HeadPoseConfig(base_channels=8, num_stages=3, max_channels=32))
    mot = MotionFieldEstimator(MotionFieldConfig(num_keypoints=K, feature_channels=4, depth=DEPTH,
                                                 compressed_channels=2, base_channels=8, max_channels=32,
                                                 num_blocks=2))
    gen = OcclusionAwareGenerator(OcclusionAwareGeneratorConfig(feature_channels=4, depth=DEPTH, base_channels=8,
                                                                num_res_blocks=1))
    return app, det, pose, mot, gen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_core_networks_chain_with_documented_shapes(device, dtype):
    app, det, pose, mot, gen = (n.to(device, dtype) for n in _nets())
    img = torch.rand(2, 3, S, S, device=device, dtype=dtype) * 2 - 1
    vol = app(img)
    assert vol.shape == (2, 4, DEPTH, S // 4, S // 4) and vol.dtype == dtype and vol.device.type == device
    kc = det(img)
    assert kc.shape == (2, K, 3) and kc.dtype == dtype and bool((kc.abs() < 1).all())
    hp = pose(img)
    assert hp.angles.shape == (2, 3) and hp.rotation.shape == (2, 3, 3) and hp.translation.shape == (2, 3)
    assert hp.expression is None and hp.angles.dtype == dtype
    assert bool((hp.angles.abs() < math.radians(99)).all())
    kp = transform_keypoints(kc, hp.rotation, hp.translation)
    field = mot(vol, kp, kp.flip(0), hp.rotation, hp.rotation.flip(0))
    assert field.flow.shape == (2, DEPTH, S // 4, S // 4, 3) and field.occlusion.shape == (2, 1, S // 4, S // 4)
    assert field.mask.shape == (2, K + 1, DEPTH, S // 4, S // 4)
    assert torch.allclose(field.mask.sum(1), torch.ones((), dtype=dtype, device=device))
    out = gen(vol, field.flow, field.occlusion)
    assert out.image.shape == (2, 3, S, S) and out.image.dtype == dtype and out.image.device.type == device
    assert bool((out.image.abs() <= 1).all())


def test_gradients_reach_every_parameter():
    app, det, pose, mot, gen = _nets()
    img = torch.rand(2, 3, S, S) * 2 - 1
    vol, kc, hp = app(img), det(img), pose(img)
    kp_s = transform_keypoints(kc, hp.rotation, hp.translation)
    hp_d = pose(img.flip(-1))
    kp_d = transform_keypoints(kc, hp_d.rotation, hp_d.translation)
    field = mot(vol, kp_s, kp_d, hp.rotation, hp_d.rotation)
    gen(vol, field.flow, field.occlusion).image.square().mean().backward()
    for net in (app, det, pose, mot, gen):
        missing = [n for n, p in net.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())]
        assert not missing, (type(net).__name__, missing)


def test_pose_to_rotation_is_the_library_rotation_in_keypoint_axes():
    angles = torch.tensor([[0.2, -0.4, 0.1], [0.0, 0.5, 0.0]], dtype=torch.float64)
    R = pose_to_rotation(angles)
    C = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(R, C @ euler_to_matrix(angles) @ C)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(rotation_to_pose(R), angles, atol=1e-12)
    # yaw > 0 turns the nose (toward the camera: keypoint z < 0) toward the image's right (x > 0)
    nose = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    assert float((R[1] @ nose)[0]) > 0.4


def test_keypoints_follow_eq_3_1_exactly():
    g = torch.Generator().manual_seed(0)
    kc, d_au, d_audio = (torch.randn(3, K, 3, generator=g, dtype=torch.float64) for _ in range(3))
    R = pose_to_rotation(torch.randn(3, 3, generator=g, dtype=torch.float64))
    t = torch.randn(3, 3, generator=g, dtype=torch.float64)
    got = transform_keypoints(kc, R, t, d_au, d_audio)
    want = torch.stack([torch.stack([R[b] @ (kc[b, i] + d_au[b, i] + d_audio[b, i]) + t[b] for i in range(K)])
                        for b in range(3)])
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.equal(transform_keypoints(kc, R, t, None), transform_keypoints(kc, R, t))
    with pytest.raises(InputShapeError, match="deformation 0"):
        transform_keypoints(kc, R, t, d_au[:, :2])


def test_sparse_motion_jacobian_is_the_relative_rotation():
    g = torch.Generator().manual_seed(1)
    grid = coordinate_grid(3, 4, 5, dtype=torch.float64)
    kp_s, kp_d = torch.randn(2, K, 3, generator=g, dtype=torch.float64), torch.randn(2, K, 3, generator=g,
                                                                                     dtype=torch.float64)
    R_s = pose_to_rotation(torch.randn(2, 3, generator=g, dtype=torch.float64))
    R_d = pose_to_rotation(torch.randn(2, 3, generator=g, dtype=torch.float64))
    m = sparse_motions(grid, kp_s, kp_d, R_s, R_d)
    assert m.shape == (2, K + 1, 3, 4, 5, 3)
    assert torch.equal(m[:, 0], grid.expand(2, *grid.shape))  # background: identity
    # the motion of keypoint i maps K_d,i onto K_s,i and is affine with linear part (Jacobian) R_s R_d^T
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    single = sparse_motions(z.reshape(7, 1, 1, 3), kp_s, kp_d, R_s, R_d)[:, 1:, :, 0, 0]  # (2, K, 7, 3)
    jac = torch.func.jacrev(lambda p: sparse_motions(p.reshape(1, 1, 1, 3), kp_s, kp_d, R_s, R_d)[:, 1:, 0, 0, 0])(
        z[0])  # (2, K, 3, 3)
    assert torch.allclose(jac, (R_s @ R_d.transpose(-1, -2))[:, None].expand(2, K, 3, 3), atol=1e-12)
    at_kp = sparse_motions(kp_d[0].reshape(K, 1, 1, 3), kp_s, kp_d, R_s, R_d)  # grid = batch 0's K_d
    assert torch.allclose(at_kp[0, 1:, :, 0, 0][torch.arange(K), torch.arange(K)], kp_s[0], atol=1e-12)
    assert single.shape == (2, K, 7, 3)


def test_zero_keypoint_motion_gives_an_identity_warp():
    app, det, _, mot, _ = _nets()
    img = torch.rand(2, 3, S, S) * 2 - 1
    vol, kp = app(img), det(img)
    R = pose_to_rotation(torch.tensor([[0.1, 0.3, -0.2], [0.0, -0.2, 0.1]]))
    kp = transform_keypoints(kp, R, torch.zeros(2, 3))
    field = mot(vol, kp, kp, R, R)
    grid = coordinate_grid(DEPTH, S // 4, S // 4)
    assert torch.allclose(field.flow, grid.expand_as(field.flow), atol=1e-6)
    assert torch.allclose(warp_volume(vol, field.flow), vol, atol=1e-5)
    warped = warp_image_by_volume_flow(img, field.flow)  # warp-only picture: the image itself, away from the rim
    assert warped.shape == img.shape and torch.allclose(warped[..., 2:-2, 2:-2], img[..., 2:-2, 2:-2], atol=1e-5)


def test_au_deformation_per_keypoint_two_layer_gelu():
    torch.manual_seed(0)
    net = AUDeformationEstimator(AUDeformationConfig(num_keypoints=K, hidden=8))
    aus = torch.rand(3, 17) * 5
    out = net(aus)
    assert out.shape == (3, K, 3)
    mlp = net.mlp
    i = 4  # keypoint i's own two linear layers with a GELU between, on AU / 5
    want = torch.nn.functional.gelu((aus / 5) @ mlp.w1[i] + mlp.b1[i]) @ mlp.w2[i] + mlp.b2[i]
    assert torch.allclose(out[:, i], want, atol=1e-6)
    assert float(net(torch.zeros(1, 17)).detach().abs().max()) < 0.05  # starts near zero deformation
    with pytest.raises(InputShapeError, match=r"aus must have shape \(B, 17\)"):
        net(torch.rand(3, 16))
    assert net.double()(aus.double()).dtype == torch.float64


def test_audio_deformation_attends_over_eight_frames():
    torch.manual_seed(0)
    net = AudioDeformationEstimator(AudioDeformationConfig(num_keypoints=K))
    win = torch.randn(2, 8, 108)
    out = net(win)
    assert out.shape == (2, K, 3)
    assert torch.allclose(net(win.reshape(2, 8, 4, 27)), out)
    # every one of the 8 frames influences the output
    win.requires_grad_(True)
    net(win).sum().backward()
    assert bool((win.grad.abs().sum(dim=(0, 2)) > 0).all())
    with pytest.raises(InputShapeError, match=r"\(B, 8, 108\)"):
        net(torch.randn(2, 5, 108))


def test_equivariance_loss_is_zero_for_an_exact_transform():
    g = torch.Generator().manual_seed(0)
    theta = random_affine(3, generator=g, dtype=torch.float64)
    kp = torch.rand(3, K, 3, generator=g, dtype=torch.float64) - 0.5
    # keypoints of the transformed image: T^-1 applied to the originals (x'(p) = x(T p))
    A, b = theta[:, :, :2], theta[:, :, 2]
    xy_t = (kp[..., :2] - b[:, None]) @ torch.linalg.inv(A).transpose(-1, -2)
    kp_t = torch.cat([xy_t, kp[..., 2:]], -1)
    assert float(equivariance_loss(kp, kp_t, theta)) < 1e-12
    assert float(equivariance_loss(kp, kp, theta)) > 1e-3
    # and the warp moves image content the way the keypoints move: a blob at T^-1(p) in x' comes from p in x
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 65)[:-1] + 1 / 64, torch.linspace(-1, 1, 65)[:-1] + 1 / 64,
                            indexing="ij")
    centre = torch.tensor([0.2, -0.1])
    blob = torch.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 0.01)[None, None].expand(3, 1, -1, -1)
    warped = affine_warp(blob, theta.float())
    w = warped[:, 0] / warped[:, 0].sum(dim=(-2, -1), keepdim=True)
    moved = torch.stack([(w * xx).sum(dim=(-2, -1)), (w * yy).sum(dim=(-2, -1))], -1)  # (3, 2)
    back = (moved[:, None] @ theta[:, :, :2].float().transpose(-1, -2))[:, 0] + theta[:, :, 2].float()
    assert torch.allclose(back, centre.expand(3, 2), atol=0.02)


def test_keypoint_prior_head_pose_deformation_and_segmentation_losses():
    spread = torch.tensor([[[0.0, 0.0, 0.33], [0.5, 0.0, 0.33], [0.0, 0.5, 0.33]]])
    assert float(keypoint_prior_loss(spread)) == 0.0
    bunched = torch.zeros(1, 3, 3)
    assert float(keypoint_prior_loss(bunched)) == pytest.approx(0.1 + 0.33)
    a = torch.tensor([[0.1, 0.2, 0.3]])
    assert float(head_pose_loss(a, a)) == 0.0 and float(head_pose_loss(a, a + 0.3)) == pytest.approx(0.3)
    d = torch.full((1, 3, 3), 0.2)
    assert float(deformation_prior_loss(d, -d)) == 0.0 and float(deformation_prior_loss(d, None)) == pytest.approx(0.2)
    target = torch.zeros(1, 4, 8, 8)
    gen = target.clone()
    gen[:, 0] = 1.0  # eyes wrong everywhere (upper)
    assert float(part_segmentation_loss(gen, target, lower_weight=3.0)) == pytest.approx(0.5)
    gen = target.clone()
    gen[:, 3] = 1.0  # mouth wrong everywhere (lower)
    assert float(part_segmentation_loss(gen, target, lower_weight=3.0)) == pytest.approx(1.5)
    with pytest.raises(InputShapeError):
        part_segmentation_loss(gen[:, :3], target[:, :3])


def test_bad_images_raise_named_errors():
    app, det, pose, _, _ = _nets()
    with pytest.raises(InputShapeError, match="multiples of 16"):
        det(torch.rand(1, 3, 40, 40))
    with pytest.raises(InputShapeError, match=r"\(B, 3, H, W\)"):
        app(torch.rand(1, 1, 64, 64))
    with pytest.raises(InputShapeError, match="multiples of 16"):
        pose(torch.rand(1, 3, 24, 24))


def test_blended_generator_starts_near_the_warped_source():
    torch.manual_seed(0)
    app, _, _, mot, _ = _nets()
    gen = OcclusionAwareGenerator(OcclusionAwareGeneratorConfig(feature_channels=4, depth=DEPTH, base_channels=8,
                                                                num_res_blocks=1, blend_warped=True))
    img = torch.rand(2, 3, S, S) * 2 - 1
    vol = app(img)
    grid = coordinate_grid(DEPTH, S // 4, S // 4).expand(2, -1, -1, -1, -1)
    out = gen(vol, grid, torch.ones(2, 1, S // 4, S // 4), img)
    assert out.image.shape == (2, 3, S, S) and out.warped_image.shape == (2, 3, S, S)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert torch.allclose(out.warped_image[inner], img[inner], atol=1e-5)
    # sigmoid(2) = 0.88 of the warped source at initialisation
    assert float((out.image - out.warped_image).detach().abs().mean()) < 0.25 * float(img.abs().mean())
    with pytest.raises(InputShapeError, match="blend_warped needs the source"):
        gen(vol, grid, torch.ones(2, 1, S // 4, S // 4))
