"""Ray Data pipeline against the plain one: same graphs and quarantine; an interrupted write leaves the old table.

One local Ray instance (2 CPUs, no dashboard) is started for the module and shut down after it.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pyarrow.parquet as pq
import pytest

from scannet.data.graphs_table import (
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
