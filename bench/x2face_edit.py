"""X2Face video editing (§6): paint on the embedded face, drive it with frames, see the mark follow.

    python -m bench.x2face_edit CHECKPOINT --data out/synth -o docs/x2face_edit.png

Takes the clip of the held-out identities (the last ``--test-fraction`` by name) with the widest range
of ground-truth yaw, embeds its first frame (:meth:`X2Face.embed`), paints
a mark on the embedded face, and renders it with three driving frames of the clip chosen for their
spread of ground-truth yaw (:meth:`X2Face.render_from_embedding`). Writes one picture, each tile
up-scaled ``--scale`` times (nearest): top row ``source | embedded face + mark | three driven frames``,
bottom row ``(blank) | embedded face | the three driving frames``. Prints the pixels of each driven
frame that carry the mark's colour.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def paint_mark(image: torch.Tensor, centre: tuple[float, float], radius: float,
               colour: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A filled disc painted on ``(3, S, S)`` in [0, 1]; returns the edited image and the ``(S, S)`` mask."""
    S = image.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    mask = ((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) <= radius ** 2
    out = image.clone()
    out[:, mask] = torch.tensor(colour)[:, None]
    return out, mask


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.x2face_edit", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("-o", "--output", default="docs/x2face_edit.png")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--mark", type=float, nargs=3, default=[0.62, 0.42, 0.09],
                   help="mark centre x, y and radius as fractions of the image side")
    args = p.parse_args(argv)

    from morphface.data import split_identities
    from morphface.data.cache import PARAMS_NAME, find_clips, read_clip_frames
    from morphface.fitting import FitResult
    from morphface.io import write_image
    from morphface.pipelines import load_pipeline

    pipe = load_pipeline(args.checkpoint, map_location="cpu")
    S = pipe.config.image_size
    records = find_clips(args.data)
    test = set(split_identities([r.identity for r in records], "test", args.test_fraction))

    def yaw_range(r) -> float:
        y = FitResult.load(r.path / PARAMS_NAME).angles[:, 1]
        return float(y.max() - y.min())

    record = max((r for r in records if r.identity in test), key=yaw_range)
    frames = read_clip_frames(record.path).float().div(255.0)
    frames = F.interpolate(frames, size=(S, S), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    yaw = FitResult.load(record.path / PARAMS_NAME).angles[:, 1]
    order = yaw.argsort()
    pick = torch.stack([order[0], order[len(order) // 2], order[-1]])
    embedded = pipe.embed(frames[0])
    cx, cy, r = args.mark
    edited, mask = paint_mark(embedded, (cx * S, cy * S), r * S, (0.1, 0.35, 1.0))
    driven = pipe.render_from_embedding(edited, frames[pick])
    plain = pipe.render_from_embedding(embedded, frames[pick])
    # the mark's pixels: where the edited render moved toward the mark's colour
    moved = (driven - plain).abs().sum(1) > 0.15
    for k, i in enumerate(pick.tolist()):
        print(f"driving frame {i:2d} (yaw {float(torch.rad2deg(yaw[i])):+.1f} deg): {int(moved[k].sum())} marked "
              f"pixels (painted: {int(mask.sum())})")
    blank = torch.ones(3, S, S)
    top = torch.cat([frames[0], edited, *driven], -1)
    bottom = torch.cat([blank, embedded, *frames[pick]], -1)
    grid = torch.cat([top, bottom], -2)
    grid = F.interpolate(grid[None], scale_factor=args.scale, mode="nearest")[0]
    write_image(args.output, grid)
    print(f"wrote {args.output}: top: source | embedded face + mark | driven frames; bottom: - | embedded face | "
          f"driving frames ({record.identity}/{record.video}/{record.clip})")


if __name__ == "__main__":
    main()
