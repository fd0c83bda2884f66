"""Landmark-fit accuracy on synthetic ground truth (known parameters, projected landmarks + noise).

Faces of the default model with random identity (N(0, I)), sparse blendshape expressions, yaw
within +-60 deg, pitch +-30, roll +-15, seen by a perspective camera at 256^2; 68 landmarks are
projected from the known vertices and 1 px Gaussian noise (per coordinate) is added. Reported:
median rotation error, landmark RMSE against the noisy input and against the clean projections,
and the mean per-vertex error after similarity alignment, against the mean face's (reference).

    python bench/fit_accuracy.py [--n 200] [--noise 1.0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.fitting.accuracy import aligned_vertex_error, rotation_error_degrees  # noqa: E402
from morphface.fitting.landmark_fit import fit_landmarks  # noqa: E402
from morphface.fitting.synthetic import sample_fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--noise", type=float, default=1.0, help="landmark noise std per coordinate, pixels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = load_default_model("narrow")
    g = torch.Generator().manual_seed(args.seed)
    gt = sample_fit(model, args.n, generator=g)
    verts = gt.vertices(model)
    clean, _ = gt.camera.project(verts[:, model.landmarks])
    noisy = clean + args.noise * torch.randn(clean.shape, generator=g)
    e_mean = aligned_vertex_error(model.mean.expand_as(verts), verts)
    rows = [["mean face (reference)", "-", "-", "-", float(e_mean.median()), 1.0]]
    for kind in ("weak_perspective", "perspective"):
        r = fit_landmarks(model, noisy, gt.image_size, camera=kind)
        rot = rotation_error_degrees(r.angles, gt.angles)
        rmse_clean = ((r.landmarks - clean) ** 2).sum(-1).mean(1).sqrt()
        e = aligned_vertex_error(r.vertices(model), verts)
        rows.append([f"fit_landmarks ({kind})", float(rot.median()), float(r.residuals.median()),
                     float(rmse_clean.median()), float(e.median()), float((e / e_mean).median())])
    print(f"{args.n} synthetic faces, 256^2, {args.noise} px noise; medians over faces")
    print_table(["method", "rot err deg", "RMSE vs input px", "RMSE vs clean px", "vertex err mm",
                 "vs mean face"], rows)


if __name__ == "__main__":
    main()
