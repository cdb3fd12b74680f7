"""The two-stage screen: featurize processes feeding the models give the same parts as one process; the graph
store lets a second screen skip featurizing, refuses a corrupt part, and keeps kill/resume exactly-once; the Ray
pools leave a CPU to featurizing (in-process executor unless marked slow)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase import Atoms

from scannet.cli.args import config_overrides
from scannet.data.structures_table import write_structures
from scannet_platform.screen import featurize_stage
from scannet_platform.screen.chunk import ChunkPredictor
from scannet_platform.screen.cli import add_arguments
from scannet_platform.screen.config import ScreenConfig, build_screen_config
from scannet_platform.screen.job import ray_pools, summary_lines
from tests.screening import candidates, two_tiny_models
from tests.unit.platform.test_screen_inputs import assert_exactly_once, screen

pytest.importorskip("ray")

N = 14  # 12 molecules and 2 bad records, chunks of 4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return two_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    sulfur = Atoms("CS", positions=[[0, 0, 0], [1.8, 0, 0]])  # quarantined by the models' vocabulary (stage M)
    large = Atoms("C30", positions=np.arange(90, dtype=float).reshape(30, 3) * 1.5)  # over max_atoms (stage F)
    sulfur.info["id"], large.info["id"] = "sulfur", "large"
    molecules = candidates(12)
    records = molecules[:5] + [sulfur] + molecules[5:9] + [large] + molecules[9:]
    return write_structures(tmp_path_factory.mktemp("library") / "lib.parquet", records, {})


def parts(out):
    """Predictions (without the run id) and quarantine, sorted by row."""
    predictions = pq.read_table(out / "predictions").drop(["run_id"]).sort_by("row")
    return predictions.to_pylist(), pq.read_table(out / "quarantine").sort_by("row").to_pylist()


def no_featurizing(*args, **kwargs):
    raise AssertionError("stage F featurized a chunk whose graphs it had")


def test_featurize_processes_give_the_same_parts_as_one_process(tmp_path, models, library):
    inline, _ = screen(tmp_path / "inline", [library], [models["a"]], max_atoms=20, graphs_cache=False)
    pooled, _ = screen(  # 4 chunks, at most 3 in flight
        tmp_path / "pooled",
        [library],
        [models["a"]],
        max_atoms=20,
        graphs_cache=False,
        featurize_workers=2,
        batches_in_flight=1,
    )
    assert (pooled.n_screened, pooled.n_quarantined) == (inline.n_screened, inline.n_quarantined) == (12, 2)
    assert parts(tmp_path / "pooled") == parts(tmp_path / "inline")
    reasons = {r["id"]: r["reason"] for r in parts(tmp_path / "pooled")[1]}
    assert "not in the model's vocabulary" in reasons["sulfur"] and "30 atoms" in reasons["large"]
    assert_exactly_once(tmp_path / "pooled", N)


def test_a_second_model_reads_the_stored_graphs_and_predicts_the_same(tmp_path, models, library, monkeypatch):
    store = tmp_path / "cache"
    first, _ = screen(tmp_path / "a", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    assert first.chunks_from_store == 0 and first.graphs_bytes > 0
    assert first.graphs_dir.startswith(str(store / featurize_stage.GRAPHS_STORE))
    fresh, _ = screen(tmp_path / "b-fresh", [library], [models["b"]], max_atoms=20, graphs_cache=False)
    monkeypatch.setattr(featurize_stage, "featurize_each", no_featurizing)
    second, scan = screen(tmp_path / "b", [library], [models["b"]], max_atoms=20, graphs_dir=str(store))
    assert second.chunks_from_store == second.n_chunks == 4
    graphs_line = next(line for line in summary_lines(second, scan) if line.startswith("graphs: "))
    assert f"MB in {second.graphs_dir}; 4 chunks of this launch read from there" in graphs_line
    assert (second.n_screened, second.n_quarantined) == (fresh.n_screened, fresh.n_quarantined)
    assert parts(tmp_path / "b") == parts(tmp_path / "b-fresh")


def test_other_settings_do_not_read_the_stored_graphs(tmp_path, models, library, monkeypatch):
    store = tmp_path / "cache"
    screen(tmp_path / "a", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    again, _ = screen(tmp_path / "seed", [library], [models["a"]], max_atoms=20, seed=1, graphs_dir=str(store))
    other, _ = screen(tmp_path / "chunks", [library], [models["a"]], max_atoms=20, chunk_size=5, graphs_dir=str(store))
    assert again.chunks_from_store == other.chunks_from_store == 0


def test_a_corrupt_stored_part_is_refused_with_its_reason_and_featurized_again(
    tmp_path, models, library, monkeypatch, capsys
):
    store = tmp_path / "cache"
    screen(tmp_path / "a", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    stored = sorted(store.rglob("part-000001.parquet"))
    assert len(stored) == 1
    stored[0].write_bytes(b"not parquet")
    capsys.readouterr()
    again, _ = screen(tmp_path / "b", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    err = capsys.readouterr().err
    assert f"refused stored graphs {stored[0]}" in err and "featurizing again" in err
    assert again.chunks_from_store == 3
    assert parts(tmp_path / "b") == parts(tmp_path / "a")
    assert pq.read_table(stored[0]).num_rows == 4, "the chunk's graphs were stored again"


def test_a_stored_part_of_another_chunk_is_refused(tmp_path, models, library, capsys):
    store = tmp_path / "cache"
    screen(tmp_path / "a", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    first, second = sorted(store.rglob("part-00000[01].parquet"))
    second.write_bytes(first.read_bytes())
    capsys.readouterr()
    screen(tmp_path / "b", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    err = capsys.readouterr().err
    assert f"refused stored graphs {second}: " in err and "holds chunk, first row, rows (0, 0, 4), not (1, 4, 4)" in err
    assert parts(tmp_path / "b") == parts(tmp_path / "a")


def test_an_interrupted_screen_with_stored_graphs_resumes_exactly_once(tmp_path, models, library, monkeypatch):
    store = tmp_path / "cache"
    predict = ChunkPredictor.predict
    calls = []

    def interrupted_at_the_third_chunk(self, featurized):
        calls.append(featurized.piece.chunk)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, featurized)

    monkeypatch.setattr(ChunkPredictor, "predict", interrupted_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        screen(tmp_path / "out", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    monkeypatch.setattr(ChunkPredictor, "predict", predict)
    summary, _ = screen(tmp_path / "out", [library], [models["a"]], max_atoms=20, graphs_dir=str(store))
    assert (summary.n_chunks_skipped, summary.chunks_from_store) == (2, 1), "the third chunk's graphs were stored"
    assert_exactly_once(tmp_path / "out", N)
    reference, _ = screen(tmp_path / "reference", [library], [models["a"]], max_atoms=20, graphs_cache=False)
    assert parts(tmp_path / "out") == parts(tmp_path / "reference")


@pytest.mark.parametrize(
    "resources, settings, pools",
    [
        # CPU model actors take every CPU; the featurize actors (one per 4 model CPUs) reserve none and share them
        ({"CPU": 2}, {}, (2, 1, 0.0, True)),
        ({"CPU": 16}, {"cpus_per_actor": 4}, (4, 4, 0.0, True)),
        ({"CPU": 32}, {}, (32, 8, 0.0, True)),
        ({"CPU": 8}, {"featurize_workers": 3}, (8, 3, 0.0, True)),
        ({"CPU": 2}, {"actors": 3}, (3, 1, 0.0, False)),  # more than fits: the model pool may start smaller
        # GPU model actors: the featurize pool gets the CPUs they leave, one CPU per actor
        ({"CPU": 16, "GPU": 2}, {"gpus_per_actor": 1, "device": "cuda"}, (2, 14, 1.0, True)),
        ({"CPU": 4, "GPU": 1}, {"gpus_per_actor": 1, "device": "cuda", "featurize_workers": 4}, (1, 4, 1.0, False)),
    ],
)
def test_the_ray_pools_share_the_cpus_between_the_stages(resources, settings, pools):
    config = build_screen_config({"out": "x", **settings})
    found = ray_pools(config, resources)
    assert (found.model_actors, found.featurize_actors, found.featurize_cpus, found.fits) == pools


def test_with_every_graph_stored_the_model_actors_take_every_cpu():
    found = ray_pools(build_screen_config({"out": "x"}), {"CPU": 2}, featurizing=False)
    assert (found.model_actors, found.featurize_actors, found.featurize_cpus, found.fits) == (2, 1, 0.0, True)


def test_the_cli_takes_the_two_stage_and_graph_store_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["lib.parquet", "--out", "o", "--executor", "local", "--featurize-workers", "3", "--batches-in-flight", "4"]
    config = build_screen_config(config_overrides(parser.parse_args([*argv, "--graphs-cache", "/g"]), ScreenConfig))
    assert (config.executor, config.featurize_workers, config.batches_in_flight) == ("local", 3, 4)
    assert (config.graphs_cache, config.graphs_dir) == (True, "/g")
    off = build_screen_config(config_overrides(parser.parse_args([*argv, "--no-graphs-cache"]), ScreenConfig))
    assert off.graphs_cache is False


@pytest.mark.slow
def test_a_two_stage_ray_screen_on_two_cpus_gives_the_local_parts(tmp_path, models, library):
    import ray

    screen(tmp_path / "local", [library], [models["a"]], max_atoms=20, graphs_cache=False)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        summary, _ = screen(
            tmp_path / "ray", [library], [models["a"]], max_atoms=20, executor="ray", graphs_cache=False
        )
    finally:
        ray.shutdown()
    assert (summary.n_screened, summary.n_quarantined) == (12, 2)
    assert parts(tmp_path / "ray") == parts(tmp_path / "local")


def test_a_graph_table_is_screened_without_featurizing(tmp_path, models, library, monkeypatch):
    from scannet.data.graphs_table import featurize_table
    from scannet.featurizer import FeaturizerConfig
    from scannet_platform.screen.report import GRAPH_TABLE_NOTE

    graphs = tmp_path / "graphs"
    featurize_table(library, graphs, FeaturizerConfig.molecules())
    screen(tmp_path / "reference", [library], [models["a"]], max_atoms=20, graphs_cache=False)
    monkeypatch.setattr(featurize_stage, "featurize_each", no_featurizing)
    summary, _ = screen(tmp_path / "out", [graphs], [models["a"]], max_atoms=20, rank=["gap_eV:max"], top_k=3)
    assert summary.n_duplicate_structures == 0, "rows without a structure key are no duplicates of each other"
    predictions, quarantine = parts(tmp_path / "out")
    expected = {r["id"]: r for r in parts(tmp_path / "reference")[0]}
    assert {r["id"] for r in predictions} == set(expected)
    for row in predictions:
        assert row["geometry"] == "graph table" and row["smiles"] is None and row["structure_key"] is None
        assert row["gap_eV"] == pytest.approx(expected[row["id"]]["gap_eV"], abs=1e-6)
        assert row["formula"] == expected[row["id"]]["formula"]
    assert {r["id"]: r["reason"][:9] for r in quarantine} == {"sulfur": "elements ", "large": "30 atoms,"}
    html = (tmp_path / "out" / "top-gap_eV-max.html").read_text()
    assert html.count(GRAPH_TABLE_NOTE) >= 3, "every one of the 3 rows says why it has no drawing"


def test_a_graph_table_of_another_featurizer_is_refused_naming_both_hashes(tmp_path, models, library):
    from scannet.data.graphs_table import featurize_table
    from scannet.featurizer import FeaturizerConfig
    from scannet.typed_config import ConfigError

    other = dataclasses.replace(FeaturizerConfig.molecules(), distance_threshold=5.0)
    featurize_table(library, tmp_path / "graphs", other)
    wanted = FeaturizerConfig.molecules().content_hash()
    with pytest.raises(ConfigError, match=f"featurizer {other.content_hash()}, but the models' featurizer is {wanted}"):
        screen(tmp_path / "out", [tmp_path / "graphs"], [models["a"]])
    assert not (tmp_path / "out" / "predictions").exists()


def test_static_shapes_screen_padded_batches_with_the_packed_results(tmp_path, models, library, monkeypatch):
    """``--compile --static-shapes``: every model batch is padded to a bucket shape (torch.compile stubbed out:
    one compiled graph per shape takes tens of seconds on CPU) and the parts hold the packed screen's values."""
    import torch

    from scannet.static_shapes import pad_batch

    screen(tmp_path / "packed", [library], [models["a"]], max_atoms=20, graphs_cache=False)
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    seen = []  # atoms of every packed batch the predictor padded

    def counting_pad(batch):
        seen.append(len(batch["numbers"]))
        return pad_batch(batch)

    monkeypatch.setattr("scannet.predictor.pad_batch", counting_pad)
    screen(
        tmp_path / "static",
        [library],
        [models["a"]],
        max_atoms=20,
        graphs_cache=False,
        compile=True,
        static_shapes=True,
    )
    assert seen[0] == 8  # Predictor.compile's probe: 2 structures of 4 atoms
    assert sum(seen[1:]) == sum(row["n_atoms"] for row in parts(tmp_path / "packed")[0])  # every screened atom
    (packed, packed_quarantine), (static, static_quarantine) = parts(tmp_path / "packed"), parts(tmp_path / "static")
    assert static_quarantine == packed_quarantine and len(static) == len(packed) == 12
    for a, b in zip(packed, static):
        assert {k: v for k, v in a.items() if not isinstance(v, float | list)} == {
            k: v for k, v in b.items() if not isinstance(v, float | list)
        }
        for key, value in a.items():
            if isinstance(value, float | list):
                assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_static_shapes_without_compile_is_refused():
    with pytest.raises(ValueError, match="static_shapes pads batches for compiled graphs: use it with compile"):
        build_screen_config({"out": "x", "static_shapes": True})
