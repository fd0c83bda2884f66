"""``morphface convert-model SRC DST``: any supported model file -> the native format."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-model", help="convert a BFM/LSFM/Deep3DFaceRecon model to morphface's format",
                       description="Read a model file (format recognised automatically) and write the native "
                                   ".safetensors file, which loads in well under a second.")
    p.add_argument("src", help="model file or folder (e.g. PublicMM1/ with 01_MorphableModel.mat, "
                               "Exp_Pca.bin, std_exp.txt and BFM_exp_idx.mat)")
    p.add_argument("dst", help="output .safetensors path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from ..errors import MorphfaceError
    from ..morphable import load_model

    t = time.perf_counter()
    try:
        model = load_model(args.src)
    except MorphfaceError as e:  # a bad input file is a user error: a message, not a traceback
        print(f"morphface convert-model: error: {e}", file=sys.stderr)
        return 1
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.save(dst)
    print(f"{model}\nwrote {dst} in {time.perf_counter() - t:.1f} s")
    return 0
