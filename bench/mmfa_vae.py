"""MMFA's expression VAE on held-out synthetic faces: does it collapse? (issue 17's VAE check) + an interpolation strip.

``python bench/mmfa_vae.py RUN_OR_CHECKPOINT --data out/synth [--test-fraction 0.25] [--clips 4] [--samples 8]
[--strip out/mmfa_strip.png]``

For each held-out clip (ground-truth fits), its first frame is the source; MMFA's :meth:`~MMFA.edit` renders it with

* ``--samples`` expressions sampled from the VAE prior, ``z ~ N(0, I)`` (``edit(source, expression=z)``), and
* the expressions of ``--samples`` real driving frames of the clip (``edit(source, expression=frame)``),

each output is fitted with the photometric fitter (started from the source's ground truth, identity fixed) and the
spread of a set is the mean pairwise L2 distance of its fitted ICT blendshape vectors. The target: samples' spread
>= half the real frames' spread. The ground-truth spread of the real frames' blendshapes is printed beside them.
The paper's ablation (no adversarial term): continue the MMFA-stage checkpoint with ``lambda_vae_adversarial: 0``,
e.g. ``morphface train CONFIG_NOADV.yaml --resume RUN/checkpoints/step_00000450.json --output-dir RUN_noadv``, and run
this script on that run. ``--strip`` writes ``source | 5 interpolated frames | target expression`` for the first
held-out clip (its first and last frames as the two expressions).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import print_table  # noqa: E402


def _spread(x: torch.Tensor) -> float:
    n = x.shape[0]
    d = torch.cdist(x, x)
    return float(d.sum() / (n * (n - 1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--fit-steps", type=int, default=150)
    ap.add_argument("--strip", default=None, help="write an interpolation strip PNG here")
    args = ap.parse_args(argv)

    from morphface.data import split_identities
    from morphface.data.cache import PARAMS_NAME, find_clips, read_clip_frames
    from morphface.fitting import FitResult, fit_photometric
    from morphface.pipelines import MMFA, load_pipeline, rescale_fit

    torch.manual_seed(0)
    pipe = load_pipeline(args.checkpoint, map_location="cpu")
    if not isinstance(pipe, MMFA):
        raise SystemExit(f"{args.checkpoint} holds a {pipe.name!r} pipeline, not MMFA")
    S = pipe.config.image_size
    records = find_clips(args.data)
    held = set(split_identities([r.identity for r in records], "test", args.test_fraction))
    records = [r for r in records if r.identity in held][: args.clips]
    rows, ratios = [], []
    for i, r in enumerate(records):
        n = min(args.samples, r.num_frames - 1)
        idx = [0] + [1 + (j * (r.num_frames - 1)) // n for j in range(n)]
        frames = read_clip_frames(r.path, idx).float().div(255.0)
        fits = rescale_fit(FitResult.load(r.path / PARAMS_NAME)[idx], S)
        if frames.shape[-1] != S:
            frames = torch.nn.functional.interpolate(frames, size=(S, S), mode="bilinear", antialias=True,
                                                     align_corners=False).clamp(0, 1)
        src, init = frames[0], fits[0:1]
        sampled = pipe.sample_expressions(n, src, seed=i)
        real = torch.stack([pipe.edit(src, expression=frames[1 + j]) for j in range(n)])

        def fitted(images: torch.Tensor, init: FitResult = init) -> torch.Tensor:
            out = [fit_photometric(pipe.model, im[None], init=init, steps=args.fit_steps, fit_identity=False)
                   for im in images]
            return torch.cat([f.exp_coeffs for f in out])

        s_sampled, s_real = _spread(fitted(sampled)), _spread(fitted(real))
        s_truth = _spread(fits.exp_coeffs[1:].float())
        ratios.append(s_sampled / max(s_real, 1e-9))
        rows.append([f"{r.identity}/{r.video}/{r.clip}", s_sampled, s_real, s_truth, ratios[-1]])
        if i == 0 and args.strip:
            from morphface.io import write_image

            strip = pipe.interpolation_strip(src, frames[1], frames[-1], steps=5)
            write_image(args.strip, strip.cpu())
            print(f"wrote {args.strip}")
    print_table(["clip", "spread: VAE samples via MMFA", "spread: real expressions via MMFA",
                 "spread: real ground truth", "samples / real"], rows)
    print(f"\nmedian samples/real spread ratio {statistics.median(ratios):.2f} (target >= 0.5; adversarial weight "
          f"{pipe.config.lambda_vae_adversarial:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
