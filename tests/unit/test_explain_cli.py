"""`scannet explain`: GA files readable by ASE, drawings (SVG, PNG), ranked local-structure tables and the HTML
report for a QM9 molecule, C60, a periodic crystal and SMILES; per-structure failures and exit codes; the deletion
test (library and `--faithfulness`)."""

from __future__ import annotations

import csv
import math
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.io import read, write
from matplotlib.image import imread

from scannet.batch import collate_graphs
from scannet.checkpoint import save_model
from scannet.cli import main as cli_main
from scannet.data.qm9 import load_qm9
from scannet.explain import (
    GA_ARRAY,
    LOCAL_STRUCTURE_COLUMNS,
    DeletionConfig,
    deletion_test,
    gradient_times_input,
    top_k_mask,
    top_local_structures,
)
from scannet.featurizer import FeaturizerConfig, Graph, featurize
from scannet.model import SCANN, preset

CRYSTAL_ELEMENTS = (11, 17)  # Na, Cl


@pytest.fixture(scope="module")
def molecule_model(tmp_path_factory):
    torch.manual_seed(0)
    model = SCANN(preset("demo", targets=("homo",)))
    return save_model(tmp_path_factory.mktemp("m") / "model.pt", model, FeaturizerConfig(), {"units": {"homo": "eV"}})


@pytest.fixture(scope="module")
def crystal_model(tmp_path_factory):
    torch.manual_seed(0)
    config = preset(
        "demo", targets=("energy",), elements=CRYSTAL_ELEMENTS, max_atomic_number=17, gaussian_distance_max=6.0
    )
    metadata = {"units": {"energy": "eV/atom"}}
    return save_model(tmp_path_factory.mktemp("c") / "model.pt", SCANN(config), FeaturizerConfig.crystals(), metadata)


@pytest.fixture(scope="module")
def qm9_molecule():
    return load_qm9(limit=55, targets=["homo"])[-1]  # qm9-000055, C4H10O, 15 atoms


def explain(capsys, *argv):
    code = cli_main(["explain", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def brute_force_ranking(scores: np.ndarray) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def check_explanation(out, stem, atoms, top_n, featurizer):
    """The four files of one structure agree with each other, with ASE and with a brute-force ranking."""
    annotated = read(out / f"{stem}_ga.xyz")
    scores = annotated.arrays[GA_ARRAY]
    assert len(scores) == len(atoms) and np.all(scores >= 0)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(annotated.positions, atoms.positions, atol=1e-6)
    assert list(annotated.pbc) == list(atoms.pbc)

    assert imread(out / f"{stem}_ga.png").shape[:2] == (440, 560)  # the drawing's default size
    svg = ElementTree.parse(out / f"{stem}_ga.svg").getroot()  # well-formed
    assert svg.tag.endswith("svg")

    rows = read_csv(out / f"{stem}_top.csv")
    assert tuple(rows[0]) == LOCAL_STRUCTURE_COLUMNS
    assert [int(r["atom_index"]) for r in rows] == brute_force_ranking(scores)[:top_n]
    assert [int(r["rank"]) for r in rows] == list(range(1, min(top_n, len(atoms)) + 1))
    graph = featurize(atoms, featurizer)
    for row in rows:
        i = int(row["atom_index"])
        assert row["element"] == atoms[i].symbol
        assert float(row["ga_score"]) == pytest.approx(scores[i], abs=1e-6)
        expected = sorted(f"{atoms[j].symbol}{j}" for j in graph.edge_neighbor[graph.edge_center == i])
        assert sorted(row["neighbours"].split()) == expected
        assert int(row["n_neighbours"]) == len(expected)

    markdown = (out / f"{stem}_top.md").read_text().splitlines()
    table = [line for line in markdown if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[2]) for line in table] == [int(r["atom_index"]) for r in rows]
    return rows


def test_qm9_molecule_and_c60_are_explained(molecule_model, qm9_molecule, tmp_path, capsys):
    write(tmp_path / "qm9.xyz", qm9_molecule, format="extxyz")
    write(tmp_path / "c60.xyz", molecule("C60"))
    out = tmp_path / "out"
    code, stdout, err = explain(
        capsys, "--model", molecule_model, tmp_path / "qm9.xyz", tmp_path / "c60.xyz", "--out", out, "--top-n", "5"
    )
    assert code == 0, err
    check_explanation(out, "qm9-000055", qm9_molecule, 5, FeaturizerConfig())
    rows = check_explanation(out, "c60", molecule("C60"), 5, FeaturizerConfig())
    assert all(int(r["n_neighbours"]) == 3 for r in rows)  # every C60 carbon has three bonded Voronoi neighbours
    assert "[1/2] qm9-000055 (15 atoms)" in stdout and "[2/2] c60 (60 atoms)" in stdout
    assert "explained 2 of 2 structures" in stdout
    index = read_csv(out / "explanations.csv")
    assert [r["name"] for r in index] == ["qm9-000055", "c60"] and all(r["error"] == "" for r in index)


def test_periodic_crystal_is_explained(crystal_model, tmp_path, capsys):
    crystal = bulk("NaCl", "rocksalt", a=5.64, cubic=True)  # 8 atoms
    write(tmp_path / "NaCl.cif", crystal)
    out = tmp_path / "out"
    code, _, err = explain(capsys, "--model", crystal_model, tmp_path / "NaCl.cif", "--out", out)
    assert code == 0, err
    rows = check_explanation(out, "NaCl", read(tmp_path / "NaCl.cif"), 10, FeaturizerConfig.crystals())
    assert "periodic structure: projected view" in (out / "report.html").read_text()  # the drawing's note, in the table
    assert len(rows) == 8  # fewer atoms than --top-n: all of them
    for row in rows:  # rock salt: six nearest neighbours of the other element, periodic images included
        assert int(row["n_neighbours"]) == 6
        other = "Cl" if row["element"] == "Na" else "Na"
        assert {label.rstrip("0123456789") for label in row["neighbours"].split()} == {other}


def test_smiles_strings_and_files_are_explained_and_each_bad_one_gets_its_reason(molecule_model, tmp_path, capsys):
    (tmp_path / "library.smi").write_text("# comment\nCCO ethanol\nC1CC broken\nCS(=O)C dmso\n")
    (tmp_path / "library.csv").write_text("name,smiles\nacetone,CC(=O)C\nnothing,\n")
    out = tmp_path / "out"
    inputs = [tmp_path / "library.smi", tmp_path / "library.csv", "--smiles", "c1ccccc1O phenol", "--smiles", "N#N"]
    code, stdout, err = explain(capsys, "--model", molecule_model, *inputs, "--out", out)
    assert code == 1, err
    index = {r["name"]: r for r in read_csv(out / "explanations.csv")}
    assert list(index) == ["ethanol", "broken", "dmso", "acetone", "nothing", "phenol", "N#N"]
    assert "RDKit cannot parse the SMILES 'C1CC'" in index["broken"]["error"]
    assert "elements ['S'] are not in the model's vocabulary" in index["dmso"]["error"]
    assert index["nothing"]["error"] == "line 3: empty SMILES"
    for name in ("ethanol", "acetone", "phenol", "N#N"):
        row = index[name]
        assert row["error"] == "" and row["smiles"] and (out / row["ga_file"].replace("_ga.xyz", "_ga.svg")).is_file()
    assert index["ethanol"]["n_atoms"] == "9" and index["ethanol"]["frame"] == "2"  # hydrogens added; its line
    assert "library.smi: line 3: cannot read: SMILES not embedded" in err
    assert "force-field geometries differ from the DFT geometries" in stdout
    report = (out / "report.html").read_text()
    assert report.count('<img class="drawing"') == 4 and "RDKit cannot parse the SMILES" in report
    assert "force-field geometries differ from the DFT geometries" in report
    assert "GA scores explain homo;" in report  # one target: its name


def test_hostile_smiles_names_are_escaped_and_stay_inside_out(molecule_model, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = explain(capsys, "--model", molecule_model, "--smiles", "CCO ../../<script>x</script>", "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert all(p.parent == out for p in out.rglob("*"))
    report = (out / "report.html").read_text()
    assert "<script>x" not in report and "&lt;script&gt;x&lt;/script&gt;" in report
    svg = next(out.glob("*_ga.svg")).read_text()
    assert "<script>x" not in svg
    ElementTree.fromstring(svg)


def test_top_local_structures_break_ties_by_index_and_list_neighbours_nearest_first():
    graph = Graph(
        numbers=np.array([6, 1, 8, 1]),
        edge_center=np.array([0, 0, 0, 2]),
        edge_neighbor=np.array([1, 2, 3, 0]),
        distance=np.array([1.1, 1.4, 1.0, 1.4], np.float32),
        solid_angle=np.ones(4, np.float32),
        solid_angle_norm=np.ones(4, np.float32),
    )
    scores = np.array([0.3, 0.1, 0.3, 0.3])
    top = top_local_structures(graph, scores, top_n=3)
    assert [s.atom_index for s in top] == [0, 2, 3] == brute_force_ranking(scores)[:3]
    assert top[0].neighbours == ("H3", "H1", "O2") and top[1].neighbours == ("C0",) and top[2].neighbours == ()
    with pytest.raises(ValueError, match="3 GA scores for a graph of 4 atoms"):
        top_local_structures(graph, scores[:3], 2)


def test_a_bad_file_among_good_ones_exits_1_with_the_good_ones_written(molecule_model, tmp_path, capsys):
    write(tmp_path / "good.xyz", [molecule("CH3CHO"), molecule("C6H6")])
    (tmp_path / "broken.xyz").write_text("3\ncomment\nC 0 0\n")
    write(tmp_path / "sulfur.xyz", molecule("SH2"))  # S is not in the model's vocabulary
    out = tmp_path / "out"
    files = [tmp_path / "good.xyz", tmp_path / "broken.xyz", tmp_path / "sulfur.xyz"]
    code, stdout, err = explain(capsys, "--model", molecule_model, *files, "--out", out)
    assert code == 1
    assert "broken.xyz: cannot read" in err and "'sulfur'" in err and "not in the model's vocabulary" in err
    assert "explained 2 of 4 structures (2 failed" in stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        ["explanations.csv", "report.html"]
        + [f"good-{k}{s}" for k in (0, 1) for s in ("_ga.xyz", "_ga.svg", "_ga.png", "_top.csv", "_top.md")]
    )
    index = {r["name"]: r["error"] for r in read_csv(out / "explanations.csv")}
    assert index["good-0"] == index["good-1"] == "" and index["broken"] and index["sulfur"]


def test_user_errors_exit_2(molecule_model, tmp_path, capsys):
    write(tmp_path / "h2o.xyz", molecule("H2O"))
    code, _, err = explain(capsys, "--model", tmp_path / "missing.pt", tmp_path / "h2o.xyz")
    assert code == 2 and "no such checkpoint file" in err
    code, _, err = explain(capsys, "--model", molecule_model)
    assert code == 2 and "give structure files" in err
    code, _, err = explain(capsys, "--model", molecule_model, tmp_path / "nothing.xyz", "--out", tmp_path / "o")
    assert code == 2 and "no input could be read" in err
    code, _, err = explain(capsys, "--model", molecule_model, "--faithfulness", tmp_path / "h2o.xyz")
    assert code == 2 and "--faithfulness takes no structures" in err
    code, _, err = explain(capsys, "--model", molecule_model, "--faithfulness")  # no run folder beside the model
    assert code == 2 and "holds no split_ids.parquet: it is not a training run folder" in err and "--run" in err
    code, _, err = explain(capsys, "--model", molecule_model, "--faithfulness", "--run", tmp_path)
    assert code == 2 and "no run_config.json; give the folder of a training run" in err


# ------------------------------------------------------------------------------------------ deletion test


def test_top_k_mask_removes_the_k_highest_scores_of_each_structure():
    scores = np.array([0.1, 0.5, 0.5, 0.2, 0.9, 0.3, 0.05])
    n_atoms = np.array([4, 2, 1])  # the last two structures have no more than k = 2 atoms: kept whole
    assert top_k_mask(scores, n_atoms, 2).tolist() == [True, False, False, True, True, True, True]
    assert top_k_mask(scores, n_atoms, 1).tolist() == [True, False, True, True, False, True, True]


def test_gradient_times_input_is_the_first_order_change_of_scaling_an_atoms_input(molecules):
    torch.manual_seed(0)
    model = SCANN(preset("demo", targets=("a", "b"))).double().eval()
    batch = collate_graphs([featurize(atoms) for atoms in molecules[:3]])
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    with torch.no_grad():
        z = model.encode(batch)  # [A, D]
    index, b = batch["graph_index"], 3
    attribution = gradient_times_input(model, z, index, b)  # [T, A]
    assert attribution.shape == (2, len(z))
    eps = 1e-6
    for atom in (0, 4, 9):
        scaled = z.clone()
        scaled[atom] *= 1 + eps
        with torch.no_grad():
            change = (model.readout(scaled, index, b).prediction - model.readout(z, index, b).prediction) / eps
        structure = int(index[atom])
        torch.testing.assert_close(change[structure], attribution[:, atom], rtol=1e-4, atol=1e-7)


def test_deletion_test_gives_one_row_per_target_and_k(molecules):
    torch.manual_seed(0)
    model = SCANN(preset("demo", targets=("homo", "gap"))).eval()
    graphs = [featurize(atoms) for atoms in molecules]
    config = DeletionConfig(ks=(1, 3), n_random=3, seed=1, batch_size=4)
    rows = deletion_test(model, graphs, config)
    assert [(r.target, r.k) for r in rows] == [("homo", 1), ("gap", 1), ("homo", 3), ("gap", 3)]
    n_atoms = [g.n_atoms for g in graphs]
    assert [r.n_structures for r in rows] == [sum(n > k for n in n_atoms) for k in (1, 1, 3, 3)]
    for row in rows:
        values = (row.ga, row.random_mean, row.random_std, row.grad_input)
        assert all(math.isfinite(v) and v >= 0 for v in values), row
        assert row.random_std > 0
    again = deletion_test(model, graphs, DeletionConfig(ks=(1, 3), n_random=3, seed=1, batch_size=64))
    for a, b in zip(rows, again):  # seeded and independent of the batch size
        assert a.ga == pytest.approx(b.ga, rel=1e-5) and a.random_mean == pytest.approx(b.random_mean, rel=1e-5)
