"""The Ray Train worker: one DDP rank of a SCANN training run (Train V2).

Each rank [1] reads the featurized graphs of its data from the graph table, [2] wraps the model for
DDP, [3] resumes from ``ray.train.get_checkpoint()`` when there is one, then per epoch trains on its
shard of the training split, evaluates its disjoint shard of the validation split (every structure
exactly once across ranks; errors are summed with all-reduce), and [4] reports metrics with a
checkpoint written by rank 0 (train state + a self-describing model file).

The function is importable and testable without a cluster: ``run_worker(config, session)`` takes the
few Ray calls it needs through ``session`` (see ``RaySession``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from scannet.checkpoint import save_model
from scannet.data.graphs_table import read_graph_table, table_to_graphs
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, SCANNConfig
from scannet.train import GraphDataset, TrainConfig
from scannet.train.data import make_loader
from scannet.train.trainer import TrainLoop

TRAIN_STATE = "train_state.pt"
MODEL_FILE = "model.pt"


@dataclass
class SplitData:
    train: GraphDataset
    val: GraphDataset
    test: GraphDataset


def load_split_graphs(graph_table: str, split_ids_file: str, targets: list[str]) -> SplitData:
    """The graphs of each split part, matched by structure id (robust to row order and quarantine)."""
    parts: dict[str, str] = json.loads(Path(split_ids_file).read_text())  # id -> "train" | "val" | "test"
    graphs, ids, values = table_to_graphs(read_graph_table(graph_table), targets)
    selected: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for row, structure_id in enumerate(ids):
        part = parts.get(structure_id)
        if part is not None:
            selected[part].append(row)
    return SplitData(**{part: GraphDataset([graphs[i] for i in rows], values[rows]) for part, rows in selected.items()})


def shard(dataset: GraphDataset, rank: int, world_size: int) -> GraphDataset:
    """A disjoint shard: structures rank, rank + world_size, ... (all shards together: each exactly once)."""
    return dataset.subset(np.arange(rank, len(dataset), world_size))


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Sum a float64 vector over ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.as_tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def distributed_mae(
    loop: TrainLoop, dataset: GraphDataset, rank: int, world: int, batch_size: int
) -> tuple[dict[str, float], int]:
    """(MAE per target, structures evaluated) over the whole dataset; each rank evaluates its shard once."""
    error_sum, count = loop.error_sums(make_loader(shard(dataset, rank, world), batch_size, shuffle=False))
    reduced = all_reduce_sum(np.concatenate([error_sum, [count]]))
    return loop.mae_per_target(reduced[:-1], int(reduced[-1])), int(reduced[-1])


class RaySession:
    """The Ray Train calls the worker makes (a stand-in replaces it in single-process tests)."""

    def __init__(self) -> None:
        import ray.train

        self._train = ray.train
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def checkpoint_dir(self):
        checkpoint = self._train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else nullcontext(None)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=checkpoint)


class LocalSession:
    """One process, no Ray: rank 0 of 1 on ``device``; keeps the latest checkpoint in ``folder``.

    Runs the very same worker code as Ray Train does (the plain-loop baseline of the benchmarks).
    """

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        self.rank, self.world_size = 0, 1
        self.folder, self._device = Path(folder), torch.device(device)
        self.reports: list[dict[str, Any]] = []

    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def checkpoint_dir(self):
        latest = self.folder / "latest"
        return nullcontext(str(latest) if latest.exists() else None)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            shutil.copytree(checkpoint_dir, self.folder / "latest", dirs_exist_ok=True)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The ``TorchTrainer`` entry point."""
    run_worker(config, RaySession())


def run_worker(config: dict[str, Any], session) -> None:
    torch.set_num_threads(config.get("threads_per_worker") or torch.get_num_threads())
    rank, world = session.rank, session.world_size
    train_config = TrainConfig.from_dict(config["train"])
    torch.manual_seed(train_config.seed + rank)

    # [1] data: this rank's view of the split
    data = load_split_graphs(config["graph_table"], config["split_ids"], list(config["targets"]))
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=train_config.seed)
    train_loader = DataLoader(
        data.train, batch_size=train_config.batch_size, sampler=sampler, collate_fn=data.train.collate
    )

    # [2] model, wrapped for DDP; the target statistics come from the driver (whole training split)
    model = SCANN(SCANNConfig.from_dict(config["model"]))
    if config.get("init_weights"):
        model.load_state_dict(torch.load(config["init_weights"], weights_only=True), strict=False)
    model.set_target_statistics(torch.tensor(config["target_mean"]), torch.tensor(config["target_std"]))
    device = session.device()
    model.to(device)
    forward = session.prepare_model(model)
    if config.get("compile"):
        forward = torch.compile(forward, dynamic=True)
    loop = TrainLoop(model, train_config, len(train_loader), device, forward, precision=config.get("precision", "fp32"))

    # [3] resume from the latest checkpoint (job re-run with the same name, or a restarted worker group)
    with session.checkpoint_dir() as folder:
        if folder is not None:
            loop.load_state_dict(torch.load(Path(folder) / TRAIN_STATE, map_location=device, weights_only=True))

    start_epoch = loop.epoch
    if rank == 0 and config.get("launch_record"):  # where this worker group started (read by the driver)
        Path(config["launch_record"]).write_text(json.dumps({"start_epoch": start_epoch}))
    failure_marker = config.get("inject_failure_marker")
    while not loop.should_stop:
        if failure_marker and loop.epoch == config["inject_failure_at_epoch"] and not Path(failure_marker).exists():
            Path(failure_marker).write_text("failed once")  # a test hook: fail once, then recover
            raise RuntimeError(f"injected worker failure at epoch {loop.epoch}")
        sampler.set_epoch(loop.epoch)
        lr = loop.schedule.lr_at(loop.step)
        train_loss = loop.train_epoch(train_loader)
        loss_sum = all_reduce_sum(np.array([train_loss, 1.0]))
        val_mae, val_count = distributed_mae(loop, data.val, rank, world, train_config.batch_size)
        record = loop.end_epoch(loss_sum[0] / loss_sum[1], val_mae, lr)

        # [4] report: metrics from every rank (a barrier), the checkpoint from rank 0
        metrics = {"epoch": record.epoch, "train_loss": record.train_loss, "val_mae": record.val_mae, "lr": lr}
        metrics["start_epoch"] = start_epoch  # > 0 when this worker group resumed from a checkpoint
        metrics["val_structures"] = val_count  # all ranks together: each validation structure once
        metrics.update({f"val_mae_{t}": v for t, v in val_mae.items()})
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                torch.save(loop.state_dict(), Path(folder) / TRAIN_STATE)
                featurizer = FeaturizerConfig.from_dict(config["featurizer"])
                save_model(Path(folder) / MODEL_FILE, model, featurizer, metadata=config.get("model_metadata", {}))
            session.report(metrics, folder if rank == 0 else None)
