"""What ``fit_photometric`` changes on renders of known pose fitted from the real detector's points.

Textured synthetic people (``morphface.data.render_posed_faces``) at known pose; MediaPipe's points and
MediaPipe's person segmentation on the renders; the dense landmark fit (``pose`` mode ``--pose``) is
refined by ``fit_photometric`` without and with the silhouette term. Printed per variant: the pose
error (geodesic and per angle, degrees), steps run, rotation and translation change, landmark RMSE and
the face's mean distance outside the person mask, before and after.

    python bench/photometric_pose.py [--people 10 11] [--steps 100] [--pose joint]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402

POSES = [(p, y, 0.0) for p in (-30.0, 0.0, 30.0) for y in (-60.0, -30.0, 30.0, 60.0)]


def geodesic_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from morphface.camera import euler_to_matrix

    rel = euler_to_matrix(a).transpose(1, 2) @ euler_to_matrix(b)
    return torch.rad2deg(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1).acos())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, nargs="+", default=[10, 11])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--pose", default="joint", help="fit_dense_landmarks pose mode of the start")
    ap.add_argument("--w-rotation", type=float, default=None,
                    help="fit_photometric's w_rotation (default: fit_image's choice for the pose mode)")
    args = ap.parse_args(argv)
    from morphface import load_default_model
    from morphface.data.synth import render_posed_faces
    from morphface.fitting import fit_photometric, make_detector, make_segmenter
    from morphface.fitting.dense import fit_dense_landmarks
    from morphface.fitting.image import REGRESSED_ROTATION_WEIGHT, dense_points

    w_rotation = args.w_rotation
    if w_rotation is None:
        w_rotation = REGRESSED_ROTATION_WEIGHT if args.pose == "regressed" else 0.0
    full, narrow = load_default_model("full"), load_default_model("narrow")
    det, seg = make_detector("mediapipe"), make_segmenter("mediapipe")
    grid = torch.tensor(POSES) * (math.pi / 180)
    rows: dict[str, list] = {}
    t0 = time.perf_counter()
    for person in args.people:
        images, gt = render_posed_faces(full, narrow, grid, identity=person, size=args.size, supersample=1)
        for i in range(images.shape[0]):
            faces = det.detect(images[i])
            pts = dense_points(faces[:1], depth=True) if faces else None
            if pts is None:
                continue
            img = images[i:i + 1]
            init = fit_dense_landmarks(narrow, pts, (args.size, args.size), pose=args.pose)
            person_mask = seg.segment(img)
            true = gt.angles[i:i + 1]
            rows.setdefault("landmark fit", []).append(
                [float(geodesic_deg(init.angles, true)[0]), *((init.angles - true)[0].abs() * 180 / math.pi).tolist(),
                 0, 0.0, 0.0, float("nan"), float("nan"), float("nan"), float("nan")])
            for name, mask in (("+ photometric", None), ("+ photometric + silhouette", person_mask)):
                fit, rep = fit_photometric(narrow, img, init=init, landmarks=pts, steps=args.steps, person_mask=mask,
                                           fit_identity=False, w_rotation=w_rotation, return_report=True)
                rows.setdefault(name, []).append(
                    [float(geodesic_deg(fit.angles, true)[0]), *((fit.angles - true)[0].abs() * 180 / math.pi).tolist(),
                     rep.steps, float(rep.rotation_change_deg[0]), float(rep.translation_change_mm[0]),
                     float(rep.landmark_rmse_before[0]), float(rep.landmark_rmse_after[0]),
                     float(rep.outside_before[0]), float(rep.outside_after[0])])
    headers = ["variant", "n", "geodesic err", "pitch err", "yaw err", "roll err", "steps", "rot change",
               "transl change mm", "lm RMSE before", "lm RMSE after", "outside before px", "outside after px"]
    table = []
    for name, recs in rows.items():
        r = torch.tensor(recs)
        table.append([name, r.shape[0], *[float(v) for v in r.nanmean(0)]])
    print(f"people {args.people}, {len(POSES)} poses each at {args.size}^2, start pose={args.pose!r}, "
          f"w_rotation={w_rotation}; "
          f"{time.perf_counter() - t0:.0f} s")
    print_table(headers, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
