"""The training worker loop: one rank of a run, the same code with or without Ray.

Each rank [1] streams its part of the training split from the graph table (every rank reads the same
seeded sequence of GLOBAL batches of ``train.batch_size`` structures and keeps rows ``rank::world_size``
of each, so ranks take equal step counts and the recipe does not depend on the number of workers),
[2] builds the model (wrapped for DDP by the session), [3] resumes from the session's latest checkpoint
(weights, optimiser, schedule, history and every rank's RNG state), then per epoch trains, evaluates its
disjoint share of the validation split (errors summed over ranks: each structure counted once) and
[4] reports metrics with a checkpoint written by rank 0.

A *session* supplies the few calls that differ between runners: :class:`LocalSession` here (one
process, or one rank of a ``torch.distributed`` group), ``RaySession`` in the platform (Ray Train V2).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from scannet.checkpoint import save_model
from scannet.data import schema as S
from scannet.data.loader import GraphTableDataset, make_table_loader
from scannet.distributed import all_gather_objects, all_reduce_sum, rank_and_world
from scannet.featurizer import FeaturizerConfig
from scannet.io.atomic import AtomicWrite, recover_path
from scannet.model import SCANN, SCANNConfig
from scannet.precision import Precision
from scannet.static_shapes import compile_forward
from scannet.train import metrics as M
from scannet.train.launches import LaunchTimeLimit
from scannet.train.run_config import FaultHooks
from scannet.train.run_folder import LATEST_CHECKPOINT, MODEL_FILE, TRAIN_STATE, RunFolder
from scannet.train.trainer import TrainConfig, TrainLoop

SPLIT_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class WorkerConfig:
    """What every rank needs; built once by the runner (driver) and sent to the workers."""

    graph_table: str  # folder of the graph table (featurizer settings checked on open)
    split_ids: str  # Parquet file of (id, part): which structures are train / val / test
    model: SCANNConfig
    train: TrainConfig
    featurizer: FeaturizerConfig
    target_mean: tuple[float, ...]  # [T] z-scoring statistics of the whole training split
    target_std: tuple[float, ...]
    init_weights: str | None = None  # fine-tuning: a state dict to start from (checked by the driver)
    precision: Precision = "fp32"
    compile: bool = False
    static_shapes: bool = False  # training batches padded to bucket shapes (scannet.static_shapes)
    loader_workers: int = 0  # processes collating the training batches (0: this one)
    threads: int | None = None
    model_metadata: dict[str, Any] = field(default_factory=dict)  # written into every model checkpoint
    run_dir: str | None = None  # where rank 0 records the epoch this worker group started at
    hooks: FaultHooks = field(default_factory=FaultHooks)

    @property
    def targets(self) -> tuple[str, ...]:
        return self.model.targets


class Session(Protocol):
    rank: int
    world_size: int

    def device(self) -> torch.device: ...
    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...
    def checkpoint_dir(self): ...  # a context manager giving the latest checkpoint folder or None
    def wants_checkpoint(self, metrics: dict[str, Any]) -> bool: ...  # after this epoch (metrics as reported)
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...


# ------------------------------------------------------------------------------------------------ split


def write_split_ids(path: str | Path, ids: list[str] | pa.Array, parts: list[str] | pa.Array) -> Path:
    """The split as a Parquet table of (id, part): read back by every rank without Python objects per row."""
    table = pa.table({S.ID: pa.array(ids, pa.string()), "part": pa.array(parts, pa.string())})
    path = Path(path)
    pq.write_table(table, path)
    return path


def split_part_ids(path: str | Path, part: str) -> pa.Array:
    """The ids of one part (``train``, ``val`` or ``test``) of a split written by :func:`write_split_ids`."""
    if part not in SPLIT_PARTS:
        raise ValueError(f"split part must be one of {SPLIT_PARTS}, got {part!r}")
    table = pq.read_table(path, filters=[("part", "=", part)], columns=[S.ID])
    return table.column(S.ID).combine_chunks()


def split_stream(
    config: WorkerConfig,
    part: str,
    rank: int,
    world_size: int,
    shuffle: bool,
    batch_size: int | None = None,
    static_shapes: bool = False,
) -> GraphTableDataset:
    """The graph-table stream of one split part for one rank (global batches, this rank's rows of each)."""
    stream = GraphTableDataset(
        config.graph_table,
        targets=config.targets,
        batch_size=batch_size or config.train.batch_size,
        shuffle=shuffle,
        seed=config.train.seed,
        rank=rank,
        world_size=world_size,
        featurizer=config.featurizer,
        select_ids=split_part_ids(config.split_ids, part),
        static_shapes=static_shapes,
    )
    # a last global batch with fewer rows than ranks would give some rank no step: drop it when training
    stream.drop_last = shuffle and 0 < stream.num_rows % stream.batch_size < world_size
    return stream


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """The rows each rank takes from a global batch; the global size must divide evenly."""
    if global_batch % world_size:
        raise ValueError(
            f"batch_size {global_batch} is the global batch and must divide evenly over {world_size} workers; "
            f"choose a multiple of {world_size}"
        )
    return global_batch // world_size


# ----------------------------------------------------------------------------------------------- sessions


class LocalSession:
    """No Ray: one process (or one rank of an initialised ``torch.distributed`` group) on ``device``.

    Keeps the latest checkpoint in ``folder/latest`` (replaced atomically: a kill never leaves half of one). With
    ``limit_hours`` (one process only: the clock is this process's), a report raises
    :class:`~scannet.train.launches.LaunchTimeLimit` after its checkpoint is written when another epoch as long as
    this one would end more than ``limit_hours`` after the session was made.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        on_report: Callable[[dict[str, Any]], None] | None = None,
        limit_hours: float | None = None,
    ) -> None:
        self.on_report, self.limit_hours, self.started = on_report, limit_hours, time.perf_counter()
        self.rank, self.world_size = rank_and_world()
        self.folder, self._device = Path(folder), torch.device(device)
        self.reports: list[dict[str, Any]] = []

    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world_size == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=None if self._device.type == "cpu" else [self._device]
        )

    @property
    def latest(self) -> Path:
        return self.folder / LATEST_CHECKPOINT

    def checkpoint_dir(self):
        recover_path(self.latest)  # a commit cut by a kill between its renames
        return nullcontext(str(self.latest) if (self.latest / TRAIN_STATE).exists() else None)

    def wants_checkpoint(self, metrics: dict[str, Any]) -> bool:
        return True  # every epoch

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if self.on_report is not None and self.rank == 0:
            self.on_report(metrics)
        if checkpoint_dir and self.rank == 0:
            with AtomicWrite(self.latest, owned=(TRAIN_STATE, MODEL_FILE)) as write:
                shutil.copytree(checkpoint_dir, write.path, dirs_exist_ok=True)
        if self.limit_hours is not None and checkpoint_dir and not metrics[M.LAST]:
            next_epoch_ends = time.perf_counter() + metrics[M.SECONDS] - self.started
            if next_epoch_ends > self.limit_hours * 3600:
                raise LaunchTimeLimit(metrics[M.EPOCH] + 1, self.limit_hours)


# ---------------------------------------------------------------------------------------------- the loop


def distributed_mae(loop: TrainLoop, stream: GraphTableDataset, raw: bool = False) -> tuple[dict[str, float], int]:
    """(MAE per target in dataset units, structures evaluated) over all ranks; each structure counted once. Of
    the weights the run keeps (the average with an EMA), or of the raw weights with ``raw``."""
    error_sum, count = loop.error_sums(make_table_loader(stream), raw)
    reduced = all_reduce_sum(np.concatenate([error_sum, [count]]))
    return loop.mae_per_target(reduced[:-1], int(reduced[-1])), int(reduced[-1])


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(states: list[dict[str, Any]] | None, rank: int, world_size: int, seed: int, epoch: int) -> str:
    """Restore this rank's RNG state saved at the checkpoint; reseed when the worker count changed."""
    if states is not None and len(states) == world_size:
        torch.set_rng_state(states[rank]["torch"])
        if "cuda" in states[rank] and torch.cuda.is_available():
            torch.cuda.set_rng_state(states[rank]["cuda"])
        return "restored"
    torch.manual_seed(seed + 1000 * epoch + rank)
    return "reseeded (the worker count changed)"


def run_worker(config: WorkerConfig, session: Session) -> None:
    """Train until the epoch budget or early stopping, reporting every epoch to ``session``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world = session.rank, session.world_size
    per_rank_batch_size(config.train.batch_size, world)
    torch.manual_seed(config.train.seed + rank)

    # [1] data: global batches of the training split, this rank's rows of each
    device = session.device()
    train = split_stream(config, "train", rank, world, shuffle=True, static_shapes=config.static_shapes)
    val = split_stream(config, "val", rank, world, shuffle=False)
    train_batches = make_table_loader(train, config.loader_workers, pin_memory=device.type == "cuda")
    train_rows = min(train.num_rows, train.num_batches() * config.train.batch_size)  # structures per epoch

    # [2] model, wrapped for DDP; the target statistics come from the driver (whole training split)
    model = SCANN(config.model)
    if config.init_weights:
        model.load_state_dict(torch.load(config.init_weights, weights_only=True))  # keys checked by the driver
    model.set_target_statistics(torch.tensor(config.target_mean), torch.tensor(config.target_std))
    model.to(device)
    forward = session.prepare_model(model)
    if config.compile:
        forward = compile_forward(forward, config.static_shapes, device)
    loop = TrainLoop(model, config.train, train.num_batches(), device, forward, config.precision)

    # [3] resume from the latest checkpoint (a re-run with the same name, or a restarted worker group)
    with session.checkpoint_dir() as folder:
        if folder is not None:
            state = torch.load(Path(folder) / TRAIN_STATE, map_location="cpu", weights_only=True)
            loop.load_state_dict(state)
            restore_rng(state.get("rank_rng"), rank, world, config.train.seed, loop.epoch)

    start_epoch = loop.epoch
    if rank == 0 and config.run_dir:  # where this worker group started (read by the driver)
        RunFolder(config.run_dir).launch.write_text(json.dumps({M.START_EPOCH: start_epoch}))
    while not loop.should_stop:
        _maybe_fail(config, loop.epoch, rank)
        train.set_epoch(loop.epoch)
        lr = loop.schedule.lr_at(loop.step)
        started = time.perf_counter()
        train_loss = loop.train_epoch(train_batches)  # raises NonFiniteLossError on a NaN / inf loss
        train_seconds = time.perf_counter() - started
        val_mae, val_count = distributed_mae(loop, val)
        raw_val_mae = distributed_mae(loop, val, raw=True)[0] if loop.ema is not None else None
        record = loop.end_epoch(train_loss, val_mae, lr, raw_val_mae)

        # [4] report: metrics from every rank (a barrier), the checkpoint from rank 0
        metrics = M.epoch_report(
            asdict(record),
            {
                M.LAST: loop.should_stop,
                M.START_EPOCH: start_epoch,
                M.VAL_STRUCTURES: val_count,
                M.EPOCHS: config.train.epochs,
                M.TRAIN_PER_S: train_rows / train_seconds,
            },
        )
        rank_rng = all_gather_objects(rng_state())
        with tempfile.TemporaryDirectory() as folder:
            keep = rank == 0 and session.wants_checkpoint(metrics)
            if keep:
                torch.save({**loop.state_dict(), "rank_rng": rank_rng}, Path(folder) / TRAIN_STATE)
                with loop.kept_weights():
                    save_model(Path(folder) / MODEL_FILE, model, config.featurizer, metadata=config.model_metadata)
            session.report(metrics, folder if keep else None)


def _maybe_fail(config: WorkerConfig, epoch: int, rank: int) -> None:
    """Test hooks: a pause of ``hooks.epoch_delay_s``; every rank fails once at ``hooks.fail_once_at_epoch`` (a
    marker per rank makes it once)."""
    if config.hooks.epoch_delay_s:
        time.sleep(config.hooks.epoch_delay_s)
    if config.hooks.fail_once_at_epoch != epoch or config.run_dir is None:
        return
    marker = RunFolder(config.run_dir).injected_failure(rank)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError(f"injected worker failure at epoch {epoch}")
