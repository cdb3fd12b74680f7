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

MLflow sees the run live: :func:`run_training` creates (or resumes) the MLflow run before training, the
Ray Train callback logs every epoch from the controller with that run id, and the run ends FINISHED,
FAILED (training raised) or KILLED (Ctrl-C, SIGTERM; after a SIGKILL, the next launch of the name marks it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ase.data import chemical_symbols

from scannet.checkpoint import resolve_checkpoint
from scannet.featurizer import FeaturizerConfig
from scannet.train.run import DatasetInfo, Evaluation, PreparedRun, RunSummary, epoch_line, finish_run, prepare_run
from scannet.train.run_config import RunConfig
from scannet.typed_config import to_plain
from scannet_platform.environment import run_environment
from scannet_platform.train_config import PLATFORM_RESUMABLE_KEYS, TrainJobConfig
from scannet_platform.train_worker import train_loop_per_worker

RAY_TRAIN_FOLDER = "ray_train"  # Ray Train's storage inside the run folder


LOOPBACK = "127.0.0.1"
#: Ray's switch for a single-machine cluster (meant for Windows and macOS): the node IP becomes 127.0.0.1,
#: so the GCS, raylet, workers, agents and the three Prometheus metrics endpoints listen on loopback only.
RAY_LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_token_path() -> Path:
    """The token file Ray reads: ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def secure_ray_token() -> str | None:
    """Create (or fix) the token file of a local Ray with mode 0600; returns the line to print, None when token
    authentication is switched off (``RAY_AUTH_MODE``) or the token comes from ``$RAY_AUTH_TOKEN``.

    Ray 2.60 writes the token of a local ``ray.init()`` with the umask's mode (0644: readable by every user).
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if (mode and mode != "token") or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = ray_token_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
        os.chmod(path, 0o600)
        return f"Ray auth token: created {path} with mode 0600"
    before = stat.S_IMODE(path.stat().st_mode)
    if before & 0o077:
        os.chmod(path, 0o600)
        return f"Ray auth token: {path} had mode {before:04o}, readable by others; set to 0600"
    return f"Ray auth token: {path} (mode {before:04o})"


@contextmanager
def loopback_node() -> Iterator[None]:
    """While a local Ray starts: its node IP is 127.0.0.1 (Ray turns ``_node_ip_address="127.0.0.1"`` into the
    machine's IP, so the switch Ray reads is set instead; restored once the processes have started)."""
    import ray._private.ray_constants as ray_constants

    saved_env, saved_flag = os.environ.get(RAY_LOCAL_ONLY_VARIABLE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_LOCAL_ONLY_VARIABLE] = "0"  # for the processes ray.init starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: the driver's copy
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(RAY_LOCAL_ONLY_VARIABLE, None)
        else:
            os.environ[RAY_LOCAL_ONLY_VARIABLE] = saved_env


def ensure_ray(verbose: bool = False) -> None:
    """Connect to the cluster of ``$RAY_ADDRESS`` (``ray job submit`` sets it), else start a local Ray bound to
    loopback, with its token file at mode 0600. Unless ``verbose``, the workers' logs stay in Ray's log files
    (the driver prints one line per epoch itself) and Ray's own messages below WARNING are not shown."""
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
        return
    line = secure_ray_token()
    if line:
        print(line)
    with loopback_node():
        ray.init(dashboard_host=LOOPBACK, **quiet)
    fixed = secure_ray_token()  # in case Ray wrote the token itself
    if fixed and "set to 0600" in fixed:
        print(fixed)
    print(f"local Ray: node {ray.util.get_node_ip_address()}, dashboard and job API on {LOOPBACK} only")


def ray_featurizer(verbose: bool = False):
    """The featurize step of :func:`scannet.train.run.prepare_run`, with Ray Data; returns the quarantined count."""

    def featurize(structures: Path, out_dir: Path, featurizer: FeaturizerConfig) -> int:
        from scannet.data.structures_table import num_structures
        from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

        ensure_ray(verbose)
        if not verbose:  # Ray Data configures its loggers when imported: quiet them afterwards
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        print(f"featurizing {structures} with Ray Data into {out_dir} ...", flush=True)
        started = time.perf_counter()
        dataset = featurize_dataset(structures, featurizer)
        summary = write_graph_table(dataset, out_dir, featurizer, progress=True, total=num_structures(structures))
        seconds = time.perf_counter() - started
        print(f"featurized {summary.n_graphs} structures in {seconds:.1f} s, {summary.n_quarantined} quarantined")
        return summary.n_quarantined

    return featurize


def checkpoint_resolver(tracking_uri: str):
    """Checkpoint files, and MLflow model URIs of this job's tracking store."""
    return lambda reference: resolve_checkpoint(reference, tracking_uri)


EPOCH_LOG = "epochs.log"
EPOCH_RECORDS = "epochs.jsonl"  # the reported metrics of each epoch, for MLflow when live logging could not


def reported_epochs(path: Path) -> dict[int, dict[str, Any]]:
    """epoch (0-based) -> the last record reported for it (a re-run epoch's latest), from ``epochs.jsonl``."""
    records: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                records[int(record["epoch"])] = record
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

    from scannet_platform.tracking import EpochLogger

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


def quiet_libraries(verbose: bool) -> None:
    """Unless ``verbose``: MLflow's and Alembic's INFO lines, artifact progress bars and the deprecation
    warnings of Ray and MLflow internals are not shown (the run's own lines and the summary are)."""
    if verbose:
        return
    for name in ("mlflow", "alembic", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow loads the logged model in a subprocess to infer its requirements; it warns there about type hints
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:mlflow.pyfunc.utils.data_validation")
    warnings.filterwarnings("ignore", message="Add type hints to the `predict` method", category=UserWarning)
    for module in ("ray", "mlflow", "sqlalchemy", "torch"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


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
                epoch_printer(prepared.dataset, job.targets, prepared.run_dir / EPOCH_LOG, tracking_uri(job), run_id)
            ],
        ),
    )
    sigint = signal.getsignal(signal.SIGINT)
    try:
        return trainer.fit()
    finally:  # Ray Train installs a SIGINT handler of its own and leaves it: Ctrl-C must stop the driver again
        signal.signal(signal.SIGINT, sigint)


def tracking_uri(job: TrainJobConfig) -> str:
    from scannet_platform.tracking import normalized_uri

    return normalized_uri(job.tracking_uri)


class DriverTerminated(SystemExit):
    """SIGTERM reached the driver (``ray job stop``, ``kill``): unwinds like Ctrl-C, exit status 143."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises :class:`DriverTerminated` in the main thread, so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise DriverTerminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunEnd:
    """The status a :func:`tracked_run` block ends its MLflow run with when it returns (an interrupted study sets
    KILLED)."""

    status = "FINISHED"


@contextmanager
def tracked_run(tracking_uri: str | None, run_id: str | None, say_status: bool = False) -> Iterator[RunEnd]:
    """The driver's block under :func:`sigterm_unwinds`, its MLflow run ``run_id`` ended with the block's true
    outcome: ``end.status`` (FINISHED) when it returns, KILLED on Ctrl-C or SIGTERM, FAILED when it raises.
    ``run_id`` None: nothing is tracked. ``say_status``: print a status other than FINISHED."""
    end = RunEnd()
    status = "FAILED"
    try:
        with sigterm_unwinds():
            yield end
        status = end.status
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if run_id:
            from scannet_platform import tracking

            tracking.end_run(tracking_uri, run_id, status)
            if say_status and status != "FINISHED":
                print(f"MLflow run {run_id}: {status}")


def model_record(job: RunConfig, prepared: PreparedRun, summary: RunSummary, environment: dict):
    from scannet.train.run import file_fingerprint
    from scannet_platform.tracking import ModelRecord

    model = prepared.worker.model
    kind = "SCANN+" if model.g_update else "SCANN"
    origin = f"fine-tuned from {job.init_from}" if job.init_from else f"preset {job.model_preset or 'default'}"
    return ModelRecord(
        run_name=job.name,
        dataset=prepared.dataset.name,
        dataset_sha256=file_fingerprint(prepared.dataset.structures),
        targets=tuple(job.targets),
        units={t: prepared.dataset.units[t] for t in job.targets},
        report={t: prepared.dataset.report(t) for t in job.targets},
        split_file=prepared.split_file,
        elements=tuple(chemical_symbols[z] for z in model.elements),
        featurizer_hash=prepared.worker.featurizer.content_hash(),
        model=f"{kind} ({origin})",
        parameters=summary.parameters,
        epochs_run=summary.epochs_run,
        best_epoch=summary.best_epoch,
        test_mae=dict(summary.test_mae),
        test_evaluated=summary.test_evaluated,
        test_total=summary.split_sizes["test"],
        scannet_version=environment["packages"].get("scannet", "unknown"),
        git_revision=environment.get("git_revision"),
    )


def register_model(
    config: RunConfig,
    prepared: PreparedRun,
    evaluation: Evaluation,
    *,
    uri: str,
    run_id: str,
    model_name: str,
    files: list[Path],
    environment: dict,
    reported: dict | None = None,
) -> str:
    """Log an evaluated run's results (missing epochs, test metrics, plots, ``files``) to ``run_id`` and register
    its best weights as a version of ``model_name``; returns the version."""
    from scannet_platform import tracking

    return tracking.log_results(
        tracking_uri=uri,
        run_id=run_id,
        history=evaluation.history,
        predictions=evaluation.predictions,
        targets=evaluation.targets,
        record=model_record(config, prepared, evaluation.summary, environment),
        files=files,
        checkpoint=evaluation.summary.checkpoint,
        registered_model=model_name,
        reported=reported,
    )


def run_training(job: TrainJobConfig) -> RunSummary:
    """Prepare, open the MLflow run (RUNNING), train with live metrics, evaluate, log, close the run with its
    true status (FINISHED / FAILED / KILLED)."""
    from scannet_platform import tracking

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
    uri = tracking_uri(job)
    environment = run_environment()
    run_id = tracking.begin_run(
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

    (prepared.run_dir / "launch.json").unlink(missing_ok=True)
    with follow(prepared.run_dir / EPOCH_LOG):
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
        files=[prepared.split_file, prepared.split_ids, prepared.run_dir / "run_config.json"],
        environment=environment,
        reported=reported_epochs(prepared.run_dir / EPOCH_RECORDS),
    )
    summary.mlflow_run_id, summary.model_uri = run_id, f"models:/{model_name}/{version}"
    summary.seconds = time.perf_counter() - start
    (prepared.run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary
