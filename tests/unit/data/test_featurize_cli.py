"""``scannet data featurize``: a structures table into the training cache's graph table, the same graphs."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scannet.cli import main
from scannet.data.graphs_table import graph_cache_dir, read_graph_table
from scannet.data.qm9 import write_qm9_table
from scannet.featurizer import FeaturizerConfig
from scannet.train.run import data_facts, graph_table_for, plain_featurize, resolve_dataset


@pytest.fixture(scope="module")
def structures(tmp_path_factory) -> Path:
    return write_qm9_table(tmp_path_factory.mktemp("qm9"), targets=["homo"], limit=40)


def test_the_graph_table_equals_the_training_cache(structures, tmp_path, capsys):
    code = main(
        ["data", "featurize", str(structures), "--model", "qm9-homo-lumo-gap-cpu", "--out", str(tmp_path / "out")]
    )
    assert code == 0
    featurizer = FeaturizerConfig.molecules()  # the shipped model's settings
    written = graph_cache_dir(tmp_path / "out", featurizer)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("featurized 40 of 40 structures (0 quarantined)")
    assert str(written) in line and featurizer.content_hash() in line

    dataset = resolve_dataset(str(structures), tmp_path / "cache")
    cache, _, _ = graph_table_for(dataset, data_facts(structures), featurizer, tmp_path / "cache", plain_featurize)
    assert read_graph_table(written).equals(read_graph_table(cache))
    assert (
        pq.read_schema(next((written / "graphs").glob("*.parquet"))).metadata
        == pq.read_schema(next((cache / "graphs").glob("*.parquet"))).metadata
    )


def test_explicit_settings_key_the_folder(structures, tmp_path, capsys):
    argv = ["data", "featurize", str(structures), "--distance-threshold", "3.5", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert graph_cache_dir(tmp_path, FeaturizerConfig.molecules(distance_threshold=3.5)).is_dir()
    assert main(argv) == 2  # done already: refused, one line
    assert "exists (made with these settings); --overwrite replaces it" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize("bad", ["missing.parquet", "graph-table"])
def test_a_bad_input_is_one_line_error(bad, structures, tmp_path, capsys):
    path = tmp_path / bad
    if bad == "graph-table":  # a Parquet table of another kind
        main(["data", "featurize", str(structures), "--out", str(tmp_path / "g"), "--no-progress"])
        path = next((tmp_path / "g").glob("graphs-*/graphs/*.parquet"))
        capsys.readouterr()
    assert main(["data", "featurize", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scannet: error:") and str(path) in err[0]
    assert not (tmp_path / "out").exists()
