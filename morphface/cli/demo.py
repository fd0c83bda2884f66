"""``morphface demo -o OUT``: the main job on the embedded defaults; writes pictures a person can look at.

1. ``model_gallery.png`` and ``meshes/*.obj``: the default model's mean face, +-3 sigma of its first
   identity modes and a few expression blendshapes.
2. ``render_grid.png``: NCC, normal, shaded and UV-textured renders at several poses and expressions.
3. ``fit_<photo>.png``: the bundled photos with the fitted model drawn over them (dlib landmarks +
   closed-form fit) and the fitted meshes.
4. ``frontalize_<photo>.png``: input | UV texture | frontalised face, when ``morphface.uv`` is present.

Steps 3 and 4 need a landmark detector, which the base install does not have: without one they are
skipped with a line naming the extra to install (``morphface[fit]``: dlib, fully offline; or
``morphface[mediapipe]``), and the demo still finishes (exit 0).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

EXAMPLES = ("astronaut_eileen_collins.png", "cc0_040_yaw35_man.jpg")
NO_DETECTOR = ('skipped the photo fits and frontalisation: no landmark detector is installed; add one with '
               'pip install "morphface[fit]" (dlib, works offline) or pip install "morphface[mediapipe]"')


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render and fit with the embedded defaults; write pictures to a folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--size", type=int, default=256, help="render size in pixels")
    p.set_defaults(func=run)


def _label(image, text: str):
    """Write ``text`` in the top-left corner of a ``(3, H, W)`` image (Pillow's default font)."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from ..io import image_to_uint8

    pil = Image.fromarray(image_to_uint8(image))
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, 7 * len(text) + 6, 14], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255.0


def _grid(images, cols: int):
    """Tile ``(N, 3, H, W)`` images into one ``(3, rows*H, cols*W)`` image (white padding)."""
    import torch

    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    pad = torch.ones(rows * cols - n, c, h, w, dtype=images.dtype)
    allim = torch.cat([images, pad]).reshape(rows, cols, c, h, w)
    return allim.permute(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w)


def _camera(B: int, size: int, angles_deg, distance: float = 1150.0):
    import torch

    from ..camera import PerspectiveCamera, euler_to_matrix
    from ..fitting import default_focal

    a = torch.deg2rad(torch.as_tensor(angles_deg, dtype=torch.float32).reshape(B, 3))
    return PerspectiveCamera(image_size=(size, size), focal=torch.full((B,), default_focal((size, size)) * 0.55),
                             R=euler_to_matrix(a), t=torch.tensor([[0.0, 10.0, -distance]]).expand(B, 3))


def _studio_light(B: int):
    from ..render import ambient_sh

    sh = ambient_sh(B, level=0.4).reshape(B, 3, 9)
    sh[:, :, 2] = 0.3  # key light toward the camera (+z)
    sh[:, :, 1] = -0.2  # the basis term is -y: a negative weight lights from above
    sh[:, :, 3] = 0.12  # the basis term is -x: light from the image left
    return sh.reshape(B, 27)


def _uv_checker(size: int = 512):
    """A UV test texture: a coloured gradient with a checkerboard, to show the UV layout."""
    import torch

    t = (torch.arange(size) + 0.5) / size
    v, u = torch.meshgrid(1 - t, t, indexing="ij")  # texture row 0 is v = 1
    checker = (((u * 16).floor() + (v * 16).floor()) % 2) * 0.25 + 0.75
    return torch.stack([u * checker, v * checker, (1 - u) * checker])[None]


def _gallery(model, out: Path, size: int) -> list[str]:
    import torch

    from ..io import write_image, write_mesh
    from ..render import render_shaded

    entries = [("mean", None, None)]
    for k in (0, 1):
        for s in (3.0, -3.0):
            ida = torch.zeros(1, model.n_id)
            ida[0, k] = s
            entries.append((f"id{k} {'+' if s > 0 else '-'}3 sigma", ida, None))
    for name in ("jawOpen", "mouthSmile_L", "eyeBlink_L", "mouthPucker", "browInnerUp_L"):
        if name in model.exp_names:
            exp = torch.zeros(1, model.n_exp)
            exp[0, model.exp_names.index(name)] = 1.0
            if name == "mouthSmile_L" and "mouthSmile_R" in model.exp_names:
                exp[0, model.exp_names.index("mouthSmile_R")] = 1.0
            entries.append((name.replace("_L", ""), None, exp))
    ids = torch.cat([e[1] if e[1] is not None else torch.zeros(1, model.n_id) for e in entries])
    exps = torch.cat([e[2] if e[2] is not None else torch.zeros(1, model.n_exp) for e in entries])
    verts = model(ids, exps)
    written = []
    for (name, _, _), v in zip(entries, verts):
        fname = name.replace(" ", "_").replace("+", "plus").replace("-", "minus")
        write_mesh(out / "meshes" / f"{fname}.obj", v, model.triangles, model.uv)
        written.append(fname)
    B = len(entries)
    cam = _camera(B, size, [[0.0, 25.0, 0.0]] * B)
    img = render_shaded(verts, model.triangles, cam, _studio_light(B), albedo=torch.full_like(verts, 0.8)).image
    img = img + (1 - render_shaded(verts, model.triangles, cam, _studio_light(B),
                                   albedo=torch.full_like(verts, 0.8)).mask)  # white background
    labelled = torch.stack([_label(i, e[0]) for i, e in zip(img, entries)])
    write_image(out / "model_gallery.png", _grid(labelled, 4))
    return written


def _render_grid(model, out: Path, size: int) -> None:
    import torch

    from ..io import write_image
    from ..render import render_ncc, render_normals, render_shaded, render_textured

    poses = [[0.0, 0.0, 0.0], [0.0, 35.0, 0.0], [-15.0, -40.0, 10.0], [20.0, 10.0, -8.0]]
    exps = torch.zeros(4, model.n_exp)
    for row, name in ((1, "jawOpen"), (2, "mouthSmile_L"), (2, "mouthSmile_R"), (3, "eyeBlink_L")):
        if name in model.exp_names:
            exps[row, model.exp_names.index(name)] = 0.8
    ids = torch.randn(4, model.n_id, generator=torch.Generator().manual_seed(3)) * 0.8
    verts = model(ids, exps)
    cam = _camera(4, size, poses)
    ncc = render_ncc(model, verts, cam)
    normals = render_normals(verts, model.triangles, cam)
    shaded = render_shaded(verts, model.triangles, cam, _studio_light(4), albedo=torch.full_like(verts, 0.75))
    uv, uv_faces = model.face_uvs()
    textured = render_textured(verts, model.triangles, uv, uv_faces, _uv_checker(), cam)
    cols = []
    for name, r in (("NCC", ncc), ("normals", normals), ("SH shaded", shaded), ("UV textured", textured)):
        imgs = r.image[:, :3] + (1 - r.mask)
        cols.append(torch.stack([_label(i, name) for i in imgs]))
    tiles = torch.stack(cols, dim=1).reshape(-1, 3, size, size)  # rows: poses; columns: render kinds
    write_image(out / "render_grid.png", _grid(tiles, 4))


def _fit_examples(model, out: Path, detector) -> list[tuple[str, float]]:
    from importlib import resources

    import torch

    from ..errors import MorphfaceError
    from ..fitting import fit_image
    from ..io import read_image, write_image, write_mesh

    results = []
    for fname in EXAMPLES:
        with resources.as_file(resources.files("morphface").joinpath("assets", "examples", fname)) as p:
            image = read_image(p)
        try:
            fit = fit_image(model, image, detector=detector, name=fname)
        except MorphfaceError as e:
            print(f"  {fname}: {e}")
            continue
        with torch.no_grad():
            over = fit.render_overlay(model, image[None], mode="shaded")[0]
            ncc = fit.render_overlay(model, image[None], mode="ncc", alpha=0.8)[0]
        stem = Path(fname).stem
        write_image(out / f"fit_{stem}.png", torch.cat([image, over, ncc], dim=2))
        write_mesh(out / "meshes" / f"fit_{stem}.obj", fit.vertices(model)[0], model.triangles, model.uv)
        # Eye centres from the fitted model's eye landmarks: the fitted points may be MediaPipe's 468.
        eyes, _ = fit.camera.project(fit.vertices(model)[:, model.landmarks[36:48]])
        iod = float((eyes[0, :6].mean(0) - eyes[0, 6:].mean(0)).norm())
        results.append((fname, float(fit.residuals[0]) / iod))
    return results


def _frontalize_examples(out: Path) -> list[str]:
    from importlib import resources

    try:
        from ..uv import frontalize
    except ImportError:
        return []
    from ..errors import MorphfaceError
    from ..io import read_image, write_image

    written = []
    for fname in EXAMPLES:
        with resources.as_file(resources.files("morphface").joinpath("assets", "examples", fname)) as p:
            image = read_image(p)
        try:
            res = frontalize(image)
        except MorphfaceError as e:
            print(f"  {fname}: {e}")
            continue
        name = out / f"frontalize_{Path(fname).stem}.png"
        write_image(name, res.side_by_side(image, height=512))
        written.append(name.name)
    return written


def run(args: argparse.Namespace) -> int:
    import torch

    from ..morphable import load_default_model

    torch.manual_seed(0)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    full = load_default_model()
    narrow = load_default_model("narrow")
    print(f"model: {full}")
    meshes = _gallery(full, out, args.size)
    print(f"wrote {out / 'model_gallery.png'} and {len(meshes)} meshes in {out / 'meshes'}")
    _render_grid(full, out, args.size)
    print(f"wrote {out / 'render_grid.png'} (rows: poses/expressions; columns: NCC, normals, shaded, UV textured)")
    from .. import fitting
    from ..errors import BackendUnavailableError

    try:
        detector = fitting.make_detector("auto")
    except BackendUnavailableError:  # a plain install: no dlib, MediaPipe or FAN
        detector = None
        print(NO_DETECTOR)
    if detector is not None:
        for fname, err in _fit_examples(narrow, out, detector):
            name = out / f"fit_{Path(fname).stem}.png"
            print(f"wrote {name} (landmark RMSE {100 * err:.1f}% of the eye distance)")
        for name in _frontalize_examples(out):
            print(f"wrote {out / name} (input | UV texture | frontal)")
    print(f"done in {time.perf_counter() - t0:.1f} s; open the PNGs in {out}")
    return 0
