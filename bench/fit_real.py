"""Pose and landmark accuracy of detector + fit, on renders with known pose and on annotated photos.

**Synthetic renders** (default): textured synthetic people (``morphface.data.render_posed_faces``:
the dataset generator's identities, textures, lights and backgrounds) rendered at 256^2 on a grid of
pitch -40..40 deg (step 20) x yaw -70..70 (step 35), each angle jittered by +-5 deg and roll by +-5;
the **real detector** runs on the renders and the fit is compared with the ground truth. Two
disjoint sets of people: a development set (people 0-2) and an evaluation set (people 100-102).

**A folder of photos** (``--folder DIR``): every ``.jpg``/``.png`` with a ``.mat`` (AFLW2000-3D:
``Pose_Para``, ``pt3d_68``) or ``.pts`` (iBUG) file of the same stem. AFLW2000-3D protocol: images
with an angle beyond 99 deg are skipped; NME is normalised by the square root of the ground-truth
landmark box area. Pose columns need ``.mat`` files.

Printed per method: detection rate, slope (fitted on true) and MAE in degrees for pitch, yaw and
roll, and the 68-point NME (%) of the fitted model's landmarks (for ``mp68 raw``: MediaPipe's own 68).
Methods: ``dense`` (``fit_image``'s default: MediaPipe's 468 points with its depth column),
``pose='regressed'`` (rotation from the learned calibration, :mod:`morphface.fitting.pose_regressor`),
``pose='rigid'`` (rotation from the mean shape), ``dense 2D only`` (no depth), ``old table`` (with
``--table``: e.g. the photo-estimated table used before issue 21, 2D only: the fit before), ``mp68``
(MediaPipe's 68 points), ``dlib68`` (dlib's HOG detector + 68 points, when installed).

    python bench/fit_real.py [--folder DIR] [--table OLD.npz] [--signs 1,1,1] [--n-people 3]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.data.annotations import read_aflw2000_mat, read_pts  # noqa: E402
from morphface.data.synth import render_posed_faces  # noqa: E402
from morphface.fitting import make_detector  # noqa: E402
from morphface.fitting.accuracy import angle_slope_mae, landmark_nme  # noqa: E402
from morphface.fitting.dense import fit_dense_landmarks, load_dense_correspondence  # noqa: E402
from morphface.fitting.image import dense_points  # noqa: E402
from morphface.fitting.landmark_fit import fit_landmarks  # noqa: E402

PITCHES = (-40.0, -20.0, 0.0, 20.0, 40.0)
YAWS = (-70.0, -35.0, 0.0, 35.0, 70.0)


def pose_grid(person: int, jitter: float = 5.0) -> torch.Tensor:
    """``(25, 3)`` radians: the pitch x yaw grid, jittered per person (seeded)."""
    g = torch.Generator().manual_seed(7919 + person)
    base = torch.tensor([[p, y, 0.0] for p in PITCHES for y in YAWS])
    return (base + (torch.rand(base.shape, generator=g) * 2 - 1) * jitter) * (math.pi / 180)


def synthetic_samples(people, size: int = 256):
    """Yield ``(image (3, H, W), true angles (3,) rad, true 68 landmarks (68, 2))``."""
    full, narrow = load_default_model("full"), load_default_model("narrow")
    for person in people:
        images, gt = render_posed_faces(full, narrow, pose_grid(person), identity=person, size=size)
        for i in range(images.shape[0]):
            yield images[i], gt.angles[i], gt.landmarks[i]


def folder_samples(folder: Path, signs: tuple[float, float, float]):
    """Yield ``(image, angles or None, landmarks)`` for the annotated images of ``folder``."""
    from morphface.io import read_image

    for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        mat, pts = img.with_suffix(".mat"), img.with_suffix(".pts")
        if mat.is_file():
            ann = read_aflw2000_mat(mat, signs=signs)
            if float(ann.angles.abs().max()) > math.radians(99):
                continue
        elif pts.is_file():
            ann = read_pts(pts)
        else:
            continue
        yield read_image(img), ann.angles, ann.landmarks


def evaluate(samples, detectors: dict, model, table_old=None) -> tuple[dict, list]:
    """Detect, fit and score every sample with every method.

    Returns:
        ``{method: [(sample index, true angles or None, fitted angles or None, NME), ...]}`` and the
        true angles of every sample (or ``None``), in order.
    """
    results: dict[str, list] = {}
    truth = []

    def add(name, k, angles, pred_angles, lm_true, lm_pred):
        nme = float(landmark_nme(lm_pred[None], lm_true[None])[0])
        results.setdefault(name, []).append((k, angles, pred_angles, nme))

    def model68(fit):
        return fit.camera.project(fit.vertices(model)[:, model.landmarks])[0][0]

    for k, (image, angles, lm_true) in enumerate(samples):
        truth.append(angles)
        H, W = image.shape[-2:]
        if "mediapipe" in detectors:
            faces = detectors["mediapipe"].detect(image)
            if faces:
                face = max(faces, key=lambda f: f.area)
                pts = dense_points([face], depth=True)
                fit = fit_dense_landmarks(model, pts, (H, W))
                add("dense (fit_image default)", k, angles, fit.angles[0], lm_true, model68(fit))
                fit = fit_dense_landmarks(model, pts, (H, W), pose="regressed")
                add("dense, pose='regressed'", k, angles, fit.angles[0], lm_true, model68(fit))
                fit = fit_dense_landmarks(model, pts, (H, W), pose="rigid")
                add("dense, pose='rigid'", k, angles, fit.angles[0], lm_true, model68(fit))
                fit = fit_dense_landmarks(model, pts[..., :2], (H, W))
                add("dense 2D only", k, angles, fit.angles[0], lm_true, model68(fit))
                if table_old is not None:
                    fit = fit_dense_landmarks(model, pts[..., :2], (H, W), correspondence=table_old)
                    add("dense 2D, old table (before)", k, angles, fit.angles[0], lm_true, model68(fit))
                fit = fit_landmarks(model, face.landmarks_2d[None], (H, W))
                add("mp68", k, angles, fit.angles[0], lm_true, model68(fit))
                add("mp68 raw (detector's points)", k, None, None, lm_true, face.landmarks_2d)
        if "dlib" in detectors:
            faces = detectors["dlib"].detect(image)
            if faces:
                face = max(faces, key=lambda f: f.area)
                fit = fit_landmarks(model, face.landmarks_2d[None], (H, W))
                add("dlib68", k, angles, fit.angles[0], lm_true, model68(fit))
    return results, truth


def table_rows(results: dict, truth: list, keep=None) -> list[list]:
    """One row per method over the samples ``keep`` (indices; default all)."""
    keep = set(range(len(truth))) if keep is None else set(keep)
    rows = []
    for name, recs in results.items():
        recs = [r for r in recs if r[0] in keep]
        row = [name, f"{len(recs)}/{len(keep)}"]
        posed = [r for r in recs if r[1] is not None and r[2] is not None]
        if len(posed) >= 2:
            t = torch.stack([r[1] for r in posed]) * (180 / math.pi)
            p = torch.stack([r[2] for r in posed]) * (180 / math.pi)
            slope, mae = angle_slope_mae(t, p)
            for j in range(3):
                row += [float(slope[j]), float(mae[j])]
        else:
            row += ["-"] * 6
        row.append(100 * sum(r[3] for r in recs) / max(1, len(recs)))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=None, help="annotated photos (.mat / .pts beside each image)")
    ap.add_argument("--signs", default="1,1,1", help="multipliers of the .mat pitch, yaw, roll (default 1,1,1)")
    ap.add_argument("--n-people", type=int, default=3, help="people per synthetic set")
    ap.add_argument("--table", type=Path, default=None, help="another dense table to compare (e.g. an old one)")
    ap.add_argument("--no-dlib", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_default_model("narrow")
    detectors = {"mediapipe": make_detector("mediapipe")}
    if not args.no_dlib:
        try:
            detectors["dlib"] = make_detector("dlib", detector="hog")
        except Exception as e:  # noqa: BLE001 - an optional backend
            print(f"dlib not used: {e}")
    table_old = load_dense_correspondence(args.table) if args.table else None
    headers = ["method", "found", "pitch slope", "pitch MAE", "yaw slope", "yaw MAE", "roll slope", "roll MAE",
               "NME %"]
    if args.folder is not None:
        signs = tuple(float(v) for v in args.signs.split(","))
        print(f"{args.folder}: annotated photos")
        results, truth = evaluate(folder_samples(args.folder, signs), detectors, model, table_old)
        print_table(headers, table_rows(results, truth))
        return
    for label, first in (("development set", 0), ("evaluation set", 100)):
        people = range(first, first + args.n_people)
        print(f"\nsynthetic renders, {label}: people {first}-{first + args.n_people - 1}, 25 poses each, 256^2 "
              "(pitch -40..40, yaw -70..70, +-5 jitter); angles in degrees")
        results, truth = evaluate(synthetic_samples(people), detectors, model, table_old)
        print_table(headers, table_rows(results, truth))
        inner = [k for k, a in enumerate(truth) if abs(math.degrees(float(a[1]))) <= 40]
        print(f"  same set, |yaw| <= 40 deg only ({len(inner)} samples):")
        print_table(headers, table_rows(results, truth, inner))


if __name__ == "__main__":
    main()
