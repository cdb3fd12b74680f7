"""Results a chemist can act on: the same molecule under two names or forms is listed in duplicates.csv (both rows
kept), xyz inputs get a canonical SMILES, the top-k tables are rounded to the model's recorded test MAE (which
their header names) with sources relative to the inputs' folder and only for ranked columns, and --filter/--rank
take the output column names (in-process executor: no Ray)."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import molecule
from ase.io import write
from scipy.spatial.transform import Rotation

from scannet.typed_config import ConfigError
from tests.screening import candidates, tiny_model
from tests.unit.platform.test_screen_inputs import outputs, screen

pytest.importorskip("ray")

ETHANOL_INCHIKEY = "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
#: Recorded as training records it: in meV (the report unit of eV), over the test split.
TEST_MAE = {"test_mae": {"homo": 63.0, "gap": 98.8}, "test_mae_units": {"homo": "meV", "gap": "meV"}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "recorded": tiny_model(folder / "recorded.pt", metadata=TEST_MAE),
        "plain": tiny_model(folder / "plain.pt", seed=1),
    }


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, models):
    """A screen of ethanol as SMILES and, under another name, as rotated, translated and permuted coordinates in a
    sub-folder, beside other molecules; the model records its test MAE."""
    root = tmp_path_factory.mktemp("library")
    (root / "smiles").mkdir()
    (root / "structures").mkdir()
    (root / "smiles" / "lib.smi").write_text("OCC ethanol\nCC(=O)O acetic-acid\n")
    ethanol = molecule("CH3CH2OH")
    ethanol = ethanol[np.random.default_rng(0).permutation(len(ethanol))]
    ethanol.positions = ethanol.positions @ Rotation.random(random_state=3).as_matrix().T + [4.0, -2.0, 7.0]
    ethanol.info["id"] = "ethyl-alcohol"
    others = [m for m in candidates(4, seed=2) if m.get_chemical_formula() != ethanol.get_chemical_formula()]
    write(root / "structures" / "more.xyz", [ethanol, *others], format="extxyz")
    out = root / "out"
    summary, scan = screen(out, [root / "smiles" / "lib.smi", root / "structures" / "more.xyz"], [models["recorded"]])
    return root, out, summary, scan


def test_the_same_molecule_as_smiles_and_as_xyz_is_a_duplicate_structure_and_both_rows_are_kept(mixed):
    _, out, summary, scan = mixed
    predictions = {r["id"]: r for r in outputs(out)[0].to_pylist()}
    assert {"ethanol", "ethyl-alcohol"} <= set(predictions), "both rows are screened and kept"
    assert predictions["ethanol"]["structure_key"] == predictions["ethyl-alcohol"]["structure_key"] == ETHANOL_INCHIKEY
    assert (summary.n_duplicate_structures, summary.n_duplicate_structure_rows, summary.n_duplicate_ids) == (1, 2, 0)
    with open(out / "duplicates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["reason"], r["key"], r["id"], r["canonical_smiles"]) for r in rows] == [
        ("same structure", ETHANOL_INCHIKEY, "ethanol", "CCO"),
        ("same structure", ETHANOL_INCHIKEY, "ethyl-alcohol", "CCO"),
    ]
    assert scan.n_duplicate_structures == 1


def test_xyz_rows_get_a_canonical_smiles_and_the_input_smiles_stays_as_given(mixed):
    _, out, _, _ = mixed
    predictions = {r["id"]: r for r in outputs(out)[0].to_pylist()}
    assert (predictions["ethanol"]["smiles"], predictions["ethanol"]["canonical_smiles"]) == ("OCC", "CCO")
    assert (predictions["ethyl-alcohol"]["smiles"], predictions["ethyl-alcohol"]["canonical_smiles"]) == (None, "CCO")
    assert {r["key_kind"] for r in predictions.values()} == {"inchikey"}


def test_top_k_values_are_rounded_to_the_recorded_mae_and_the_parquet_keeps_full_precision(mixed):
    _, out, _, _ = mixed
    exact = {r["id"]: r["homo_eV"] for r in outputs(out)[0].to_pylist()}
    with open(out / "top-homo_eV-max.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(exact)
    for row in rows:
        assert len(row["homo_eV"].split(".")[1]) == 2, "0.063 eV of test MAE: two decimals"
        assert float(row["homo_eV"]) == round(exact[row["id"]], 2)
    assert any(round(value, 2) != value for value in exact.values()), "the Parquet is not rounded"
    markdown = (out / "top-homo_eV-max.md").read_text()
    assert "Model homo,gap=" in markdown and "test MAE homo 63 meV, gap 98.8 meV" in markdown
    assert "test MAE homo 63 meV, gap 98.8 meV" in (out / "top-homo_eV-max.html").read_text()


def test_top_k_sources_are_relative_to_the_inputs_folder_and_the_parquet_keeps_the_path(mixed):
    root, out, _, _ = mixed
    with open(out / "top-homo_eV-max.csv") as handle:
        shown = {row["id"]: row["source"] for row in csv.DictReader(handle)}
    assert shown["ethanol"] == "smiles/lib.smi" and shown["ethyl-alcohol"] == "structures/more.xyz"
    stored = {r["id"]: r["source"] for r in outputs(out)[0].to_pylist()}
    assert stored["ethyl-alcohol"] == str(root / "structures" / "more.xyz")
    html = (out / "top-homo_eV-max.html").read_text()
    assert "structures/more.xyz" in html and str(root) not in html


def test_without_rank_only_the_first_target_gets_a_top_k_table(mixed):
    _, out, _, _ = mixed
    assert sorted(p.name for p in out.glob("top-*")) == [
        "top-homo_eV-max.csv",
        "top-homo_eV-max.html",
        "top-homo_eV-max.md",
    ]


def test_only_the_ranked_columns_get_tables_and_values_without_a_recorded_mae_get_three_decimals(tmp_path, models):
    write(tmp_path / "lib.xyz", candidates(5), format="extxyz")
    screen(tmp_path / "out", [tmp_path / "lib.xyz"], [models["plain"]], rank=["gap_eV:min"])
    assert sorted(p.name for p in (tmp_path / "out").glob("top-*.csv")) == ["top-gap_eV-min.csv"]
    with open(tmp_path / "out" / "top-gap_eV-min.csv") as handle:
        values = [row["gap_eV"] for row in csv.DictReader(handle)]
    assert all(len(value.split(".")[1]) == 3 for value in values)
    assert "test MAE homo not recorded, gap not recorded" in (tmp_path / "out" / "top-gap_eV-min.md").read_text()


def test_filters_take_the_output_column_names_and_the_bare_target_as_an_alias(tmp_path, models):
    write(tmp_path / "lib.xyz", candidates(12), format="extxyz")
    ensemble = [models["recorded"], models["plain"]]
    _, by_column = screen(tmp_path / "a", [tmp_path / "lib.xyz"], ensemble, filters=["homo_eV_std <= 0.1"])
    std = pq.read_table(tmp_path / "a" / "predictions")["homo_eV_std"].to_numpy()
    assert by_column.n_passing == int(np.sum(std <= 0.1)) and 0 < by_column.n_passing < 12
    _, by_alias = screen(tmp_path / "b", [tmp_path / "lib.xyz"], ensemble, filters=["homo_std <= 0.1"])
    assert by_alias.n_passing == by_column.n_passing
    with pytest.raises(ConfigError, match=r"unknown column 'homo_std' \(a standard deviation needs an ensemble") as err:
        screen(tmp_path / "c", [tmp_path / "lib.xyz"], [models["plain"]], filters=["homo_std <= 0.1"])
    assert str(err.value).endswith("the columns: gap_eV, homo_eV, n_atoms, row"), "the real names, not aliases"
