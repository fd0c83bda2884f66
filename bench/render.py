"""Rasterize + interpolate throughput per backend (a script, not a test).

    python bench/render.py            # full run (~2-3 min on a 2-core CPU)
    python bench/render.py --quick    # fewer repeats

Meshes: the embedded ICT-FaceKit model (9,409 vertices / 18,460 triangles) and a BFM-sized
synthetic face-like cap (a 187 x 187 vertex grid bent onto an ellipsoid: 34,969 vertices /
69,192 triangles, about BFM 2009's 35,709 / 70,789). Each batch entry gets its own small head
rotation, the camera is perspective at 1 m with the head filling most of the image, and the
interpolated attribute has 3 channels (an NCC-like code). For every backend available here
(cpu, torch; nvdiffrast / pytorch3d when importable) it times

* fwd:      ``rasterize`` + ``interpolate``
* fwd+bwd:  the same, then ``backward`` of a weighted sum w.r.t. the vertices and the attribute,

reporting the median (``--stat min``: the minimum) over repeats after warm-up, as ms per image,
million triangles per second (batch x triangles / time) and the speed-up over the ``torch``
backend in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from morphface import load_default_model  # noqa: E402
from morphface.camera import PerspectiveCamera, euler_to_matrix  # noqa: E402
from morphface.render import available_backends, interpolate, rasterize  # noqa: E402


def bfm_sized_mesh(n: int = 187) -> tuple[torch.Tensor, torch.Tensor]:
    """A face-sized (~160 x 200 mm) grid bent onto an ellipsoidal cap, ``n * n`` vertices."""
    u = torch.linspace(-1.0, 1.0, n)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    x, y = xx * 80.0, -yy * 100.0
    z = torch.sqrt((1.0 - (x / 95.0) ** 2 - (y / 120.0) ** 2).clamp(min=0.0)) * 100.0
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    # Counter-clockwise seen from +z (y grows upward here, rows grow downward).
    faces = torch.cat([torch.stack([a, c, d], -1).reshape(-1, 3), torch.stack([a, d, b], -1).reshape(-1, 3)])
    return verts, faces


def scene(verts: torch.Tensor, size: int, batch: int, height_mm: float):
    g = torch.Generator().manual_seed(0)
    angles = (torch.rand(batch, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.8, 0.2])
    cam = PerspectiveCamera(image_size=(size, size), focal=torch.tensor([size * 1000.0 / (height_mm * 1.15)]),
                            R=euler_to_matrix(angles), t=torch.tensor([[0.0, 0.0, -1000.0]]))
    centred = verts - (verts.amax(0) + verts.amin(0)) / 2
    return cam.to_ndc(centred[None].expand(batch, -1, -1)).contiguous()


def timed(fn, repeats: int, budget_s: float, stat=statistics.median) -> float:
    for _ in range(2):  # warm-up (and numba compilation)
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stat(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 repeats per cell instead of up to 9")
    p.add_argument("--backends", default=None, help="comma-separated subset of the available backends")
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: theirs)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic over repeats (min is steadier on a machine shared with other jobs)")
    args = p.parse_args(argv)
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    repeats, budget = (3, 1.0) if args.quick else (9, 3.0)

    backends = available_backends() if args.backends is None else args.backends.split(",")
    if "torch" not in backends:
        backends.append("torch")  # the reference for the ratios
    model = load_default_model()
    meshes = {"ICT default": (model.mean, model.triangles), "BFM-sized": bfm_sized_mesh()}
    device_of = {"nvdiffrast": "cuda"}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import numba

    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch / {numba.get_num_threads()} numba threads, "
          f"{os.cpu_count()} cores, load average {load:.1f} before the run, {args.stat} of repeats, "
          f"backends {backends}")

    rows = []
    for mesh_name, (verts, faces) in meshes.items():
        height = float(verts[:, 1].max() - verts[:, 1].min())
        F = faces.shape[0]
        for size in (int(s) for s in args.sizes.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                ndc0 = scene(verts, size, batch, height)
                res = {}
                for be in backends:
                    dev = device_of.get(be, "cpu")
                    ndc = ndc0.to(dev)
                    fc = faces.to(dev)
                    attrs = torch.rand(1, verts.shape[0], 3, device=dev)
                    w = torch.rand(batch, size, size, 3, device=dev)

                    def fwd():
                        out = interpolate(attrs, fc, rasterize(ndc, fc, (size, size), backend=be))  # noqa: B023
                        if dev == "cuda":  # noqa: B023
                            torch.cuda.synchronize()
                        return out

                    def fwd_bwd():
                        v = ndc.detach().requires_grad_()  # noqa: B023
                        a = attrs.detach().requires_grad_()  # noqa: B023
                        out = interpolate(a, fc, rasterize(v, fc, (size, size), backend=be))  # noqa: B023
                        (out * w).sum().backward()  # noqa: B023
                        if dev == "cuda":  # noqa: B023
                            torch.cuda.synchronize()

                    stat = min if args.stat == "min" else statistics.median
                    res[be] = (timed(fwd, repeats, budget, stat), timed(fwd_bwd, repeats, budget, stat))
                for be, (tf, tb) in res.items():
                    rows.append((mesh_name, F, size, batch, be, tf, tb, res["torch"][0] / tf, res["torch"][1] / tb))
                print(f"  done {mesh_name} {size}^2 batch {batch}", file=sys.stderr)

    head = (f"{'mesh':<12} {'tris':>6} {'size':>5} {'B':>2} {'backend':<10} | {'fwd ms/img':>10} {'Mtri/s':>7} "
            f"{'x torch':>7} | {'f+b ms/img':>10} {'Mtri/s':>7} {'x torch':>7}")
    print(head)
    print("-" * len(head))
    for mesh_name, F, size, batch, be, tf, tb, rf, rb in rows:
        print(f"{mesh_name:<12} {F:>6} {size:>5} {batch:>2} {be:<10} | {1e3 * tf / batch:>10.2f} "
              f"{batch * F / tf / 1e6:>7.1f} {rf:>7.2f} | {1e3 * tb / batch:>10.2f} {batch * F / tb / 1e6:>7.1f} "
              f"{rb:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
