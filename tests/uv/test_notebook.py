"""notebooks/frontalisation.ipynb runs headless and draws its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from morphface.fitting.detectors import available_detectors

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "frontalisation.ipynb"


@pytest.mark.slow
@pytest.mark.skipif(
    all(v is not None for v in available_detectors().values()),
    reason="no landmark detector (mediapipe, dlib or FAN) is installed",
)
def test_notebook_executes_and_draws_figures():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) >= 7  # 8 with MediaPipe (the person mask)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "fitted pose" in printed
