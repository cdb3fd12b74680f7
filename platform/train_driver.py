"""The driver of a distributed training job: data -> Ray Train (DDP) -> test -> MLflow registry.

    from scannet_platform.train_config import build_config
    from scannet_platform.train_driver import run_training
    result = run_training(build_config("demo"))

Steps: [1] the structures table (QM9 from qm9pack, or the user's) and its graph table, featurized with
Ray Data and cached by featurizer hash; [2] a seeded split, saved (indices and ids) with the run;
[3] ``TorchTrainer`` over ``train_worker.train_loop_per_worker``, checkpoints kept by validation MAE,
resumed when a run of the same name exists, worker groups restarted on failure; [4] the best
checkpoint evaluated on the test split (each structure once); [5] MLflow: parameters, per-epoch
metrics, test MAE, parity plot, learning curve, split, checkpoint and a registered model version.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from scannet.checkpoint import load_model
from scannet.data import schema as S
from scannet.data.graphs_table import graph_cache_dir
from scannet.data.qm9 import QM9_TARGETS, Split, make_split_fractions, qm9_split, write_qm9_table
from scannet.data.structures_table import STRUCTURES_FILE, read_units
from scannet.model import preset
from scannet.train.data import make_loader
from scannet.train.qm9_run import slice_indices
from scannet.train.trainer import predict_batches, target_statistics
from scannet_platform.environment import run_environment
from scannet_platform.train_config import TrainJobConfig
from scannet_platform.train_worker import MODEL_FILE, load_split_graphs, train_loop_per_worker


@dataclass
class PreparedData:
    structures: Path
    graphs: Path
    units: dict[str, str]
    split_file: Path
    split_ids_file: Path
    sizes: dict[str, int]
    quarantined: int


@dataclass
class TrainJobResult:
    name: str
    run_dir: str
    checkpoint: str
    epochs_run: int
    resumed_from_epoch: int  # the epoch the last worker group started at (0: from scratch)
    best_epoch: int
    test_mae: dict[str, float]  # report units (meV for QM9 orbital energies)
    report_units: dict[str, str]
    mlflow_run_id: str
    model_uri: str
    seconds: float

    def lines(self) -> list[str]:
        maes = ", ".join(f"{t} {v:.4g} {self.report_units[t]}" for t, v in self.test_mae.items())
        return [
            f"run        : {self.name} ({self.epochs_run} epochs, best {self.best_epoch}, "
            f"this launch started at epoch {self.resumed_from_epoch})",
            f"test MAE   : {maes}",
            f"checkpoint : {self.checkpoint}",
            f"MLflow run : {self.mlflow_run_id}",
            f"model      : {self.model_uri}",
            f"time       : {self.seconds:.1f} s",
        ]


# ------------------------------------------------------------------------------------------------ [1] data
def structures_table(job: TrainJobConfig) -> Path:
    """The structures table of the job (QM9 is built once into the data cache)."""
    if job.data != "qm9":
        path = Path(job.data).resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"--data {job.data}: no such structures table (make one with `scannet data import`)"
            )
        return path
    path = Path(job.data_cache).resolve() / "qm9" / STRUCTURES_FILE
    if not path.exists():
        print(f"building the QM9 structures table in {path.parent} ...")
        write_qm9_table(path.parent)
    return path


def graph_table(job: TrainJobConfig, structures: Path) -> tuple[Path, int]:
    """The cached graph table for these featurizer settings, featurized with Ray Data when missing."""
    from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

    folder = graph_cache_dir(Path(job.data_cache).resolve() / structures.parent.name, job.featurizer)
    if folder.exists():
        return folder, _quarantined(folder)
    print(f"featurizing {structures} with Ray Data into {folder} ...")
    ds = featurize_dataset(structures, job.featurizer)
    summary = write_graph_table(ds, folder, job.featurizer)
    print(f"featurized {summary.n_graphs} structures, {summary.n_quarantined} quarantined")
    return folder, summary.n_quarantined


def _quarantined(folder: Path) -> int:
    quarantine = folder / "quarantine.parquet"
    return pq.ParquetFile(quarantine).metadata.num_rows if quarantine.exists() else 0


def make_job_split(job: TrainJobConfig, structures: Path, run_dir: Path) -> tuple[Path, Path, dict[str, int]]:
    """A seeded split of the (sliced) structures, saved as indices (split.json) and as id -> part."""
    ids = pq.read_table(structures, columns=[S.ID]).column(S.ID).to_pylist()
    chosen = slice_indices(len(ids), job.n_structures, job.split_seed)
    if job.data == "qm9":
        split = qm9_split(len(chosen), seed=job.split_seed)
    else:
        split = make_split_fractions(len(chosen), job.val_fraction, job.test_fraction, seed=job.split_seed)
    split_file, ids_file = run_dir / "split.json", run_dir / "split_ids.json"
    if split_file.exists():  # a resumed run keeps its split; a changed one is an error, not a silent change
        saved = Split.load(split_file, n=len(chosen))
        if saved != split:
            raise ValueError(f"{split_file}: the run {job.name!r} was made with another split; use a new --name")
    split.save(split_file)
    parts = {ids[chosen[i]]: part for part in ("train", "val", "test") for i in getattr(split, part)}
    ids_file.write_text(json.dumps(parts))
    return split_file, ids_file, split.sizes


def prepare_data(job: TrainJobConfig, run_dir: Path) -> PreparedData:
    structures = structures_table(job)
    units = read_units(structures)
    missing = [t for t in job.targets if t not in units]
    if missing:
        raise ValueError(f"targets {missing} are not columns of {structures}; it has {sorted(units)}")
    graphs, quarantined = graph_table(job, structures)
    split_file, ids_file, sizes = make_job_split(job, structures, run_dir)
    return PreparedData(structures, graphs, units, split_file, ids_file, sizes, quarantined)


# --------------------------------------------------------------------------------------------- [3] train
def resolve_checkpoint(reference: str, tracking_uri: str) -> Path:
    """A checkpoint file from a path or an MLflow ``models:/`` / ``runs:/`` URI."""
    if reference.startswith(("models:/", "runs:/")):
        from scannet_platform.tracking import download_checkpoint

        return download_checkpoint(reference, tracking_uri)
    return Path(reference)


def worker_config(job: TrainJobConfig, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    init_weights = None
    if job.init_from:  # fine-tuning: the source model's architecture and weights (loaded once)
        source = load_model(resolve_checkpoint(job.init_from, job.tracking_uri))[0]
        config = source.config
        init_weights = str(run_dir / "init_weights.pt")
        torch.save(source.state_dict(), init_weights)
    else:
        config = preset(job.model_preset, targets=tuple(job.targets), **job.model_overrides)
    if tuple(config.targets) != tuple(job.targets):
        raise ValueError(f"--init-from model predicts {config.targets}, the job asks for {job.targets}")
    train_targets = load_split_graphs(str(data.graphs), str(data.split_ids_file), list(job.targets)).train.targets
    mean, std = target_statistics(train_targets)
    return {
        "graph_table": str(data.graphs),
        "split_ids": str(data.split_ids_file),
        "targets": list(job.targets),
        "model": config.to_dict(),
        "train": job.train.to_dict(),
        "featurizer": job.featurizer.to_dict(),
        "target_mean": mean.tolist(),
        "target_std": std.tolist(),
        "init_weights": init_weights,
        "precision": job.precision,
        "compile": job.compile,
        "threads_per_worker": job.cpus_per_worker,
        "model_metadata": {"units": {t: data.units[t] for t in job.targets}, "run": job.name},
        "launch_record": str(run_dir / "launch.json"),
        "inject_failure_at_epoch": job.inject_failure_at_epoch,
        "inject_failure_marker": str(run_dir / "injected_failure") if job.inject_failure_at_epoch is not None else None,
    }


def fit(job: TrainJobConfig, config: dict[str, Any], storage: Path):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=job.num_workers, use_gpu=job.use_gpu, resources_per_worker={"CPU": job.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=job.name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=job.keep_checkpoints, checkpoint_score_attribute="val_mae", checkpoint_score_order="min"
            ),
        ),
    )
    return trainer.fit()


# ---------------------------------------------------------------------------------------------- [4] test
def evaluate_test(checkpoint: Path, data: PreparedData, targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets [N, T] of the test split with the best checkpoint (each structure once)."""
    model, _, _ = load_model(checkpoint)
    test = load_split_graphs(str(data.graphs), str(data.split_ids_file), targets).test
    return predict_batches(model, make_loader(test, 256, shuffle=False))


def report_scale(data: str, target: str, units: dict[str, str]) -> tuple[float, str]:
    if data == "qm9" and target in QM9_TARGETS:
        spec = QM9_TARGETS[target]
        return spec.report_scale, spec.report_unit
    return 1.0, units.get(target, "")


# ------------------------------------------------------------------------------------------------ the job
def run_training(job: TrainJobConfig) -> TrainJobResult:
    import ray

    from scannet_platform import tracking

    start = time.perf_counter()
    storage = Path(job.storage_path).resolve()
    run_dir = storage / job.name / "scannet"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job_config.json").write_text(json.dumps(job.to_dict(), indent=1, default=str))
    if not ray.is_initialized():
        ray.init()

    (run_dir / "launch.json").unlink(missing_ok=True)
    data = prepare_data(job, run_dir)  # [1], [2]
    print(f"data: {data.sizes} structures (train/val/test), {data.quarantined} quarantined; graphs in {data.graphs}")
    config = worker_config(job, data, run_dir)
    result = fit(job, config, storage)  # [3]
    if result.error is not None:
        raise RuntimeError(f"training run {job.name!r} failed: {result.error}")

    best = result.get_best_checkpoint(metric="val_mae", mode="min")  # [4]
    checkpoint = run_dir / "best_model.pt"
    with best.as_directory() as folder:
        shutil.copyfile(Path(folder) / MODEL_FILE, checkpoint)
    with result.checkpoint.as_directory() as folder:
        history = torch.load(Path(folder) / "train_state.pt", weights_only=True)["history"]
    predictions, targets = evaluate_test(checkpoint, data, list(job.targets))
    mae = np.abs(predictions - targets).mean(axis=0)
    scales = {t: report_scale(job.data, t, data.units) for t in job.targets}
    test_mae = {t: float(mae[k] * scales[t][0]) for k, t in enumerate(job.targets)}
    best_epoch = min(history, key=lambda r: r["val_mae"])["epoch"]

    run_id, version = tracking.log_run(  # [5]
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
        run_name=job.name,
        params={"job": job.to_dict(), "environment": run_environment()},
        history=history,
        test_metrics={f"test_mae_{t}": v for t, v in test_mae.items()},
        predictions=predictions,
        targets=targets,
        target_names=list(job.targets),
        units={t: data.units[t] for t in job.targets},
        files=[data.split_file, data.split_ids_file, run_dir / "job_config.json"],
        checkpoint=checkpoint,
        registered_model=job.model_name,
    )
    summary = TrainJobResult(
        name=job.name,
        run_dir=str(run_dir),
        checkpoint=str(checkpoint),
        epochs_run=len(history),
        resumed_from_epoch=json.loads((run_dir / "launch.json").read_text())["start_epoch"],
        best_epoch=int(best_epoch),
        test_mae=test_mae,
        report_units={t: scales[t][1] for t in job.targets},
        mlflow_run_id=run_id,
        model_uri=f"models:/{job.model_name}/{version}",
        seconds=time.perf_counter() - start,
    )
    (run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary
