"""The worker loop shared by the Ray-free runner and Ray Train, run without Ray.

Multi-rank cases run real ``torch.distributed`` (gloo) process groups of 2 CPU processes: the global batch
makes 1 x 32 and 2 x 16 the same recipe, and a run killed and resumed equals the uninterrupted run bit for bit
(each rank's RNG state is restored).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scannet.checkpoint import load_model
from scannet.data.graphs_table import featurize_table
from scannet.data.qm9 import write_qm9_table
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANNConfig
from scannet.train import TrainConfig
from scannet.train.run_config import FaultHooks
from scannet.train.run_folder import MODEL_FILE, TRAIN_STATE
from scannet.train.trainer import NonFiniteLossError
from scannet.train.worker import (
    LocalSession,
    WorkerConfig,
    per_rank_batch_size,
    run_worker,
    split_part_ids,
    write_split_ids,
)


@pytest.fixture(scope="module")
def graph_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qm9")
    structures = write_qm9_table(root, targets=["homo", "lumo"], limit=96)
    graphs = root / "graphs"
    featurize_table(structures, graphs, FeaturizerConfig())
    ids = pq.read_table(structures, columns=["id"]).column("id").to_pylist()
    parts = ["train" if k < 64 else "val" if k < 80 else "test" for k in range(len(ids))]
    return graphs, write_split_ids(root / "split_ids.parquet", ids, parts)


def worker_config(graph_data, run_dir: Path, epochs: int, dropout: float = 0.1, batch: int = 16, **extra):
    graphs, split_ids = graph_data
    model = SCANNConfig(
        targets=("homo", "lumo"),
        local_dim=32,
        global_dim=32,
        dense_out=32,
        num_blocks=2,
        embedding_dropout=dropout,
        ffn_dropout=dropout,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    return WorkerConfig(
        graph_table=str(graphs),
        split_ids=str(split_ids),
        model=model,
        train=extra.pop("train", None) or TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, schedule="cosine"),
        featurizer=FeaturizerConfig(),
        target_mean=(-6.5, 0.5),
        target_std=(0.6, 1.2),
        threads=1,
        run_dir=str(run_dir),
        **extra,
    )


def test_split_ids_round_trip(graph_data):
    assert len(split_part_ids(graph_data[1], "train")) == 64
    assert len(split_part_ids(graph_data[1], "test")) == 16
    with pytest.raises(ValueError, match="split part"):
        split_part_ids(graph_data[1], "holdout")


def test_worker_trains_reports_and_checkpoints(graph_data, tmp_path):
    session = LocalSession(tmp_path / "ckpt")
    run_worker(worker_config(graph_data, tmp_path, epochs=4), session)
    assert [r["epoch"] for r in session.reports] == [0, 1, 2, 3]
    assert all(r["start_epoch"] == 0 and r["val_structures"] == 16 for r in session.reports)
    assert session.reports[-1]["train_loss"] < session.reports[0]["train_loss"]
    assert (session.latest / TRAIN_STATE).exists() and (session.latest / MODEL_FILE).exists()
    state = torch.load(session.latest / TRAIN_STATE, weights_only=True)
    assert state["epoch"] == 4 and len(state["history"]) == 4 and len(state["rank_rng"]) == 1


def test_worker_resumes_from_its_latest_checkpoint(graph_data, tmp_path):
    run_worker(worker_config(graph_data, tmp_path, epochs=2), LocalSession(tmp_path / "ckpt"))
    resumed = LocalSession(tmp_path / "ckpt")
    run_worker(worker_config(graph_data, tmp_path, epochs=4), resumed)
    assert [r["epoch"] for r in resumed.reports] == [2, 3]
    assert all(r["start_epoch"] == 2 for r in resumed.reports)


def test_killed_and_resumed_equals_uninterrupted_bit_for_bit(graph_data, tmp_path):
    whole = LocalSession(tmp_path / "whole")
    run_worker(worker_config(graph_data, tmp_path / "a", epochs=4), whole)
    config = worker_config(graph_data, tmp_path / "b", epochs=4, hooks=FaultHooks(fail_once_at_epoch=2))
    interrupted = LocalSession(tmp_path / "parts")
    with pytest.raises(RuntimeError, match="injected worker failure at epoch 2"):
        run_worker(config, interrupted)
    assert [r["epoch"] for r in interrupted.reports] == [0, 1]
    resumed = LocalSession(tmp_path / "parts")
    run_worker(config, resumed)  # the marker exists: no second failure
    assert [r["epoch"] for r in resumed.reports] == [2, 3]
    assert_same_state(whole.latest, resumed.latest)


def test_ema_run_checkpoints_the_average_and_resumes_bit_for_bit(graph_data, tmp_path):
    ema = TrainConfig(
        epochs=3, batch_size=16, lr=1e-3, schedule="cosine", cosine_fraction=1.0, ema_decay=0.9, warmup_epochs=1
    )
    whole = LocalSession(tmp_path / "whole")
    run_worker(worker_config(graph_data, tmp_path / "a", epochs=3, train=ema), whole)
    assert all({"raw_val_mae_homo", "raw_val_mae_lumo"} <= set(r) for r in whole.reports)
    config = worker_config(graph_data, tmp_path / "b", epochs=3, train=ema, hooks=FaultHooks(fail_once_at_epoch=1))
    with pytest.raises(RuntimeError, match="injected"):
        run_worker(config, LocalSession(tmp_path / "parts"))
    resumed = LocalSession(tmp_path / "parts")
    run_worker(config, resumed)
    assert_same_state(whole.latest, resumed.latest)
    state = torch.load(whole.latest / TRAIN_STATE, weights_only=True)
    saved, _, _ = load_model(whole.latest / MODEL_FILE)
    for name, value in state["ema"]["average"].items():  # the checkpoint's model is the average, not the raw weights
        assert torch.equal(saved.state_dict()[name], value), name
    assert any(not torch.equal(state["model"][n], v) for n, v in state["ema"]["average"].items())


def assert_same_state(first: Path, second: Path) -> None:
    a = torch.load(first / TRAIN_STATE, weights_only=True)
    b = torch.load(second / TRAIN_STATE, weights_only=True)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_loader_worker_processes_give_the_same_loss_curve_bit_for_bit(graph_data, tmp_path):
    in_process = LocalSession(tmp_path / "in-process")
    run_worker(worker_config(graph_data, tmp_path / "a", epochs=2), in_process)
    in_workers = LocalSession(tmp_path / "in-workers")
    run_worker(worker_config(graph_data, tmp_path / "b", epochs=2, loader_workers=2), in_workers)
    assert_same_state(in_process.latest, in_workers.latest)  # the same batches in the same order


def test_static_shapes_train_like_packed_batches(graph_data, tmp_path):
    packed = LocalSession(tmp_path / "packed")
    run_worker(worker_config(graph_data, tmp_path / "a", epochs=2, dropout=0.0), packed)
    padded = LocalSession(tmp_path / "padded")
    run_worker(worker_config(graph_data, tmp_path / "b", epochs=2, dropout=0.0, static_shapes=True), padded)
    for name in ("train_loss", "val_mae"):  # equal up to fp32 summation order
        assert [r[name] for r in padded.reports] == pytest.approx([r[name] for r in packed.reports], rel=1e-5)


def test_loader_workers_and_static_shapes_are_run_options(capsys):
    from scannet.cli import main
    from scannet.train.run_config import build_run_config
    from scannet.typed_config import ConfigError

    assert main(["train", "--loader-workers", "2", "--static-shapes", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["loader_workers"] == 2 and printed["static_shapes"] is True
    with pytest.raises(ConfigError, match="loader_workers: must be >= 0, got -1"):
        build_run_config(loader_workers=-1)


def test_non_finite_loss_stops_the_run(graph_data, tmp_path):
    config = worker_config(graph_data, tmp_path, epochs=3)
    from scannet.model import SCANN

    poisoned = SCANN(config.model).state_dict()
    poisoned = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in poisoned.items()}
    torch.save(poisoned, tmp_path / "nan.pt")
    session = LocalSession(tmp_path / "ckpt")
    with pytest.raises(NonFiniteLossError, match="epoch 0, step 0: the training loss is nan"):
        run_worker(dataclasses.replace(config, init_weights=str(tmp_path / "nan.pt")), session)
    assert session.reports == [] and not session.latest.exists()  # nothing trained on NaN was saved


def test_global_batch_must_divide_over_workers():
    assert per_rank_batch_size(128, 4) == 32
    with pytest.raises(ValueError, match="batch_size 128 is the global batch"):
        per_rank_batch_size(128, 3)


# ------------------------------------------------------------------------------------ 2-process DDP (gloo)


def _ddp_rank(rank: int, world: int, port: int, config: WorkerConfig, folder: str, expect_failure: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        session = LocalSession(folder)
        try:
            run_worker(config, session)
        except RuntimeError as exc:
            if not (expect_failure and "injected worker failure" in str(exc)):
                raise
        torch.save(session.reports, Path(folder) / f"reports-{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ddp(config: WorkerConfig, folder: Path, world: int = 2, expect_failure: bool = False) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    port = 29500 + os.getpid() % 1000 + world + 7 * int(expect_failure)
    mp.spawn(_ddp_rank, args=(world, port, config, str(folder), expect_failure), nprocs=world, join=True)
    return torch.load(folder / "reports-0.pt", weights_only=False)


def test_two_workers_at_half_batch_follow_the_single_worker_loss_curve(graph_data, tmp_path):
    single = LocalSession(tmp_path / "one")
    run_worker(worker_config(graph_data, tmp_path / "one", epochs=3, dropout=0.0, batch=32), single)
    double = run_ddp(worker_config(graph_data, tmp_path / "two", epochs=3, dropout=0.0, batch=32), tmp_path / "two")
    one = np.array([r["train_loss"] for r in single.reports])
    two = np.array([r["train_loss"] for r in double])
    np.testing.assert_allclose(two, one, rtol=1e-5)  # the same global batches, the same global RMSE
    np.testing.assert_allclose([r["val_mae"] for r in double], [r["val_mae"] for r in single.reports], rtol=1e-4)
    assert all(r["val_structures"] == 16 for r in double)


def test_two_worker_resume_restores_every_ranks_rng(graph_data, tmp_path):
    whole = tmp_path / "whole"
    run_ddp(worker_config(graph_data, whole, epochs=3), whole)
    parts = tmp_path / "parts"
    config = worker_config(graph_data, parts, epochs=3, hooks=FaultHooks(fail_once_at_epoch=2))
    run_ddp(config, parts, expect_failure=True)
    state = torch.load(parts / "latest" / TRAIN_STATE, weights_only=True)
    assert state["epoch"] == 2 and len(state["rank_rng"]) == 2
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])
    run_ddp(config, parts)
    assert_same_state(whole / "latest", parts / "latest")
