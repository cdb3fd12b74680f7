"""MLflow tracking of a training run, live, and a registry entry that says what the model is.

- One MLflow run per training run: found by its tags (``scannet.run_name`` and ``scannet.run_dir``) in the
  experiment and resumed, else created (:func:`begin_run`, before training: parameters, status RUNNING).
  A run left RUNNING by a driver that is gone (SIGKILL) is marked KILLED first; :func:`end_run` sets
  FINISHED, FAILED or KILLED.
- Per-epoch metrics while training runs (:class:`EpochLogger`, called by the Ray Train callback in the
  controller actor with the run id the driver created), names in report units (``val_mae_homo_meV``).
- At the end (:func:`log_results`): test metrics, the parity plot and the learning curve (with their texts
  in ``plots/plots.json``), the run's files and a registered model version.
- The model is logged as code (MLflow "models from code", ``mlflow_model.py``): nothing is pickled. Its
  one checkpoint has a recorded name and SHA-256 (model version tags), checked by :func:`download_checkpoint`
  and :func:`load_registered` before anything reads it. A version carries a description and tags (targets,
  units, dataset, split SHA-256, test MAE, elements, featurizer hash, run); the alias ``best`` points at the
  version with the lowest test MAE of the first target. A run re-launched without a new checkpoint adds no
  version.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from scannet.checkpoint import CheckpointError
from scannet.provenance import sha256_file
from scannet_platform.metric_names import Report, epoch_metrics, mae_metric

#: The models-from-code file MLflow copies into every logged model (it only imports scannet).
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
CHECKPOINT_ARTIFACT = "checkpoint"  # the artifact name mlflow_model.py reads

RUN_NAME_TAG = "scannet.run_name"
RUN_DIR_TAG = "scannet.run_dir"
DRIVER_TAG = "scannet.driver"  # host:pid:start of the driver process that holds the run
LAUNCHES_TAG = "scannet.launches"
CHECKPOINT_SHA_TAG = "scannet.checkpoint_sha256"
CHECKPOINT_PATH_TAG = "scannet.checkpoint_path"  # inside the logged model, e.g. artifacts/best_model.pt
MODEL_CODE_SHA_TAG = "scannet.model_code_sha256"
BEST_METRIC_TAG = "scannet.best_metric"  # the tag the alias `best` ranks versions by
BEST_ALIAS = "best"
PLOT_DPI = 150

TERMINAL = {"FINISHED", "FAILED", "KILLED"}


class CheckpointIntegrityError(CheckpointError):
    """A logged checkpoint that is missing or differs from the SHA-256 recorded when it was logged."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"train.lr": ...} (MLflow parameters are flat strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# ------------------------------------------------------------------------------------------- the run


def normalized_uri(tracking_uri: str) -> str:
    """Relative SQLite or file paths made absolute (the Ray Train controller runs in another folder)."""
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///') :]).resolve()}"
    if not urlparse(tracking_uri).scheme and tracking_uri != "databricks":  # a plain folder of a file store
        return str(Path(tracking_uri).resolve())
    return tracking_uri


#: The experiment tag the MLflow 3 UI reads to choose between its GenAI and its model-training views.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id; a new one keeps its artifacts next to an SQLite store (``mlartifacts/``), not in
    whatever folder the process happens to run in."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = str(Path(tracking_uri[len("sqlite:///") :]).resolve().parent / "mlartifacts")
    try:
        # the UI opens a "custom_model_development" experiment in its model-training view, not the GenAI one
        tags = {EXPERIMENT_KIND_TAG: "custom_model_development"}
        return client.create_experiment(name, artifact_location=location, tags=tags)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def _process_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def driver_id() -> str:
    """This process: ``host:pid:start`` (the start time tells a reused pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def driver_alive(driver: str | None) -> bool | None:
    """True / False for a driver on this host, None when it cannot be checked (another host, no tag)."""
    if not driver or driver.count(":") < 2:
        return None
    host, pid_text, start = driver.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == "?" or _process_start(pid) in (start, "?")


def find_run(client: MlflowClient, experiment: str, run_name: str, run_dir: str):
    """The MLflow run of this training run (name and folder), newest first, or None."""
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        if run.data.tags.get(RUN_DIR_TAG) == run_dir:
            return run
    return None


def begin_run(
    *, tracking_uri: str, experiment: str, run_name: str, run_dir: str | Path, params: Mapping[str, Any]
) -> str:
    """Resume the MLflow run of this training run, or create it; log the parameters; status RUNNING.

    A run still RUNNING whose driver is gone (killed with SIGKILL, or on another host) is marked KILLED
    first; one whose driver is alive on this host is refused (two drivers would train one run).
    """
    client = MlflowClient(tracking_uri)
    exp = experiment_id(client, experiment, tracking_uri)
    run_dir = str(Path(run_dir).resolve())
    run = find_run(client, exp, run_name, run_dir)
    flat = {k: str(v)[:500] for k, v in flatten(params).items()}
    if run is None:
        run = client.create_run(exp, run_name=run_name, tags={RUN_NAME_TAG: run_name, RUN_DIR_TAG: run_dir})
        run_id, launches = run.info.run_id, 1
        new_params, changed = flat, {}
    else:
        run_id = run.info.run_id
        if run.info.status == "RUNNING":
            holder = run.data.tags.get(DRIVER_TAG)
            alive = driver_alive(holder)
            if alive:
                raise RuntimeError(
                    f"MLflow run {run_id} of {run_name!r} is being trained now by the driver {holder}; wait for it "
                    "or choose another name"
                )
            client.set_terminated(run_id, "KILLED")
            why = "is gone" if alive is False else "cannot be checked from this host"
            print(f"MLflow run {run_id}: left RUNNING by the driver {holder}, which {why}; marked KILLED")
        launches = int(run.data.tags.get(LAUNCHES_TAG, "1")) + 1
        logged = run.data.params
        new_params = {k: v for k, v in flat.items() if k not in logged}
        changed = {k: v for k, v in flat.items() if k in logged and logged[k] != v}
        client.update_run(run_id, status="RUNNING")
        print(f"MLflow run {run_id}: resumed (launch {launches})")
    items = list(new_params.items())
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[start : start + 100]])
    for key, value in changed.items():  # MLflow parameters are immutable: a re-launch's values as tags
        client.set_tag(run_id, f"scannet.latest.{key}"[:250], value)
    client.set_tag(run_id, DRIVER_TAG, driver_id())
    client.set_tag(run_id, LAUNCHES_TAG, str(launches))
    return run_id


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    """Set the run's final status: FINISHED, FAILED or KILLED."""
    if status not in TERMINAL:
        raise ValueError(f"status {status!r}: one of {sorted(TERMINAL)}")
    MlflowClient(tracking_uri).set_terminated(run_id, status)


def run_status(tracking_uri: str, run_id: str) -> str:
    return MlflowClient(tracking_uri).get_run(run_id).info.status


#: MLflow client settings of the live epoch logger's process (environment variables MLflow reads at each call).
LIVE_HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class EpochLogger:
    """Logs each epoch's metrics to the run while training runs (in the Ray Train controller), in order, and
    never makes the training wait for a tracking server that does not answer.

    :meth:`log` queues the epoch for a sender thread and waits for it while the server answers (the epoch is
    in MLflow when the callback returns). When the server is down or restarting, MLflow's client retries for
    minutes (7 retries, backoff up to 120 s: a refused port blocked ``log_batch`` for over 600 s, measured):
    :meth:`log` stops waiting after ``wait_s``, prints one line, and returns at once for the following epochs,
    which wait in the queue behind the one being retried. The sender keeps retrying (every ``retry_s`` after a
    failed call) until the server answers, then logs the queue in order and says so. For an HTTP tracking
    server the sender's process (the controller actor) gets short MLflow client retries
    (:data:`LIVE_HTTP_RETRIES`, unless set already), so a restarted server gets the queue within seconds, not
    after the client's next backoff of up to 120 s. Nothing is dropped; epochs still queued when the controller
    ends are logged by the driver at the end (:func:`log_missing_epochs`, from the run's history and the
    reported records the callback keeps in ``epochs.jsonl``). Picklable: the client, queue and thread are made
    where it is used.
    """

    def __init__(self, tracking_uri: str, run_id: str, report: Report, wait_s: float = 30.0, retry_s: float = 5.0):
        self.tracking_uri, self.run_id, self.report = tracking_uri, run_id, dict(report)
        self.wait_s, self.retry_s = wait_s, retry_s
        self._setup([])

    def _setup(self, pending: list[dict[str, Any]]) -> None:
        self._client: MlflowClient | None = None
        self._pending = collections.deque(pending)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._drained = threading.Event()
        self._drained.set()
        self._stalled = False  # log() waited wait_s in vain: it does not wait until the queue drains again
        self._trouble = False  # a stall or a failed call was reported: report when the server answers again
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "report": self.report,
            "wait_s": self.wait_s,
            "retry_s": self.retry_s,
            "pending": list(self._pending),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        pending = state.pop("pending")
        self.__dict__.update(state)
        self._setup(pending)

    def log(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._pending.append(dict(record))
            self._drained.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._send, name="mlflow-epochs", daemon=True)
                self._thread.start()
        self._wake.set()
        if self._stalled:
            return
        if not self._drained.wait(self.wait_s):
            self._stalled = self._trouble = True
            print(
                f"MLflow: {self.tracking_uri} has not answered for {self.wait_s:.0f} s; epoch metrics wait in a "
                "buffer and are sent when it answers (training goes on)",
                flush=True,
            )

    def flush(self, timeout: float) -> bool:
        """Wait until every queued epoch is logged; False when ``timeout`` passed first."""
        return self._drained.wait(timeout)

    def _send(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                if not self._pending:
                    self._wake.clear()
                    self._drained.set()
                    self._stalled = False
                    continue
                record = self._pending[0]
            try:
                if self._client is None:
                    if urlparse(self.tracking_uri).scheme in ("http", "https"):
                        for name, value in LIVE_HTTP_RETRIES.items():
                            os.environ.setdefault(name, value)
                    self._client = MlflowClient(self.tracking_uri)
                _log_epoch(self._client, self.run_id, record, self.report)
            except Exception as exc:  # tracking must not stop training: keep the epoch, retry
                if not self._trouble:
                    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    print(f"MLflow: could not log epoch {int(record['epoch']) + 1} ({reason}); retrying", flush=True)
                    self._trouble = True
                time.sleep(self.retry_s)
                continue
            with self._lock:
                self._pending.popleft()
            if self._trouble:
                print(f"MLflow: {self.tracking_uri} answers again; logged epoch {int(record['epoch']) + 1}", flush=True)
                self._trouble = False


def _log_epoch(client: MlflowClient, run_id: str, record: Mapping[str, Any], report: Report) -> None:
    step = int(record["epoch"]) + 1
    stamp = int(1000 * time.time())
    metrics = [Metric(k, v, stamp, step) for k, v in epoch_metrics(record, report).items()]
    client.log_batch(run_id, metrics=metrics)


def log_missing_epochs(
    client: MlflowClient,
    run_id: str,
    history: Sequence[Mapping[str, Any]],
    report: Report,
    reported: Mapping[int, Mapping[str, Any]] | None = None,
) -> int:
    """Log the epochs of ``history`` the run does not hold yet (when live logging could not); returns how many.

    ``reported``: epoch (0-based) -> the record the workers reported for it; its time and rate (which the
    history does not keep) are logged with the epoch, so a backfilled epoch has every metric a live one has.
    """
    logged = {m.step for m in client.get_metric_history(run_id, "train_loss_standardized")}
    missing = [r for r in history if int(r["epoch"]) + 1 not in logged]
    for record in missing:
        live = (reported or {}).get(int(record["epoch"]), {})
        timing = {k: live[k] for k in ("seconds", "train_per_s") if k in live}
        _log_epoch(client, run_id, {**record, **timing}, report)
    return len(missing)


# ------------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve_figure(history: Sequence[Mapping[str, Any]], report: Report, best_epoch: int):
    """Validation MAE per target in report units (top) and the standardized loss and MAE (bottom) per epoch
    (1-based, as printed); the best epoch (0-based ``best_epoch``) marked; legends outside the data."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in history]
    best = best_epoch + 1
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True, dpi=PLOT_DPI)
    units = {unit for _, unit in report.values()}
    for target, (scale, unit) in report.items():
        values = [r["val_mae_per_target"][target] * scale for r in history]
        label = f"validation MAE {target}" + ("" if len(units) == 1 else f" ({unit})")
        (line,) = top.plot(epochs, values, marker="o", markersize=3, label=label)
        if best in epochs:
            top.plot([best], [values[epochs.index(best)]], marker="*", markersize=12, color=line.get_color())
    top.set_ylabel(f"MAE ({units.pop()})" if len(units) == 1 else "MAE (report units)")
    bottom.plot(epochs, [r["train_loss"] for r in history], label="train loss (RMSE + L2)")
    bottom.plot(epochs, [r["val_mae"] for r in history], label="validation MAE (early stopping)")
    bottom.set_ylabel("standardized (z-scores)")
    bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (top, bottom):
        axis.axvline(best, color="grey", linestyle="--", linewidth=0.8, label=f"best epoch {best}")
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
        axis.grid(alpha=0.3)
    top.set_title(f"learning curve: {len(epochs)} epochs, best epoch {best}")
    figure.tight_layout()
    return figure


def r_squared(truth: np.ndarray, pred: np.ndarray) -> float:
    total = float(((truth - truth.mean()) ** 2).sum())
    return float("nan") if total == 0 else 1.0 - float(((truth - pred) ** 2).sum()) / total


def parity_figure(
    predictions: np.ndarray, targets: np.ndarray, names: Sequence[str], report: Report, test_mae: Mapping[str, float]
):
    """One square parity panel per target in report units: identity line, N, R² and the test MAE (the
    logged value, checked against the points) in the title."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.8), squeeze=False, dpi=PLOT_DPI)
    for k, (axis, name) in enumerate(zip(axes[0], names)):
        scale, unit = report[name]
        truth, pred = targets[:, k] * scale, predictions[:, k] * scale
        mae = float(test_mae[name])
        if len(truth) and not np.isclose(np.abs(pred - truth).mean(), mae, rtol=1e-4, atol=1e-9):
            raise ValueError(f"parity {name}: test MAE {mae} differs from the points' {np.abs(pred - truth).mean()}")
        low = float(min(truth.min(), pred.min())) if len(truth) else 0.0
        high = float(max(truth.max(), pred.max())) if len(truth) else 1.0
        pad = 0.04 * (high - low or 1.0)
        low, high = low - pad, high + pad
        axis.scatter(truth, pred, s=5, alpha=0.5, linewidths=0)
        axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
        axis.set_aspect("equal", adjustable="box")
        for ticks in (axis.xaxis, axis.yaxis):
            ticks.set_major_locator(MaxNLocator(nbins=5))
        axis.set_xlabel(f"reference {name} ({unit})")
        axis.set_ylabel(f"predicted {name} ({unit})")
        axis.text(
            0.04, 0.96, f"N = {len(truth)}\nR² = {r_squared(truth, pred):.4f}", transform=axis.transAxes, va="top"
        )
        axis.set_title(f"{name}: test MAE {mae:.4g} {unit}")
    figure.tight_layout()
    return figure


def _save_figure(figure, folder: Path, name: str) -> Path:
    path = folder / name
    figure.savefig(path, dpi=PLOT_DPI)
    _pyplot().close(figure)
    return path


# ----------------------------------------------------------------------------------------------- the model


def model_requirements() -> list[str]:
    """scannet's runtime dependencies, MLflow and pandas, pinned to the installed versions.

    scannet itself is not on a package index: install it from the repository or its wheel (the version
    description and the ``scannet.install`` tag say so).
    """
    names = ["mlflow", "pandas"]
    for requirement in importlib.metadata.requires("scannet") or []:
        if "extra ==" not in requirement:
            names.append(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
    pinned = []
    for name in dict.fromkeys(names):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        pinned.append(f"{name}=={version.split('+', 1)[0]}")  # 2.13.0+cpu -> 2.13.0 (a local build label)
    return pinned


def model_signature(targets: Sequence[str]):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema(
        [
            ColSpec(Array("long"), "numbers"),
            ColSpec(Array(Array("double")), "positions"),
            ColSpec(Array(Array("double")), "cell", required=False),
            ColSpec(Array("boolean"), "pbc", required=False),
            ColSpec("string", "name", required=False),
        ]
    )
    outputs = Schema(
        [
            *(ColSpec("double", t) for t in targets),
            ColSpec(Array("double"), "ga_scores"),
            ColSpec("string", "error"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example():
    """Methane, one row: the input MLflow validates the model on when it is logged."""
    import pandas as pd
    from ase.build import molecule

    atoms = molecule("CH4")
    return pd.DataFrame(
        {"numbers": [atoms.numbers.tolist()], "positions": [atoms.positions.round(6).tolist()], "name": ["methane"]}
    )


@dataclass
class ModelRecord:
    """What the registry says about a model version (all in report units)."""

    run_name: str
    dataset: str
    dataset_sha256: str  # of the structures table (16 hex digits, the cache key)
    targets: tuple[str, ...]
    units: dict[str, str]  # stored
    report: dict[str, tuple[float, str]]
    split_file: Path
    elements: tuple[str, ...]  # symbols
    featurizer_hash: str
    model: str  # "SCANN+ (preset demo)"
    parameters: int
    epochs_run: int
    best_epoch: int  # 0-based
    test_mae: dict[str, float]  # report units
    test_evaluated: int
    test_total: int
    scannet_version: str
    git_revision: str | None

    def mae_text(self) -> str:
        maes = ", ".join(f"{t} {self.test_mae[t]:.4g} {self.report[t][1]}" for t in self.targets)
        return f"{maes} ({self.test_evaluated:,} of {self.test_total:,} test structures)"


INSTALL_NOTE = (
    "scannet is not on a package index: install it from the repository (pip install -e .) or its wheel, at the "
    "version and commit tagged here; the other requirements are pinned in the model's requirements.txt"
)


def version_tags(record: ModelRecord, checkpoint_sha: str, checkpoint_path: str) -> dict[str, str]:
    first = record.targets[0]
    tags = {
        "run_name": record.run_name,
        "dataset": record.dataset,
        "dataset_sha256": record.dataset_sha256,
        "targets": ",".join(record.targets),
        "units": ", ".join(f"{t}={record.units[t]}" for t in record.targets),
        "report_units": ", ".join(f"{t}={record.report[t][1]}" for t in record.targets),
        "split_sha256": sha256_file(record.split_file),
        "elements": " ".join(record.elements),
        "featurizer_hash": record.featurizer_hash,
        "model": record.model,
        "parameters": str(record.parameters),
        "epochs": str(record.epochs_run),
        "best_epoch": str(record.best_epoch + 1),
        "test_structures": f"{record.test_evaluated} of {record.test_total}",
        "test_mae": record.mae_text(),
        "scannet_version": record.scannet_version,
        "git_revision": record.git_revision or "unknown",
        "scannet.install": INSTALL_NOTE,
        CHECKPOINT_SHA_TAG: checkpoint_sha,
        CHECKPOINT_PATH_TAG: checkpoint_path,
        MODEL_CODE_SHA_TAG: sha256_file(MODEL_CODE),
        BEST_METRIC_TAG: mae_metric("test", first, record.report[first][1]),
    }
    for t in record.targets:
        tags[mae_metric("test", t, record.report[t][1])] = repr(record.test_mae[t])
    return tags


def version_description(record: ModelRecord, checkpoint_sha: str, checkpoint_path: str) -> str:
    return "\n".join(
        [
            f"SCANNet {record.model} model predicting {', '.join(record.targets)} "
            f"({', '.join(f'{t} in {record.units[t]}' for t in record.targets)}) of the {record.dataset} data "
            f"(elements {' '.join(record.elements)}), training run {record.run_name!r}.",
            f"Test MAE: {record.mae_text()}; best epoch {record.best_epoch + 1} of {record.epochs_run}; "
            f"{record.parameters:,} parameters.",
            f"Split SHA-256 {sha256_file(record.split_file)}; featurizer {record.featurizer_hash}.",
            f"Checkpoint {checkpoint_path}, SHA-256 {checkpoint_sha} (checked before loading).",
            "Load: scannet_platform.tracking.download_checkpoint(uri) then scannet.load(path), or "
            "scannet_platform.tracking.load_registered(uri) for the pyfunc (input: numbers, positions[, cell, pbc]).",
            INSTALL_NOTE + ".",
        ]
    )


def _registered_version_for(client: MlflowClient, model_name: str, run_id: str):
    """The latest version of ``model_name`` made by ``run_id``, or None."""
    versions = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def update_best_alias(client: MlflowClient, model_name: str) -> str | None:
    """Point ``best`` at the version with the lowest test MAE of its first target; returns that version."""
    versions = client.search_model_versions(f"name='{model_name}'")
    ranked = []
    for version in versions:
        try:
            ranked.append((float(version.tags[version.tags[BEST_METRIC_TAG]]), int(version.version), version))
        except (KeyError, ValueError):
            continue  # a version without a recorded test MAE
    if not ranked:
        return None
    latest_metric = max(ranked, key=lambda r: r[1])[2].tags[BEST_METRIC_TAG]
    comparable = [r for r in ranked if r[2].tags[BEST_METRIC_TAG] == latest_metric]  # same target and unit
    best = min(comparable, key=lambda r: (r[0], r[1]))[2]
    client.set_registered_model_alias(model_name, BEST_ALIAS, best.version)
    return str(best.version)


def log_model_version(
    client: MlflowClient, run_id: str, checkpoint: Path, model_name: str, record: ModelRecord
) -> tuple[str, bool]:
    """Log the model (as code) and register a version, unless the run's latest version holds this checkpoint
    already; returns (version, whether it is new)."""
    checkpoint_sha = sha256_file(checkpoint)
    previous = _registered_version_for(client, model_name, run_id) if _model_exists(client, model_name) else None
    if previous is not None and previous.tags.get(CHECKPOINT_SHA_TAG) == checkpoint_sha:
        return str(previous.version), False
    checkpoint_path = f"artifacts/{checkpoint.name}"  # where MLflow puts the artifact inside the model
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
            model_config={"checkpoint_sha256": checkpoint_sha, "checkpoint_path": checkpoint_path},
            pip_requirements=model_requirements(),
            signature=model_signature(record.targets),
            input_example=input_example(),
        )
    if not _model_exists(client, model_name):
        client.create_registered_model(
            model_name,
            description=f"SCANNet models of {record.dataset}: {', '.join(record.targets)}. Alias '{BEST_ALIAS}': the "
            f"version with the lowest test MAE of {record.targets[0]}.",
        )
    tags = version_tags(record, checkpoint_sha, checkpoint_path)
    version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    client.update_model_version(
        model_name, version.version, version_description(record, checkpoint_sha, checkpoint_path)
    )
    client.set_tag(run_id, CHECKPOINT_SHA_TAG, checkpoint_sha)
    client.set_tag(run_id, CHECKPOINT_PATH_TAG, checkpoint_path)
    return str(version.version), True


def _model_exists(client: MlflowClient, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def log_results(
    *,
    tracking_uri: str,
    run_id: str,
    history: Sequence[Mapping[str, Any]],
    predictions: np.ndarray,
    targets: np.ndarray,
    record: ModelRecord,
    files: Sequence[str | Path],
    checkpoint: str | Path,
    registered_model: str,
    reported: Mapping[int, Mapping[str, Any]] | None = None,
) -> str:
    """After training: missing epochs, test metrics, plots, files and the model version; returns the version."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    log_missing_epochs(client, run_id, history, record.report, reported)
    test = {mae_metric("test", t, record.report[t][1]): record.test_mae[t] for t in record.targets}
    step = record.epochs_run
    for key, value in {**test, "test_structures": record.test_evaluated}.items():
        client.log_metric(run_id, key, float(value), step=step)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        curve = learning_curve_figure(history, record.report, record.best_epoch)
        parity = parity_figure(predictions, targets, record.targets, record.report, record.test_mae)
        texts = {
            "dpi": PLOT_DPI,
            "learning_curve": {"title": curve.axes[0].get_title(), "best_epoch": record.best_epoch + 1},
            "parity": {
                "titles": [axis.get_title() for axis in parity.axes],
                "n": int(len(targets)),
                "r2": {t: r_squared(targets[:, k], predictions[:, k]) for k, t in enumerate(record.targets)},
            },
        }
        _save_figure(curve, folder, "learning_curve.png")
        _save_figure(parity, folder, "parity.png")
        (folder / "plots.json").write_text(json.dumps(texts, indent=1))
        for name in ("learning_curve.png", "parity.png", "plots.json"):
            client.log_artifact(run_id, str(folder / name), "plots")
        (folder / "history.json").write_text(json.dumps(list(history), indent=1))
        for path in [*files, folder / "history.json"]:
            client.log_artifact(run_id, str(path), "run_files")
    version, new = log_model_version(client, run_id, Path(checkpoint), registered_model, record)
    best = update_best_alias(client, registered_model)
    if not new:
        print(f"model: {registered_model} version {version} holds this checkpoint already; no new version")
    if best is not None:
        print(f"model: {registered_model}@{BEST_ALIAS} -> version {best}")
    return version


# ------------------------------------------------------------------------------------------ reading back


def recorded_checkpoint(client: MlflowClient, model_uri: str) -> tuple[str, str, str | None]:
    """(SHA-256, path inside the model, model code SHA-256) recorded for ``model_uri`` in the tracking store
    (model version tags for ``models:/name/version`` and ``models:/name@alias``, run tags for ``runs:/``)."""
    if model_uri.startswith("models:/"):
        ref = model_uri[len("models:/") :].strip("/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
            tags = client.get_model_version_by_alias(name, alias).tags
        elif ref.count("/") == 1 and ref.split("/")[1].isdigit():
            name, version = ref.split("/")
            tags = client.get_model_version(name, version).tags
        else:
            raise CheckpointIntegrityError(f"{model_uri}: give models:/<name>/<version> or models:/<name>@<alias>")
    elif model_uri.startswith("runs:/"):
        tags = client.get_run(model_uri[len("runs:/") :].split("/", 1)[0]).data.tags
    else:
        raise CheckpointIntegrityError(f"{model_uri}: only models:/ and runs:/ URIs carry a recorded checkpoint")
    sha, path = tags.get(CHECKPOINT_SHA_TAG), tags.get(CHECKPOINT_PATH_TAG)
    if not sha or not path:
        raise CheckpointIntegrityError(
            f"{model_uri}: no recorded checkpoint name and SHA-256 (logged by an older scannet?); refusing to guess"
        )
    return sha, path, tags.get(MODEL_CODE_SHA_TAG)


def _inside(folder: Path, relative: str) -> Path:
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts:
        raise CheckpointIntegrityError(f"recorded checkpoint path {relative!r} leaves the model folder")
    return folder.joinpath(*parts.parts)


def _download_verified(model_uri: str, tracking_uri: str | None) -> tuple[Path, Path, str | None]:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    expected, relative, code_sha = recorded_checkpoint(client, model_uri)
    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    path = _inside(folder, relative)
    if not path.is_file():
        raise CheckpointIntegrityError(f"{model_uri}: the recorded checkpoint {relative} is missing from the model")
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointIntegrityError(
            f"{model_uri}: the checkpoint {relative} has SHA-256 {actual}, the registry recorded {expected}: it "
            "changed after it was logged; refusing to load it"
        )
    return folder, path, code_sha


def download_checkpoint(model_uri: str, tracking_uri: str | None = None) -> Path:
    """The checkpoint of a registered (``models:/name/version``, ``models:/name@best``) or logged
    (``runs:/``) model: the one file recorded by name, its SHA-256 checked against the tracking store."""
    return _download_verified(model_uri, tracking_uri)[1]


def resolve_model_uri(model_uri: str, tracking_uri: str) -> Path:
    """The ``scannet.resolvers: mlflow`` entry point: :func:`download_checkpoint`, with a registry miss (no such
    model, version or alias) reported as a one-line :class:`CheckpointError`."""
    try:
        return download_checkpoint(model_uri, tracking_uri)
    except mlflow.exceptions.MlflowException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model_uri}: not found in the MLflow store {tracking_uri} ({reason})") from exc


def load_registered(model_uri: str, tracking_uri: str | None = None):
    """The model as an MLflow pyfunc, after checking the checkpoint's and the model code's SHA-256 against
    the tracking store (MLflow runs the model's code file when it loads it)."""
    folder, _, code_sha = _download_verified(model_uri, tracking_uri)
    code = folder / MODEL_CODE.name
    if code_sha is None or not code.is_file() or sha256_file(code) != code_sha:
        raise CheckpointIntegrityError(f"{model_uri}: the model's code {MODEL_CODE.name} differs from the one logged")
    if (folder / "python_model.pkl").exists():
        raise CheckpointIntegrityError(f"{model_uri}: holds a pickled python_model.pkl; refusing to load it")
    return mlflow.pyfunc.load_model(str(folder))
