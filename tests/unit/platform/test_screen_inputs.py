"""scannet screen reads every library format: structures tables in place, multi-frame extxyz, ASE databases,
folders of CIF/xyz files and SMILES (.smi, .csv) embedded with RDKit; every record ends up once in the
predictions or in the quarantine (in-process executor: no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase import Atoms
from ase.io import write

from scannet.data.structures_table import write_structures
from scannet_platform.screen.job import build_screen_config, run_screen, summary_lines
from tests.screening import candidates, tiny_model

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


def screen(out, inputs, models, **settings):
    config = {"inputs": [str(i) for i in inputs], "models": [str(m) for m in models], "out": str(out)}
    config |= {"executor": "local", "mlflow": False, "progress": False, "chunk_size": 4} | settings
    return run_screen(build_screen_config(config))


def outputs(out):
    return pq.read_table(out / "predictions"), pq.read_table(out / "quarantine")


def assert_exactly_once(out, n):
    predictions, quarantine = outputs(out)
    rows = predictions["row"].to_pylist() + quarantine["row"].to_pylist()
    assert sorted(rows) == list(range(n)), "every library row once in the predictions or the quarantine"


def test_a_structures_table_is_screened_in_place(tmp_path, model):
    molecules = candidates(10)
    table = write_structures(tmp_path / "lib.parquet", molecules, {})
    summary, _ = screen(tmp_path / "out", [table], [model])
    predictions, quarantine = outputs(tmp_path / "out")
    assert (summary.n_screened, summary.n_quarantined, quarantine.num_rows) == (10, 0, 0)
    rows = sorted(predictions.to_pylist(), key=lambda r: r["row"])
    assert [r["id"] for r in rows] == [m.info["id"] for m in molecules]
    assert [r["n_atoms"] for r in rows] == [len(m) for m in molecules]
    assert [r["formula"] for r in rows] == [m.get_chemical_formula() for m in molecules]
    for row in rows:
        assert len(row["ga_scores"]) == row["n_atoms"] and abs(sum(row["ga_scores"]) - 1) < 1e-4
        assert np.isfinite(row["homo_eV"]) and np.isfinite(row["gap_eV"]) and row["geometry"] == "input"
        assert row["models"] == f"homo,gap={model}" and row["run_id"] == summary.run_id
        assert row["featurizer_hash"] and row["code_version"].startswith("scannet ")
    assert predictions.schema.field("gap_eV").metadata == {b"unit": b"eV"}
    assert not (tmp_path / "out" / "library").exists(), "a structures table is read in place, not staged"
    pinned = list((tmp_path / "out" / "models").glob("*.pt"))
    assert [p.read_bytes() for p in pinned] == [model.read_bytes()], "the checkpoint used is kept in the folder"


def test_a_multi_frame_extxyz_is_streamed_and_a_broken_frame_quarantined(tmp_path, model):
    path = tmp_path / "lib.extxyz"
    write(path, candidates(6), format="extxyz")
    with open(path, "a") as handle:
        handle.write("3\nbroken frame\nC 0 0 0\nH 0 0 zz\nH 0 1 0\n")
    write(tmp_path / "more.xyz", candidates(3, seed=1)[:3], format="extxyz")
    summary, _ = screen(tmp_path / "out", [path, tmp_path / "more.xyz"], [model])
    predictions, quarantine = outputs(tmp_path / "out")
    assert (summary.n_input, summary.n_screened, summary.n_quarantined) == (10, 9, 1)
    (bad,) = quarantine.to_pylist()
    assert bad["row"] == 6 and bad["source"] == str(path) and "frame 6" in bad["reason"]
    assert_exactly_once(tmp_path / "out", 10)


def test_an_ase_database_and_a_folder_of_cif_and_xyz_files(tmp_path, model):
    import ase.db

    with ase.db.connect(tmp_path / "lib.db") as db:
        for atoms in candidates(5):
            db.write(atoms, name=atoms.info["id"])
    folder = tmp_path / "folder"
    folder.mkdir()
    for k, atoms in enumerate(candidates(3, seed=2)):
        write(folder / f"s{k}.xyz", atoms)
    crystal = Atoms("CH4", positions=candidates(5)[4].positions + 4.0, cell=[8.0, 8.0, 8.0], pbc=True)
    write(folder / "boxed.cif", crystal)
    summary, _ = screen(tmp_path / "out", [tmp_path / "lib.db", folder], [model])
    predictions, _ = outputs(tmp_path / "out")
    assert (summary.n_input, summary.n_screened, summary.n_quarantined) == (9, 9, 0)
    by_row = {r["row"]: r for r in predictions.to_pylist()}
    assert [by_row[k]["id"] for k in range(5)] == [f"c{k:04d}" for k in range(5)]  # the db rows' names
    assert by_row[5]["source"] == str(folder / "boxed.cif") and by_row[5]["formula"] == "CH4"
    assert {by_row[k]["source"] for k in (6, 7, 8)} == {str(folder / f"s{k}.xyz") for k in range(3)}


def test_smiles_from_smi_and_csv_files_are_embedded_and_flagged_as_force_field_geometries(tmp_path, model):
    pytest.importorskip("rdkit")
    (tmp_path / "a.smi").write_text("# a comment\nCCO ethanol\nc1ccccc1 benzene\nC1CC1(( broken\n")
    (tmp_path / "b.csv").write_text("name,SMILES\nacetone,CC(=O)C\nsulfoxide,CS(=O)C\nnothing,\n")
    summary, scan = screen(tmp_path / "out", [tmp_path / "a.smi", tmp_path / "b.csv"], [model])
    predictions, quarantine = outputs(tmp_path / "out")
    screened = {r["id"]: r for r in predictions.to_pylist()}
    assert sorted(screened) == ["acetone", "benzene", "ethanol"]
    assert screened["ethanol"]["smiles"] == "CCO" and screened["ethanol"]["n_atoms"] == 9  # hydrogens added
    assert {r["geometry"] for r in screened.values()} == {"rdkit-etkdg-mmff94"}
    reasons = {r["id"]: r["reason"] for r in quarantine.to_pylist()}
    assert "cannot parse the SMILES" in reasons["broken"]
    assert "['S'] are not in the model's vocabulary" in reasons["sulfoxide"]
    assert "empty SMILES" in reasons["nothing"]
    assert summary.n_force_field == 3
    assert any("force-field geometries differ from the DFT geometries" in line for line in summary_lines(summary, scan))
    top = (tmp_path / "out" / "top-homo_eV-max.md").read_text()
    assert "force-field geometries differ from the DFT geometries" in top
    assert_exactly_once(tmp_path / "out", 6)


def test_a_missing_input_and_a_parquet_file_of_another_kind_are_refused(tmp_path, model):
    import pyarrow as pa

    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        screen(tmp_path / "out", [tmp_path / "missing.xyz"], [model])
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a scannet structures table"):
        screen(tmp_path / "out2", [tmp_path / "other.parquet"], [model])


@pytest.mark.slow  # logging and registering the model takes most of it (30-70 s here)
def test_models_by_mlflow_uri_version_and_alias(tmp_path):
    from tests.unit.platform.test_tracking import log, make_checkpoint

    _, version, _ = log(tmp_path, make_checkpoint(tmp_path / "ckpt" / "best_model.pt", seed=0))
    table = write_structures(tmp_path / "lib.parquet", candidates(5), {})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, reference in (
        ("by-version", f"models:/scannet-unit-homo/{version}"),
        ("by-alias", "models:/scannet-unit-homo@best"),
    ):
        summary, _ = screen(tmp_path / name, [table], [reference], mlflow_tracking_uri=uri)
        predictions, _ = outputs(tmp_path / name)
        assert summary.n_screened == 5 and predictions["models"][0].as_py() == f"homo={reference}"
    by_version, by_alias = (outputs(tmp_path / n)[0].sort_by("row")["homo"] for n in ("by-version", "by-alias"))
    assert by_version.equals(by_alias), "the alias points at the same version"
    with pytest.raises(Exception, match="not found in the MLflow store"):
        screen(tmp_path / "missing", [table], ["models:/scannet-unit-homo/99"], mlflow_tracking_uri=uri)
