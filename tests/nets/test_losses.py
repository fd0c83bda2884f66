import pytest
import torch
import torch.nn.functional as F
from torch import nn

from morphface.errors import CheckpointError, WeightsNotFoundError
from morphface.nets.losses import (
    VGG19,
    VGG19_FILENAME,
    VGG19_RELU_INDEX,
    SegmentationLoss,
    VGGPerceptualLoss,
    default_vgg19_path,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    l1_loss,
    load_vgg19_weights,
    uv_consistency_loss,
)

# torchvision.models.vgg19().features: (index, in, out) of every conv, written out independently
TORCHVISION_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
                     (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512),
                     (25, 512, 512), (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]
TORCHVISION_POOLS = [4, 9, 18, 27, 36]


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch):
    """Point torch hub at an empty folder and make any download attempt fail the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def forbidden(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)
    return tmp_path


def _torchvision_like_state(vgg: VGG19) -> dict:
    state = {f"features.{i}.{k}": torch.randn_like(v)
             for i, _, _ in TORCHVISION_CONVS for k, v in (("weight", vgg.features[i].weight),
                                                          ("bias", vgg.features[i].bias))}
    # the real file also has the classifier (tiny stand-ins here: they must be ignored)
    state.update({"classifier.0.weight": torch.zeros(2, 3), "classifier.6.bias": torch.zeros(2)})
    return state


def test_vgg19_layout_matches_torchvision():
    vgg = VGG19()
    assert len(vgg.features) == 37
    for i, cin, cout in TORCHVISION_CONVS:
        conv = vgg.features[i]
        assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (cout, cin, 3, 3) and conv.padding == (1, 1)
        assert isinstance(vgg.features[i + 1], nn.ReLU)
    assert all(isinstance(vgg.features[i], nn.MaxPool2d) for i in TORCHVISION_POOLS)
    keys = set(vgg.state_dict())
    assert keys == {f"features.{i}.{k}" for i, _, _ in TORCHVISION_CONVS for k in ("weight", "bias")}
    assert [VGG19_RELU_INDEX[n] for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")] == [1, 6, 11, 20, 29]


def test_torchvision_state_dict_loads_strictly_by_path(tmp_path, no_hub_cache):
    torch.manual_seed(0)
    state = _torchvision_like_state(VGG19())
    path = tmp_path / VGG19_FILENAME
    torch.save(state, path)
    loss = VGGPerceptualLoss(weights=path)
    for i, _, _ in TORCHVISION_CONVS:
        assert torch.equal(loss.vgg.features[i].weight, state[f"features.{i}.weight"])
        assert torch.equal(loss.vgg.features[i].bias, state[f"features.{i}.bias"])
    assert not any(p.requires_grad for p in loss.parameters())


def test_weights_found_in_the_torch_hub_cache(no_hub_cache):
    torch.manual_seed(1)
    state = _torchvision_like_state(VGG19())
    path = default_vgg19_path()
    assert str(no_hub_cache) in str(path)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    loss = VGGPerceptualLoss()
    assert torch.equal(loss.vgg.features[34].weight, state["features.34.weight"])


def test_refuses_without_weights_and_never_downloads(no_hub_cache):
    with pytest.raises(WeightsNotFoundError) as info:
        VGGPerceptualLoss()
    msg = str(info.value)
    assert VGG19_FILENAME in msg and str(default_vgg19_path()) in msg and "pretrained=False" in msg
    with pytest.raises(WeightsNotFoundError, match="not found"):
        VGGPerceptualLoss(weights=no_hub_cache / "missing.pth")


def test_bad_weight_files_raise_checkpoint_error(tmp_path):
    vgg = VGG19()
    state = {k: v.clone() for k, v in vgg.state_dict().items()}
    del state["features.34.bias"]
    torch.save(state, tmp_path / "missing_key.pth")
    with pytest.raises(CheckpointError, match="features.34.bias"):
        load_vgg19_weights(vgg, tmp_path / "missing_key.pth")
    state = {k: v.clone() for k, v in vgg.state_dict().items()}
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_vgg19_weights(vgg, tmp_path / "bad_shape.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_vgg19_weights(vgg, tmp_path / "garbage.pth")


def test_perceptual_loss_values():
    torch.manual_seed(2)
    loss = VGGPerceptualLoss(pretrained=False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, y)) > 0
    unit = VGGPerceptualLoss(pretrained=False, input_range="[0,1]")
    unit.load_state_dict(loss.state_dict())
    torch.testing.assert_close(unit((x + 1) / 2, (y + 1) / 2), loss(x, y))


def test_perceptual_loss_matches_a_manual_first_layer():
    torch.manual_seed(3)
    loss = VGGPerceptualLoss(pretrained=False, layers=("relu1_1",), layer_weights=(2.0,))
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv = loss.vgg.features[0]

    def relu11(img):
        return F.relu(F.conv2d((img - mean) / std, conv.weight, conv.bias, padding=1))

    expected = 2.0 * (relu11((x + 1) / 2) - relu11((y + 1) / 2)).abs().mean()
    torch.testing.assert_close(loss(x, y), expected)


def test_perceptual_loss_gradients_go_to_pred_only():
    loss = VGGPerceptualLoss(pretrained=False, layers=("relu1_1", "relu2_1"), layer_weights=(1.0, 1.0))
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and y.grad is None
    with pytest.raises(ValueError, match="weights"):
        VGGPerceptualLoss(pretrained=False, layers=("relu1_1",), layer_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="relu9_9|subset"):
        VGGPerceptualLoss(pretrained=False, layers=("relu9_9",), layer_weights=(1.0,))


def test_hinge_losses_closed_form():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 2.5/3 ; relu(1 + fake) = [0, 1, 2] -> 1
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), torch.tensor(2.5 / 3 + 1.0))
    torch.testing.assert_close(hinge_generator_loss(fake), torch.tensor(1.0 / 3))
    # multi-scale: averaged over scales
    torch.testing.assert_close(hinge_discriminator_loss([real, real], [fake, -fake]),
                               torch.tensor(2.5 / 3 + (1.0 + 4.0 / 3) / 2))
    torch.testing.assert_close(hinge_generator_loss([fake, 2 * fake]), torch.tensor(-(-1 / 3 - 2 / 3) / 2))
    with pytest.raises(ValueError, match="scales"):
        hinge_discriminator_loss([real], [fake, fake])


def test_feature_matching_loss():
    a, b = torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4, requires_grad=True)
    fake = [[a + 1, a + 3], [a]]  # L1 vs b: scale 0 -> (0 + 2) / 2 = 1; scale 1 -> 1
    real = [[b, b], [b]]
    fake[0][0].requires_grad_(True)
    out = feature_matching_loss(fake, real)
    torch.testing.assert_close(out, torch.tensor(1.0))
    out.backward()
    assert b.grad is None  # real features are detached
    with pytest.raises(ValueError, match="layers"):
        feature_matching_loss([[a]], [[b, b]])


def test_masked_l1_and_uv_consistency():
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2)
    torch.testing.assert_close(l1_loss(pred, target), target.mean())
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(l1_loss(pred, target, mask), target[0, :, 0, 0].mean())
    uv_a = torch.rand(2, 3, 8, 8, requires_grad=True)
    uv_b = torch.rand(2, 3, 8, 8)
    m_a, m_b = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    m_a[..., :5, :] = 1
    m_b[..., 3:, :] = 1
    loss = uv_consistency_loss(uv_a, uv_b, m_a, m_b)
    torch.testing.assert_close(loss, (uv_a - uv_b)[..., 3:5, :].abs().mean())
    # values outside the common valid region do not matter
    uv_c = uv_b.clone()
    uv_c[..., :3, :] = 100
    torch.testing.assert_close(uv_consistency_loss(uv_a, uv_c, m_a, m_b), loss)
    loss.backward()
    assert uv_a.grad[..., :3, :].abs().sum() == 0 and uv_a.grad[..., 3:5, :].abs().sum() > 0
    assert float(uv_consistency_loss(uv_a, uv_b, m_a, 1 - m_a).detach()) == 0.0
    with pytest.raises(ValueError, match=r"mask_b must have shape \(2, 1, 8, 8\)"):
        uv_consistency_loss(uv_a, uv_b, m_a, m_b[..., :4])


def test_segmentation_loss_with_any_parser():
    torch.manual_seed(4)
    parser = nn.Conv2d(3, 5, 1)
    seg = SegmentationLoss(parser)
    out = torch.rand(2, 3, 8, 8, requires_grad=True)
    target = torch.rand(2, 3, 8, 8)
    loss = seg(out, target)
    expected = F.cross_entropy(parser(out), parser(target).argmax(dim=1))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert out.grad is not None and parser.weight.grad is None  # parser frozen
    seg.train()
    assert not parser.training
    # labels = own argmax: every pixel costs -log(max softmax) <= log(K)
    same = seg(target, target)
    assert 0 < float(same) <= torch.log(torch.tensor(5.0)) + 1e-6
    pre = SegmentationLoss(nn.Conv2d(3, 5, 1), preprocess=lambda x: x * 0.5 + 0.5)
    assert torch.isfinite(pre(out, target))


def test_perceptual_loss_under_bf16_autocast():
    torch.manual_seed(5)
    loss = VGGPerceptualLoss(pretrained=False, layers=("relu1_1", "relu2_1", "relu3_1"),
                             layer_weights=(1.0, 1.0, 1.0))
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = torch.rand(1, 3, 32, 32)
    ref = loss(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(x, y)
    assert abs(float(out.detach()) - float(ref.detach())) < 0.05 * float(ref.detach())
    out.backward()
    assert torch.isfinite(x.grad).all()
