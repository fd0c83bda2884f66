"""X2Face's networks: identity sampling at zero flow, multi-source averaging, the identity VGG loader and
the least-squares maps."""

import math

import pytest
import torch
from safetensors.torch import save_file

from morphface.errors import CheckpointError, ImageSizeError, WeightsNotFoundError
from morphface.nets import (
    DrivingVectorMaps,
    IdentityVGG,
    X2FaceGenerator,
    X2FaceGeneratorConfig,
    fit_affine,
    identity_content_loss,
    load_identity_vgg,
)

S = 32


def _generator(**kw) -> X2FaceGenerator:
    return X2FaceGenerator(X2FaceGeneratorConfig(image_size=S, base_channels=8, max_channels=16, depth=5,
                                                 norm="instance", **kw))


def _img(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.1)


def test_zero_flow_heads_sample_their_input_unchanged():
    gen = _generator()
    _randomise(gen)  # every layer random ...
    for head in (gen.embedding.head[-1], gen.driving.head[-1]):  # ... except the flow heads, set to output 0
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    src, drv = _img(2, 3, S, S), _img(2, 3, S, S, seed=1)
    out = gen(src, drv)
    assert out.embedding_flow.abs().max() == 0 and out.driving_flow.abs().max() == 0
    assert torch.allclose(out.embedded, src, atol=1e-6)
    assert torch.allclose(out.image, src, atol=1e-6)
    assert out.vector.shape == (2, 128)


def test_nonzero_flow_moves_pixels_and_the_fresh_generator_starts_at_the_identity():
    gen = _generator()
    src = _img(1, 3, S, S)
    assert torch.allclose(gen(src, _img(1, 3, S, S, seed=3)).image, src, atol=1e-6)  # zero-initialised heads
    _randomise(gen)
    out = gen(src, _img(1, 3, S, S, seed=3))
    assert out.driving_flow.abs().max() > 0.1 and (out.image - src).abs().mean() > 1e-3


def test_flow_scale_bounds_and_scales_the_flows():
    src, drv = _img(2, 3, S, S), _img(2, 3, S, S, seed=1)
    flows = {}
    for scale in (1.0, 0.25):
        torch.manual_seed(0)
        gen = _generator(flow_scale=scale)
        _randomise(gen)
        with torch.no_grad():
            for head in (gen.embedding.head[-1], gen.driving.head[-1]):
                head.weight.mul_(50)  # saturate the tanh somewhere
        out = gen(src, drv)
        flows[scale] = (out.embedding_flow, out.driving_flow)
        for f in flows[scale]:
            assert f.abs().max() <= scale * S + 1e-4 and f.abs().max() > 0.9 * scale * S
    for big, small in zip(flows[1.0], flows[0.25]):  # the same network: flows in proportion
        assert torch.allclose(small, 0.25 * big, atol=1e-4)
    with pytest.raises(ValueError, match="flow_scale"):
        _generator(flow_scale=0.0)


def _discs(dx: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``(B, 3, S, S)``: a soft disc of radius 6 px and colour ``(B, 3)`` centred ``dx (B,)`` px right of the middle."""
    y, x = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    inside = torch.sigmoid((36 - (x - S / 2 - dx[:, None, None]) ** 2 - (y - S / 2) ** 2) / 6)
    return inside[:, None] * colour[:, :, None, None]


def test_the_driving_path_learns_a_global_shift_from_the_driving_frame():
    """The flaw of the first small X2Face: its instance-normalised driving decoder removed each channel's
    per-sample mean at every level, so the driving vector's influence shrank ~4x a level and the decoded
    flow was the same for every driving frame. Here the source is a centred disc and the driving frame the
    disc moved by ``dx``: only the driving path can know ``dx``, and its flow must come to undo it."""
    torch.manual_seed(0)
    gen = X2FaceGenerator(X2FaceGeneratorConfig(image_size=S, base_channels=8, max_channels=32, depth=5,
                                                norm="batch", vector_dim=8, flow_scale=0.25))
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        dx, colour = (torch.rand(16, generator=g) * 2 - 1) * 4, torch.rand(16, 3, generator=g) * 1.6 - 0.8
        loss = (gen(_discs(torch.zeros(16), colour), drv := _discs(dx, colour)).image - drv).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.eval()
    dx, colour = torch.linspace(-4, 4, 9), torch.full((9, 3), 0.7)
    src, drv = _discs(torch.zeros(9), colour), _discs(dx, colour)
    with torch.no_grad():
        out = gen(src, drv)
    shift = out.driving_flow[:, 0, 8:24, 8:24].mean((1, 2))  # backward flow: about -dx
    assert torch.corrcoef(torch.stack([shift, -dx]))[0, 1] > 0.9, shift
    assert shift[0] - shift[-1] > 4  # pixels: the flow spans most of the 8 px of motion
    assert (out.image - drv).abs().mean() < 0.5 * (src - drv).abs().mean()


def test_multi_source_embedded_face_is_the_mean_of_the_single_ones():
    gen = _generator()
    _randomise(gen)
    gen.eval()
    sources = _img(2, 3, 3, S, S)  # 2 samples x 3 frames
    many, flows = gen.embed(sources)
    singles = torch.stack([gen.embed(sources[:, i])[0] for i in range(3)], 1)
    assert flows.shape == (2, 3, 2, S, S)
    assert torch.allclose(many, singles.mean(1), atol=1e-5)
    assert not torch.allclose(singles[:, 0], singles[:, 1], atol=1e-3)  # the frames really differ


def test_wrong_image_size_is_a_named_error():
    gen = _generator()
    with pytest.raises(ImageSizeError, match=r"\(B, 3, 32, 32\); got \(1, 3, 64, 64\)"):
        gen(_img(1, 3, 64, 64), _img(1, 3, 64, 64))
    with pytest.raises(ImageSizeError):
        gen.embed(_img(3, S, S))


def test_fit_affine_recovers_a_known_linear_map():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(4, 7, generator=g), torch.randn(4, generator=g)
    x = torch.randn(200, 7, generator=g)
    w_hat, b_hat = fit_affine(x, x @ W.T + b)
    assert torch.allclose(w_hat, W, atol=1e-4) and torch.allclose(b_hat, b, atol=1e-4)
    # with noise and a small ridge: still close
    y = x @ W.T + b + 0.01 * torch.randn(200, 4, generator=g)
    w_r, b_r = fit_affine(x, y, ridge=1e-2)
    assert (w_r - W).abs().max() < 0.02 and (b_r - b).abs().max() < 0.02
    with pytest.raises(ValueError, match="same N"):
        fit_affine(x, y[:10])


def test_driving_vector_maps_recover_pose_and_audio_maps():
    g = torch.Generator().manual_seed(1)
    D, A, N = 16, 12, 400
    # driving vectors that are an affine function of the pose plus pose-independent variation
    angles = (torch.rand(N, 3, generator=g) - 0.5) * math.radians(60)
    P = torch.randn(D, 3, generator=g)
    v = angles @ P.T + 0.3 + 0.001 * torch.randn(N, D, generator=g)
    maps = DrivingVectorMaps(D, A)
    maps.fit_pose(v, angles, ridge=0.0)
    assert bool(maps.pose_fitted) and not bool(maps.audio_fitted)
    assert (maps.pose(v) - angles).abs().max() < math.radians(0.5)
    assert torch.allclose(maps.p2v_weight, P, atol=1e-2)
    delta = torch.tensor([[0.0, 0.2, 0.0]])
    assert torch.allclose(maps.pose_delta(delta), delta @ P.T, atol=1e-2)
    # audio -> vector: a known map on z-scored features
    audio = torch.randn(N, A, generator=g) * 3 + 1
    M = torch.randn(D, A, generator=g)
    va = ((audio - audio.mean(0)) / audio.std(0)) @ M.T + 0.5
    maps.fit_audio(audio, va, ridge=0.0)
    assert torch.allclose(maps.a2v_weight, M, atol=1e-3)
    assert torch.allclose(maps.audio_vector(audio), va, atol=1e-3)


def _vgg_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight state dict in torchvision's VGG layout, built without torchvision (not installed
    here): ``features.N.weight/bias`` from :class:`IdentityVGG`'s own layout, plus classifier keys."""
    torch.manual_seed(seed)
    net = IdentityVGG(arch)
    state = {k: torch.randn_like(v) * 0.05 for k, v in net.state_dict().items()}
    state.update({"classifier.0.weight": torch.randn(8, 4), "classifier.0.bias": torch.zeros(8)})
    return state


@pytest.mark.parametrize("arch,convs", [("vgg11", 8), ("vgg16", 13)])
def test_identity_vgg_loads_torchvision_layouts(tmp_path, arch, convs):
    state = _vgg_state(arch)
    assert sum(1 for k, v in state.items() if k.startswith("features.") and v.dim() == 4) == convs
    torch.save(state, tmp_path / "w.pth")
    net = load_identity_vgg(tmp_path / "w.pth")
    assert net.arch == arch and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.features[0].weight, state["features.0.weight"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_identity_vgg(tmp_path / "w.safetensors").features[0].weight, state["features.0.weight"])
    # the paper's layers exist in both (Conv2-5, Conv6-7 of VGG-11)
    x = _img(2, 3, S, S)
    feats = net(x, ["relu2_1", "relu4_2", "relu5_1"])
    assert [f.shape[1] for f in feats] == [128, 512, 512]
    loss, per = identity_content_loss(net, x, x.flip(0), ["relu2_1", "relu5_1"], scales=[1.0, 2.0])
    assert torch.allclose(loss, per[0] + 2 * per[1]) and all(p > 0 for p in per)
    same, _ = identity_content_loss(net, x, x, ["relu2_1"])
    assert same == 0


def test_identity_vgg_loader_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="VGG-11/VGG-16"):
        load_identity_vgg(tmp_path / "missing.pth")
    state = _vgg_state("vgg11")
    torch.save({k: v for k, v in state.items() if k != "features.3.weight"}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="7 'features"):
        load_identity_vgg(tmp_path / "cut.pth")
    torch.save({**state, "features.1.running_mean": torch.zeros(64)}, tmp_path / "bn.pth")
    with pytest.raises(CheckpointError, match="batch-norm"):
        load_identity_vgg(tmp_path / "bn.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_identity_vgg(tmp_path / "junk.pth")
