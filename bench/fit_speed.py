"""Fitting speed on this machine, each row with a reference run in the same process.

* ``fit_landmarks`` on 68 points and ``fit_dense_landmarks`` on MediaPipe's 468 points with the depth
  column (what ``fit_image`` does), perspective camera, one face and a batch of 32 (ms per face):
  the fused CPU solver (``backend="auto"``) against the torch solver (``backend="torch"``) as the
  reference; plus the first call of a fresh process (numba's compiled code loaded from its cache).
* ``fit_dense_landmarks`` on 468 2D points with the rotation fixed (``angles=``, what ``pose="rigid"``
  and ``pose="regressed"`` do after taking the rotation), one face: fused solver vs torch solver.
* ``fit_landmarks`` at batch 32, both cameras; reference: the same faces one at a time.
* ``fit_photometric``, 100 steps at 224^2 on rendered synthetic faces (early stopping off);
  reference: the same with the pure-PyTorch rasteriser backend.
* ``fit_video`` on the bundled 7 s, 25 fps talking-head clip (detection included, MediaPipe when
  installed, else dlib); reference: the landmark fits alone on its detected landmarks.

    python bench/fit_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.fitting import (  # noqa: E402
    fit_dense_landmarks,
    fit_landmarks,
    fit_photometric,
    fit_video,
    make_detector,
    render_fit,
)
from morphface.fitting.dense import load_dense_correspondence  # noqa: E402
from morphface.fitting.synthetic import sample_fit  # noqa: E402
from morphface.fitting.video import detect_video_landmarks  # noqa: E402
from morphface.render import ambient_sh  # noqa: E402

_FIRST_CALL = """
import time, torch
from morphface import load_default_model
from morphface.fitting import fit_landmarks, sample_fit
m = load_default_model("narrow")
gt = sample_fit(m, 1, generator=torch.Generator().manual_seed(0))
x, _ = gt.camera.project(gt.vertices(m)[:, m.landmarks])
t = time.perf_counter()
fit_landmarks(m, x, gt.image_size)
print((time.perf_counter() - t) * 1000)
"""


def dense_points(model, B: int, seed: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, 468, 3)`` MediaPipe-like points of random faces: the shipped table's vertices projected
    (1 px noise), with a relative depth column in pixels (larger = farther), as MediaPipe gives it."""
    ids = load_dense_correspondence().vertex_ids(model).clamp(min=0)
    gt = sample_fit(model, B, generator=torch.Generator().manual_seed(seed))
    v = gt.vertices(model)[:, ids]
    pix, _ = gt.camera.project(v)
    depth = -(v @ gt.rotation.transpose(1, 2) + gt.translation[:, None])[..., 2]
    depth_px = (depth - depth.mean(1, keepdim=True)) * gt.focal[:, None] / depth.mean(1, keepdim=True)
    pts = torch.cat([pix, depth_px[..., None]], -1)
    return pts + torch.randn(pts.shape, generator=torch.Generator().manual_seed(seed + 1)), gt.image_size


def compare_solvers(name: str, fit, pts: torch.Tensor, what: str, reps: int) -> list[list]:
    """Rows for one face and for the whole batch ``pts`` (ms/face): fused solver, torch reference."""
    B = pts.shape[0]
    # one face: the median over 8 faces of each face's median time (the torch reference: 2 faces)
    single = statistics.median([median_ms(lambda i=i: fit(pts[i:i + 1]), reps) for i in range(8)])
    single_ref = statistics.median([median_ms(lambda i=i: fit(pts[i:i + 1], backend="torch"), max(1, reps // 2))
                                    for i in range(2)])
    batched = median_ms(lambda: fit(pts), reps) / B
    batched_ref = median_ms(lambda: fit(pts, backend="torch"), max(1, reps // 2)) / B
    return [[name, f"1 face, {what}", single, "ms/face", single_ref, single_ref / single],
            [name, f"batch {B}, {what}", batched, "ms/face", batched_ref, batched_ref / batched]]


def landmark_rows(model, reps: int) -> list[list]:
    """Fused solver vs the torch solver on 68 and 468+depth points, one face and batch 32 (ms/face)."""
    B = 32
    gt = sample_fit(model, B, generator=torch.Generator().manual_seed(0))
    lms, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    lms = lms + torch.randn(lms.shape, generator=torch.Generator().manual_seed(1))
    dense, size = dense_points(model, B, 2)
    rows = compare_solvers("fit_landmarks", lambda x, **k: fit_landmarks(model, x, gt.image_size, **k), lms,
                           "68 points", reps)
    rows += compare_solvers("fit_dense_landmarks", lambda x, **k: fit_dense_landmarks(model, x, size, **k), dense,
                            "468 points + depth", reps)
    # fixed angles (the second fit of pose="rigid"/"regressed"): per-image angles, 2D points
    angles = gt.angles[:8] + 0.05 * torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    fixed = [median_ms(lambda i=i, b=b: fit_dense_landmarks(model, dense[i:i + 1, :, :2], size, angles=angles[i:i + 1],
                                                            backend=b), reps if b == "auto" else max(1, reps // 2))
             for b in ("auto", "torch") for i in range(8 if b == "auto" else 2)]
    fast, ref = statistics.median(fixed[:8]), statistics.median(fixed[8:])
    rows.append(["fit_dense_landmarks", "1 face, 468 points, fixed angles", fast, "ms/face", ref, ref / fast])
    first = subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True, check=True)
    rows.append(["fit_landmarks", "1 face, first call of a new process (numba cache warm)",
                 float(first.stdout.split()[-1]), "ms", "-", "-"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip the video row")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    model = load_default_model("narrow")
    rows = landmark_rows(model, reps)

    # -- fit_landmarks, batch against one face at a time
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
