"""``morphface fit PATH -o OUT``: fit the 3DMM to an image, a folder of images, or a video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="fit the morphable model to photos or a video",
        description="Detect faces, fit identity, expression and pose, and write per input: the parameters "
                    "(<name>.fit.safetensors), an overlay picture (<name>_overlay.png, or .mp4 for a video) and "
                    "the fitted mesh (<name>.obj, model frame, mm). A file without a face is reported and skipped.")
    p.add_argument("path", help="an image, a folder of images, or a video file")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default="default", help="model file (any format load_model reads), or 'default' "
                                                     "for the embedded ICT face region")
    p.add_argument("--detector", default="auto", choices=["auto", "dlib", "fan", "mediapipe"])
    p.add_argument("--photometric-steps", type=int, default=0,
                   help="analysis-by-synthesis steps after the landmark fit (0 = landmarks only)")
    p.add_argument("--camera", default="perspective", choices=["perspective", "weak_perspective"])
    p.add_argument("--overlay", default="shaded", choices=["shaded", "ncc", "albedo"])
    p.add_argument("--all-faces", action="store_true", help="fit every face found (default: the largest)")
    p.set_defaults(func=run)


def _load_model(spec: str):
    from ..morphable import load_default_model, load_model

    return load_default_model("narrow") if spec == "default" else load_model(spec)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..errors import MorphfaceError
    from ..fitting import make_detector

    src, out = Path(args.path), Path(args.output)
    if not src.exists():
        print(f"morphface fit: error: {src} does not exist", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    model = _load_model(args.model)
    detector = make_detector(args.detector)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
    else:
        files = [src]
    failed = 0
    for f in tqdm(files, desc="fitting", unit="file", disable=len(files) < 2):
        try:
            if f.suffix.lower() in VIDEO_EXTS:
                _fit_video_file(model, f, out, detector, args)
            else:
                _fit_image_file(model, f, out, detector, args)
        except MorphfaceError as e:
            failed += 1
            tqdm.write(f"{f}: {type(e).__name__}: {e}", file=sys.stderr)
    done = len(files) - failed
    print(f"fitted {done} of {len(files)} file(s); results in {out}")
    return 1 if failed else 0


def _write_outputs(model, fit, stem: Path, overlay, mesh_index: int = 0) -> None:
    from ..io import write_image, write_mesh

    fit.save(stem.with_suffix(".fit.safetensors"))
    write_mesh(stem.with_suffix(".obj"), fit.vertices(model)[mesh_index].detach(), model.triangles,
               model.uv if model.has_uv and model.uv_faces.numel() == 0 else None)
    if overlay is not None:
        write_image(stem.parent / f"{stem.name}_overlay.png", overlay)


def _fit_image_file(model, f: Path, out: Path, detector, args) -> None:
    import torch

    from ..fitting import fit_image
    from ..io import read_image

    image = read_image(f)
    fit = fit_image(model, image, detector=detector, photometric_steps=args.photometric_steps,
                    all_faces=args.all_faces, name=str(f), camera=args.camera)
    with torch.no_grad():
        canvas = image[None]
        for i in range(fit.batch_size):  # faces drawn one over the other
            canvas = fit[i].render_overlay(model, canvas, mode=args.overlay)
    for i in range(fit.batch_size):
        suffix = "" if fit.batch_size == 1 else f"_face{i}"
        _write_outputs(model, fit[i], out / f"{f.stem}{suffix}", canvas[0] if i == 0 else None)


def _fit_video_file(model, f: Path, out: Path, detector, args) -> None:
    import torch

    from ..fitting import fit_video
    from ..io import VideoWriter, iter_video, probe_video

    fit = fit_video(model, f, detector=detector, photometric_steps=args.photometric_steps, camera=args.camera,
                    name=str(f))
    _write_outputs(model, fit, out / f.stem, None)
    info = probe_video(f)
    start = 0
    with VideoWriter(out / f"{f.stem}_overlay.mp4", fps=info.fps, audio_path=f if info.has_audio else None) as writer, \
            torch.no_grad():
        for block in iter_video(f, chunk=32):
            n = block.shape[0]
            writer.write(fit[start:start + n].render_overlay(model, block, mode=args.overlay))
            start += n
