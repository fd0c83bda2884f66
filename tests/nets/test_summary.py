import re

import torch

from morphface.nets.summary import count_parameters, main, network_entries, time_forward


def test_entries_cover_every_network_and_count_parameters():
    entries = network_entries(width=1 / 16)
    names = " ".join(e.name for e in entries)
    for key in ("DenseFlowNet", "RenderingNet", "image D", "mouth D", "MotionEncoder", "WarpingNet",
                "UVRefinementNet", "EditingNet", "VGG19", "X2Face EmbeddingNet", "X2Face DrivingNet",
                "identity VGG-11", "KP appearance", "KP canonical", "KP head-pose", "KP AU deformation",
                "KP audio deformation", "KP motion field", "KP occlusion-aware G", "Face-part parser",
                "MMFA scale/translation decoder", "MMFA expression encoder", "MMFA expression decoder",
                "MMFA multi-scale G", "MMFA expression VAE", "MMFA feature D", "2D landmark net"):
        assert key in names
    for e in entries:
        n = count_parameters(e.module)
        assert n == sum(p.numel() for p in e.module.parameters()) and n > 0


def test_main_prints_a_table(capsys):
    main(["--width", "0.0625", "--no-timing"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.search(r"\d[\d,]* +- ", line)]
    assert len(rows) == 27, out


def test_keypoint_entries_run_their_example_inputs():
    for e in network_entries(width=1 / 16):
        if e.name.startswith(("KP ", "MMFA ")) or "parser" in e.name or "landmark" in e.name:
            with torch.inference_mode():
                e.module.eval()(*e.make_inputs(1, 128))


def test_time_forward_runs_the_example_inputs():
    entry = next(e for e in network_entries(width=1 / 16) if "MotionEncoder" in e.name)
    seconds = time_forward(entry.module, entry.make_inputs(1, 32), repeats=2)
    assert 0 < seconds < 10
    with torch.inference_mode():
        assert entry.module(*entry.make_inputs(2, 32)).shape == (2, 256)
