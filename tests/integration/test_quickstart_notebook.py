"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel: it loads the shipped model, predicts, draws the
GA scores and fine-tunes; each step's output is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="install scannet[notebook]")
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]
    text = ["".join(o.get("text", "") for o in cell if o.get("output_type") == "stream") for cell in outputs]
    assert "test MAE" in text[0] and "QM9 test molecules" in text[0]
    assert all(name in text[1] for name in ("C6H6", "CH3COOH", "homo", "gap"))
    assert "sum of GA scores: 1.0000" in text[2]
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs[2])  # the drawing is shown
    assert "drawing: 2d-perceived" in text[2]  # bonds perceived from ASE's coordinates
    assert (tmp_path / "acetic_acid_ga.png").read_bytes().startswith(b"\x89PNG")
    assert "<svg" in (tmp_path / "acetic_acid_ga.svg").read_text()
    assert "ga_score" in (tmp_path / "acetic_acid_ga.xyz").read_text().splitlines()[1]
    assert "imported 300 structures, quarantined 0" in text[3]
    summary = json.loads((tmp_path / "runs" / "finetune-demo" / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and "fine-tuned HOMO of benzene" in text[4]
