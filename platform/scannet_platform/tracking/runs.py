"""MLflow runs of the platform's drivers: found by tags and resumed or created (:func:`begin_run`), ended with
their true status (:func:`end_run`), per-epoch metrics live (:class:`EpochLogger`) or after the fact
(:func:`log_missing_epochs`).

One MLflow run per training run: found by its tags (``scannet.run_name`` and ``scannet.run_dir``) in the
experiment and resumed, else created, status RUNNING. A run left RUNNING by a driver that is gone (SIGKILL) is
marked KILLED first. Metric names are in report units (``val_mae_homo_meV``).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from scannet.io.process import identity_alive, process_identity
from scannet.train import metrics as M
from scannet_platform.metric_names import EPOCH_STEP_METRIC, Report, epoch_metrics

RUN_NAME_TAG = "scannet.run_name"


RUN_DIR_TAG = "scannet.run_dir"


DRIVER_TAG = "scannet.driver"  # host:pid:start of the driver process that holds the run


LAUNCHES_TAG = "scannet.launches"


TERMINAL = {"FINISHED", "FAILED", "KILLED"}


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


def normalized_uri(tracking_uri: str) -> str:
    """Relative SQLite or file paths made absolute (the Ray Train controller runs in another folder)."""
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///') :]).resolve()}"
    if not urlparse(tracking_uri).scheme and tracking_uri != "databricks":  # a plain folder of a file store
        return str(Path(tracking_uri).resolve())
    return tracking_uri


#: The experiment tag earlier MLflow 3 UIs read to choose between their GenAI and model-training views. MLflow
#: 3.17's UI ignores it: the view comes from the URL's ``workflowType`` (else the browser's last choice, GenAI at
#: first), so an experiment opened from the list lands on the GenAI "Overview"; :func:`runs_url` opens its runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


#: Where ``mlflow ui`` serves a local store by default (a local store has no URL of its own).
LOCAL_UI = "http://127.0.0.1:5000"


def runs_url(tracking_uri: str, run_id: str) -> str:
    """The runs table of the run's experiment in the MLflow UI (the "Model training" view, whatever the browser
    chose before), for a summary line; a local store's with the command that serves it."""
    experiment = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    route = f"#/experiments/{experiment}/runs?workflowType=machine_learning"
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"{tracking_uri.rstrip('/')}/{route}"
    return f"{LOCAL_UI}/{route} (serve it: mlflow ui --backend-store-uri {tracking_uri})"


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
        # earlier MLflow 3 UIs open such an experiment in the model-training view (3.17's: runs_url)
        tags = {EXPERIMENT_KIND_TAG: "custom_model_development"}
        return client.create_experiment(name, artifact_location=location, tags=tags)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


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
            alive = identity_alive(holder)
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
    client.set_tag(run_id, DRIVER_TAG, process_identity())
    client.set_tag(run_id, LAUNCHES_TAG, str(launches))
    return run_id


MODEL_TAG = "scannet.model"  # scannet.model.<targets>.<k>: the k-th model of a screen's group of targets


def tag_models(tracking_uri: str, run_id: str, groups) -> None:
    """Tag a screen's run with every model it uses (``groups``: the screen's model groups): for each, its
    ``--model`` value (a ``models:/name/version`` links the run to that model version) and checkpoint SHA-256,
    ``scannet.model.<targets>.<k> = "<reference> sha256 <sha256>"``, and the group's ``--model`` values."""
    client = MlflowClient(tracking_uri)
    for group in groups:
        targets = "_".join(group.targets)
        client.set_tag(run_id, f"{MODEL_TAG}.{targets}", ", ".join(group.sources)[:5000])
        for k, member in enumerate(group.members):
            client.set_tag(run_id, f"{MODEL_TAG}.{targets}.{k}", f"{member.reference} sha256 {member.sha256}"[:5000])


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
    step = int(record[M.EPOCH]) + 1
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
    logged = {m.step for m in client.get_metric_history(run_id, EPOCH_STEP_METRIC)}
    missing = [r for r in history if int(r[M.EPOCH]) + 1 not in logged]
    for record in missing:
        live = (reported or {}).get(int(record[M.EPOCH]), {})
        timing = {k: live[k] for k in M.TIMING if k in live}
        _log_epoch(client, run_id, {**record, **timing}, report)
    return len(missing)
