"""The Ray Train worker's logic, run in-process with a stand-in for the Ray session (no cluster)."""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from scannet.data.graphs_table import featurize_table
from scannet.data.qm9 import write_qm9_table
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANNConfig
from scannet.train import GraphDataset, TrainConfig
from scannet_platform.train_worker import MODEL_FILE, TRAIN_STATE, load_split_graphs, run_worker, shard
from tests.conftest import synthetic_graph


class FakeSession:
    """Rank 0 of 1 on the CPU; keeps every reported checkpoint folder, resumes from ``resume_from``."""

    def __init__(self, store: Path, resume_from: Path | None = None) -> None:
        self.rank, self.world_size = 0, 1
        self.store, self.resume_from = store, resume_from
        self.reports: list[dict] = []

    def device(self):
        return torch.device("cpu")

    def prepare_model(self, model):
        return model

    def checkpoint_dir(self):
        return nullcontext(str(self.resume_from) if self.resume_from else None)

    def report(self, metrics, checkpoint_dir):
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            shutil.copytree(checkpoint_dir, self.store / f"epoch-{metrics['epoch']}")


@pytest.fixture(scope="module")
def graph_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qm9")
    structures = write_qm9_table(root, targets=["homo", "lumo"], limit=96)
    graphs = root / "graphs"
    featurize_table(structures, graphs, FeaturizerConfig())
    ids = pq.read_table(structures, columns=["id"]).column("id").to_pylist()
    parts = {i: ("train" if k < 64 else "val" if k < 80 else "test") for k, i in enumerate(ids)}
    split_ids = root / "split_ids.json"
    split_ids.write_text(json.dumps(parts))
    return graphs, split_ids


def worker_config(graph_data, epochs, **extra):
    graphs, split_ids = graph_data
    small = SCANNConfig(targets=("homo", "lumo"), local_dim=32, global_dim=32, dense_out=32, num_blocks=2)
    return {
        "graph_table": str(graphs),
        "split_ids": str(split_ids),
        "targets": ["homo", "lumo"],
        "model": small.to_dict(),
        "train": TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, schedule="cosine").to_dict(),
        "featurizer": FeaturizerConfig().to_dict(),
        "target_mean": [-6.5, 0.5],
        "target_std": [0.6, 1.2],
        "threads_per_worker": 1,
        **extra,
    }


def test_split_graphs_are_matched_by_id(graph_data):
    data = load_split_graphs(str(graph_data[0]), str(graph_data[1]), ["homo", "lumo"])
    assert (len(data.train), len(data.val), len(data.test)) == (64, 16, 16)
    assert data.train.targets.shape == (64, 2)


def test_worker_trains_reports_and_checkpoints(graph_data, tmp_path):
    session = FakeSession(tmp_path)
    run_worker(worker_config(graph_data, epochs=4), session)
    assert [r["epoch"] for r in session.reports] == [0, 1, 2, 3]
    assert all(r["start_epoch"] == 0 and r["val_structures"] == 16 for r in session.reports)
    assert session.reports[-1]["train_loss"] < session.reports[0]["train_loss"]
    for epoch in range(4):
        folder = tmp_path / f"epoch-{epoch}"
        assert (folder / TRAIN_STATE).exists() and (folder / MODEL_FILE).exists()
    state = torch.load(tmp_path / "epoch-3" / TRAIN_STATE, weights_only=True)
    assert state["epoch"] == 4 and len(state["history"]) == 4


def test_worker_resumes_from_a_checkpoint(graph_data, tmp_path):
    first = FakeSession(tmp_path / "first")
    (tmp_path / "first").mkdir()
    run_worker(worker_config(graph_data, epochs=2), first)
    resumed = FakeSession(tmp_path / "second", resume_from=tmp_path / "first" / "epoch-1")
    (tmp_path / "second").mkdir()
    run_worker(worker_config(graph_data, epochs=4), resumed)
    assert [r["epoch"] for r in resumed.reports] == [2, 3]
    assert all(r["start_epoch"] == 2 for r in resumed.reports)


def test_injected_failure_happens_once(graph_data, tmp_path):
    marker = tmp_path / "failed"
    config = worker_config(graph_data, epochs=3, inject_failure_at_epoch=1, inject_failure_marker=str(marker))
    session = FakeSession(tmp_path)
    with pytest.raises(RuntimeError, match="injected worker failure at epoch 1"):
        run_worker(config, session)
    assert marker.exists() and [r["epoch"] for r in session.reports] == [0]
    restarted = FakeSession(tmp_path / "restart", resume_from=tmp_path / "epoch-0")
    (tmp_path / "restart").mkdir()
    run_worker(config, restarted)  # the marker is there: no second failure
    assert [r["epoch"] for r in restarted.reports] == [1, 2]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_evaluation_shards_cover_every_structure_once(world_size):
    rng = np.random.default_rng(0)
    dataset = GraphDataset([synthetic_graph(3, rng) for _ in range(17)], np.arange(17.0)[:, None])
    seen = np.concatenate([shard(dataset, rank, world_size).targets[:, 0] for rank in range(world_size)])
    assert sorted(seen.tolist()) == list(range(17))
