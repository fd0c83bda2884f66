"""``bench/gpu_check.py`` (issue 22): its CPU dry run writes every section and exits 0, so the one prepared GPU
check cannot rot between the sessions that are lent a GPU; a failing section makes the exit code non-zero."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.py"


def _load_module():
    """``bench/gpu_check.py`` imported as a module (registered in ``sys.modules``: its dataclasses need it)."""
    name = "gpu_check_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.slow
def test_cpu_dry_run_reports_every_section_and_passes(tmp_path):
    report = tmp_path / "gpu_check.md"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--report", str(report)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    text = report.read_text()
    module = _load_module()
    for title in module.TITLES.values():
        assert f"## {title}: PASS" in text or f"## {title}: SKIP" in text, title
    assert "**result**: PASS" in text and "| not run |" not in text
    # the rows the GPU run fills in are there, with a reason where they cannot run on a CPU
    assert "| nvdiffrast | backend 'nvdiffrast' needs a CUDA GPU" in text
    assert "| headgan | fp32 | off |" in text and "| headgan | bf16 | off |" in text
    assert "skipped: --compile off" in text
    assert "## Targets of issue 22" in text and "loss means over the first and the last" in text
    assert "test(s) selected by -m 'cuda or device_generic'" in text


def test_a_failing_section_is_reported_and_the_exit_code_is_one(tmp_path, monkeypatch):
    module = _load_module()

    def broken(ctx, sec):
        sec.note("about to break")
        raise RuntimeError("planted failure")

    monkeypatch.setitem(module.FUNCS, "setup", broken)
    report = tmp_path / "r.md"
    rc = module.main(["--device", "cpu", "--quick", "--sections", "setup", "--report", str(report)])
    text = report.read_text()
    assert rc == 1
    assert "## 0. Setup: FAIL" in text and "RuntimeError: planted failure" in text and "Traceback" in text
    assert "**result**: FAIL" in text and "1. Test suite" not in text  # only the --sections asked for


def test_bad_arguments_exit_2(tmp_path):
    module = _load_module()
    with pytest.raises(SystemExit) as e:
        module.main(["--sections", "setup,warp", "--report", str(tmp_path / "r.md")])
    assert e.value.code == 2


def test_wheels_already_installed_are_not_reinstalled(tmp_path):
    module = _load_module()
    for name in ("numpy-1.0-py3-none-any.whl", "torch-0.1-cp312-cp312-manylinux_2_28_x86_64.whl", "README.md"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in module.wheel_files(tmp_path)] == ["numpy-1.0-py3-none-any.whl",
                                                             "torch-0.1-cp312-cp312-manylinux_2_28_x86_64.whl"]
    rows, target, error = module.install_wheels(tmp_path, tmp_path / "t")  # both are installed: pip never runs
    assert target is None and error is None
    assert [r[2].split(" (")[0] for r in rows] == ["already installed", "already installed"]


def test_import_errors_are_named_for_the_report():
    module = _load_module()
    assert module._import_error("json") == "imports"
    assert module._import_error("no_such_module_xyz").startswith("ModuleNotFoundError: No module named")
