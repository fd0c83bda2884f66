"""Download the wheels the GPU machine lacks into this folder (run on a machine with PyPI; see README.md).

    python bench/gpu_wheels/fetch.py            # all pinned wheels (~23 MB after repacking pytorch3d)
    python bench/gpu_wheels/fetch.py --no-pytorch3d

Wheels are for CPython 3.12 on x86-64 Linux (the GPU machine's Python), fetched with ``pip download --no-deps``
at pinned versions. ``easypytorch3d`` (a PyTorch3D build for torch 2.11-2.12 + CUDA 13.0) is 67 MiB as
published, more than a device call may carry (64 MiB for the whole working tree), almost all of it DWARF
debug sections of its ``_C`` extension: ``strip --strip-debug`` removes them (the code and the CUDA fatbins
are untouched) and the wheel is repacked with its ``RECORD`` hashes updated (~14 MB).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: what the GPU machine's image lacks (its package list: .library/device/KINDS.md), pinned
PINS = [
    "diffrp-nvdiffrast==0.3.3.1",  # nvdiffrast sources, JIT-compiled at first use (nvcc + ninja)
    "kornia==0.9.2",  # morphface.camera imports it
    "kornia_rs==0.2.0",  # kornia's dependency (binary)
    "trimesh==5.2.0",  # morphface.io (OBJ/PLY) and a few tests
]
PYTORCH3D = ["easypytorch3d==0.7.9.post1", "iopath==0.1.9"]  # iopath: pytorch3d's only hard dependency
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def download(spec: str, dest: Path) -> None:
    """``pip download --no-deps`` of one pinned spec for CPython 3.12 / x86-64 Linux into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest), spec]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    subprocess.run(cmd, check=True)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def strip_wheel(wheel: Path) -> None:
    """Strip the debug sections of every ``.so`` in ``wheel`` and rewrite it (RECORD updated) in place."""
    strip = shutil.which("strip")
    if strip is None:
        raise SystemExit("`strip` (binutils) is needed to shrink the pytorch3d wheel: apt-get install binutils")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zin:
        entries = {}
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".so"):
                so = Path(tmp) / "lib.so"
                so.write_bytes(data)
                subprocess.run([strip, "--strip-debug", str(so)], check=True)
                data = so.read_bytes()
            entries[info.filename] = (info, data)
        record_name = next(n for n in entries if n.endswith(".dist-info/RECORD"))
        rows = []
        for row in csv.reader(io.StringIO(entries[record_name][1].decode())):
            if row and row[0] in entries and row[0] != record_name:
                data = entries[row[0]][1]
                row = [row[0], _record_hash(data), str(len(data))]
            rows.append(row)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        entries[record_name] = (entries[record_name][0], buf.getvalue().encode())
        out = Path(tmp) / wheel.name
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info, data in entries.values():
                zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                zi.external_attr = info.external_attr
                zi.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(zi, data, compresslevel=9)
        shutil.move(str(out), wheel)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", type=Path, default=HERE, help="target folder (default: this folder)")
    ap.add_argument("--no-pytorch3d", action="store_true", help="skip easypytorch3d (the largest wheel)")
    args = ap.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    specs = PINS + ([] if args.no_pytorch3d else PYTORCH3D)
    for spec in specs:
        download(spec, args.dest)
    for wheel in args.dest.glob("easypytorch3d-*.whl"):
        if wheel.stat().st_size > 30 * 2**20:
            print(f"stripping debug sections from {wheel.name} ({wheel.stat().st_size / 2**20:.0f} MiB)")
            strip_wheel(wheel)
    files = sorted(p for p in args.dest.iterdir() if p.suffix == ".whl")
    total = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.name}")
    print(f"{total / 2**20:8.2f} MiB  in {len(files)} wheels in {args.dest}")
    if total > 40 * 2**20:
        print("warning: over 40 MiB; a device call carries 64 MiB with the rest of the working tree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
