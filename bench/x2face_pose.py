"""X2Face pose control (§4.1): does the fitted yaw of pose-driven outputs follow the asked yaw?

    python -m bench.x2face_pose CHECKPOINT --data out/synth --test-fraction 0.25

1. Fits the pose maps ``f_v->p`` / ``f_p->v`` by least squares on the **training** identities' frames
   (their 3DMM pose: ground truth in a ``morphface synth`` cache) unless the checkpoint has them.
2. Drives the first frame of each held-out clip with yaw -30..+30 degrees (pitch and roll kept:
   ``NaN``), through :meth:`X2Face.drive_with_pose`.
3. Fits every output with the library's fitter (:func:`morphface.fitting.fit_image`, MediaPipe or dlib
   landmarks, on a bicubic 4x up-sampling of the 64-pixel frames) and prints, per asked yaw, the mean
   fitted yaw, and the Pearson correlation over all (asked, fitted) pairs. Reference rows: the same
   fitter on the held-out clips' own frames against their ground-truth yaw (what the measurement
   itself can resolve), and ``f_v->p``'s yaw of the outputs.

Prints a table; never part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


def fitted_yaw(model, detector, frames: torch.Tensor, size: int) -> torch.Tensor:
    """``(T,)`` fitted yaw in degrees (NaN where no face is found) of ``(T, 3, S, S)`` frames."""
    from morphface.errors import NoFaceError
    from morphface.fitting import fit_image

    up = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    out = []
    for img in up:
        try:
            out.append(math.degrees(float(fit_image(model, img, detector).angles[0, 1])))
        except NoFaceError:
            out.append(float("nan"))
    return torch.tensor(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.x2face_pose", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="clip cache (morphface synth)")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--yaws", type=float, nargs="+", default=[-30, -20, -10, 0, 10, 20, 30])
    p.add_argument("--max-sources", type=int, default=24, help="held-out clips used as sources")
    p.add_argument("--fit-size", type=int, default=256, help="frames are up-sampled to this before fitting")
    p.add_argument("--detector", default="auto")
    args = p.parse_args(argv)

    from morphface import load_default_model
    from morphface.data import split_identities
    from morphface.data.cache import PARAMS_NAME, find_clips, read_clip_frames
    from morphface.fitting import FitResult, make_detector
    from morphface.pipelines import load_pipeline

    t0 = time.time()
    pipe = load_pipeline(args.checkpoint, map_location="cpu")
    if not bool(pipe.nets["maps"].pose_fitted):
        stats = pipe.fit_maps(args.data, split="train", test_fraction=args.test_fraction)
        print(f"pose maps fitted on {int(stats['frames'])} training frames; f_v->p training MAE "
              f"{stats['pose_mae_deg']:.2f} deg (mean over pitch/yaw/roll)")
    model = load_default_model("narrow")
    detector = make_detector(args.detector)
    records = find_clips(args.data)
    test = set(split_identities([r.identity for r in records], "test", args.test_fraction))
    records = [r for r in records if r.identity in test][: args.max_sources]
    S = pipe.config.image_size
    yaws = torch.tensor(args.yaws, dtype=torch.float32)
    asked, fitted, predicted = [], [], []
    ref_gt, ref_fit = [], []
    for r in records:
        frames = read_clip_frames(r.path).float().div(255.0)
        frames = F.interpolate(frames, size=(S, S), mode="bilinear", antialias=True, align_corners=False)
        gt = FitResult.load(r.path / PARAMS_NAME)
        pick = torch.linspace(0, frames.shape[0] - 1, 4).round().long()
        ref_gt.append(torch.rad2deg(gt.angles[pick, 1]))
        ref_fit.append(fitted_yaw(model, detector, frames[pick], args.fit_size))
        nan = float("nan")
        angles = torch.stack([torch.full_like(yaws, nan), yaws, torch.full_like(yaws, nan)], 1)
        out = pipe.drive_with_pose(frames[0], angles)
        asked.append(yaws)
        fitted.append(fitted_yaw(model, detector, out, args.fit_size))
        predicted.append(pipe.pose_of(out)[:, 1])
    asked_t, fitted_t, pred_t = torch.cat(asked), torch.cat(fitted), torch.cat(predicted)
    ok = ~torch.isnan(fitted_t)
    print(f"\nX2Face pose-driven yaw, {len(records)} held-out sources x {len(args.yaws)} yaws "
          f"({int(ok.sum())}/{ok.numel()} outputs fitted); checkpoint {args.checkpoint}")
    print(f"{'asked yaw':>10} {'fitted yaw':>11} {'std':>6} {'f_v->p yaw':>11} {'fitted':>7}")
    for y in args.yaws:
        m = (asked_t == y) & ok
        f = fitted_t[m]
        print(f"{y:>10.0f} {float(f.mean()):>11.1f} {float(f.std()) if f.numel() > 1 else 0.0:>6.1f} "
              f"{float(pred_t[asked_t == y].mean()):>11.1f} {int(m.sum()):>7}")
    corr = pearson(asked_t[ok], fitted_t[ok])
    slope = float(torch.linalg.lstsq(torch.stack([asked_t[ok], torch.ones(int(ok.sum()))], 1).double(),
                                     fitted_t[ok, None].double()).solution[0])
    g, f = torch.cat(ref_gt), torch.cat(ref_fit)
    okr = ~torch.isnan(f)
    print(f"\ncorrelation(asked yaw, fitted yaw of outputs) = {corr:.3f}  (slope {slope:.2f})")
    print(f"correlation(asked yaw, f_v->p yaw of outputs) = {pearson(asked_t, pred_t):.3f}")
    print(f"reference: correlation(ground-truth yaw, fitted yaw) on {int(okr.sum())} real held-out frames = "
          f"{pearson(g[okr], f[okr]):.3f} (yaw range {float(g.min()):.0f}..{float(g.max()):.0f} deg)")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
