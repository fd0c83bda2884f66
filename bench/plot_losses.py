"""Plot a training run's loss curves from its ``metrics.jsonl``.

``python bench/plot_losses.py RUN_DIR -o curve.png [--keys g/l1 g_loss d_loss] [--smooth 25]``

Each key is drawn raw (thin) and as a trailing moving average of ``--smooth`` steps; keys missing from the
run are skipped. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run folder (with metrics.jsonl) or the metrics file")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--keys", nargs="+", default=["g/l1", "g_loss", "d_loss"])
    ap.add_argument("--smooth", type=int, default=25)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from morphface.train import read_metrics

    path = Path(args.run)
    records = read_metrics(path / "metrics.jsonl" if path.is_dir() else path)
    keys = [k for k in args.keys if any(k in r for r in records)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in records if key in r]
        steps, vals = [p[0] for p in pts], [p[1] for p in pts]
        n = max(1, args.smooth)
        avg = [sum(vals[max(0, i - n + 1):i + 1]) / len(vals[max(0, i - n + 1):i + 1]) for i in range(len(vals))]
        ax.plot(steps, vals, lw=0.5, alpha=0.4)
        ax.plot(steps, avg, lw=1.5)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output} ({', '.join(keys)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
