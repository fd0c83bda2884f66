"""torch.compile checks. Graph capture of every network (fullgraph, no graph breaks) uses the
``aot_eager`` backend, which traces forward and backward through AOTAutograd without generating code;
one network is also compiled with the default inductor backend, whose C++ code generation costs
~20 s of fixed start-up plus ~1-2 s per kernel on this 2-core CPU box."""

import pytest
import torch

from morphface.nets import (
    DiscriminatorConfig,
    EditingNet,
    EditingNetConfig,
    HeadGANConfig,
    HeadGANGenerator,
    MotionEncoder,
    MotionEncoderConfig,
    MultiScaleDiscriminator,
    UVRefinementNet,
    UVRefinementNetConfig,
    WarpingNet,
    WarpingNetConfig,
)

pytestmark = pytest.mark.slow


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_fullgraph_capture_forward_and_backward():
    torch._dynamo.reset()
    torch.manual_seed(0)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    driving, audio = torch.rand(1, 9, 32, 32), torch.randn(1, 300)
    z_dim = 16
    cases = [
        (HeadGANGenerator(HeadGANConfig(width=1 / 16)), (img, img, driving, audio), lambda o: o.image),
        (MultiScaleDiscriminator(DiscriminatorConfig(width=1 / 16)), (img, img), lambda o: o.logits[1]),
        (MotionEncoder(MotionEncoderConfig(width=1 / 16, descriptor_dim=z_dim)), (torch.randn(1, 27, 70),),
         lambda o: o),
        (WarpingNet(WarpingNetConfig(width=1 / 16, descriptor_dim=z_dim)), (img, torch.randn(1, z_dim)),
         lambda o: o.warped_image),
        (UVRefinementNet(UVRefinementNetConfig(width=1 / 16, descriptor_dim=z_dim)),
         (img, img[..., :16, :16], torch.ones(1, 1, 16, 16), torch.randn(1, z_dim)), lambda o: o),
        (EditingNet(EditingNetConfig(width=1 / 16, descriptor_dim=z_dim)), (img, img, img, torch.randn(1, z_dim)),
         lambda o: o),
    ]
    for k, (net, args, pick) in enumerate(cases):
        net.eval()  # no spectral-norm power iteration: eager and compiled see the same weights
        eager = pick(net(*args))
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        if k == 0:  # the backward graph too, for the largest network
            out = pick(compiled(*args))
            out.mean().backward()
            assert all(p.grad is not None for p in net.parameters()), type(net).__name__
        else:
            with torch.no_grad():
                out = pick(compiled(*args))
        _close(out, eager)


def test_inductor_compiles_a_network():
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    torch.manual_seed(1)
    net = WarpingNet(WarpingNetConfig(width=1 / 16, descriptor_dim=16, num_down=3)).eval()
    src, z = torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 16)
    with torch.no_grad():
        eager = net(src, z)
        compiled = torch.compile(net)(src, z)
    _close(compiled.flow, eager.flow)
    _close(compiled.warped_image, eager.warped_image)
