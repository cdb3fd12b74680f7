"""The driver of a distributed training job: the library's run steps, with Ray where it helps.

    from scannet_platform.train_config import build_config
    from scannet_platform.train_driver import run_training
    result = run_training(build_config("demo"))

[1] ``scannet.train.run.prepare_run`` (checks, split, cache), featurizing with Ray Data when the graph table
of this structures table and these settings is not cached yet; [2] a ``TorchTrainer`` over the library's
worker loop (``train_worker.train_loop_per_worker``): DDP, a checkpoint every epoch, resumed when a run of
the same name exists, worker groups restarted on failure, one line per epoch on the console;
[3] ``finish_run``: the best weights evaluated on the whole test split; [4] MLflow: parameters, per-epoch
metrics, test MAE with the number of test structures, parity plot, learning curve, split and a registered
model version.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scannet.featurizer import FeaturizerConfig
from scannet.train.run import DatasetInfo, PreparedRun, RunSummary, epoch_line, finish_run, prepare_run, resolve_file
from scannet.typed_config import to_plain
from scannet_platform.environment import run_environment
from scannet_platform.train_config import PLATFORM_RESUMABLE_KEYS, TrainJobConfig
from scannet_platform.train_worker import train_loop_per_worker

RAY_TRAIN_FOLDER = "ray_train"  # Ray Train's storage inside the run folder


def ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init()


def ray_featurize(structures: Path, out_dir: Path, featurizer: FeaturizerConfig) -> int:
    """Featurize with Ray Data into ``out_dir``; returns the number of quarantined structures."""
    from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

    ensure_ray()
    print(f"featurizing {structures} with Ray Data into {out_dir} ...")
    summary = write_graph_table(featurize_dataset(structures, featurizer), out_dir, featurizer)
    print(f"featurized {summary.n_graphs} structures, {summary.n_quarantined} quarantined")
    return summary.n_quarantined


def checkpoint_resolver(tracking_uri: str):
    """Files as the library resolves them, plus MLflow ``models:/`` and ``runs:/`` URIs."""

    def resolve(reference: str) -> Path:
        if reference.startswith(("models:/", "runs:/")):
            from scannet_platform.tracking import download_checkpoint

            return download_checkpoint(reference, tracking_uri)
        return resolve_file(reference)

    return resolve


def epoch_printer(dataset: DatasetInfo, targets: tuple[str, ...]):
    """A Ray Train callback (runs in the controller) printing one line per epoch, once for all ranks."""
    from ray.train import UserCallback

    class EpochLines(UserCallback):
        def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
            print(epoch_line(metrics[0], dataset, targets), flush=True)

    return EpochLines()


def fit(job: TrainJobConfig, prepared: PreparedRun):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray()
    worker = prepared.worker
    if worker.threads is None:
        from dataclasses import replace

        worker = replace(worker, threads=job.cpus_per_worker)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"worker": worker},
        scaling_config=ScalingConfig(
            num_workers=job.num_workers, use_gpu=job.use_gpu, resources_per_worker={"CPU": job.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=RAY_TRAIN_FOLDER,
            storage_path=str(prepared.run_dir),
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.keep_checkpoints),  # the most recent ones
            callbacks=[epoch_printer(prepared.dataset, job.targets)],
        ),
    )
    return trainer.fit()


def run_training(job: TrainJobConfig) -> RunSummary:
    from scannet_platform import tracking

    start = time.perf_counter()
    prepared = prepare_run(
        job,
        featurize=ray_featurize,
        resolve=checkpoint_resolver(job.tracking_uri),
        extra_resumable=PLATFORM_RESUMABLE_KEYS,
    )
    print(
        f"run {job.name}: {prepared.run_dir}\n"
        f"data: {prepared.featurized_sizes} structures (train/val/test), {prepared.quarantined} quarantined; "
        f"graphs in {prepared.graphs}"
    )
    (prepared.run_dir / "launch.json").unlink(missing_ok=True)
    result = fit(job, prepared)
    if result.error is not None:
        raise RuntimeError(f"training run {job.name!r} failed: {result.error}")
    with result.checkpoint.as_directory() as latest:
        evaluation = finish_run(prepared, Path(latest), start)
    summary = evaluation.summary

    model_name = job.model_name(prepared.dataset.name)
    run_id, version = tracking.log_run(
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
        run_name=job.name,
        params={"job": to_plain(job), "environment": run_environment()},
        history=evaluation.history,
        test_metrics={
            **{f"test_mae_{t}": v for t, v in summary.test_mae.items()},
            "test_structures": summary.test_evaluated,
        },
        predictions=evaluation.predictions,
        targets=evaluation.targets,
        target_names=list(job.targets),
        units={t: prepared.dataset.units[t] for t in job.targets},
        files=[prepared.split_file, prepared.split_ids, prepared.run_dir / "run_config.json"],
        checkpoint=summary.checkpoint,
        registered_model=model_name,
    )
    summary.mlflow_run_id, summary.model_uri = run_id, f"models:/{model_name}/{version}"
    summary.seconds = time.perf_counter() - start
    (prepared.run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary
