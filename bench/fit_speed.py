"""Speed of the landmark fit: batched vs. one image at a time (the reference), on this machine.

    python bench/fit_speed.py [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.fitting.landmark_fit import fit_landmarks  # noqa: E402
from morphface.fitting.synthetic import sample_fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = load_default_model("narrow")
    gt = sample_fit(model, args.batch, generator=torch.Generator().manual_seed(0))
    lms, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    lms = lms + torch.randn_like(lms)
    rows = []
    for kind in ("weak_perspective", "perspective"):
        batched = median_ms(lambda kind=kind: fit_landmarks(model, lms, gt.image_size, camera=kind), args.repeats)
        loop = median_ms(lambda kind=kind: [fit_landmarks(model, lms[i:i + 1], gt.image_size, camera=kind)
                                  for i in range(args.batch)], max(1, args.repeats // 2))
        rows.append([kind, args.batch, batched / args.batch, loop / args.batch, loop / batched])
    print(f"fit_landmarks on {torch.get_num_threads()} CPU threads, ICT narrow model (68 landmarks, 100 id + 53 exp)")
    print_table(["camera", "batch", "ms/face batched", "ms/face one-by-one (ref)", "speed-up"], rows)


if __name__ == "__main__":
    main()
