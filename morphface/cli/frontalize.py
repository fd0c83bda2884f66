"""``morphface frontalize PATH -o OUT``: frontalise the face in an image or in every image of a folder.

For each image, writes ``OUT/<name>_frontal.png``: the input, the completed UV texture and the
frontalised image side by side. ``<name>`` is the input's stem made safe (``morphface.cli._batch``);
inputs sharing a stem (``a.jpg``, ``a.png``) keep their extension (``a_jpg``, ``a_png``). A file that
cannot be read, has no face or cannot be fitted is reported on stderr and skipped; the exit code is
1 if any file failed, else 0.
"""

from __future__ import annotations

import argparse

from ._args import non_negative_int, positive_int

#: Suffixes treated as images when PATH is a folder (other files are listed as skipped).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "frontalize",
        help="frontalise faces in photos (non-learned, 3DMM + UV texture)",
        description="Fit the face model, unwrap the face into UV space with visibility, complete "
        "it by mirroring and smooth filling, render it frontally and blend it into the "
        "photo. Writes OUT/<name>_frontal.png panels: input | UV texture | frontal.",
    )
    p.add_argument("path", help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "--detector",
        default="auto",
        choices=["auto", "mediapipe", "dlib", "fan"],
        help="landmark detector (auto: FAN if its weights are present, else MediaPipe, else dlib)",
    )
    p.add_argument("--height", type=positive_int, default=512, help="height of each panel in pixels (default 512)")
    p.add_argument(
        "--texture-size",
        type=positive_int,
        default=None,
        help="UV texture resolution (default: the face's size in the image, rounded up to a power of two)",
    )
    p.add_argument("--neutral", action="store_true", help="render with a neutral expression")
    p.add_argument(
        "--placement",
        choices=["box", "origin"],
        default="box",
        help="where the frontal face goes (see morphface.uv.frontalize)",
    )
    p.add_argument(
        "--photometric-steps",
        type=non_negative_int,
        default=0,
        help="refine the landmark fit photometrically for this many steps (slow; default 0)",
    )
    p.add_argument(
        "--no-person-mask",
        action="store_true",
        help="do not use a person segmentation (by default MediaPipe's, when installed: keeps background "
        "out of the texture and the fitted outline off the background)",
    )
    p.add_argument(
        "--no-relight",
        action="store_true",
        help="keep the photo's shading on the texture instead of dividing it out and relighting the frontal face",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from ..errors import MorphfaceError
    from ..io import read_image, write_image
    from ..uv.frontalize import (
        FitConfig,
        FrontalizeConfig,
        TextureConfig,
        ViewConfig,
        frontalize,
        make_frontalize_detector,
    )
    from ._batch import FailureLog, inside, output_names

    src, out = Path(args.path), Path(args.output)
    if src.is_dir():
        entries = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped = [p for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
    elif src.exists():
        files, skipped = [src], []
    else:
        print(
            f"morphface frontalize: error: {src} does not exist (expected an image file or a folder)",
            file=sys.stderr,
        )
        return 1
    for p in skipped:
        print(f"skipped {p}: not an image file (suffix {p.suffix or 'none'})", file=sys.stderr)
    if not files:
        print(
            f"morphface frontalize: error: no image files in {src} (suffixes {', '.join(IMAGE_SUFFIXES)})",
            file=sys.stderr,
        )
        return 1
    try:
        detector = make_frontalize_detector(args.detector)
    except MorphfaceError as e:
        print(f"morphface frontalize: error: {e}", file=sys.stderr)
        return 1

    config = FrontalizeConfig(
        fit=FitConfig(photometric_steps=args.photometric_steps, segmenter=None if args.no_person_mask else "auto"),
        texture=TextureConfig(size=args.texture_size, relight=not args.no_relight),
        view=ViewConfig(neutral_expression=args.neutral, placement=args.placement),
    )
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    log = FailureLog(write=lambda line: tqdm.write(line, file=sys.stderr))
    for path in tqdm(files, desc="frontalize", unit="image", file=sys.stderr):
        try:
            image = read_image(path)
            result = frontalize(image, detector=detector, config=config)
            write_image(inside(out, out / f"{names[path]}_frontal.png"), result.side_by_side(image, height=args.height))
        except Exception as e:  # noqa: BLE001 - unreadable file, no face, failed fit: report and go on
            log.add(path, e)
    print(log.summary("frontalised", len(files), out))
    return log.exit_code
