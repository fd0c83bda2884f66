"""``morphface convert-model SRC DST``: any supported model file -> the native format."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-model", help="convert a BFM/LSFM/Deep3DFaceRecon model to morphface's format",
                       description="Read a model file (format recognised automatically) and write the native "
                                   ".safetensors file, which loads in well under a second.")
    p.add_argument("src", help="model file or folder (e.g. PublicMM1/ with 01_MorphableModel.mat, "
                               "Exp_Pca.bin, std_exp.txt and BFM_exp_idx.mat)")
    p.add_argument("dst", help="output .safetensors path (never the source; an existing file only with --force)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from ..errors import MorphfaceError
    from ..morphable import load_model

    def fail(message: str) -> int:
        print(f"morphface convert-model: error: {message}", file=sys.stderr)
        return 1

    src, dst = Path(args.src), Path(args.dst)
    inside_source = src.is_dir() and src.resolve() in dst.resolve().parents
    if dst.exists() and src.exists() and (dst.samefile(src) or inside_source):
        # even with --force: the source may be a licensed file the user had to request
        return fail(f"{dst} is the source (or a file of the source folder); write the converted model elsewhere")
    if dst.is_dir():
        return fail(f"{dst} is a folder; give the output file's path (e.g. {dst / 'model.safetensors'})")
    if dst.exists() and not args.force:
        return fail(f"{dst} exists; pass --force to replace it")
    t = time.perf_counter()
    try:
        model = load_model(src)
    except MorphfaceError as e:  # a bad input file is a user error: a message, not a traceback
        return fail(str(e))
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        model.save(dst)  # atomic: a failed write leaves no half file
    except OSError as e:
        return fail(f"cannot write {dst}: {e.strerror or e}")
    print(f"{model}\nwrote {dst} in {time.perf_counter() - t:.1f} s")
    return 0
