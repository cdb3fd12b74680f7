"""The driver of a distributed training job: the library's run steps, with Ray where it helps.

    from scannet_platform.train.config import build_config
    from scannet_platform.train.driver import run_training
    result = run_training(build_config("demo"))

[1] ``scannet.train.run.prepare_run`` (checks, split, cache), featurizing with Ray Data when the graph table
of this structures table and these settings is not cached yet; [2] a ``TorchTrainer`` over the library's
worker loop (``scannet_platform.train.session.train_loop_per_worker``): DDP, a checkpoint every epoch, resumed when a run of
the same name exists, worker groups restarted on failure, one line per epoch on the console;
[3] ``finish_run``: the best weights evaluated on the whole test split; [4] MLflow: parameters, per-epoch
metrics, test MAE with the number of test structures, parity plot, learning curve, split and a registered
model version.

MLflow sees the run live: :func:`run_training` creates (or resumes) the MLflow run before training, the
Ray Train callback logs every epoch from the controller with that run id, and the run ends FINISHED,
FAILED (training raised) or KILLED (Ctrl-C, SIGTERM; after a SIGKILL, the next launch of the name marks it).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from scannet.train import metrics as M
from scannet.train.run import DatasetInfo, PreparedRun, RunSummary, epoch_line, finish_run, prepare_run
from scannet.train.run_folder import EPOCH_RECORDS, RAY_TRAIN_FOLDER
from scannet.typed_config import to_plain
from scannet_platform.data_pipeline import ray_featurizer
from scannet_platform.environment import run_environment
from scannet_platform.runtime import checkpoint_resolver, ensure_ray, quiet_libraries, tracked_run
from scannet_platform.tracking.results import register_model
from scannet_platform.train.config import PLATFORM_RESUMABLE_KEYS, TrainJobConfig
from scannet_platform.train.session import train_loop_per_worker


def reported_epochs(path: Path) -> dict[int, dict[str, Any]]:
    """epoch (0-based) -> the last record reported for it (a re-run epoch's latest), from ``epochs.jsonl``."""
    records: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                records[int(record[M.EPOCH])] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
    return records


def epoch_printer(
    dataset: DatasetInfo, targets: tuple[str, ...], log_file: Path, tracking_uri: str | None = None, run_id=None
):
    """A Ray Train callback (it runs in the controller actor, not in the driver): one line per epoch, once for
    all ranks, appended to ``log_file`` (the driver follows it and prints it), the reported record appended to
    ``epochs.jsonl`` next to it, and the epoch's metrics logged to the MLflow run ``run_id`` as it ends."""
    from ray.train import UserCallback

    from scannet_platform.tracking.runs import EpochLogger

    report = {t: dataset.report(t) for t in targets}
    logger = EpochLogger(tracking_uri, run_id, report) if run_id and tracking_uri else None

    class EpochLines(UserCallback):
        def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
            with open(log_file, "a") as handle:
                handle.write(epoch_line(metrics[0], dataset, targets) + "\n")
            plain = {k: v for k, v in metrics[0].items() if isinstance(v, (bool, int, float, str))}
            with open(Path(log_file).with_name(EPOCH_RECORDS), "a") as handle:
                handle.write(json.dumps(plain) + "\n")
            if logger is not None:
                logger.log(metrics[0])

    return EpochLines()


@contextmanager
def follow(path: Path, interval: float = 0.5) -> Iterator[None]:
    """Print the lines appended to ``path`` while the block runs (and those left when it ends)."""
    path.touch()
    stop = threading.Event()
    with open(path) as handle:
        handle.seek(0, os.SEEK_END)

        def pump() -> None:
            while True:
                for line in handle.readlines():
                    print(line.rstrip("\n"), flush=True)
                if stop.wait(interval):
                    for line in handle.readlines():
                        print(line.rstrip("\n"), flush=True)
                    return

        thread = threading.Thread(target=pump, name="epoch-lines", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def fit(job: TrainJobConfig, prepared: PreparedRun, run_id: str | None = None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(job.verbose)
    worker = replace(prepared.worker, threads=prepared.worker.threads or job.cpus_per_worker)  # torch threads = CPUs
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
            callbacks=[
                epoch_printer(prepared.dataset, job.targets, prepared.folder.epoch_log, job.tracking_uri, run_id)
            ],
        ),
    )
    sigint = signal.getsignal(signal.SIGINT)
    try:
        return trainer.fit()
    finally:  # Ray Train installs a SIGINT handler of its own and leaves it: Ctrl-C must stop the driver again
        signal.signal(signal.SIGINT, sigint)


def run_training(job: TrainJobConfig) -> RunSummary:
    """Prepare, open the MLflow run (RUNNING), train with live metrics, evaluate, log, close the run with its
    true status (FINISHED / FAILED / KILLED)."""
    from scannet_platform.tracking import runs

    start = time.perf_counter()
    quiet_libraries(job.verbose)
    prepared = prepare_run(
        job,
        featurize=ray_featurizer(job.verbose),
        resolve=checkpoint_resolver(job.tracking_uri),
        extra_resumable=PLATFORM_RESUMABLE_KEYS,
    )
    print(
        f"run {job.name}: {prepared.run_dir}\n"
        f"data: {prepared.featurized_sizes} structures (train/val/test), {prepared.quarantined} quarantined; "
        f"graphs in {prepared.graphs}"
    )
    uri = job.tracking_uri
    environment = run_environment()
    run_id = runs.begin_run(
        tracking_uri=uri,
        experiment=job.experiment,
        run_name=job.name,
        run_dir=prepared.run_dir,
        params={
            "job": to_plain(job),
            "environment": environment,
            "data": {"structures": str(prepared.dataset.structures), **prepared.featurized_sizes},
        },
    )
    print(f"MLflow run {run_id}: {uri}")
    with tracked_run(uri, run_id, say_status=True):
        return _train_and_log(job, prepared, run_id, uri, environment, start)


def _train_and_log(
    job: TrainJobConfig, prepared: PreparedRun, run_id: str, uri: str, environment: dict, start: float
) -> RunSummary:
    from scannet_platform.tracking.runs import runs_url

    prepared.folder.launch.unlink(missing_ok=True)
    with follow(prepared.folder.epoch_log):
        result = fit(job, prepared, run_id)
    if result.error is not None:
        raise RuntimeError(f"training run {job.name!r} failed: {result.error}")
    with result.checkpoint.as_directory() as latest:
        evaluation = finish_run(prepared, Path(latest), start)
    summary = evaluation.summary

    model_name = job.model_name(prepared.dataset.name)
    version = register_model(
        job,
        prepared,
        evaluation,
        uri=uri,
        run_id=run_id,
        model_name=model_name,
        files=[prepared.split_file, prepared.split_ids, prepared.folder.run_config],
        environment=environment,
        reported=reported_epochs(prepared.folder.epoch_records),
    )
    summary.mlflow_run_id, summary.model_uri = run_id, f"models:/{model_name}/{version}"
    summary.mlflow_runs_url = runs_url(uri, run_id)
    summary.seconds = time.perf_counter() - start
    prepared.folder.summary.write_text(json.dumps(asdict(summary), indent=1))
    return summary
