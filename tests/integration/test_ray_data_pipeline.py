"""Ray Data pipeline against the plain one: same graphs and quarantine, streaming batches, disjoint shards.

One local Ray instance (2 CPUs, no dashboard) is started for the module and shut down after it.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from scannet.batch import collate_graphs
from scannet.data.graphs_table import (
    FeaturizerMismatchError,
    featurize_table,
    graph_cache_dir,
    read_graph_table,
    table_to_graphs,
)
from scannet.featurizer import FeaturizerConfig

ray = pytest.importorskip("ray")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("qm9pack") is None, reason="qm9pack (offline QM9 data) is not installed"
    ),
]

UNITS = {"homo": "eV", "gap": "eV"}
N_MOLECULES = 300


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def structures_path(tmp_path_factory):
    """300 QM9 molecules plus two bad records (an empty structure, overlapping atoms) as a structures table."""
    from ase import Atoms

    from scannet.data.qm9 import load_qm9
    from scannet.data.structures_table import structures_to_table

    molecules = load_qm9(limit=N_MOLECULES, targets=list(UNITS))
    bad = [Atoms(), Atoms("CC", positions=[[0, 0, 0], [0, 0, 0.01]])]
    structures = [*molecules[:100], bad[0], *molecules[100:200], bad[1], *molecules[200:]]
    ids = [f"m{i:04d}" for i in range(len(structures))]
    path = tmp_path_factory.mktemp("structures") / "structures.parquet"
    pq.write_table(structures_to_table(structures, UNITS, "qm9", ids), path, row_group_size=128)
    return path


@pytest.fixture(scope="module")
def plain_table(structures_path, tmp_path_factory):
    config = FeaturizerConfig.molecules()
    out = graph_cache_dir(tmp_path_factory.mktemp("plain"), config)
    summary = featurize_table(structures_path, out, config, batch_size=64)
    return out, summary


@pytest.fixture(scope="module")
def ray_table(ray_local, structures_path, tmp_path_factory):
    from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

    config = FeaturizerConfig.molecules()
    out = graph_cache_dir(tmp_path_factory.mktemp("ray"), config)
    ds = featurize_dataset(structures_path, config, batch_size=64)
    summary = write_graph_table(ds, out, config, UNITS)
    return out, summary


def by_id(table):
    graphs, ids, targets = table_to_graphs(table)
    return {i: (g, t) for i, g, t in zip(ids, graphs, targets)}


def test_ray_and_plain_pipelines_give_identical_graphs_and_quarantine(plain_table, ray_table):
    config = FeaturizerConfig.molecules()
    (plain_dir, plain_summary), (ray_dir, ray_summary) = plain_table, ray_table
    assert (ray_summary.n_input, ray_summary.n_graphs, ray_summary.n_quarantined) == (N_MOLECULES + 2, N_MOLECULES, 2)
    assert (plain_summary.n_graphs, plain_summary.n_quarantined) == (N_MOLECULES, 2)
    plain, from_ray = by_id(read_graph_table(plain_dir, config)), by_id(read_graph_table(ray_dir, config))
    assert plain.keys() == from_ray.keys()
    for key, (graph, targets) in plain.items():
        other, other_targets = from_ray[key]
        np.testing.assert_array_equal(targets, other_targets)
        for name in ("numbers", "edge_center", "edge_neighbor", "distance", "solid_angle", "solid_angle_norm"):
            assert np.array_equal(getattr(graph, name), getattr(other, name)), (key, name)
    quarantined = [sorted(pq.read_table(d / "quarantine.parquet").to_pylist(), key=str) for d in (plain_dir, ray_dir)]
    assert quarantined[0] == quarantined[1]
    assert {row["id"] for row in quarantined[0]} == {"m0100", "m0201"}
    with pytest.raises(FeaturizerMismatchError):
        from scannet_platform.data_pipeline import read_graph_dataset

        read_graph_dataset(ray_dir, FeaturizerConfig.crystals())


def test_interrupted_ray_write_leaves_the_previous_table(ray_table, structures_path, tmp_path, monkeypatch):
    """Ctrl-C while the parts are being written: the existing graph table stays byte-identical, the staging
    folder (parts written so far) is removed."""
    import shutil

    from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

    config = FeaturizerConfig.molecules()
    out = tmp_path / ray_table[0].name
    shutil.copytree(ray_table[0], out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    iter_batches = ray.data.Dataset.iter_batches

    def interrupted(self, *args, **kwargs):
        for k, batch in enumerate(iter_batches(self, *args, **kwargs)):
            if k == 1:
                staged = [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
                assert len(staged) == 1 and list((staged[0] / "graphs").glob("part-*.parquet"))
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(ray.data.Dataset, "iter_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_graph_table(featurize_dataset(structures_path, config, batch_size=64), out, config, UNITS, overwrite=True)
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_streaming_from_structures_into_batches_without_writing(ray_local, structures_path, plain_table):
    from scannet_platform.data_pipeline import iter_graph_batches, training_dataset

    ds = training_dataset(structures_path, FeaturizerConfig.molecules(), batch_size=64)
    batches = list(iter_graph_batches(ds, targets=list(UNITS), batch_size=50))
    assert sum(int(b["n_atoms"].shape[0]) for b in batches) == N_MOLECULES
    # same packed batches as collate_graphs on the plain table's graphs, whatever the block order
    plain = by_id(read_graph_table(plain_table[0]))
    ordered = [plain[key] for key in sorted(plain)]
    got = torch.cat([b["targets"] for b in batches])
    expected = collate_graphs([g for g, _ in ordered], np.stack([t for _, t in ordered]))
    assert sorted(got[:, 0].tolist()) == sorted(expected["targets"][:, 0].tolist())
    assert int(sum(b["edge_center"].shape[0] for b in batches)) == int(expected["edge_center"].shape[0])


def test_atom_budget_batches_from_the_graph_table(ray_table):
    from scannet_platform.data_pipeline import iter_graph_batches, read_graph_dataset

    ds = read_graph_dataset(ray_table[0], FeaturizerConfig.molecules())
    budget = 200
    n = 0
    for batch in iter_graph_batches(
        ds, targets=["homo"], max_atoms=budget, batch_size=64, local_shuffle_buffer_size=128, seed=0
    ):
        assert int(batch["n_atoms"].sum()) <= budget
        assert batch["targets"].shape == (batch["n_atoms"].shape[0], 1)
        n += int(batch["n_atoms"].shape[0])
    assert n == N_MOLECULES


def test_streaming_split_shards_cover_each_id_once(ray_table):
    from scannet_platform.data_pipeline import read_graph_dataset

    ds = read_graph_dataset(ray_table[0], rows_per_block=32)
    shards = ds.streaming_split(2, equal=True)  # 300 rows: 150 each, nothing dropped
    seen: Counter = Counter()

    @ray.remote(num_cpus=0)
    def consume(shard):
        return [
            i for batch in shard.iter_batches(batch_size=32, batch_format="pyarrow") for i in batch["id"].to_pylist()
        ]

    for ids in ray.get([consume.remote(shard) for shard in shards]):
        assert len(ids) == N_MOLECULES // 2
        seen.update(ids)
    expected = read_graph_table(ray_table[0])["id"].to_pylist()
    assert seen == Counter(expected)
