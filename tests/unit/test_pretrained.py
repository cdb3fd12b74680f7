"""The shipped models (scannet/pretrained/): their cards are real (the test MAE on the card's fixed subset of the
test split is recomputed here from the shipped files), they are small, and the commands use the default one."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import molecule
from ase.io import write

from scannet import pretrained
from scannet.cli import main as cli_main

# the release tool is maintainer tooling outside the package (tools/ship_model.py): loaded by its path
_SHIP = importlib.util.spec_from_file_location(
    "ship_model", Path(__file__).resolve().parents[2] / "tools" / "ship_model.py"
)
ship_model = sys.modules["ship_model"] = importlib.util.module_from_spec(_SHIP)
_SHIP.loader.exec_module(ship_model)
render_readme, subset_mae = ship_model.render_readme, ship_model.subset_mae

SHIPPED = pretrained.names()
MAX_MODEL_BYTES = 10 * 1024 * 1024


def test_a_default_model_is_shipped():
    assert pretrained.DEFAULT_MODEL in SHIPPED
    with pytest.raises(KeyError, match="no shipped model 'nope'; shipped: "):
        pretrained.model_path("nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_card_matches_the_shipped_files(name):
    folder = pretrained.model_path(name).parent
    card = pretrained.card(name)
    model = folder / pretrained.MODEL_FILE
    assert model.stat().st_size < MAX_MODEL_BYTES
    assert hashlib.sha256(model.read_bytes()).hexdigest() == card["model_sha256"]
    assert (folder / pretrained.README_FILE).read_text() == render_readme(card)

    import scannet

    predictor = scannet.load(name)
    assert list(predictor.targets) == card["targets"]
    assert predictor.metadata["test_mae"] == pytest.approx(card["test"]["mae"], rel=1e-12)
    assert predictor.metadata["test_structures"] == card["test"]["structures"]

    split = pq.read_table(folder / card["data"]["split"]["file"])
    parts = {
        p: set(split.filter(np.asarray(split.column("part")) == p).column("id").to_pylist())
        for p in card["data"]["split"]["sizes"]
    }
    assert {p: len(ids) for p, ids in parts.items()} == card["data"]["split"]["sizes"]
    assert not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
    assert set(card["test_subset"]["ids"]) <= parts["test"]


@pytest.mark.parametrize("name", SHIPPED)
def test_card_test_mae_is_recomputed_on_the_fixed_subset(name):
    """Featurize and predict the card's subset of the test split from the dataset itself: the MAE must be the
    card's (the same sample of the same split, whatever machine computes it)."""
    card = pretrained.card(name)
    subset = card["test_subset"]
    measured = subset_mae(name, pretrained.model_path(name).parent, subset["structures"], subset["seed"])
    assert measured.ids == subset["ids"]
    assert measured.mae == pytest.approx(subset["mae"], rel=1e-3)
    for target, published in card["published_scann_plus"].items():  # the card's comparison is with real figures
        assert published > 0 and card["test"]["mae"][target] > 0


def test_predict_uses_the_default_model(tmp_path, capsys):
    path = tmp_path / "benzene.xyz"
    write(path, molecule("C6H6"))
    assert cli_main(["predict", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    header, row = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[:2]
    assert "homo_eV" in header and "gap_eV" in header
    values = dict(zip(header.split(","), row.split(",")))
    homo, lumo, gap = (float(values[f"{t}_eV"]) for t in ("homo", "lumo", "gap"))
    assert -9.0 < homo < -5.0 and 3.0 < gap < 9.0  # benzene (B3LYP: HOMO -6.7 eV, gap 6.7 eV), loosely
    assert abs(lumo - homo - gap) < 1.0  # three heads, one molecule: roughly consistent


def test_predict_names_a_checkpoint_given_as_a_structure_file(tmp_path, capsys):
    path = tmp_path / "benzene.xyz"
    write(path, molecule("C6H6"))
    model = str(pretrained.model_path())
    assert cli_main(["predict", model, str(path), "--out", str(tmp_path / "out")]) == 2
    assert f"{model}: a model checkpoint among the structure files; give it with --model" in capsys.readouterr().err


def test_info_describes_the_default_model(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"default: {pretrained.model_path()}" in out and "homo (eV), lumo (eV), gap (eV)" in out
    card = pretrained.card()
    assert f"homo {card['test']['mae']['homo']:.4g} meV" in out
    assert json.dumps(card)  # the card is plain JSON


def test_the_project_readme_quotes_the_default_card():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    card = pretrained.card()
    assert f"all {card['test']['structures']:,} QM9 test molecules" in readme
    for target in card["targets"]:
        assert f"| {card['test']['mae'][target]:.1f} meV | {card['published_scann_plus'][target]:g} meV |" in readme


def test_the_readme_gives_the_epochs_total_time_when_the_history_has_it():
    card = json.loads(json.dumps(pretrained.card()))
    card["training"]["epoch_seconds"] = None  # a run that predates epoch timing
    assert "over all launches" not in render_readme(card)
    card["training"]["epoch_seconds"] = 4242.0
    assert "its epochs, over all launches, 1.18 h." in render_readme(card)


def test_the_readme_lists_the_launches_and_the_published_figures_with_their_sources():
    card = json.loads(json.dumps(pretrained.card()))
    card["published"] = [dict(row) for row in ship_model.PUBLISHED_QM9]
    machine = {"cpu": "AMD EPYC; bf16 instructions: avx512_bf16", "cpus": 2, "torch_threads": 2}
    card["training"]["launches"] = [
        {
            "started": "2026-12-07T05:38:02+00:00",
            "first_epoch": 0,
            "last_epoch": 25,
            "seconds": 6100.0,
            "ended_by": "time limit",
            "machine": machine,
            "load_average": [2.0, 2.01, 2.0],
        },
        {
            "started": "2026-12-08T01:00:00+00:00",
            "first_epoch": 25,
            "last_epoch": 32,
            "seconds": 1800.0,
            "ended_by": "finished",
            "machine": machine,
            "load_average": None,
        },
    ]
    card["training"]["launches_seconds"] = 7900.0
    readme = render_readme(card)
    assert "Training took 2.19 h of wall clock in 2 launch(es)" in readme
    assert "| 1 | 2026-12-07T05:38:02+00:00 | 1-25 | 1.69 h | time limit | AMD EPYC" in readme
    assert "| 2 | 2026-12-08T01:00:00+00:00 | 26-32 | 0.50 h | finished |" in readme
    mae = card["test"]["mae"]
    assert (
        f"| **this model** | {mae['homo']:.1f} | {mae['lumo']:.1f} | {mae['gap']:.1f} | 110,000 / 10,000 / 10,831"
        in readme
    )
    for row in ship_model.PUBLISHED_QM9:  # every published figure with its source
        assert f"| {row['model']} | {row['mae']['homo']:g} | {row['mae']['lumo']:g} | {row['mae']['gap']:g} |" in readme
        assert row["source"] in readme
    assert {"SchNet", "PaiNN", "SCANN+ (1,000 epochs, GPU)"} <= {row["model"] for row in ship_model.PUBLISHED_QM9}


def _tampered_copy(tmp_path: Path, name: str = pretrained.DEFAULT_MODEL) -> tuple[Path, str]:
    """A copy of the shipped folder ``name`` under ``tmp_path`` whose model.pt has one byte flipped; (its model.pt,
    the card's SHA-256)."""
    import shutil

    folder = tmp_path / name
    shutil.copytree(pretrained.PRETRAINED_DIR / name, folder)
    model = folder / pretrained.MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    return model, json.loads((folder / pretrained.CARD_FILE).read_text())["model_sha256"]


def test_a_shipped_model_that_differs_from_its_card_is_refused(tmp_path, monkeypatch):
    """The card's SHA-256 is checked before torch reads the file, however the shipped model is reached."""
    import scannet
    from scannet.checkpoint import CheckpointError, load_model, resolve_checkpoint

    model, recorded = _tampered_copy(tmp_path)
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    read = []
    monkeypatch.setattr("torch.load", lambda *a, **k: read.append(a) or {})
    with monkeypatch.context() as package:
        package.setattr(pretrained, "PRETRAINED_DIR", tmp_path)  # the package folder, tampered
        for load in (lambda: scannet.load(), lambda: scannet.load(pretrained.DEFAULT_MODEL), resolve_checkpoint):
            with pytest.raises(CheckpointError, match=actual):
                load()
    with pytest.raises(CheckpointError) as refused:
        pretrained.model_path(pretrained.DEFAULT_MODEL, root=tmp_path)
    message = str(refused.value)
    assert "\n" not in message and str(model) in message and actual in message and recorded in message
    assert not read
    monkeypatch.undo()
    load_model(pretrained.model_path())  # the real shipped file still passes


def test_a_shipped_model_without_a_recorded_sha256_is_refused(tmp_path):
    from scannet.checkpoint import CheckpointError

    model, _ = _tampered_copy(tmp_path)
    card = json.loads((model.parent / pretrained.CARD_FILE).read_text())
    del card["model_sha256"]
    (model.parent / pretrained.CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="no recorded SHA-256"):
        pretrained.model_path(pretrained.DEFAULT_MODEL, root=tmp_path)
