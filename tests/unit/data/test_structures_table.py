"""The structures table: exact Atoms -> Parquet -> Atoms round trips, streaming, quarantine, the QM9 table."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from scannet.data import schema as S
from scannet.data.structures_table import (
    Quarantine,
    StructuresWriter,
    TableKindError,
    iter_structure_batches,
    num_structures,
    read_quarantine,
    read_structures,
    read_units,
    structures_to_table,
    table_to_structures,
    write_structures,
)

UNITS = {"energy": "eV", "gap": "eV"}


def make_structures() -> list[Atoms]:
    rng = np.random.default_rng(3)
    c60 = molecule("C60")
    c60.positions += rng.normal(scale=1e-3, size=c60.positions.shape)  # non-round floats
    c60.info.update(name="c60", energy=-1.25)
    water = molecule("H2O")
    water.info["gap"] = 6.5  # energy missing: null
    water.cell = [8.0, 9.0, 10.0]  # a cell without pbc is kept too
    cu = bulk("Cu", "fcc", a=3.61)
    cu.info.update(energy=np.float64(-3.7), gap=0.0)
    supercell = bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (2, 2, 1)
    supercell.rattle(1e-3, seed=1)
    supercell.info["energy"] = -100.0 / 3
    slab = bulk("Al", "fcc", a=4.05, orthorhombic=True) * (2, 2, 1)
    slab.pbc = [True, True, False]
    slab.info["id"] = "slab-1"
    hexagonal = bulk("Mg", "hcp", a=3.21, c=5.21)
    return [c60, water, cu, supercell, slab, hexagonal]


def assert_same(original: Atoms, back: Atoms, targets=UNITS) -> None:
    assert np.array_equal(original.numbers, back.numbers)
    assert back.positions.dtype == np.float64
    assert original.positions.tobytes() == back.positions.tobytes()  # bit-identical
    assert np.array_equal(original.pbc, back.pbc)
    assert original.cell.array.tobytes() == back.cell.array.tobytes()
    for name in targets:
        if original.info.get(name) is None:
            assert name not in back.info
        else:
            assert back.info[name] == float(original.info[name])


def test_round_trip_is_exact(tmp_path):
    structures = make_structures()
    table = structures_to_table(structures, UNITS, source="data/set.extxyz")
    assert table.num_rows == len(structures)
    assert S.table_units(table.schema) == UNITS
    assert table.column(S.ID).to_pylist() == ["c60", "set:1", "set:2", "set:3", "slab-1", "set:5"]
    assert table.column(S.CELL).null_count == 0 and table.column(S.PBC).null_count == 0  # never null (pyarrow bug)
    assert table.column(S.PBC)[0].as_py() == [False] * 3 and table.column(S.CELL)[0].as_py() == [0.0] * 9
    assert table.column("energy").null_count == 3 and table.column("gap").null_count == 4
    assert table.column(S.PBC)[4].as_py() == [True, True, False]

    path = write_structures(tmp_path / "s.parquet", structures, UNITS, source="data/set.extxyz")
    back = table_to_structures(pq.read_table(path))
    assert len(back) == len(structures)
    for original, restored, row_id in zip(structures, back, table.column(S.ID).to_pylist()):
        assert_same(original, restored)
        assert restored.info["id"] == row_id and restored.info["source"] == "data/set.extxyz"
    # the second trip changes nothing
    again = structures_to_table(back, UNITS)
    assert again.equals(pq.read_table(path).replace_schema_metadata(again.schema.metadata))


def test_slices_and_batches_give_the_same(tmp_path):
    structures = make_structures()
    table = structures_to_table(structures, UNITS)
    for start in range(len(structures)):
        for stop in range(start + 1, len(structures) + 1):
            for original, back in zip(structures[start:stop], table_to_structures(table.slice(start, stop - start))):
                assert_same(original, back)

    path = tmp_path / "s.parquet"
    with StructuresWriter(path, UNITS, rows_per_group=4) as writer:
        for k in range(0, len(structures), 4):  # default ids continue across writes
            writer.write(structures[k : k + 4], source="run.xyz")
    assert writer.n_rows == len(structures) == num_structures(path)
    assert read_units(path) == UNITS
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    chunks = list(read_structures(path, batch_size=4))
    assert [len(c) for c in chunks] == [4, 2]
    streamed = [a for chunk in chunks for a in chunk]
    assert [a.info["id"] for a in streamed] == ["c60", "run:1", "run:2", "run:3", "slab-1", "run:5"]
    for original, back in zip(structures, streamed):
        assert_same(original, back)
    assert all(isinstance(b, pa.RecordBatch) and b.num_rows <= 3 for b in iter_structure_batches(path, batch_size=3))


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "s.parquet"
    write_structures(path, make_structures()[:1], UNITS)
    with pytest.raises(RuntimeError, match="boom"):
        with StructuresWriter(path, UNITS) as writer:
            writer.write(make_structures())
            assert num_structures(path) == 1  # the old table is untouched until close
            raise RuntimeError("boom")
    assert num_structures(path) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


def test_empty_table_and_per_structure_sources(tmp_path):
    assert structures_to_table([], UNITS).num_rows == 0
    path = write_structures(tmp_path / "empty.parquet", [], UNITS)
    assert list(read_structures(path)) == [] and read_units(path) == UNITS
    structures = make_structures()[:2]
    table = structures_to_table(structures, {}, source=["a.xyz", ""], ids=["x", "y"])
    assert table.column(S.SOURCE).to_pylist() == ["a.xyz", None]
    back = table_to_structures(table)
    assert back[0].info == {"id": "x", "source": "a.xyz"} and back[1].info == {"id": "y"}


def test_null_cell_and_pbc_read_as_non_periodic():
    structures = make_structures()
    table = structures_to_table(structures, UNITS)
    nulls = pa.nulls(table.num_rows, table.schema.field(S.CELL).type)
    table = table.set_column(3, table.schema.field(S.CELL), nulls)  # as another tool might write in memory
    for original, back in zip(structures, table_to_structures(table)):
        assert not back.pbc.any() and not back.cell.array.any()
        assert original.positions.tobytes() == back.positions.tobytes()


def test_reading_another_table_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(TableKindError, match="not a scannet structures table"):
        next(read_structures(path))
    graphs = tmp_path / "graphs.parquet"
    pq.write_table(pa.table({"id": ["a"]}).replace_schema_metadata({S.META_TABLE: b"graphs"}), graphs)
    with pytest.raises(TableKindError, match="'graphs' table"):
        read_units(graphs)


def test_quarantine_is_always_written_and_replaced_on_close_only(tmp_path):
    path = tmp_path / "q" / "quarantine.parquet"
    with Quarantine(path) as quarantine:
        pass
    assert quarantine.count == 0 and pq.ParquetFile(path).metadata.num_rows == 0 and read_quarantine(path) == []

    with Quarantine(path, flush_every=2) as quarantine:
        quarantine.add("a", "f.xyz", "overlap")
        quarantine.add(7, None, ValueError("bad"))
        quarantine.add("c", "g.cif", "unreadable")
        assert read_quarantine(path) == []  # the previous file stays until close
    assert quarantine.count == 3
    assert read_quarantine(path) == [
        {"id": "a", "source": "f.xyz", "reason": "overlap"},
        {"id": "7", "source": None, "reason": "bad"},
        {"id": "c", "source": "g.cif", "reason": "unreadable"},
    ]
    with pytest.raises(RuntimeError, match="boom"), Quarantine(path, flush_every=1) as quarantine:
        quarantine.add("d", None, "x")
        raise RuntimeError("boom")
    assert len(read_quarantine(path)) == 3  # an aborted run leaves the previous records
    Quarantine(path).close()  # a new run with nothing to quarantine: 0 rows
    assert read_quarantine(path) == [] and sorted(p.name for p in path.parent.iterdir()) == ["quarantine.parquet"]


def test_qm9_table_matches_load_qm9(tmp_path):
    pytest.importorskip("scannet.data.qm9")
    from scannet.data.qm9 import QM9_SIZE, QM9_TARGETS, load_qm9, qm9_data_dir, qm9_table, write_qm9_table

    try:
        qm9_data_dir()
    except FileNotFoundError:
        pytest.skip("qm9pack is not installed")
    start = time.perf_counter()
    table = qm9_table()
    seconds = time.perf_counter() - start
    print(f"qm9_table: {table.num_rows} rows in {seconds:.2f} s")
    assert table.num_rows == QM9_SIZE
    assert S.table_units(table.schema) == {name: spec.unit for name, spec in QM9_TARGETS.items()}
    assert not pc.any(pc.list_flatten(table.column(S.PBC))).as_py()

    n = 1000
    for original, back in zip(load_qm9(limit=n), table_to_structures(table.slice(0, n)), strict=True):
        assert back.info["id"] == original.info["name"] and back.info["source"] == "qm9pack"
        assert np.array_equal(original.numbers, back.numbers)
        assert original.positions.tobytes() == back.positions.tobytes()
        for name in QM9_TARGETS:
            assert back.info[name] == original.info[name]

    small = qm9_table(targets=["homo", "gap"], limit=50)
    path = write_qm9_table(tmp_path, targets=["homo", "gap"], limit=50)
    assert path.name == "structures.parquet" and read_units(path) == {"homo": "eV", "gap": "eV"}
    assert pq.read_table(path).equals(small)
