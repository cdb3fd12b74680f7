"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel: it loads the shipped model, predicts, draws the
GA scores and fine-tunes; each step's output is checked, the fine-tuned model is no worse than the shipped one on
the same held-out molecules, and every file goes to the notebook's temporary folder, none next to the notebook."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from scannet.pretrained import DEFAULT_MODEL

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


#: The fine-tuned model may not be worse than the shipped one on the held-out molecules by more than this fraction
#: (200 molecules: the standard error of an MAE is about 5% of it).
NOISE = 0.05
MAE_LINE = re.compile(r"^\s+(\w+)\s+shipped\s+([\d.]+) meV\s+fine-tuned\s+([\d.]+) meV", re.MULTILINE)


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="install scannet[notebook]")
    from nbclient import NotebookClient

    home, cwd = tmp_path / "home", tmp_path / "notebook-folder"
    cwd.mkdir()
    monkeypatch.setenv("SCANNET_HOME", str(home))  # the kernel inherits it: the graph cache goes there
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()

    outputs = [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]
    text = ["".join(o.get("text", "") for o in cell if o.get("output_type") == "stream") for cell in outputs]
    work = Path(re.search(r"files of this notebook: (\S+)", text[0]).group(1))
    try:
        assert list(cwd.iterdir()) == []  # nothing written next to the notebook
        assert "test MAE" in text[0] and "QM9 test molecules" in text[0]
        assert all(name in text[1] for name in ("C6H6", "CH3COOH", "homo", "gap"))
        assert "sum of GA scores: 1.0000" in text[2]
        assert any("image/svg+xml" in o.get("data", {}) for o in outputs[2])  # the drawing is shown
        assert "drawing: 2d-perceived" in text[2]  # bonds perceived from ASE's coordinates
        assert (work / "acetic_acid_ga.png").read_bytes().startswith(b"\x89PNG")
        assert "<svg" in (work / "acetic_acid_ga.svg").read_text()
        assert "ga_score" in (work / "acetic_acid_ga.xyz").read_text().splitlines()[1]
        assert "imported 300 structures, quarantined 0" in text[3] and "held out: 200" in text[3]
        summary = json.loads((work / "runs" / "finetune-demo" / "summary.json").read_text())
        assert summary["epochs_run"] == 3
        assert f"this launch started from the weights of {DEFAULT_MODEL})" in text[4]
        assert re.search(r"val MAE homo [\d.]+ m?eV, lumo [\d.]+ m?eV, gap [\d.]+ m?eV", text[4]), text[4]
        assert re.search(r"test MAE +: homo [\d.]+ m?eV, lumo [\d.]+ m?eV, gap [\d.]+ m?eV", text[4]), text[4]
        maes = {target: (float(before), float(after)) for target, before, after in MAE_LINE.findall(text[5])}
        assert set(maes) == {"homo", "lumo", "gap"}, text[5]
        for target, (before, after) in maes.items():
            assert after <= before * (1 + NOISE), f"{target}: fine-tuned {after} meV, shipped {before} meV"
    finally:
        shutil.rmtree(work, ignore_errors=True)
