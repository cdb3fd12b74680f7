"""Graph table on Parquet: round trip, vectorised collate, cache keys, plain featurization, streaming loader."""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from scannet.batch import collate_graphs
from scannet.data.graphs_table import (
    FeaturizerMismatchError,
    atom_budget_slices,
    collate_arrow,
    featurize_table,
    graph_cache_dir,
    graphs_to_table,
    open_graph_table,
    read_graph_table,
    read_summary,
    table_to_graphs,
)
from scannet.data.loader import GraphTableDataset, make_table_loader
from scannet.featurizer import FeaturizerConfig, featurize
from tests.conftest import synthetic_graph

HAS_QM9 = importlib.util.find_spec("qm9pack") is not None
needs_qm9 = pytest.mark.skipif(not HAS_QM9, reason="qm9pack (offline QM9 data) is not installed")
GRAPH_FIELDS = ("numbers", "edge_center", "edge_neighbor", "distance", "solid_angle", "solid_angle_norm")
UNITS = {"homo": "eV", "gap": "eV"}


def test_graph_fields_table_columns_and_batch_keys_share_names():
    """Graph fields, graph-table columns and batch keys are one set of names (they must not drift apart)."""
    import dataclasses

    from scannet import batch as keys
    from scannet.data import schema as S
    from scannet.data.graphs_table import graph_table_schema
    from scannet.featurizer.neighbors import Graph

    fields = tuple(f.name for f in dataclasses.fields(Graph))
    assert fields == GRAPH_FIELDS
    columns = graph_table_schema(FeaturizerConfig(), UNITS).names
    assert [name for name in columns if name in fields] == list(fields)
    assert (S.NUMBERS, S.EDGE_CENTER, S.EDGE_NEIGHBOR, S.DISTANCE, S.SOLID_ANGLE, S.SOLID_ANGLE_NORM) == fields
    batch_keys = (
        keys.NUMBERS,
        keys.EDGE_CENTER,
        keys.EDGE_NEIGHBOR,
        keys.DISTANCE,
        keys.SOLID_ANGLE,
        keys.SOLID_ANGLE_NORM,
    )
    assert batch_keys == fields
    batch = collate_graphs([synthetic_graph(4, np.random.default_rng(0))])
    assert set(fields) <= set(batch)
    assert set(batch) - set(fields) == {keys.GRAPH_INDEX, keys.N_ATOMS}


def assert_same_graph(a, b):
    for name in GRAPH_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def assert_same_batch(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def qm9_200():
    from scannet.data.qm9 import load_qm9

    molecules = load_qm9(limit=200, targets=list(UNITS))
    config = FeaturizerConfig.molecules()
    graphs = [featurize(atoms, config) for atoms in molecules]
    ids = [f"qm9-{atoms.info['id']:06d}" for atoms in molecules]
    targets = {name: np.array([atoms.info[name] for atoms in molecules]) for name in UNITS}
    return molecules, graphs, ids, targets, config


def random_table(n: int, seed: int = 0, featurizer: FeaturizerConfig | None = None) -> tuple[list, pa.Table]:
    rng = np.random.default_rng(seed)
    graphs = [synthetic_graph(int(k), rng) for k in rng.integers(1, 30, n)]
    targets = {"y": rng.normal(size=n)}
    return graphs, graphs_to_table(graphs, [f"s{i}" for i in range(n)], None, targets, {"y": "eV"}, featurizer)


def write_table(table: pa.Table, path, row_group_size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


# ------------------------------------------------------------------------------------- table round trip


def test_round_trip_is_exact(synthetic_graphs):
    ids = [f"g{i}" for i in range(len(synthetic_graphs))]
    targets = {"a": np.arange(len(ids)) * 0.1, "b": -np.arange(len(ids), dtype=float)}
    table = graphs_to_table(synthetic_graphs, ids, ["x"] * len(ids), targets, {"a": "eV", "b": "K"})
    back, back_ids, values = table_to_graphs(table)
    assert back_ids == ids
    np.testing.assert_array_equal(values, np.stack([targets["a"], targets["b"]], 1))
    for a, b in zip(synthetic_graphs, back):
        assert_same_graph(a, b)
    # through Parquet, and from a sliced record batch
    sliced = table.slice(2, 3).to_batches()[0]
    for a, b in zip(synthetic_graphs[2:5], table_to_graphs(sliced)[0]):
        assert_same_graph(a, b)


@needs_qm9
def test_collate_arrow_equals_collate_graphs_on_qm9(qm9_200, tmp_path):
    _, graphs, ids, targets, config = qm9_200
    table = graphs_to_table(graphs, ids, None, targets, UNITS, config)
    pq.write_table(table, tmp_path / "g.parquet", row_group_size=64)
    read = pq.read_table(tmp_path / "g.parquet")  # chunked columns
    values = np.stack([targets[name] for name in UNITS], 1)
    assert_same_batch(collate_arrow(read, list(UNITS)), collate_graphs(graphs, values))
    for start, stop in [(0, 1), (5, 133), (150, 200)]:  # slices (non-zero offsets) of one record batch
        piece = table.slice(start, stop - start).combine_chunks().to_batches()[0]
        assert_same_batch(collate_arrow(piece, list(UNITS)), collate_graphs(graphs[start:stop], values[start:stop]))
    # Ray's numpy batches: object arrays of per-row arrays
    numpy_batch = {
        name: np.array([np.asarray(v) for v in read[name].to_pylist()] + [None], dtype=object)[:-1]
        if pa.types.is_list(read.schema.field(name).type)
        else read[name].to_numpy()
        for name in read.column_names
    }
    assert_same_batch(collate_arrow(numpy_batch, ["gap"]), collate_graphs(graphs, values[:, 1:]))
    assert "targets" not in collate_arrow(read)


# ------------------------------------------------------------------------------------------ cache keys


def test_cache_dir_follows_featurizer_settings(tmp_path):
    base = FeaturizerConfig.molecules()
    changed = [
        FeaturizerConfig.molecules(distance_threshold=5.0),
        FeaturizerConfig.molecules(solid_angle_threshold=0.3),
        FeaturizerConfig.molecules(molecule_mode="box10"),
    ]
    dirs = {graph_cache_dir(tmp_path, c) for c in [base, *changed]}
    assert len(dirs) == 4
    assert graph_cache_dir(tmp_path, base) == graph_cache_dir(tmp_path, FeaturizerConfig.molecules())
    assert graph_cache_dir(tmp_path, base).name == f"graphs-{base.content_hash()}"


def test_table_made_with_other_settings_is_refused(tmp_path):
    made_with = FeaturizerConfig.molecules()
    _, table = random_table(20, featurizer=made_with)
    write_table(table, tmp_path / "t" / "graphs" / "part-00000.parquet", 8)
    assert read_graph_table(tmp_path / "t", made_with).num_rows == 20
    with pytest.raises(FeaturizerMismatchError, match="distance_threshold"):
        read_graph_table(tmp_path / "t", FeaturizerConfig.molecules(distance_threshold=5.0))
    with pytest.raises(FeaturizerMismatchError):
        GraphTableDataset(tmp_path / "t", featurizer=FeaturizerConfig.crystals())
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "plain.parquet")
    with pytest.raises(FeaturizerMismatchError, match="not a graph table"):
        open_graph_table(tmp_path / "plain.parquet", made_with)


# --------------------------------------------------------------------------------- plain featurization


def structures_with_bad_records(tmp_path, molecules):
    """A structures table: ``molecules`` plus an empty structure and one with overlapping atoms."""
    from ase import Atoms

    from scannet.data.structures_table import structures_to_table

    bad_empty = Atoms()
    bad_overlap = Atoms("CC", positions=[[0, 0, 0], [0, 0, 0.01]])
    for atoms in (bad_empty, bad_overlap):
        atoms.info.update({name: 0.0 for name in UNITS})
    structures = [*molecules[:50], bad_empty, *molecules[50:120], bad_overlap, *molecules[120:]]
    ids = [f"m{i}" for i in range(len(structures))]
    path = tmp_path / "structures.parquet"
    table = structures_to_table(structures, UNITS, "test", ids)
    pq.write_table(table, path)
    return path, ids, {ids[50], ids[121]}


@needs_qm9
def test_featurize_table_quarantines_bad_records_and_keeps_good_ones(qm9_200, tmp_path):
    molecules, graphs, _, targets, config = qm9_200
    path, ids, bad_ids = structures_with_bad_records(tmp_path, molecules)
    out = graph_cache_dir(tmp_path / "cache", config)
    summary = featurize_table(path, out, config, batch_size=64)
    assert (summary.n_input, summary.n_graphs, summary.n_quarantined) == (202, 200, 2)
    assert read_summary(out)["n_quarantined"] == 2
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert {row["id"] for row in quarantine} == bad_ids
    assert all(row["reason"] for row in quarantine)
    table = read_graph_table(out, config)
    back, back_ids, values = table_to_graphs(table)
    assert back_ids == [i for i in ids if i not in bad_ids]
    for a, b in zip(graphs, back):
        assert_same_graph(a, b)
    np.testing.assert_array_equal(values, np.stack([targets[name] for name in UNITS], 1))
    with pytest.raises(FileExistsError):
        featurize_table(path, out, config)


# ------------------------------------------------------------------------------------ streaming loader


def collect_ids(dataset, num_workers=0):
    ids = []
    for _batch, batch_ids in make_table_loader(dataset, num_workers=num_workers):
        ids.extend(batch_ids)
    return ids


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    graphs, table = random_table(503, seed=3)
    folder = tmp_path_factory.mktemp("loader")
    write_table(table.slice(0, 300), folder / "graphs" / "part-00000.parquet", 37)
    write_table(table.slice(300), folder / "graphs" / "part-00001.parquet", 50)
    return folder, graphs, table


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_over_ranks_and_workers_cover_every_id_once(table_dir, shuffle):
    folder, _, table = table_dir
    world_size = 3
    seen = Counter()
    sizes = []
    for rank in range(world_size):
        dataset = GraphTableDataset(
            folder,
            ["y"],
            15,  # the global batch: 5 rows per rank
            shuffle=shuffle,
            shuffle_buffer_size=64,
            rank=rank,
            world_size=world_size,
            include_ids=True,
        )
        dataset.set_epoch(1)
        ids = collect_ids(dataset, num_workers=2)
        sizes.append(len(ids))
        seen.update(ids)
    assert seen == Counter(table["id"].to_pylist())
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_the_same_global_batches_with_equal_step_counts(table_dir, world_size):
    folder, _, _ = table_dir

    def stream(rank, world, batch=32):
        dataset = GraphTableDataset(
            folder, ["y"], batch, shuffle=True, seed=5, rank=rank, world_size=world, include_ids=True
        )
        dataset.set_epoch(2)
        return dataset

    single = [ids for _, ids in stream(0, 1)]
    per_rank = [[ids for _, ids in stream(rank, world_size)] for rank in range(world_size)]
    assert len({len(steps) for steps in per_rank}) == 1  # every rank takes the same number of steps
    assert len(per_rank[0]) == len(single) == stream(0, world_size).num_batches()
    for k, global_ids in enumerate(single):  # step k of all ranks together is global batch k, whatever the world
        assert sorted(i for steps in per_rank for i in steps[k]) == sorted(global_ids)


def test_select_ids_streams_only_that_subset(table_dir):
    folder, _, table = table_dir
    ids = table["id"].to_pylist()
    chosen = ids[::7] + ids[302:305]  # rows of both files (302-304 are not multiples of 7)
    dataset = GraphTableDataset(folder, ["y"], 10, shuffle=True, include_ids=True, select_ids=chosen)
    seen = [i for _, batch_ids in dataset for i in batch_ids]
    assert sorted(seen) == sorted(chosen) and dataset.num_rows == len(chosen)
    assert dataset.num_batches() == -(-len(chosen) // 10)
    assert GraphTableDataset(folder, ["y"], 10, select_ids=[]).num_batches() == 0


def test_loader_batches_equal_collate_graphs(table_dir):
    folder, graphs, table = table_dir
    dataset = GraphTableDataset(folder, ["y"], batch_size=64)
    batches = list(dataset)
    assert [int(b["n_atoms"].shape[0]) for b in batches] == [64] * 7 + [503 - 7 * 64]
    y = table["y"].to_numpy()[:, None]
    for k, batch in enumerate(batches):
        assert_same_batch(batch, collate_graphs(graphs[64 * k : 64 * (k + 1)], y[64 * k : 64 * (k + 1)]))


def test_atom_budget_never_exceeded_unless_one_structure_is_larger(table_dir):
    n_atoms = np.array([3, 5, 40, 2, 2, 2, 9, 1])
    slices = atom_budget_slices(n_atoms, 10)
    assert slices == [(0, 2), (2, 3), (3, 6), (6, 8)]
    folder, _, table = table_dir
    budget = 60
    dataset = GraphTableDataset(folder, max_atoms=budget, shuffle=True, shuffle_buffer_size=100, include_ids=True)
    ids = []
    for batch, batch_ids in dataset:
        atoms = int(batch["n_atoms"].sum())
        assert atoms <= budget or len(batch_ids) == 1
        ids.extend(batch_ids)
    assert sorted(ids) == sorted(table["id"].to_pylist())
    big = GraphTableDataset(folder, max_atoms=20, include_ids=True)
    assert any(len(i) == 1 and int(b["n_atoms"][0]) > 20 for b, i in big)  # structures of up to 29 atoms


def test_shuffle_is_seeded_and_changes_with_epoch(table_dir):
    folder, _, table = table_dir

    def order(seed, epoch):
        dataset = GraphTableDataset(folder, batch_size=32, shuffle=True, seed=seed, include_ids=True)
        dataset.set_epoch(epoch)
        return [i for _, ids in dataset for i in ids]

    first = order(0, 0)
    assert first == order(0, 0)
    assert first != order(1, 0) and first != order(0, 1)
    assert sorted(first) == sorted(table["id"].to_pylist())
    assert first != table["id"].to_pylist()


@pytest.mark.parametrize("static_shapes", [False, True])
def test_loader_worker_processes_yield_the_in_process_batches_in_order(table_dir, static_shapes):
    folder, _, _ = table_dir
    dataset = GraphTableDataset(
        folder, ["y"], 32, shuffle=True, shuffle_buffer_size=100, include_ids=True, static_shapes=static_shapes
    )
    dataset.set_epoch(4)
    in_process = list(make_table_loader(dataset))
    in_workers = list(make_table_loader(dataset, num_workers=2))
    assert [ids for _, ids in in_workers] == [ids for _, ids in in_process]
    for (batch, _), (expected, _) in zip(in_workers, in_process):
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key
    assert ("graph_mask" in in_process[0][0]) == static_shapes
