"""QM9 loader (qm9pack CSVs), its vectorised parsers, the target table and the train/val/test splits."""

from __future__ import annotations

import ast
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pytest
from ase.units import Hartree

from scannet.data.qm9 import (
    QM9_FILES,
    QM9_SIZE,
    QM9_TARGETS,
    load_qm9,
    parse_coordinates,
    parse_elements,
    qm9_data_dir,
    qm9_split,
)
from scannet.data.splits import (
    Split,
    SplitMismatchError,
    make_split,
    make_split_fractions,
    slice_indices,
    structure_order,
)
from scannet.units import report_unit

HAS_QM9 = importlib.util.find_spec("qm9pack") is not None
needs_qm9 = pytest.mark.skipif(not HAS_QM9, reason="qm9pack (offline QM9 data) is not installed")


@pytest.fixture(scope="module")
def first_1000():
    return load_qm9(limit=1000)


@pytest.fixture(scope="module")
def first_1000_rows():
    options = pcsv.ConvertOptions(include_columns=["Index", "N_atoms", "Elements", "XYZ_Ang"])
    table = pcsv.read_csv(qm9_data_dir() / QM9_FILES[0], convert_options=options).slice(0, 1000)
    return table.to_pydict()


# ------------------------------------------------------------------------------------------ target table


def test_target_table_declares_units_and_report_units():
    assert set(QM9_TARGETS) == {
        "homo",
        "lumo",
        "gap",
        "alpha",
        "cv",
        "mu",
        "r2",
        "zpve",
        "u0",
        "u",
        "h",
        "g",
        "rot_a",
        "rot_b",
        "rot_c",
    }
    for name in ("homo", "lumo", "gap", "zpve", "u0", "u", "h", "g"):
        spec = QM9_TARGETS[name]
        assert (spec.unit, spec.factor, report_unit(spec.unit)) == ("eV", Hartree, (1000.0, "meV"))
    assert QM9_TARGETS["alpha"].column == "Polarizability_bohr3"
    assert (QM9_TARGETS["alpha"].unit, QM9_TARGETS["alpha"].factor) == ("Bohr^3", 1.0)
    assert report_unit(QM9_TARGETS["cv"].unit) == (1.0, "cal/(mol K)")
    assert QM9_TARGETS["rot_a"].unit == "GHz"
    with pytest.raises(AttributeError):
        QM9_TARGETS["homo"].factor = 1.0  # frozen


# ------------------------------------------------------------------------------------------------ parsers


def test_coordinate_parser_handles_tricky_number_forms():
    rows = ["[[0.,2.1997E-6,-0.],[1.5e-3,-2.5E+01,3]]", "[[-1.2345E-10, .5 ,1.],[7,8,-9.0e-0]]"]
    xyz = parse_coordinates(rows, np.array([2, 2]))
    expected = [[0.0, 2.1997e-6, -0.0], [1.5e-3, -25.0, 3.0], [-1.2345e-10, 0.5, 1.0], [7.0, 8.0, -9.0]]
    np.testing.assert_array_equal(xyz, expected)
    assert xyz.dtype == np.float64 and xyz.shape == (4, 3)
    assert np.signbit(xyz[0, 2])  # "-0." keeps its sign


def test_coordinate_parser_rejects_wrong_counts_and_garbage():
    with pytest.raises(ValueError, match="row 1: expected 3 values, found 6"):
        parse_coordinates(["[[1,2,3]]", "[[1,2,3],[4,5,6]]"], [1, 1])
    with pytest.raises(ValueError, match="not a number"):
        parse_coordinates(["[[1,2,x]]"], [1])


def test_element_parser():
    np.testing.assert_array_equal(parse_elements(["['C','H','H']", "['N', 'O', 'F']"], [3, 3]), [6, 1, 1, 7, 8, 9])
    with pytest.raises(ValueError, match="unknown chemical symbols"):
        parse_elements(["['C','Xx']"], [2])
    with pytest.raises(ValueError, match="row 0: expected 3"):
        parse_elements(["['C','H']"], [3])


# ------------------------------------------------------------------------------------------------ loading


@needs_qm9
def test_first_molecule_is_methane(first_1000):
    methane = first_1000[0]
    assert methane.get_chemical_formula() == "CH4"
    assert methane.info["id"] == 1 and methane.info["name"] == "qm9-000001" and methane.info["smiles"] == "C"
    assert methane.info["homo"] == pytest.approx(-10.5499, abs=1e-4)  # -0.3877 Ha
    assert methane.info["homo"] == -0.3877 * Hartree
    assert methane.info["lumo"] == pytest.approx(0.1171 * Hartree)
    assert methane.info["gap"] == pytest.approx(0.5048 * Hartree)
    assert methane.info["alpha"] == 13.21
    assert methane.info["cv"] == 6.469
    assert methane.info["u0"] == pytest.approx(-40.47893 * Hartree)
    assert methane.info["rot_a"] == 157.7118
    np.testing.assert_allclose(methane.positions[0], [-0.0126981359, 1.0858041578, 0.0080009958])
    assert not methane.pbc.any()
    assert all(isinstance(methane.info[name], float) for name in QM9_TARGETS)


@needs_qm9
def test_first_1000_match_the_csv(first_1000, first_1000_rows):
    rows = first_1000_rows
    assert len(first_1000) == 1000
    assert [atoms.info["id"] for atoms in first_1000] == rows["Index"]
    assert np.all(np.diff(rows["Index"]) > 0)  # gdb index order, not re-sorted by size
    assert [len(atoms) for atoms in first_1000] == rows["N_atoms"]
    for atoms, symbols, xyz in zip(first_1000, rows["Elements"], rows["XYZ_Ang"]):
        assert atoms.get_chemical_symbols() == ast.literal_eval(symbols)
        np.testing.assert_array_equal(atoms.positions, ast.literal_eval(xyz))


@needs_qm9
def test_target_selection_and_errors():
    molecules = load_qm9(limit=3, targets=["gap", "alpha"])
    assert len(molecules) == 3
    assert set(molecules[2].info) == {"id", "name", "smiles", "gap", "alpha"}
    assert load_qm9(limit=0) == []
    with pytest.raises(ValueError, match="unknown QM9 targets"):
        load_qm9(limit=1, targets=["homo", "HOMO"])
    with pytest.raises(ValueError, match="limit"):
        load_qm9(limit=-1)


def test_missing_data_folder_has_install_hint(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="pip install qm9pack"):
        load_qm9(limit=1, data_dir=tmp_path)


@needs_qm9
def test_full_dataset_count_and_load_time(capsys):
    start = time.perf_counter()
    molecules = load_qm9()
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nload_qm9(): {len(molecules)} molecules in {seconds:.2f} s")
    assert len(molecules) == QM9_SIZE
    ids = np.array([atoms.info["id"] for atoms in molecules])
    assert np.all(np.diff(ids) > 0) and ids[0] == 1 and ids[-1] == 133885
    assert {int(z) for atoms in molecules[::97] for z in atoms.numbers} <= {1, 6, 7, 8, 9}
    assert max(len(atoms) for atoms in molecules) == 29


# ------------------------------------------------------------------------------------------------- splits


def test_make_split_sizes_disjoint_and_covering():
    split = make_split(1000, 800, 100, seed=0)
    assert split.sizes == {"train": 800, "val": 100, "test": 100}
    assert all(part.dtype == np.int64 for part in (split.train, split.val, split.test))
    np.testing.assert_array_equal(np.sort(split.indices), np.arange(1000))
    perm = np.random.RandomState(0).permutation(1000)
    np.testing.assert_array_equal(split.train, perm[:800])
    np.testing.assert_array_equal(split.val, perm[800:900])
    np.testing.assert_array_equal(split.test, perm[900:])
    with pytest.raises(ValueError):
        split.train[0] = 1  # read-only


def test_split_is_deterministic_per_seed():
    assert make_split(500, 400, 50, seed=3) == make_split(500, 400, 50, seed=3)
    np.testing.assert_array_equal(make_split(500, 400, 50, seed=3).test, make_split(500, 400, 50, seed=3).test)
    assert make_split(500, 400, 50, seed=3) != make_split(500, 400, 50, seed=4)
    assert not np.array_equal(make_split(500, 400, 50, seed=3).train, make_split(500, 400, 50, seed=4).train)


def test_standard_qm9_split_and_fallback():
    split = qm9_split()
    assert split.sizes == {"train": 110_000, "val": 10_000, "test": 10_831}
    assert split.n == QM9_SIZE and split.seed == 0
    np.testing.assert_array_equal(np.sort(split.indices), np.arange(QM9_SIZE))
    small = qm9_split(n=1000, seed=1)
    assert small.sizes == {"train": 841, "val": 76, "test": 83}
    assert make_split_fractions(100, 0.1, 0.2, seed=0).sizes == {"train": 70, "val": 10, "test": 20}


def test_invalid_splits_are_rejected():
    with pytest.raises(ValueError):
        make_split(10, 8, 3)
    with pytest.raises(ValueError):
        make_split_fractions(10, 0.5, 0.5)
    with pytest.raises(ValueError, match="disjoint"):
        Split([0, 1], [1], [2], n=3, seed=0)
    with pytest.raises(ValueError, match="lie in"):
        Split([0, 1], [2], [3], n=3, seed=0)


def test_split_save_load_round_trip(tmp_path: Path):
    split = make_split(2000, 1500, 250, seed=7)
    path = tmp_path / "split.json"
    split.save(path)
    record = json.loads(path.read_text())
    assert (record["n"], record["seed"], record["sha256"]) == (2000, 7, split.sha256)
    assert record["sizes"] == {"train": 1500, "val": 250, "test": 250}
    loaded = Split.load(path, n=2000)
    assert loaded == split
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(split, name))
        assert getattr(loaded, name).dtype == np.int64


def test_split_load_mismatch_errors(tmp_path: Path):
    path = tmp_path / "split.json"
    make_split(2000, 1500, 250, seed=7).save(path)
    with pytest.raises(SplitMismatchError, match="made for 2000 structures but the data has 1999"):
        Split.load(path, n=1999)
    record = json.loads(path.read_text())
    record["train"][0], record["test"][0] = record["test"][0], record["train"][0]
    path.write_text(json.dumps(record))
    with pytest.raises(SplitMismatchError, match="sha256"):
        Split.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SplitMismatchError, match="not a split file"):
        Split.load(path)


def test_reference_order_sorts_by_atom_count_stably():
    n_atoms = np.array([5, 3, 5, 3, 9, 1])
    np.testing.assert_array_equal(structure_order(n_atoms, "atom_count"), [5, 1, 3, 0, 2, 4])
    np.testing.assert_array_equal(structure_order(n_atoms, "table"), np.arange(6))
    with pytest.raises(ValueError, match="split order"):
        structure_order(n_atoms, "random")


def test_slice_indices_is_seeded_sorted_and_rejects_nonpositive_sizes():
    chosen = slice_indices(100, 10, seed=3)
    assert len(chosen) == 10 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, slice_indices(100, 10, seed=3))
    np.testing.assert_array_equal(slice_indices(100, None, seed=3), np.arange(100))
    with pytest.raises(ValueError, match="n_structures must be > 0"):
        slice_indices(100, 0, seed=0)
