"""Fitting speed on this machine, each row with a reference run in the same process.

* ``fit_landmarks`` at batch 32 (synthetic landmarks); reference: the same faces one at a time.
* ``fit_photometric``, 100 steps at 224^2 on rendered synthetic faces (early stopping off);
  reference: the same with the pure-PyTorch rasteriser backend.
* ``fit_video`` on the bundled 7 s, 25 fps talking-head clip (detection included, MediaPipe when
  installed, else dlib); reference: the landmark fits alone on its detected landmarks.

    python bench/fit_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.fitting import fit_landmarks, fit_photometric, fit_video, make_detector, render_fit  # noqa: E402
from morphface.fitting.synthetic import sample_fit  # noqa: E402
from morphface.fitting.video import detect_video_landmarks  # noqa: E402
from morphface.render import ambient_sh  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip the video row")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    model = load_default_model("narrow")
    rows = []

    # -- fit_landmarks
    B = 32
    gt = sample_fit(model, B, generator=torch.Generator().manual_seed(0))
    lms, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    lms = lms + torch.randn(lms.shape, generator=torch.Generator().manual_seed(1))
    for kind in ("weak_perspective", "perspective"):
        batched = median_ms(lambda kind=kind: fit_landmarks(model, lms, gt.image_size, camera=kind), reps)
        loop = median_ms(lambda kind=kind: [fit_landmarks(model, lms[i:i + 1], gt.image_size, camera=kind)
                                            for i in range(B)], max(1, reps // 2))
        rows.append([f"fit_landmarks ({kind})", f"batch {B}, 68 landmarks", batched / B, "ms/face",
                     loop / B, loop / batched])

    # -- fit_photometric
    Bp, size, steps = 4, 224, 100
    gt = sample_fit(model, Bp, image_size=(size, size), max_yaw=45, generator=torch.Generator().manual_seed(2))
    gt.vertex_albedo = torch.tensor([0.7, 0.5, 0.4]).expand(Bp, model.n_vertices, 3).clone()
    gt.sh = ambient_sh(Bp)
    images, mask = render_fit(model, gt)
    images = images + (1 - mask) * 0.3
    clean, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    init = fit_landmarks(model, clean + torch.randn_like(clean), (size, size))
    times = {}
    for backend in ("cpu", "torch"):
        times[backend] = median_ms(lambda backend=backend: fit_photometric(
            model, images, init=init, steps=steps if backend == "cpu" else 10, tol=0.0, backend=backend),
            max(1, reps // 2))
    times["torch"] *= steps / 10  # the reference runs 10 steps and is scaled to 100
    rows.append(["fit_photometric", f"batch {Bp}, {size}^2, {steps} steps", times["cpu"] / Bp / 1000, "s/face",
                 times["torch"] / Bp / 1000, times["torch"] / times["cpu"]])

    # -- fit_video
    if not args.quick:
        with resources.as_file(resources.files("morphface").joinpath("assets", "examples",
                                                                    "liveportrait_d20_talking.mp4")) as clip:
            detector = make_detector("auto")
            t = time.perf_counter()
            fit = fit_video(model, clip, detector=detector, progress=False)
            total = time.perf_counter() - t
            lms, found, hw = detect_video_landmarks(clip, detector, progress=False)
            ref = median_ms(lambda: [fit_landmarks(model, lms[i:i + 32], hw) for i in range(0, lms.shape[0], 32)], 1)
        rows.append(["fit_video", f"{fit.batch_size} frames 480^2, {type(detector).__name__}", total, "s/clip",
                     ref / 1000, ref / 1000 / total])

    print(f"torch threads: {torch.get_num_threads()}")
    print_table(["what", "setting", "time", "unit", "reference (same unit)", "reference / time"], rows)


if __name__ == "__main__":
    main()
