"""Reference-free kp3d edits measured on held-out synthetic faces (issue 16's edit check).

``python bench/kp3d_edits.py RUN_OR_CHECKPOINT --data out/synth [--test-fraction 0.25] [--frames 8]``

For held-out frames of a synthetic cache (ground-truth fits), the pipeline's :meth:`KeypointGAN.edit` output
is fitted with the library's photometric fitter (:func:`morphface.fitting.fit_photometric`, started from the
frame's ground truth, identity fixed). The edit's effect is the difference between the fit of the edited
output and the fit of the unedited reconstruction (``edit`` with no change), which cancels the fitter's and
the generator's own bias:

* a yaw turn of ``R_u`` (``--yaw`` degrees): fitted yaw change vs the asked angle (target: within 3 deg);
* an AU12 offset (``--au12``): change of the fitted ``mouthSmile_L/R`` weights (target: > 0).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import print_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--frames", type=int, default=8, help="held-out frames measured (one per clip, round robin)")
    ap.add_argument("--yaw", type=float, default=10.0)
    ap.add_argument("--au12", type=float, default=2.0)
    ap.add_argument("--fit-steps", type=int, default=150)
    args = ap.parse_args(argv)

    from morphface.data import split_identities
    from morphface.data.cache import PARAMS_NAME, find_clips, read_clip_frames
    from morphface.fitting import FitResult, fit_photometric
    from morphface.pipelines import load_pipeline, rescale_fit

    torch.manual_seed(0)
    pipe = load_pipeline(args.checkpoint, map_location="cpu")
    S = pipe.config.image_size
    records = find_clips(args.data)
    held = set(split_identities([r.identity for r in records], "test", args.test_fraction))
    records = [r for r in records if r.identity in held]
    names = pipe.model.exp_names
    smile = [names.index("mouthSmile_L"), names.index("mouthSmile_R")]
    rows, yaw_err, smile_gain = [], [], []
    for i in range(args.frames):
        r = records[i % len(records)]
        t = (i // len(records) * 7 + 5) % r.num_frames
        frame = read_clip_frames(r.path, [t]).float().div(255.0)[0]
        fit = rescale_fit(FitResult.load(r.path / PARAMS_NAME)[t:t + 1], S)
        if frame.shape[-1] != S:
            frame = torch.nn.functional.interpolate(frame[None], size=(S, S), mode="bilinear", antialias=True,
                                                    align_corners=False)[0].clamp(0, 1)
        outs = {"none": pipe.edit(frame, fit=fit), "yaw": pipe.edit(frame, fit=fit, yaw=args.yaw),
                "au12": pipe.edit(frame, fit=fit, au_offsets={12: args.au12})}
        fits = {k: fit_photometric(pipe.model, v[None], init=fit, steps=args.fit_steps, fit_identity=False)
                for k, v in outs.items()}
        dyaw = math.degrees(float(fits["yaw"].angles[0, 1] - fits["none"].angles[0, 1]))
        dsmile = float(fits["au12"].exp_coeffs[0, smile].mean() - fits["none"].exp_coeffs[0, smile].mean())
        yaw_err.append(abs(dyaw - args.yaw))
        smile_gain.append(dsmile)
        rows.append([f"{r.identity}/{r.video}/{r.clip}#{t}", dyaw, dsmile])
    print_table(["frame", f"fitted yaw change (asked {args.yaw:g} deg)", f"smile weight change (AU12 +{args.au12:g})"],
                rows)
    print(f"\nmedian |yaw change - {args.yaw:g}| = {statistics.median(yaw_err):.2f} deg "
          f"(max {max(yaw_err):.2f}); median smile change = {statistics.median(smile_gain):+.3f} "
          f"({sum(g > 0 for g in smile_gain)}/{len(smile_gain)} frames > 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
