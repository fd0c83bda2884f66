"""Frontalisation quality on synthetic ground truth: PSNR / SSIM of the face region per yaw.

Faces of the embedded model (ears and neck included) with a random identity, a random sparse
blendshape expression and a random procedural UV albedo (``morphface.uv.random_face_texture``:
skin tone variation, freckles, brows, lash lines, lips, blush) are rendered unlit over a smooth
random background at yaw 0, 15, 30, 45 and 60 degrees (pitch and roll 0). Each render is
frontalised from its 68 projected model landmarks plus 1 px Gaussian noise (no detector; the fit
is ``fit_landmarks``), and compared with the ground-truth frontal render of the same face (same
identity, expression and texture, placed by the same rule, ``frontal_fit(truth)``) over the
forehead-to-chin face region (the narrow model's frontal coverage, eroded by 2 px; eye and mouth
openings excluded). Baseline: the same region filled with one colour, the mean colour of the face
in the input (what re-rendering a constant mean albedo gives).

With ``--head`` a table compares the rest of the head around the face (the full model's ears,
temples and front scalp above the mouth, outside the dilated face region) with and without
``head_flow`` (``CompositeConfig(head=False)``: the radial warp of the surroundings alone).

With ``--light`` a table shades the same faces with a directional light fixed in the camera
frame (``morphface.uv.synthetic.shade_texture``) and compares ``TextureConfig(relight=False)`` and
``relight=True`` with the frontal face under the same light.

    python bench/frontalize_quality.py [--n 5] [--size 512] [--texture 256] [--yaws 0 15 30 45 60] [--head]
        [--light]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402

from morphface import load_default_model  # noqa: E402
from morphface.render import rasterize, render_textured  # noqa: E402
from morphface.uv import (  # noqa: E402
    CompositeConfig,
    FrontalizeConfig,
    TextureConfig,
    fill_holes,
    frontal_fit,
    frontalize,
)
from morphface.uv.synthetic import shade_texture, synthetic_face  # noqa: E402


def ssim_map(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window, data range 1), averaged over channels."""
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=a.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = a.shape[1]

    def filt(x):
        x = F.conv2d(
            F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C
        )
        return F.conv2d(
            F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C
        )

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(1, keepdim=True)


def evaluate(
    yaw: float, seed: int, size: int, texture: int, models, light=None, head: bool = True, relight: bool = True
) -> dict[str, float]:
    full, narrow, capped = models
    scene = synthetic_face(yaw, size, texture, torch.Generator().manual_seed(seed), light=light)
    config = FrontalizeConfig(
        texture=TextureConfig(size=texture, relight=relight), composite=CompositeConfig(head=head)
    )
    t = time.perf_counter()
    result = frontalize(scene.image, landmarks=scene.landmarks, config=config)
    seconds = time.perf_counter() - t
    front = frontal_fit(scene.truth, capped)
    cam = front.camera
    # The ground truth: the frontal face under the same light (fixed in the camera frame).
    lit = scene.texture if light is None else shade_texture(scene.texture, full, front, light)
    truth = render_textured(front.vertices(full), full.triangles, full.uv, None, lit, cam).image
    region = (
        rasterize(cam.to_ndc(front.vertices(narrow)), narrow.triangles, (size, size)).mask[:, None].float()
    )
    region = -F.max_pool2d(-region, 5, 1, 2)
    seen = (
        rasterize(scene.truth.camera.to_ndc(scene.truth.vertices(narrow)), narrow.triangles, (size, size))
        .mask[:, None]
        .float()
    )
    mean_colour = ((scene.image * seen).sum((2, 3), keepdim=True) / seen.sum()).expand_as(truth)
    # Around the face: the rest of the head (ears, temples, front scalp) above the mouth.
    head = rasterize(cam.to_ndc(front.vertices(full)), full.triangles, (size, size)).mask[:, None].float()
    mouth, _ = cam.project(front.vertices(full)[:, full.landmarks[51:52]])
    rows = (torch.arange(size, dtype=head.dtype) + 0.5 < float(mouth[0, 0, 1])).view(1, 1, -1, 1)
    face = F.max_pool2d(
        rasterize(cam.to_ndc(front.vertices(narrow)), narrow.triangles, (size, size)).mask[:, None].float(), 7, 1, 3
    )
    around = head * (1 - face) * rows

    def psnr(x, where=region):
        mse = (((x - truth) ** 2).mean(1, keepdim=True) * where).sum() / where.sum()
        return 10 * math.log10(1.0 / float(mse))

    def ssim(x):
        return float((ssim_map(x, truth) * region).sum() / region.sum())

    yaw_err = abs(float(result.fit.euler_degrees[0, 1]) - yaw)
    return {
        "psnr": psnr(result.image),
        "ssim": ssim(result.image),
        "psnr_base": psnr(mean_colour),
        "psnr_around": psnr(result.image, around),
        "ssim_base": ssim(mean_colour),
        "seconds": seconds,
        "yaw_err": yaw_err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5, help="faces per yaw")
    ap.add_argument("--size", type=int, default=512, help="image side, pixels")
    ap.add_argument(
        "--texture", type=int, default=256, help="texture resolution (256: what frontalize picks)"
    )
    ap.add_argument("--yaws", type=float, nargs="+", default=[0, 15, 30, 45, 60])
    ap.add_argument(
        "--light",
        action="store_true",
        help="also shade the faces with a light fixed in the camera frame (upper left) and compare "
        "frontalize with and without relighting against the frontal face under the same light",
    )
    ap.add_argument(
        "--head",
        action="store_true",
        help="also compare the rest of the head around the face (ears, temples, scalp above the mouth) "
        "with and without head_flow",
    )
    args = ap.parse_args()
    full, narrow = load_default_model("full"), load_default_model("narrow")
    models = (full, narrow, fill_holes(narrow))
    rows = []
    for yaw in args.yaws:
        runs = [evaluate(yaw, seed, args.size, args.texture, models) for seed in range(args.n)]

        def avg(key, runs=runs):
            return statistics.fmean(r[key] for r in runs)

        rows.append(
            [
                f"{yaw:g}",
                args.n,
                avg("psnr"),
                avg("ssim"),
                avg("psnr_base"),
                avg("ssim_base"),
                avg("psnr") - avg("psnr_base"),
                avg("yaw_err"),
                avg("seconds"),
            ]
        )
    print(
        f"frontalize on synthetic faces, {args.size}^2 images, {args.texture}^2 texture, "
        f"landmarks + 1 px noise, {torch.get_num_threads()} CPU threads"
    )
    print_table(
        [
            "yaw deg",
            "faces",
            "PSNR dB",
            "SSIM",
            "baseline PSNR",
            "baseline SSIM",
            "gain dB",
            "fit yaw err deg",
            "s/face",
        ],
        rows,
    )
    if args.head:
        head_rows = []
        for yaw in args.yaws:
            row = [f"{yaw:g}", args.n]
            for head in (True, False):
                runs = [evaluate(yaw, s, args.size, args.texture, models, head=head) for s in range(args.n)]
                row.append(statistics.fmean(r["psnr_around"] for r in runs))
            head_rows.append(row + [row[2] - row[3]])
        print("\naround the face (ears, temples, front scalp above the mouth), with and without head_flow:")
        print_table(["yaw deg", "faces", "PSNR head_flow", "PSNR radial warp only", "gain dB"], head_rows)
    if args.light:
        light = torch.tensor([-0.5, 0.4, 0.77])
        lit_rows = []
        for yaw in args.yaws:
            row = [f"{yaw:g}", args.n]
            for relight in (False, True):
                runs = [evaluate(yaw, s, args.size, args.texture, models, light=light, relight=relight)
                        for s in range(args.n)]
                row += [statistics.fmean(r["psnr"] for r in runs), statistics.fmean(r["ssim"] for r in runs)]
            lit_rows.append(row + [row[4] - row[2]])
        print("\nlit by a directional light fixed in the camera frame (Lambertian, ambient 0.45):")
        print_table(["yaw deg", "faces", "PSNR no relight", "SSIM no relight", "PSNR relight", "SSIM relight",
                     "gain dB"], lit_rows)


if __name__ == "__main__":
    main()
