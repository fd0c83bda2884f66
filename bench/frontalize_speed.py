"""Speed of ``frontalize`` on one 512x512 photo on this machine (median after warm-up).

The bundled CC0 photo (``morphface/assets/examples/cc0_040_yaw35_man.jpg``, about 40 degrees of yaw)
is reduced to 512x512; its landmarks are detected once, outside the timing (the detector is not
part of the measured pipeline). Rows: the whole pipeline from landmarks (landmark fit included),
its stages (``head_flow``: moving the ears and hair with the head), and a reference row: one plain
textured render of the face at 512x512, the floor any render-based frontalisation pays. Other
processes on a shared machine inflate the numbers: the load average is printed with them.

    python bench/frontalize_speed.py [--repeats 7] [--texture 512]
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.fitting import fit_landmarks  # noqa: E402
from morphface.io import read_image  # noqa: E402
from morphface.uv import (  # noqa: E402
    FrontalizeConfig,
    TextureConfig,
    complete_texture,
    fill_holes,
    frontal_fit,
    frontalize,
    head_flow,
    render_uv_texture,
    unwrap,
)
from morphface.uv.frontalize import make_frontalize_detector  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--texture", type=int, default=256, help="texture size (256: what frontalize picks here)")
    args = ap.parse_args()
    path = resources.files("morphface").joinpath("assets", "examples", "cc0_040_yaw35_man.jpg")
    with resources.as_file(path) as p:
        photo = read_image(p)
    image = F.interpolate(photo[None], size=(512, 512), mode="bilinear", antialias=True, align_corners=False)
    detector = make_frontalize_detector()
    landmarks = detector.detect_largest(image[0]).landmarks_2d[None]
    narrow = load_default_model("narrow")
    face = fill_holes(narrow)
    head = fill_holes(load_default_model("full"))
    S = args.texture

    fit = fit_landmarks(narrow, landmarks, (512, 512))
    seen = unwrap(image, fit, face, size=S, edge_margin=0.05)
    done = complete_texture(seen, face, fit)
    front = frontal_fit(fit, face)

    config = FrontalizeConfig(texture=TextureConfig(size=S))

    def pipeline():
        return frontalize(image, landmarks=landmarks, config=config)

    def render():
        return render_uv_texture(done.texture, face, front.camera, verts=front.vertices(face))

    rows = [
        [
            f"frontalize (landmarks given, {detector.name} points)",
            median_ms(pipeline, args.repeats, warmup=2),
        ],
        ["  fit_landmarks", median_ms(lambda: fit_landmarks(narrow, landmarks, (512, 512)), args.repeats)],
        [
            "  unwrap (z-buffer visibility)",
            median_ms(lambda: unwrap(image, fit, face, size=S, edge_margin=0.05), args.repeats),
        ],
        ["  complete_texture", median_ms(lambda: complete_texture(seen, face, fit), args.repeats)],
        ["  head_flow (full head, 512^2 in and out)", median_ms(lambda: head_flow(fit, front, head), args.repeats)],
        ["reference: one textured render 512^2", median_ms(render, args.repeats)],
    ]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"512x512 photo, {S}^2 texture, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print_table(["step", "median ms"], rows)


if __name__ == "__main__":
    main()
