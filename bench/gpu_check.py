"""One prepared device check (issue 22): the library on a GPU in one go, written to a markdown report.

    python bench/gpu_check.py --device cuda --install-wheels bench/gpu_wheels    # on the GPU machine (make gpu-check)
    python bench/gpu_check.py --device cpu --quick                              # CPU dry run (make gpu-check-dry)

Sections (each catches its own errors, records PASS / FAIL / SKIP with the reason, and the script goes on; the
report is rewritten after every section, so a run cut short still leaves what it measured):

0. **Setup**: Python, torch, CUDA and the GPU; the wheels of ``--install-wheels DIR`` installed offline
   (``pip install --no-index --no-deps``, only those not already installed); nvdiffrast's first-use JIT compile
   timed on its own (seconds), before anything else uses it.
1. **Test suite on the device**: ``pytest -m "cuda or device_generic" --device DEVICE`` in a subprocess (the
   CUDA-marked tests and every test taking the ``device`` fixture of ``tests/conftest.py``); ``--quick`` only
   collects them.
2. **Rasteriser backends**: the ICT mesh (``load_default_model()``, 9,409 vertices / 18,460 triangles) and a
   BFM-sized mesh (a 231 x 231 grid bent onto an ellipsoidal cap: 53,361 vertices / 105,800 triangles, about
   BFM 2017's 53,149 / 105,694) at 256^2 and 512^2, B = 1 / 8 / 32. For ``torch``, ``nvdiffrast`` and
   ``pytorch3d`` (each when it runs here, else a row saying why): triangle-id agreement with the ``cpu``
   backend over covered pixels (FAIL below 99.9 %), the largest barycentric difference where the ids agree
   (FAIL above 1e-3), the cosine between their vertex gradients and the CPU's (FAIL below 0.99), and the median
   forward (``rasterize`` + ``interpolate``) and forward+backward times in ms with their ratio to nvdiffrast's.
3. **Batched fitting**: ``fit_landmarks`` at B = 256 and ``fit_photometric`` (100 Adam steps, early stop off)
   at B = 64 on 224^2 renders, on faces synthesised from the model with known parameters: faces/s, and the
   rotation error against the truth as a sanity check.
4. **Pipelines**: every name in ``morphface.train.registry.registered_pipelines()``, built through the registry
   at its default (paper-sized) width, ``image_size`` 256, perceptual loss off (no VGG weights offline):
   inference fps on batches of 8 (fp32 and bf16 autocast, ``torch.compile`` off and on; the driving frames'
   3D renders are made on the fly as in ``reenact``), and one training step (generator + discriminator update,
   Adam) at batch 8 under bf16 autocast: ms and peak GPU memory (MiB). Batches come from the real data path
   (``ReenactmentDataset`` over the synthetic clip cache; ``toy_shapes`` for toy pipelines).
5. **HeadGAN burst**: ``Trainer`` on HeadGAN at 256^2, batch 8, bf16, for ``--burst-seconds`` (120) on the clip
   cache of ``--cache`` or synthetic clips made by ``morphface synth`` into a temporary folder; the
   reconstruction losses (``g/l1``, ``g/l1_warp``) must fall: the mean of the last tenth of the steps below
   the mean of the first tenth.

Targets of issue 22 (torch within 3x of nvdiffrast on forward+backward, HeadGAN >= 150 fps at 256^2 bf16, a
training step at default width, batch 8, 256^2 under 0.25 s) are reported in their own table; missing one is
not a failure (the exit code only reflects correctness). ``--quick`` shrinks every size (64^2, batch 1-2, width
1/16, one repeat) so the whole run takes well under a minute on a CPU; it is what ``tests/test_gpu_check.py``
runs, so the script cannot rot. Units: ms, s, fps, faces/s, MiB. The script never downloads anything.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from _timing import median_ms  # noqa: E402

SECTIONS = ("setup", "tests", "raster", "fitting", "pipelines", "burst")
TITLES = {
    "setup": "0. Setup",
    "tests": "1. Test suite on the device",
    "raster": "2. Rasteriser backends",
    "fitting": "3. Batched fitting",
    "pipelines": "4. Pipelines: inference and one training step",
    "burst": "5. HeadGAN training burst",
}


# ---------------------------------------------------------------------------------------------------- report
@dataclasses.dataclass
class Section:
    """One section of the report: status, notes and tables, and its wall time (s)."""

    key: str
    status: str = "PASS"
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = dataclasses.field(default_factory=list)
    details: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    reason: str = ""

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)

    def table(self, title: str, headers: Sequence[str], rows: list[list[Any]]) -> None:
        """Add a table; ``rows`` is kept by reference, so rows appended later (as they are measured) show too."""
        self.tables.append((title, list(headers), rows))

    @contextlib.contextmanager
    def guard(self, label: str) -> Iterator[None]:
        """Inside, an exception marks the section FAIL (``label``, the error, its traceback) and is swallowed,
        so one broken row does not lose the others."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - recorded, the section goes on
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.fail(f"{label}: {type(exc).__name__}: {first}"[:300])
            self.detail(f"{label}: traceback", traceback.format_exc()[-4000:])
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def detail(self, title: str, text: str) -> None:
        self.details.append((title, text))

    def fail(self, reason: str) -> None:
        """Mark the section failed (the first reason is kept for the summary; all are noted)."""
        if self.status != "FAIL":
            self.reason = reason
        self.status = "FAIL"
        self.note(f"FAIL: {reason}")

    def skip(self, reason: str) -> None:
        if self.status == "PASS":
            self.status, self.reason = "SKIP", reason
        self.note(f"SKIP: {reason}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (floats to 3-4 significant digits, NaN as n/a)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


@dataclasses.dataclass
class Target:
    """A performance goal of issue 22 and what the run measured (not part of the exit code)."""

    what: str
    value: float
    goal: str
    met: bool | None  # None: not measured


@dataclasses.dataclass
class Ctx:
    """What every section gets: options, device, sizes and the shared temporary folder."""

    args: argparse.Namespace
    device: torch.device
    quick: bool
    tmp: Path
    header: dict[str, str]
    sections: list[Section] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    cache_root: Path | None = None
    cache_note: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    compile: bool = True
    start: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 5

    @property
    def warmup(self) -> int:
        return 0 if self.quick else 1

    def time_ms(self, fn: Callable[[], object], repeats: int | None = None, warmup: int | None = None) -> float:
        """Median ms of ``fn()`` (``bench/_timing.median_ms``: CUDA-synchronised) with this run's repeats."""
        return median_ms(fn, self.repeats if repeats is None else repeats, self.warmup if warmup is None else warmup)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self, dtype: torch.dtype | None):
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_report(self))


def render_report(ctx: Ctx) -> str:
    """The whole markdown report (header, summary, targets, then each section)."""
    failed = [s for s in ctx.sections if s.status == "FAIL"]
    done = {s.key for s in ctx.sections}
    lines = ["# morphface GPU check (issue 22)", ""]
    lines += [f"- **{k}**: {v}" for k, v in ctx.header.items()]
    lines += [f"- **elapsed**: {time.perf_counter() - ctx.start:.0f} s",
              f"- **result**: {'FAIL' if failed else 'PASS'}"
              + (f" ({', '.join(TITLES[s.key] for s in failed)})" if failed else ""), ""]
    lines += ["## Summary", ""]
    rows = [[TITLES[s.key], s.status, f"{s.seconds:.1f}", s.reason] for s in ctx.sections]
    rows += [[TITLES[k], "not run", "", ""] for k in ctx.args.sections if k not in done]
    lines += [md_table(["section", "status", "time (s)", "note"], rows), ""]
    if ctx.targets:
        lines += ["## Targets of issue 22 (reported, not part of the exit code)", ""]
        lines += [md_table(["target", "measured", "goal", "met"],
                           [[t.what, t.value, t.goal, "n/a" if t.met is None else ("yes" if t.met else "NO")]
                            for t in ctx.targets]), ""]
    for s in ctx.sections:
        lines += [f"## {TITLES[s.key]}: {s.status} ({s.seconds:.1f} s)", ""]
        lines += [f"- {n}" for n in s.notes]
        if s.notes:
            lines.append("")
        for title, headers, trows in s.tables:
            if title:
                lines += [f"**{title}**", ""]
            lines += [md_table(headers, trows), ""]
        for title, text in s.details:
            lines += [f"<details><summary>{title}</summary>", "", "```", text.rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def run_section(ctx: Ctx, key: str, fn: Callable[[Ctx, Section], None]) -> Section:
    """Run one section: time it, turn an exception into FAIL (with its traceback), rewrite the report."""
    sec = Section(key)
    ctx.sections.append(sec)
    print(f"== {TITLES[key]}", flush=True)
    t0 = time.perf_counter()
    try:
        fn(ctx, sec)
    except Exception as exc:  # noqa: BLE001 - a section's failure is recorded, the run goes on
        sec.fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
        sec.detail("traceback", traceback.format_exc()[-6000:])
    finally:
        with contextlib.suppress(Exception):
            ctx.sync()
        if ctx.device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
        sec.seconds = time.perf_counter() - t0
        print(f"   -> {sec.status} in {sec.seconds:.1f} s", flush=True)
        ctx.write(ctx.args.report)
    return sec


# ---------------------------------------------------------------------------------------------------- wheels
_WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[0-9][^-]*)(-.*)?\.(whl|tar\.gz|zip)$")


def wheel_files(folder: Path) -> list[Path]:
    """The installable files of ``folder`` (wheels and source archives), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _WHEEL_NAME.match(p.name))


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_wheels(folder: Path, tmp: Path) -> tuple[list[list[str]], str | None, str | None]:
    """Install the packages of ``folder`` that are not installed yet, offline, without dependencies.

    ``pip install --no-index --no-deps --find-links FOLDER FILES`` into this interpreter's environment; if
    that is not writable, ``--target TMP/site`` which is then put on ``sys.path`` and ``PYTHONPATH``.

    Returns:
        rows ``[file, distribution, action]`` for the report, the ``--target`` folder used (or ``None``), and
        pip's output when it failed (or ``None``).
    """
    rows, todo = [], []
    for f in wheel_files(folder):
        m = _WHEEL_NAME.match(f.name)
        dist = m.group("name").replace("_", "-")
        have = _installed_version(dist)
        if have is not None:
            rows.append([f.name, dist, f"already installed ({have})"])
        else:
            todo.append(f)
            rows.append([f.name, dist, "installed"])
    if not todo:
        return rows, None, None
    base = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir",
            "--disable-pip-version-check", "--find-links", str(folder)]
    res = subprocess.run(base + [str(f) for f in todo], capture_output=True, text=True)
    target = None
    if res.returncode != 0:
        target = tmp / "site"
        res2 = subprocess.run(base + ["--target", str(target)] + [str(f) for f in todo], capture_output=True,
                              text=True)
        if res2.returncode != 0:
            for r in rows:
                if r[2] == "installed":
                    r[2] = "FAILED"
            return rows, None, (res.stdout + res.stderr + "\n--- with --target:\n" + res2.stdout + res2.stderr)
        sys.path.insert(0, str(target))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
        for r in rows:
            if r[2] == "installed":
                r[2] = f"installed (--target {target})"
    importlib.invalidate_caches()
    return rows, (str(target) if target else None), None


# ---------------------------------------------------------------------------------------------------- 0. setup
def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def section_setup(ctx: Ctx, sec: Section) -> None:
    """Versions, the wheels, which backends run here, and nvdiffrast's first-use compile time (s)."""
    wheel_rows = getattr(ctx.args, "_wheel_rows", None)
    if wheel_rows is not None:
        sec.table(f"wheels from {ctx.args.install_wheels}", ["file", "distribution", "action"], wheel_rows)
        if ctx.args._wheel_error:
            sec.detail("pip output", ctx.args._wheel_error)
            sec.fail("installing the wheels failed (pip output below)")
    elif ctx.args.install_wheels:
        sec.note(f"--install-wheels {ctx.args.install_wheels}: no such folder")
    versions = []
    for dist, module in (("numpy", "numpy"), ("scipy", "scipy"), ("numba", "numba"), ("kornia", "kornia"),
                         ("trimesh", "trimesh"), ("safetensors", "safetensors"), ("imageio", "imageio"),
                         ("pytest", "pytest"), ("pyyaml", "yaml"), ("tensorboard", "tensorboard"),
                         ("diffrp-nvdiffrast", "nvdiffrast"), ("easypytorch3d", "pytorch3d"),
                         ("imageio-ffmpeg", "imageio_ffmpeg")):
        versions.append([dist, _installed_version(dist) or "not installed",
                         "yes" if importlib.util.find_spec(module) is not None else "no"])
    sec.table("packages", ["distribution", "version", "importable"], versions)
    import morphface  # noqa: F401 - the first import of the library (kornia etc. must be there)

    if ctx.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(ctx.device)
        sec.note(f"GPU memory: {free / 2**20:.0f} MiB free of {total / 2**20:.0f} MiB; cudnn "
                 f"{torch.backends.cudnn.version()}; bf16 supported: {torch.cuda.is_bf16_supported()}; "
                 f"TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}")
        sec.note(f"nvcc: {shutil.which('nvcc') or 'not on PATH'}; ninja: {shutil.which('ninja') or 'not on PATH'}")
    # nvdiffrast: import, then the JIT build of its CUDA plugin on the first context, timed on its own.
    if ctx.device.type != "cuda":
        sec.note("nvdiffrast compile: not timed (needs a CUDA device)")
    elif importlib.util.find_spec("nvdiffrast") is None:
        sec.note("nvdiffrast compile: not timed (nvdiffrast is not installed: put the diffrp-nvdiffrast wheel in "
                 "bench/gpu_wheels)")
    else:
        t0 = time.perf_counter()
        try:
            import nvdiffrast.torch as dr

            t1 = time.perf_counter()
            glctx = dr.RasterizeCudaContext(device=ctx.device)
            pos = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]]],
                               device=ctx.device)
            tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=ctx.device)
            dr.rasterize(glctx, pos, tri, resolution=[8, 8])
            ctx.sync()
            t2 = time.perf_counter()
            sec.table("nvdiffrast first use", ["step", "s"],
                      [["import nvdiffrast.torch", t1 - t0], ["first context + rasterize (JIT compile)", t2 - t1]])
            if t2 - t1 < 5:
                sec.note("nvdiffrast's plugin came from the torch extensions cache (built by an earlier run)")
        except Exception as exc:  # noqa: BLE001
            sec.fail(f"nvdiffrast's plugin did not build or run: {type(exc).__name__}: {exc}"[:300])
            sec.detail("nvdiffrast build error", traceback.format_exc()[-6000:])
    from morphface.render import available_backends

    sec.note(f"rasterisation backends that run here: {', '.join(available_backends())}")


# ---------------------------------------------------------------------------------------------------- 1. tests
def _junit_counts(path: Path) -> tuple[dict[str, int], list[str]]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                msg = (el.get("message") or "").splitlines()[0][:200] if el.get("message") else ""
                failed.append(f"{case.get('classname')}::{case.get('name')} ({tag}): {msg}")
    return counts, failed


def section_tests(ctx: Ctx, sec: Section) -> None:
    """``pytest -m "cuda or device_generic" --device DEVICE`` (collect-only under ``--quick``)."""
    marker = "cuda or device_generic"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", marker, f"--device={ctx.device}", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", "-rfEs"]
    xml = ctx.tmp / "pytest.xml"
    if ctx.quick:
        cmd.append("--collect-only")
    else:
        cmd += ["--junitxml", str(xml)]
        if importlib.util.find_spec("pytest_timeout") is not None:
            cmd += ["--timeout", str(ctx.args.test_timeout)]
    sec.note("`python " + shlex.join(cmd[1:]) + "`")
    try:
        res = subprocess.run(cmd, cwd=REPO, env=ctx.env, capture_output=True, text=True,
                             timeout=ctx.args.suite_timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        sec.detail("pytest output (tail)", out[-8000:])
        sec.fail(f"the suite did not finish within --suite-timeout {ctx.args.suite_timeout} s")
        return
    out = res.stdout + res.stderr
    tail = "\n".join(out.rstrip().splitlines()[-3:])
    if ctx.quick:
        m = re.search(r"(\d+)(?:/\d+)? tests? collected", out)
        n = int(m.group(1)) if m else 0
        sec.note(f"--quick: collected only: {n} test(s) selected by -m '{marker}'")
        if res.returncode != 0 or n == 0:
            sec.detail("pytest output (tail)", out[-8000:])
            sec.fail(f"collection failed (pytest exit {res.returncode}): {tail}")
        return
    if xml.is_file():
        counts, failed = _junit_counts(xml)
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        sec.table("", ["selected", "passed", "failed", "errors", "skipped"],
                  [[counts["tests"], passed, counts["failures"], counts["errors"], counts["skipped"]]])
        if failed:
            sec.table("failures", ["test"], [[f] for f in failed[:40]])
    skipped = re.findall(r"^SKIPPED .*$", out, flags=re.M)
    if skipped:
        sec.detail("skips", "\n".join(skipped[:60]))
    if res.returncode != 0:
        sec.detail("pytest output (tail)", out[-10000:])
        sec.fail(f"pytest exit {res.returncode}: {tail.splitlines()[-1] if tail else ''}")
    else:
        sec.note(tail.splitlines()[-1] if tail else "")


# ---------------------------------------------------------------------------------------------------- 2. raster
def _import_error(module: str) -> str:
    """Why ``import module`` fails (``"imports"`` when it does not)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (a missing libcudart), ...
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return "imports"


def bfm_sized(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``bench/render.py``'s face-like cap with ``n * n`` vertices (n = 231: 53,361 v / 105,800 triangles)."""
    from render import bfm_sized_mesh

    return bfm_sized_mesh(n)


def section_raster(ctx: Ctx, sec: Section) -> None:
    """Triangle-id / barycentric / gradient agreement with the cpu backend and timings (ms) per backend."""
    from render import scene

    from morphface import load_default_model
    from morphface.render import interpolate, rasterize
    from morphface.render.backends import get_backend

    dev = ctx.device
    sizes = (64,) if ctx.quick else (256, 512)
    batches = (1, 2) if ctx.quick else (1, 8, 32)
    model = load_default_model()
    bv, bf = bfm_sized(40 if ctx.quick else 231)
    meshes = {f"ICT ({model.n_vertices} v / {model.n_faces} f)": (model.mean, model.triangles),
              f"BFM-sized ({bv.shape[0]} v / {bf.shape[0]} f)": (bv, bf)}
    backends, unavailable = [], []
    for name in ("torch", "nvdiffrast", "pytorch3d"):
        try:
            be = get_backend(name)
            ok, why = be.is_available(), ""
            if ok and not be.supports(dev):
                ok, why = False, f"cannot take tensors on {dev}"
            elif not ok:
                why = be.unavailable_reason()
                module = {"pytorch3d": "pytorch3d.renderer.mesh.rasterize_meshes", "nvdiffrast": "nvdiffrast.torch"}
                if name in module and importlib.util.find_spec(name) is not None:
                    why += f"; the package is installed but `import {module[name]}` says: {_import_error(module[name])}"
        except Exception as exc:  # noqa: BLE001 - an import error is a reason, not a crash
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            backends.append(name)
        else:
            unavailable.append([name, why])
    if unavailable:
        sec.table("backends that do not run here", ["backend", "why"], unavailable)
    sec.note(f"reference: the cpu backend (numba) on the same scenes; timed on {dev}: {', '.join(backends)}; "
             f"median of {ctx.repeats} after {ctx.warmup} warm-up; fwd = rasterize + interpolate (3 channels), "
             f"fwd+bwd adds backward of a weighted sum to the vertices")
    rows: list[list[Any]] = []
    worst_ratio: dict[tuple[str, int, int], float] = {}
    sec.table("agreement with the cpu backend, and times",
              ["mesh", "size", "B", "backend", "ids agree (%)", "bary max err", "grad cos", "fwd (ms)",
               "fwd+bwd (ms)", "M faces/s fwd", "fwd / nvdiffrast", "fwd+bwd / nvdiffrast"], rows)
    for mesh_name, (verts, faces) in meshes.items():
        height = float(verts[:, 1].max() - verts[:, 1].min())
        F = faces.shape[0]
        for size in sizes:
            for B in batches:
                ndc = scene(verts, size, B, height).float()
                g = torch.Generator().manual_seed(B * 1000 + size)
                attrs = torch.rand(1, verts.shape[0], 3, generator=g)
                w = torch.rand(B, size, size, 3, generator=g)

                def run_once(be: str, d: torch.device, ndc=ndc, attrs=attrs, w=w, faces=faces, size=size):
                    v = ndc.to(d).requires_grad_(True)
                    fr = rasterize(v, faces.to(d), (size, size), backend=be)
                    (interpolate(attrs.to(d), faces.to(d), fr) * w.to(d)).sum().backward()
                    return type(fr)(*(t.detach().cpu() for t in fr)), v.grad.cpu()

                scene_label = f"{mesh_name} {size}^2 B={B}"
                ref = None
                with sec.guard(f"{scene_label} cpu reference"):
                    ref, g_ref = run_once("cpu", torch.device("cpu"))
                if ref is None:
                    continue
                scene_rows: dict[str, list[Any]] = {}
                for be in backends:
                    label = f"{scene_label} {be}"
                    with sec.guard(label):
                        fr, g_out = run_once(be, dev)
                        covered = ref.mask | fr.mask
                        same = (ref.pix_to_face == fr.pix_to_face) & covered
                        agree = 100.0 * float(same.sum()) / max(int(covered.sum()), 1)
                        bary_err = float((ref.bary - fr.bary).abs()[same].max()) if bool(same.any()) else 0.0
                        cos = float(torch.nn.functional.cosine_similarity(g_ref.flatten(), g_out.flatten(), dim=0))
                        ndc_d, faces_d, attrs_d, w_d = ndc.to(dev), faces.to(dev), attrs.to(dev), w.to(dev)

                        def fwd(be=be, ndc_d=ndc_d, faces_d=faces_d, attrs_d=attrs_d, size=size):
                            with torch.no_grad():
                                interpolate(attrs_d, faces_d, rasterize(ndc_d, faces_d, (size, size), backend=be))

                        def fwd_bwd(be=be, ndc_d=ndc_d, faces_d=faces_d, attrs_d=attrs_d, w_d=w_d, size=size):
                            v = ndc_d.detach().requires_grad_(True)
                            out = interpolate(attrs_d, faces_d, rasterize(v, faces_d, (size, size), backend=be))
                            (out * w_d).sum().backward()

                        t_f = ctx.time_ms(fwd)
                        t_fb = ctx.time_ms(fwd_bwd)
                        scene_rows[be] = [mesh_name, size, B, be, agree, bary_err, cos, t_f, t_fb,
                                          B * F / t_f / 1e3]
                        if agree < 99.9:
                            sec.fail(f"{label}: triangle ids agree with the cpu backend on {agree:.3f} % < 99.9 % "
                                     f"of covered pixels")
                        if bary_err > 1e-3:
                            sec.fail(f"{label}: barycentrics differ from the cpu backend's by {bary_err:.2e} > 1e-3")
                        if not cos > 0.99:
                            sec.fail(f"{label}: vertex gradients' cosine with the cpu backend's is {cos:.4f} < 0.99")
                nv = scene_rows.get("nvdiffrast")
                for be, r in scene_rows.items():
                    ratio_f = r[7] / nv[7] if nv else float("nan")
                    ratio_fb = r[8] / nv[8] if nv else float("nan")
                    rows.append(r + [ratio_f, ratio_fb])
                    if nv and be == "torch":
                        worst_ratio[(mesh_name, size, B)] = ratio_fb
                print(f"  {scene_label}: " + ", ".join(
                    f"{be} {r[8]:.2f} ms fwd+bwd" for be, r in scene_rows.items()), flush=True)
    if worst_ratio:
        key = max(worst_ratio, key=worst_ratio.get)
        value = worst_ratio[key]
        ctx.targets.append(Target(f"torch backend fwd+bwd / nvdiffrast, worst scene ({key[0]} {key[1]}^2 "
                                  f"B={key[2]})", value, "<= 3", value <= 3.0))
    else:
        ctx.targets.append(Target("torch backend fwd+bwd / nvdiffrast", float("nan"), "<= 3", None))


# ---------------------------------------------------------------------------------------------------- 3. fitting
def section_fitting(ctx: Ctx, sec: Section) -> None:
    """``fit_landmarks`` (B = 256) and ``fit_photometric`` (B = 64, 224^2) throughput in faces/s."""
    from morphface import load_default_model
    from morphface.fitting import fit_landmarks, fit_photometric, render_fit
    from morphface.fitting.accuracy import rotation_error_degrees
    from morphface.fitting.synthetic import sample_fit
    from morphface.render import ambient_sh

    dev = ctx.device
    cpu_model = load_default_model("narrow")  # sample_fit draws on the CPU
    model = load_default_model("narrow").to(dev)
    rows = []
    # -- fit_landmarks
    B = 8 if ctx.quick else 256
    gt = sample_fit(cpu_model, B, generator=torch.Generator().manual_seed(0)).to(dev)
    clean, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)).to(dev)
    out: dict[str, Any] = {}

    def landmarks():
        out["fit"] = fit_landmarks(model, noisy, gt.image_size)

    ms = ctx.time_ms(landmarks)
    r = out["fit"]
    rot = float(rotation_error_degrees(r.angles, gt.angles).median())
    rows.append(["fit_landmarks", f"B={B}, 68 landmarks, 1 px noise", ms, B / ms * 1e3, rot])
    if not rot <= 3.0:
        sec.fail(f"fit_landmarks: median rotation error {rot:.2f} deg > 3 deg on {dev}")
    # -- fit_photometric
    Bp, size, steps = (2, 64, 3) if ctx.quick else (64, 224, 100)
    gt = sample_fit(cpu_model, Bp, image_size=(size, size), max_yaw=45,
                    generator=torch.Generator().manual_seed(2)).to(dev)
    gt.vertex_albedo = torch.tensor([0.7, 0.5, 0.4], device=dev).expand(Bp, model.n_vertices, 3).clone()
    gt.sh = ambient_sh(Bp).to(dev)
    images, mask = render_fit(model, gt)
    images = images + (1 - mask) * 0.3
    clean, _ = gt.camera.project(gt.vertices(model)[:, model.landmarks])
    init = fit_landmarks(model, clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(3)).to(dev),
                         (size, size))

    def photometric():
        out["fit"] = fit_photometric(model, images, init=init, steps=steps, tol=0.0)

    ms_p = ctx.time_ms(photometric, repeats=1 if ctx.quick else 2)
    res = out["fit"]
    rot_p = float(rotation_error_degrees(res.angles, gt.angles).median())
    rows.append(["fit_photometric", f"B={Bp}, {size}^2, {steps} steps", ms_p, Bp / ms_p * 1e3, rot_p])
    hist = [float(h) for h in res.history]
    if not all(math.isfinite(h) for h in hist):
        sec.fail("fit_photometric: non-finite loss in its history")
    elif not hist[-1] < hist[0]:
        msg = f"fit_photometric: loss did not fall ({hist[0]:.4g} -> {hist[-1]:.4g})"
        if ctx.quick:
            sec.note(f"{msg} (not enforced in --quick: {steps} steps)")
        else:
            sec.fail(msg)
    sec.note(f"faces synthesised with sample_fit (known parameters) on the narrow ICT model; fit_photometric "
             f"renders with the 'auto' backend on {dev}, early stopping off (tol=0)")
    sec.table("", ["function", "workload", "ms per call", "faces/s", "rotation error median (deg)"], rows)


# ---------------------------------------------------------------------------------------------------- 4. pipelines
def synthetic_cache(ctx: Ctx, size: int) -> Path:
    """The clip cache of ``--cache``, or synthetic clips from ``morphface synth`` (made once per run)."""
    if ctx.args.cache:
        root = Path(ctx.args.cache)
        if root.is_dir() and any(root.rglob("meta.json")):
            ctx.cache_root, ctx.cache_note = root, f"the clip cache {root} (--cache)"
            return root
        ctx.cache_note = f"--cache {root} holds no clips: using synthetic clips instead; "
    if ctx.cache_root is not None:
        return ctx.cache_root
    root = ctx.tmp / "synth"
    ids, frames = (2, 6) if ctx.quick else (6, 24)
    cmd = [sys.executable, "-m", "morphface", "synth", "-o", str(root), "--identities", str(ids),
           "--clips-per-identity", "1", "--frames", str(frames), "--size", str(size), "--supersample", "1",
           "--frames-format", "jpg", "--quiet"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=ctx.env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"morphface synth failed (exit {res.returncode}): {(res.stdout + res.stderr)[-2000:]}")
    ctx.cache_root = root
    ctx.cache_note += (f"synthetic clips: `morphface synth` ({ids} identities x {frames} frames at {size}^2, jpg "
                       f"frames) in {time.perf_counter() - t0:.1f} s")
    return root


def _networks(pipe: Any) -> dict[str, torch.nn.Module]:
    from morphface.train.protocol import pipeline_networks

    return pipeline_networks(pipe)


def _to_device(pipe: Any, dev: torch.device) -> Any:
    if isinstance(pipe, torch.nn.Module):
        return pipe.to(dev)
    for net in _networks(pipe).values():
        net.to(dev)
    return pipe


def pipeline_setup(ctx: Ctx, name: str, size: int) -> tuple[Any, dict[str, Any], str]:
    """Build registered pipeline ``name`` for the check and a batch for it.

    The pipeline is built with its defaults, then rebuilt from its ``config_dict()`` with ``image_size``
    (when it has one) set to ``size`` and the VGG perceptual loss off; ``--quick`` also sets ``width`` to
    1/16 and ``uv_size`` to 32. Pipelines with an ``image_size`` and a ``model`` take batches of the data
    contract (``ReenactmentDataset`` on the clip cache); ``toy_*`` pipelines take ``toy_shapes`` batches.

    Returns:
        the pipeline (on the device, train mode), a batch of ``B`` items on the device, the config note.

    Raises:
        LookupError: no batch recipe for this pipeline (reported as SKIP).
    """
    from torch.utils.data import default_collate

    from morphface.train.registry import build_dataset, build_pipeline

    B = 2 if ctx.quick else 8
    wanted: dict[str, Any] = {"image_size": size, "perceptual": "off"}
    if ctx.quick:
        wanted.update(width=1 / 16, uv_size=32)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ctx.quick:  # hourglass depths (kp3d) must fit the quick image size: two levels
            from morphface.train.registry import _PIPELINES, _resolve

            defaults = getattr(_resolve(_PIPELINES[name]), "__self__", None)
            fields = getattr(getattr(defaults, "config_class", None), "__dataclass_fields__", {})
            wanted.update({k: 2 for k in ("keypoint_blocks", "motion_blocks") if k in fields})
        try:  # a pipeline of the data contract takes these fields (ReenactorConfig) ...
            pipe = build_pipeline(name, wanted)
        except (TypeError, ValueError):  # ... others (toy_gan) are built at their defaults, then adjusted
            cfg = dict(build_pipeline(name, {}).config_dict())
            cfg.update({k: v for k, v in wanted.items() if k in cfg})
            pipe = build_pipeline(name, cfg)
    cfg = dict(pipe.config_dict())
    pipe = _to_device(pipe, ctx.device)
    if "image_size" in cfg and "model" in cfg:
        root = synthetic_cache(ctx, size)
        ds = build_dataset("reenactment", {
            "root": str(root), "image_size": size, "split": "all", "samples_per_epoch": B, "seed": 1,
            "uv_size": cfg.get("uv_size"), "k": int(cfg.get("num_previous", 2)),
            "motion_window": int(cfg.get("window_radius", 13))})
    elif name.startswith("toy"):
        ds = build_dataset("toy_shapes", {"size": B, "image_size": size})
    else:
        raise LookupError(f"no batch recipe for pipeline {name!r} (its config has {sorted(cfg)}; expected "
                          f"image_size and model for the data contract)")
    batch = default_collate([ds[i] for i in range(B)])
    batch = {k: (v.to(ctx.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    shown = {k: cfg[k] for k in ("image_size", "width", "uv_size", "perceptual", "render_backend") if k in cfg}
    note = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    return pipe, batch, note or "its defaults"


def inference_call(pipe: Any, batch: dict[str, Any]) -> Callable[[], Any]:
    """A zero-argument inference call on ``batch``: ``pipe.generate(batch)`` for the data contract (the driving
    frames' 3D renders removed, so they are made on the fly as in ``reenact``), ``pipe.generate(batch["cond"])``
    for toy pipelines."""
    if "source" in batch:
        from morphface.pipelines import MorphableReenactor

        # 3DMM pipelines render the driving conditioning from its parameters; image-driven ones need the frames
        image_driven = not isinstance(pipe, MorphableReenactor)
        inputs = {k: v for k, v in batch.items() if not k.startswith(("driving_ncc", "driving_mask", "driving_uv"))
                  and (k != "driving" or image_driven)}
        return lambda: pipe.generate(inputs)
    if "cond" in batch:
        return lambda: pipe.generate(batch["cond"])
    raise LookupError(f"no inference call for a batch with keys {sorted(batch)}")


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out.get("fake", next(v for v in out.values() if isinstance(v, torch.Tensor)))
    if hasattr(out, "image"):
        return out.image
    raise TypeError(f"cannot find an image in the output {type(out).__name__}")


@contextlib.contextmanager
def compiled(pipe: Any, on: bool) -> Iterator[None]:
    """Inside, every network in ``pipe.nets`` is wrapped in ``torch.compile`` (when ``on``); restored after."""
    nets = getattr(pipe, "nets", None)
    if not on or nets is None:
        yield
        return
    plain = dict(nets)
    try:
        for n, net in plain.items():
            nets[n] = torch.compile(net)
        yield
    finally:
        for n, net in plain.items():
            nets[n] = net


def train_step(pipe: Any, batch: dict[str, Any], optimizers: dict[str, torch.optim.Optimizer],
               ctx: Ctx, dtype: torch.dtype | None) -> tuple[float, float]:
    """One generator and one discriminator update through the training protocol (autocast as the trainer's).

    Returns:
        the generator and discriminator losses (NaN when there is no discriminator step).
    """
    from morphface.train.protocol import as_step_result, discriminator_names

    nets = _networks(pipe)
    d_names = discriminator_names(pipe, nets)
    g_names = [n for n in nets if n not in d_names]
    for n in g_names:
        if n in optimizers:
            optimizers[n].zero_grad(set_to_none=True)
    with ctx.autocast(dtype):
        res = as_step_result(pipe.generator_step(batch), "generator_step")
    res.loss.backward()
    for n in g_names:
        if n in optimizers:
            optimizers[n].step()
    outputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in res.outputs.items()}
    with ctx.autocast(dtype):
        d = pipe.discriminator_step(batch, outputs)
    loss_d = float("nan")
    if d is not None:
        d = as_step_result(d, "discriminator_step")
        for n in d_names:
            if n in optimizers:
                optimizers[n].zero_grad(set_to_none=True)
        d.loss.backward()
        for n in d_names:
            if n in optimizers:
                optimizers[n].step()
        loss_d = float(d.loss.detach())
    return float(res.loss.detach()), loss_d


def _has_conv3d(pipe) -> bool:
    """Whether any of the pipeline's networks has a 3D convolution (the learned-keypoint pipelines' volumes)."""
    return any(isinstance(m, torch.nn.Conv3d) for net in _networks(pipe).values() for m in net.modules())


def section_pipelines(ctx: Ctx, sec: Section) -> None:
    """Inference fps (fp32 / bf16, compile off / on) and one bf16 training step (ms, MiB) per pipeline."""
    from morphface.train.registry import registered_pipelines

    dev = ctx.device
    size = 64 if ctx.quick else 256
    B = 2 if ctx.quick else 8
    names = registered_pipelines()
    # bf16 training as the trainer does it: autocast on CUDA only (the trainer trains in fp32 elsewhere)
    train_dtype, train_label = (torch.bfloat16, "bf16") if dev.type == "cuda" else (None, "fp32")
    sec.note(f"registered pipelines: {', '.join(names)}; batch {B}, {size}^2; bf16 = torch.autocast({dev.type}, "
             f"bfloat16); inference fps = frames per second over a batch of {B}")
    inf_rows: list[list[Any]] = []
    train_rows: list[list[Any]] = []
    compile_todo: list[tuple[str, Any, Callable[[], Any]]] = []
    sec.table("inference", ["pipeline", "precision", "torch.compile", "first call (s)", "ms per batch", "fps"],
              inf_rows)
    sec.table("one training step (generator + discriminator update, Adam)",
              ["pipeline", "config", "batch", "autocast", "ms", "peak GPU memory (MiB)", "loss G", "loss D"],
              train_rows)
    deadline = time.perf_counter() + ctx.args.pipeline_budget
    for name in names:
        if time.perf_counter() > deadline:
            sec.note(f"{name}: skipped: --pipeline-budget {ctx.args.pipeline_budget} s spent")
            continue
        setup: list[Any] = []
        with sec.guard(f"{name}: building it and a batch"):
            try:
                setup.extend(pipeline_setup(ctx, name, size))
            except LookupError as exc:
                sec.note(f"{name}: skipped: {exc}")
        if not setup:
            continue
        pipe, batch, cfg_note = setup
        params = sum(p.numel() for net in _networks(pipe).values() for p in net.parameters()) / 1e6
        sec.note(f"{name}: {cfg_note}; {params:.1f} M parameters in {', '.join(_networks(pipe))}")
        try:
            call = inference_call(pipe, batch)
        except LookupError as exc:
            sec.note(f"{name}: inference skipped: {exc}")
            call = None
        if call is not None:
            pipe.eval()
            for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                if dtype is not None and dev.type == "cpu" and _has_conv3d(pipe):
                    # measured: a bf16 Conv3d under CPU autocast is ~30x slower than fp32 (no fast kernel);
                    # the dry run of kp3d/MMFA took minutes on it and measures nothing the GPU run needs
                    inf_rows.append([name, label, "off", float("nan"), float("nan"),
                                     "skipped on cpu: bf16 Conv3d has no fast CPU kernel"])
                    continue
                with sec.guard(f"{name} inference {label}"), torch.no_grad(), ctx.autocast(dtype):
                    out = _first_tensor(call())
                    if not bool(torch.isfinite(out.float()).all()):
                        sec.fail(f"{name} inference {label}: non-finite output")
                    ms = ctx.time_ms(call)
                    inf_rows.append([name, label, "off", float("nan"), ms, B / ms * 1e3])
            compile_todo.append((name, pipe, call))
        # one training step at the configured (default: the paper's) width
        with sec.guard(f"{name} training step"):
            pipe.train()
            nets = _networks(pipe)
            opts = {n: torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-4,
                                        betas=(0.5, 0.999))
                    for n, net in nets.items() if any(p.requires_grad for p in net.parameters())}
            losses: list[tuple[float, float]] = []
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            ms = ctx.time_ms(lambda pipe=pipe, batch=batch, opts=opts, losses=losses: losses.append(
                train_step(pipe, batch, opts, ctx, train_dtype)), warmup=0 if ctx.quick else 2)
            peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
            # a NaN discriminator loss means "no discriminator step"; a non-finite generator loss is a failure
            if not all(math.isfinite(g) and (math.isnan(d) or math.isfinite(d)) for g, d in losses):
                sec.fail(f"{name} training step: non-finite loss {losses}")
            train_rows.append([name, cfg_note, B, train_label, ms, peak, losses[-1][0], losses[-1][1]])
            if "image_size" in pipe.config_dict():
                what = "--quick width" if ctx.quick else "default width"
                ctx.targets.append(Target(f"{name}: training step, {what}, batch {B}, {size}^2, {train_label} (s)",
                                          ms / 1e3, "< 0.25", None if ctx.quick else ms / 1e3 < 0.25))
            del opts
        pipe.eval()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    # torch.compile rows last: each costs a compilation (tens of seconds on a GPU), so the budget may stop them;
    # bf16 first and HeadGAN first (the fps target)
    compile_todo.sort(key=lambda item: item[0] != "headgan")
    if not ctx.compile:
        for name, _, _ in compile_todo:
            inf_rows.append([name, "fp32/bf16", "on", float("nan"), float("nan"), "skipped: --compile off (the "
                             "default with --quick: compiling takes minutes on a CPU)"])
        compile_todo = []
    for label, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        for name, pipe, call in compile_todo:
            if time.perf_counter() > deadline:
                inf_rows.append([name, label, "on", float("nan"), float("nan"),
                                 f"skipped: --pipeline-budget {ctx.args.pipeline_budget} s spent"])
                continue
            torch._dynamo.reset()
            with sec.guard(f"{name} compiled inference {label}"), compiled(pipe, True), torch.no_grad(), \
                    ctx.autocast(dtype):
                t0 = time.perf_counter()
                out = _first_tensor(call())
                ctx.sync()
                compile_s = time.perf_counter() - t0
                if not bool(torch.isfinite(out.float()).all()):
                    sec.fail(f"{name} compiled inference {label}: non-finite output")
                ms = ctx.time_ms(call)
                inf_rows.append([name, label, "on", compile_s, ms, B / ms * 1e3])
    head = [r for r in inf_rows if r[0] == "headgan" and r[1] == "bf16" and isinstance(r[5], float)]
    if head:
        best = max(r[5] for r in head)
        ctx.targets.append(Target(f"headgan inference, bf16, {size}^2 (fps, best of compile off/on)", best,
                                  ">= 150", None if ctx.quick else best >= 150))
    if ctx.cache_note:
        sec.note(f"batches from {ctx.cache_note}")


# ---------------------------------------------------------------------------------------------------- 5. burst
def section_burst(ctx: Ctx, sec: Section) -> None:
    """HeadGAN trained through ``Trainer`` for ``--burst-seconds``; the reconstruction losses must fall."""
    from morphface.train import TrainConfig, Trainer

    size = 64 if ctx.quick else 256
    B = 2 if ctx.quick else 8
    root = synthetic_cache(ctx, size)
    seconds = ctx.args.burst_seconds if ctx.args.burst_seconds is not None else (4.0 if ctx.quick else 120.0)
    workers = 0 if ctx.quick else min(8, max((os.cpu_count() or 2) - 2, 0))
    pipe_cfg: dict[str, Any] = {"image_size": size, "perceptual": "off"}
    if ctx.quick:
        pipe_cfg["width"] = 1 / 16
    out_dir = ctx.tmp / "burst"
    cfg = TrainConfig.from_dict({
        "output_dir": str(out_dir), "pipeline": {"name": "headgan", "config": pipe_cfg},
        "data": {"name": "reenactment", "config": {"root": str(root), "image_size": size, "split": "all",
                                                   "samples_per_epoch": 1_000_000}},
        "steps": 1_000_000, "batch_size": B, "num_workers": workers, "amp": "bf16", "device": str(ctx.device),
        "checkpoint_every": 1_000_000, "log_every": 50, "image_every": 0, "tensorboard": False,
        "progress": False, "seed": 0})
    records: list[dict[str, Any]] = []
    t_start: list[float] = []

    min_steps = 8 if ctx.quick else 30

    def hook(trainer, step, record):
        if not t_start:
            t_start.append(time.perf_counter())
        records.append(dict(record))
        if time.perf_counter() - t_start[0] >= seconds and len(records) >= min_steps:
            trainer.config.steps = trainer.step  # ends the loop after this step (and writes one checkpoint)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp on CPU (--quick) warns and trains in fp32
        t0 = time.perf_counter()
        Trainer(cfg, hooks=[hook]).fit()
        total = time.perf_counter() - t0
    n = len(records)
    sec.note(f"data: {ctx.cache_note}")
    trained = time.perf_counter() - t_start[0] if t_start else 0.0
    sec.note(f"HeadGAN {pipe_cfg}, batch {B}, amp bf16 (fp32 off CUDA), {workers} DataLoader workers, lr 2e-4; "
             f"{n} steps in {trained:.0f} s after the first ({total:.0f} s with set-up); "
             f"{(n - 1) / max(trained, 1e-9):.2f} steps/s")
    if n < 6:
        sec.fail(f"only {n} steps ran: too few to compare windows")
        return
    win = max(3, n // 10)
    rows, fell = [], []
    for key in ("g/l1", "g/l1_warp", "g_loss", "d_loss"):
        vals = [float(r[key]) for r in records if key in r]
        if len(vals) < 2 * win:
            continue
        first, last = sum(vals[:win]) / win, sum(vals[-win:]) / win
        rows.append([key, first, last, last / first if first else float("nan")])
        if key in ("g/l1", "g/l1_warp"):
            fell.append((key, last < first))
        if not all(math.isfinite(v) for v in vals):
            sec.fail(f"{key}: non-finite values")
    sec.table(f"loss means over the first and the last {win} steps", ["loss", "first", "last", "last / first"],
              rows)
    bad = [k for k, ok in fell if not ok]
    if not fell:
        sec.fail("no reconstruction loss (g/l1, g/l1_warp) was logged")
    elif bad:
        msg = f"the reconstruction loss(es) {', '.join(bad)} did not fall"
        if ctx.quick:
            sec.note(f"{msg} (not enforced in --quick: a few seconds on a CPU)")
        else:
            sec.fail(msg)


FUNCS: dict[str, Callable[[Ctx, Section], None]] = {
    "setup": section_setup, "tests": section_tests, "raster": section_raster, "fitting": section_fitting,
    "pipelines": section_pipelines, "burst": section_burst,
}


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: the CPU dry run")
    p.add_argument("--report", type=Path, default=REPO / "out" / "gpu_check.md", help="markdown report path")
    p.add_argument("--install-wheels", type=Path, default=None, metavar="DIR",
                   help="first install the wheels of DIR offline (pip --no-index --no-deps; see "
                        "bench/gpu_wheels/README.md)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (setup always runs)")
    p.add_argument("--cache", default=None, help="clip cache for the pipelines and the burst (default: synthetic "
                                                 "clips made by `morphface synth` in a temporary folder)")
    p.add_argument("--burst-seconds", type=float, default=None,
                   help="training burst length after its first step (default 120; 4 with --quick); at least 30 "
                        "steps (8 with --quick) run")
    p.add_argument("--pipeline-budget", type=float, default=120.0,
                   help="seconds for section 4 after which the torch.compile rows are skipped (default 120)")
    p.add_argument("--suite-timeout", type=int, default=180, help="seconds for the pytest run (default 180)")
    p.add_argument("--test-timeout", type=int, default=120, help="per-test timeout when pytest-timeout is there")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile rows of section 4 (auto: on, off with --quick)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (synthetic clips, run)")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    args.sections = ["setup"] + [s for s in SECTIONS if s in chosen and s != "setup"]
    try:
        dev = torch.device(args.device)
    except RuntimeError as exc:
        p.error(f"--device {args.device!r}: {exc}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU (use --device cpu --quick "
                f"for the dry run)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns 0 when no section failed, 1 otherwise (2: bad arguments, from argparse)."""
    args = parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    tmp = Path(tempfile.mkdtemp(prefix="morphface-gpu-check-"))
    args._wheel_rows, args._wheel_error = None, None
    if args.install_wheels is not None and Path(args.install_wheels).is_dir():
        print(f"installing the wheels of {args.install_wheels} (offline)", flush=True)
        args._wheel_rows, _, args._wheel_error = install_wheels(Path(args.install_wheels), tmp)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    os.environ.setdefault("NUMBA_CACHE_DIR", env["NUMBA_CACHE_DIR"])
    env["PYTHONUNBUFFERED"] = "1"
    threads = torch.get_num_threads()
    if args.quick:  # tiny workloads on a shared CPU: one thread avoids OpenMP contention (as the tests do)
        torch.set_num_threads(1)
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        gpu = torch.cuda.get_device_properties(dev)
        device_text = (f"{gpu.name} ({dev}, {gpu.total_memory / 2**30:.0f} GiB, {gpu.multi_processor_count} SMs), "
                       f"CUDA {torch.version.cuda}, driver-visible GPUs: {torch.cuda.device_count()}")
    else:
        device_text = f"{dev} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
                      f"{torch.get_num_threads()} torch threads)"
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_text,
        "mode": "quick (CPU dry run: tiny sizes, 1 repeat)" if args.quick else "full",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, morphface {_git_rev()}",
        "host": platform.node(),
    }
    ctx = Ctx(args=args, device=dev, quick=args.quick, tmp=tmp, header=header, env=env,
              compile=args.compile == "on" or (args.compile == "auto" and not args.quick))
    print(f"morphface GPU check on {device_text}; report: {args.report}", flush=True)
    try:
        for key in args.sections:
            run_section(ctx, key, FUNCS[key])
    finally:
        ctx.write(args.report)
        torch.set_num_threads(threads)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = [s.key for s in ctx.sections if s.status == "FAIL"]
    print(f"report: {args.report} ({'FAIL: ' + ', '.join(failed) if failed else 'PASS'}, "
          f"{time.perf_counter() - ctx.start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
