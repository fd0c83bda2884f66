"""``morphface fit PATH -o OUT``: fit the 3DMM to an image, a folder of images, or a video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._args import non_negative_int

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="fit the morphable model to photos or a video",
        description="Detect faces, fit identity, expression and pose, and write per input: the parameters "
                    "(<name>.fit.safetensors), an overlay picture (<name>_overlay.png, or .mp4 for a video) and "
                    "the fitted mesh (<name>.obj, model frame, mm). <name> is the input's stem, made safe; inputs "
                    "that share a stem (a.jpg, a.png) keep their extension (a_jpg, a_png). A file that fails "
                    "(unreadable, no face) is reported and skipped; the exit code is 1 if any failed.")
    p.add_argument("path", help="an image, a folder of images, or a video file")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default="default", help="model file (any format load_model reads), or 'default' "
                                                     "for the embedded ICT face region")
    p.add_argument("--detector", default="auto", choices=["auto", "dlib", "fan", "mediapipe"])
    p.add_argument("--photometric-steps", type=non_negative_int, default=0,
                   help="analysis-by-synthesis steps after the landmark fit (0 = landmarks only)")
    p.add_argument("--camera", default="perspective", choices=["perspective", "weak_perspective"])
    p.add_argument("--pose", default="joint", choices=["joint", "rigid", "regressed"],
                   help="how a MediaPipe fit finds the head rotation (regressed: the learned calibration of "
                        "MediaPipe's pose bias; photos only)")
    p.add_argument("--silhouette", action="store_true",
                   help="with --photometric-steps: keep the face on MediaPipe's person mask (photos only)")
    p.add_argument("--overlay", default="shaded", choices=["shaded", "ncc", "albedo"])
    p.add_argument("--all-faces", action="store_true", help="fit every face found (default: the largest)")
    p.set_defaults(func=run)


def _load_model(spec: str):
    from ..morphable import load_default_model, load_model

    return load_default_model("narrow") if spec == "default" else load_model(spec)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..fitting import make_detector
    from ._batch import FailureLog, output_names

    src, out = Path(args.path), Path(args.output)
    if not src.exists():
        print(f"morphface fit: error: {src} does not exist", file=sys.stderr)
        return 2
    model = _load_model(args.model)  # a bad model file or detector: one line from morphface.cli.main
    detector = make_detector(args.detector)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
    else:
        files = [src]
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    log = FailureLog(write=lambda line: tqdm.write(line, file=sys.stderr))
    for f in tqdm(files, desc="fitting", unit="file", disable=len(files) < 2):
        try:
            if f.suffix.lower() in VIDEO_EXTS:
                _fit_video_file(model, f, out, names[f], detector, args)
            else:
                _fit_image_file(model, f, out, names[f], detector, args)
        except Exception as e:  # noqa: BLE001 - a batch reports each failing input and goes on
            log.add(f, e)
    print(log.summary("fitted", len(files), out))
    return log.exit_code


def _write_outputs(model, fit, out: Path, name: str, overlay, mesh_index: int = 0) -> None:
    from ..io import write_image, write_mesh
    from ._batch import inside

    inside(out, out / name)  # safe names never leave the folder; checked all the same
    fit.save(out / f"{name}.fit.safetensors")
    write_mesh(out / f"{name}.obj", fit.vertices(model)[mesh_index].detach(), model.triangles,
               model.uv if model.has_uv and model.uv_faces.numel() == 0 else None)
    if overlay is not None:
        write_image(out / f"{name}_overlay.png", overlay)


def _fit_image_file(model, f: Path, out: Path, name: str, detector, args) -> None:
    import torch

    from ..fitting import fit_image
    from ..io import read_image

    image = read_image(f)
    fit = fit_image(model, image, detector=detector, photometric_steps=args.photometric_steps,
                    all_faces=args.all_faces, name=str(f), camera=args.camera, pose=args.pose,
                    segmenter="mediapipe" if args.silhouette else None)
    with torch.no_grad():
        canvas = image[None]
        for i in range(fit.batch_size):  # faces drawn one over the other
            canvas = fit[i].render_overlay(model, canvas, mode=args.overlay)
    for i in range(fit.batch_size):
        suffix = "" if fit.batch_size == 1 else f"_face{i}"
        _write_outputs(model, fit[i], out, f"{name}{suffix}", canvas[0] if i == 0 else None)


def _fit_video_file(model, f: Path, out: Path, name: str, detector, args) -> None:
    import torch

    from ..fitting import fit_video
    from ..io import VideoWriter, iter_video, probe_video

    fit = fit_video(model, f, detector=detector, photometric_steps=args.photometric_steps, camera=args.camera,
                    name=str(f))
    _write_outputs(model, fit, out, name, None)
    info = probe_video(f)
    start = 0
    with VideoWriter(out / f"{name}_overlay.mp4", fps=info.fps, audio_path=f if info.has_audio else None) as writer, \
            torch.no_grad():
        for block in iter_video(f, chunk=32):
            n = block.shape[0]
            writer.write(fit[start:start + n].render_overlay(model, block, mode=args.overlay))
            start += n
