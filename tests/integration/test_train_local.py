"""End to end without Ray: `scannet train` trains, evaluates, saves a loadable model and its split;
`scannet predict` works on its checkpoint."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read, write

import scannet
from scannet.cli import main as cli_main
from scannet.data.qm9 import write_qm9_table
from scannet.data.splits import Split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    table = write_qm9_table(root / "qm9-300", targets=["homo", "gap"], limit=300)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scannet.cli",
            "train",
            "--preset",
            "demo",
            "--data",
            str(table),
            "--epochs",
            "2",
            "--targets",
            "homo",
            "gap",
            "--threads",
            "2",
            "--name",
            "local",
            "--storage-path",
            str(root / "runs"),
            "--data-cache",
            str(root / "cache"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test MAE" in result.stdout and "checkpoint :" in result.stdout
    assert result.stdout.count("epoch ") >= 2 and "val MAE homo" in result.stdout  # one line per epoch
    return root / "runs" / "local"


@pytest.mark.slow
def test_job_writes_model_split_history_and_summary(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert sum(summary["split_sizes"].values()) == 300 and summary["test_evaluated"] == summary["split_sizes"]["test"]
    assert summary["epochs_run"] == 2 and summary["parameters"] == 890_977 + (128 * 128 + 128) + (
        128 + 1
    )  # one more head
    assert set(summary["test_mae"]) == {"homo", "gap"} and summary["report_units"]["homo"] == "meV"
    assert all(np.isfinite(v) and v > 0 for v in summary["test_mae"].values())
    split = Split.load(trained_run / "split.json", n=300)
    assert split.sizes == summary["split_sizes"]
    history = json.loads((trained_run / "history.json").read_text())
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"] * 1.5
    assert all(0 < record["seconds"] < summary["seconds"] for record in history)  # each epoch's wall time


@pytest.mark.slow
def test_job_model_loads_and_predicts(trained_run):
    predictor = scannet.load(trained_run / "best_model.pt")
    assert predictor.targets == ("homo", "gap")
    result = predictor.predict_one(molecule("CH3CHO"))
    assert -20 < result.values["homo"] < 0  # eV
    assert result.ga_scores.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_cli_predict_writes_table_and_ga_files_and_reports_bad_input(trained_run, tmp_path, capsys):
    good = tmp_path / "ethanol.xyz"
    write(good, molecule("CH3CH2OH"))
    sulfur = tmp_path / "h2s.xyz"
    write(sulfur, molecule("SH2"))
    unreadable = tmp_path / "broken.xyz"
    unreadable.write_text("this is not xyz\n")
    out = tmp_path / "preds"
    code = cli_main(
        [
            "predict",
            "--model",
            str(trained_run / "best_model.pt"),
            str(good),
            str(sulfur),
            str(unreadable),
            "--out",
            str(out),
        ]
    )
    assert code == 1  # not everything could be predicted
    with open(out / "predictions.csv", newline="") as handle:
        header, *lines = list(csv.reader(handle))
    domain = ["heavy_atoms", "unknown_elements", "domain_distance", "in_domain"]  # the run folder holds its domain
    assert header == [
        "name", "source_file", "frame", "smiles", "formula", "n_atoms", "homo_eV", "gap_eV", *domain, "ga_file",
        "ga_frame", "error",
    ]  # fmt: skip
    rows = [dict(zip(header, line)) for line in lines]
    assert [rows[0][c] for c in ("name", "source_file", "frame", "formula", "n_atoms")] == [
        "ethanol", str(good), "0", "C2H6O", "9"
    ]
    assert rows[0]["ga_file"] == "ethanol_ga.xyz" and rows[0]["error"] == "" and rows[0]["heavy_atoms"] == "3"
    assert all(np.isfinite(float(rows[0][c])) for c in ("homo_eV", "gap_eV"))
    assert [rows[1][c] for c in ("name", "formula", "homo_eV", "unknown_elements", "in_domain")] == [
        "h2s", "H2S", "", "S", "0"
    ]
    assert "vocabulary" in rows[1]["error"]
    assert rows[2]["name"] == "broken" and rows[2]["source_file"] == str(unreadable) and rows[2]["error"]
    ga = read(out / "ethanol_ga.xyz")
    assert ga.arrays["ga_score"].sum() == pytest.approx(1.0, abs=1e-5)
    assert f"{unreadable}: cannot read: " in capsys.readouterr().err
