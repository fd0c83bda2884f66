"""notebooks/fitting_and_rendering.ipynb runs headless: it fits the bundled photo with the real detector, renders
the fit (overlay, NCC, PNCC), unwraps it into UV space and draws a pose and an expression sweep."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from morphface.fitting.detectors import available_detectors

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "fitting_and_rendering.ipynb"


@pytest.mark.slow
@pytest.mark.skipif(all(v is not None for v in available_detectors().values()),
                    reason="no landmark detector (mediapipe, dlib or FAN) is installed")
def test_fitting_notebook_executes_and_draws_figures():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 5  # overlay, NCC/PNCC, UV unwrap, pose sweep, expression sweep
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pose = re.search(r"fitted pose: pitch (-?[\d.]+), yaw (-?[\d.]+), roll (-?[\d.]+) degrees", printed)
    assert pose is not None, printed
    pitch, yaw, roll = (float(v) for v in pose.groups())
    assert abs(pitch) < 20 and abs(yaw) < 15 and abs(roll) < 15  # the bundled photo is near-frontal
    assert "pose sweep renders (5, 3, 256, 256)" in printed
    assert "expression sweep renders (5, 3, 256, 256)" in printed
