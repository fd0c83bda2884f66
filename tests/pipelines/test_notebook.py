"""notebooks/reenactment.ipynb runs headless: it trains a tiny HeadGAN, reenacts the bundled photo with the
bundled clip and edits it, drawing its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from morphface.fitting.detectors import available_detectors

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "reenactment.ipynb"


@pytest.mark.slow
@pytest.mark.skipif(all(v is not None for v in available_detectors().values()),
                    reason="no landmark detector (mediapipe, dlib or FAN) is installed")
def test_reenactment_notebook_executes_and_draws_figures(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("MORPHFACE_CHECKPOINT", raising=False)  # the notebook's own tiny checkpoint
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's tiny convolutions: one thread is faster on a shared CPU
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 2  # the reenactment grid and the edits
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "HeadGAN from" in printed and "driving yaw (degrees):" in printed
    assert "edited 5 images; frontalised (3, 64, 64)" in printed
