"""Head pose on real video frames (no ground truth): how the pose modes of the dense fit differ.

Every ``--stride``-th frame of the real clips (``../shared/testdata/videos``) goes through MediaPipe and
``fit_dense_landmarks`` with each ``pose`` mode. Without ground truth this measures what can be
measured on real faces:

* **spread**: the 5-95 % range of each angle within a clip (mean over clips). On renders the default
  fit compresses pitch (slope ~0.6, ``bench/fit_real.py``); a mode that undoes it spreads pitch wider by
  about the inverse slope on the same frames.
* **jitter**: the mean absolute second difference of each angle over consecutive sampled frames (deg), a
  noise level (head motion between frames adds to it equally for every mode).
* **vs joint**: the mean absolute difference from the default mode's angles.

The clips are split by name: ``d*`` development, ``s*`` evaluation.

    python bench/pose_real_frames.py [--videos DIR] [--stride 3] [--max-frames N]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("joint", "regressed", "rigid")


def clip_angles(video: Path, stride: int, max_frames: int | None, model, detector) -> dict[str, torch.Tensor]:
    """``{mode: (T, 3) degrees}`` over the sampled frames with a detected face."""
    from morphface.fitting.dense import fit_dense_landmarks
    from morphface.fitting.image import dense_points
    from morphface.io import iter_video

    pts, size, t = [], None, 0
    for chunk in iter_video(video, max_frames=max_frames):
        for image in chunk:
            if t % stride == 0:
                faces = detector.detect(image)
                p = dense_points(sorted(faces, key=lambda f: -f.area)[:1], depth=True) if faces else None
                if p is not None and p.shape[-1] == 3:
                    pts.append(p[0])
                    size = tuple(image.shape[-2:])
            t += 1
    if len(pts) < 3:
        return {}
    points = torch.stack(pts)
    return {m: fit_dense_landmarks(model, points, size, pose=m).angles * (180 / math.pi) for m in MODES}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default=str(ROOT.parent / "shared" / "testdata" / "videos"))
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--max-frames", type=int, default=None)
    args = ap.parse_args(argv)
    from morphface import load_default_model
    from morphface.fitting import make_detector

    videos = sorted(Path(args.videos).glob("*.mp4"))
    if not videos:
        print(f"no *.mp4 in {args.videos}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    model, detector = load_default_model("narrow"), make_detector("mediapipe")
    per_half: dict[str, dict[str, list]] = {"dev": {}, "eval": {}}
    for video in videos:
        name = video.stem.replace("liveportrait_", "")
        angles = clip_angles(video, args.stride, args.max_frames, model, detector)
        if not angles:
            print(f"{name}: too few faces found", file=sys.stderr)
            continue
        half = "dev" if name.startswith("d") else "eval"
        for m, a in angles.items():
            q = torch.quantile(a, torch.tensor([0.05, 0.95]), dim=0)
            jitter = (a[2:] - 2 * a[1:-1] + a[:-2]).abs().mean(0) / 2
            diff = (a - angles["joint"]).abs().mean(0)
            per_half[half].setdefault(m, []).append(torch.stack([q[1] - q[0], jitter, diff]))
        print(f"{name}: {angles['joint'].shape[0]} frames")
    headers = ["clips", "pose mode", "pitch spread", "yaw spread", "roll spread", "pitch jitter", "yaw jitter",
               "roll jitter", "pitch vs joint", "yaw vs joint", "roll vs joint"]
    rows = []
    for half, modes in per_half.items():
        for m, stats in modes.items():
            s = torch.stack(stats).mean(0)  # (3 stats, 3 angles)
            rows.append([f"{half} ({len(stats)})", m, *s[0].tolist(), *s[1].tolist(), *s[2].tolist()])
    print_table(headers, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
