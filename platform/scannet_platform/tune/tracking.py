"""MLflow for a study: one parent run, one child run per trial (Ray's ``MLflowLoggerCallback`` cannot nest runs),
and the study's results on the parent.

- :class:`TrialRuns` is a Tune callback in the driver: a trial's child run (tag ``mlflow.parentRunId``), named
  short and unique in the runs table (:func:`trial_run_name`: ``t03-lr3e-4-bs64``), is made when the trial
  starts, or found again by its trial id when a resumed study restarts it; its parameters, its per-epoch
  metrics (report units, step = epoch), its best value of the objective (``best_<objective>``, the column the
  parent run has too) and its end: FINISHED (tag ``scannet.trial_outcome``: ``completed`` or ``stopped
  early``), FAILED (with the error) or KILLED (the study was interrupted). A trial
  that a resumed study runs again from an earlier epoch than it had logged gets a new child run (its attempt 2).
- :func:`log_study` puts on the parent: the best trial and its parameters (tags), ``results.csv`` (one row per trial), the
  objective against trial number and against time, and Optuna's parameter importances (a plot, and the values
  as metrics ``importance.<parameter>``).
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray import tune

from scannet.train import metrics as M
from scannet_platform.metric_names import EPOCH_STEP_METRIC
from scannet_platform.tracking.plots import PLOT_DPI, pyplot, save_figure
from scannet_platform.tune.trial import PASSED_ON

PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "scannet.study"
TRIAL_TAG = "scannet.trial_id"
OUTCOME_TAG = "scannet.trial_outcome"
ATTEMPT_TAG = "scannet.trial_attempt"  # 2, 3, ...: the trial restarted without a checkpoint after an interruption
BEST_TAG = "scannet.best_trial"  # the best trial's id; its parameters as scannet.best_trial.<parameter>
#: Result keys that are Tune's bookkeeping or ours, not metrics of the model.
NOT_METRICS = {*PASSED_ON, "done", "training_iteration", "timestamp", "pid"}


class TrialRuns(tune.Callback):
    """Child runs of the study's parent run, one per trial. A tracking failure is printed once and never stops
    the study (the trial's numbers stay in the study folder)."""

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_run_id: str, study: str, objective: str, mode: str
    ) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.study = parent_run_id, study
        self.objective, self.mode = objective, mode
        self._runs: dict[str, str] = {}
        self._reported: set[str] = set()
        self._client: MlflowClient | None = None
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment state
        return {**self.__dict__, "_client": None, "_reported": set()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"objective": None, "mode": "min", **state})  # a study saved before they existed
        self._reported = set()  # trials that reported in THIS launch

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def run_id(self, trial) -> str:
        """The child run of ``trial``: remembered, found by its tags (a resumed study), or created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial.trial_id}'",
            order_by=["attributes.start_time DESC"],
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self._new_run(trial, attempt=1)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _new_run(self, trial, attempt: int) -> str:
        tags = {PARENT_TAG: self.parent_run_id, STUDY_TAG: self.study, TRIAL_TAG: trial.trial_id}
        tags[ATTEMPT_TAG] = str(attempt)
        name = trial_run_name(trial) + (f"-attempt{attempt}" if attempt > 1 else "")
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in sorted(trial.config.items())])
        return run_id

    def _restart_if_redone(self, trial, result: Mapping[str, Any]) -> None:
        """A trial of an interrupted study that starts again before epochs it had logged (no checkpoint of them)
        gets a new child run (attempt n + 1); the old one ends KILLED, so no run holds an epoch twice."""
        run_id = self.run_id(trial)
        logged = [m.step for m in self.client.get_metric_history(run_id, EPOCH_STEP_METRIC)]
        if not logged or int(result[M.EPOCH]) + 1 > max(logged):
            return
        attempt = int(self.client.get_run(run_id).data.tags.get(ATTEMPT_TAG, "1"))
        self.client.set_tag(run_id, OUTCOME_TAG, f"interrupted after epoch {max(logged)}, restarted")
        self.client.set_terminated(run_id, "KILLED")
        self._runs[trial.trial_id] = self._new_run(trial, attempt + 1)

    def _safely(self, action, *args) -> None:
        try:
            action(*args)
        except Exception as exc:  # tracking must not stop the study
            if not self._warned:
                print(
                    f"MLflow: could not record a trial ({type(exc).__name__}: {exc}); results stay in the study folder"
                )
                self._warned = True

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._safely(self.run_id, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._safely(self._log_result, trial, result)

    def _log_result(self, trial, result: Mapping[str, Any]) -> None:
        if trial.trial_id not in self._reported:  # its first report in this launch
            self._reported.add(trial.trial_id)
            self._restart_if_redone(trial, result)
        step, stamp = int(result[M.EPOCH]) + 1, int(1000 * time.time())
        metrics = [
            Metric(k, float(v), stamp, step)
            for k, v in result.items()
            if k not in NOT_METRICS and not k.startswith(("time_", "iterations_")) and _is_number(v)
        ]
        self.client.log_batch(self.run_id(trial), metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        outcome = "completed" if (trial.last_result or {}).get(M.LAST) else "stopped early"
        self._safely(self._end, trial, "FINISHED", outcome)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._safely(self._end, trial, "FAILED", "errored")

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:  # an interrupted study: its unfinished trials are resumed on the next launch
            if trial.status not in ("TERMINATED", "ERROR") and trial.trial_id in self._runs:
                self._safely(self._end, trial, "KILLED", "interrupted")

    def _end(self, trial, status: str, outcome: str) -> None:
        run_id = self.run_id(trial)
        values = [m.value for m in self.client.get_metric_history(run_id, self.objective)] if self.objective else []
        if values:
            best = min(values) if self.mode == "min" else max(values)
            self.client.log_metric(run_id, f"best_{self.objective}", best)
        self.client.set_tag(run_id, OUTCOME_TAG, outcome)
        self.client.set_terminated(run_id, status)


def _short_key(name: str) -> str:
    """``train.lr`` -> ``lr``, ``train.batch_size`` -> ``bs``, ``model.g_update`` -> ``gu``."""
    words = name.rsplit(".", 1)[-1].split("_")
    return words[0] if len(words) == 1 else "".join(w[:1] for w in words)


def _short_value(value: Any) -> str:
    """``0.0003`` -> ``3e-4``, ``0.158`` -> ``0.16``, ``True`` -> ``T``, ``64`` -> ``64``."""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            mantissa, exponent = f"{value:.1e}".split("e")
            return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
        return f"{value:.2g}"
    return str(value)


def trial_run_name(trial) -> str:
    """``t03-lr3e-4-bs64``: the trial's number in the study (Tune's experiment tag ``3_...``; its id when there is
    none) and its sampled parameters, short: distinct trials differ in the first part already."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    label = f"t{int(head):02d}" if head.isdigit() else trial.trial_id
    parts = [f"{_short_key(k)}{_short_value(v)}" for k, v in trial.config.items()]
    return "-".join([label, *parts])[:80]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass
class TrialRow:
    """One trial of the study, as the results table shows it."""

    trial_id: str
    outcome: str  # completed, stopped early, errored, interrupted, not started
    epochs: int
    best: float  # the objective's best epoch value (nan: no epoch finished)
    best_epoch: int  # 1-based
    last: float
    seconds: float
    params: dict[str, Any]
    curve: list[tuple[float, float]]  # (seconds since the study started, objective) per epoch
    checkpoint: str | None = None


def write_results_csv(rows: Sequence[TrialRow], parameters: Sequence[str], objective: str, path: Path) -> Path:
    """``results.csv``: one row per trial, best first."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["trial_id", "outcome", "epochs", f"best_{objective}", "best_epoch", f"last_{objective}", "seconds"]
            + list(parameters)
        )
        for row in rows:
            values = [row.trial_id, row.outcome, row.epochs, row.best, row.best_epoch, row.last, f"{row.seconds:.1f}"]
            writer.writerow(values + [row.params.get(p, "") for p in parameters])
    return path


def objective_figures(rows: Sequence[TrialRow], objective: str, mode: str):
    """(objective against trial number, objective against time): every trial's best value or every epoch, with
    the best so far as a step line."""
    plt = pyplot()
    better = min if mode == "min" else max
    by_trial, axis = plt.subplots(figsize=(7, 4.5), dpi=PLOT_DPI)
    finished = [(k + 1, r) for k, r in enumerate(rows) if np.isfinite(r.best)]
    colours = {"completed": "tab:blue", "stopped early": "tab:orange", "errored": "tab:red", "interrupted": "tab:grey"}
    for outcome, colour in colours.items():
        points = [(n, r.best) for n, r in finished if r.outcome == outcome]
        if points:
            axis.scatter(*zip(*points), color=colour, label=outcome, zorder=3)
    if finished:
        running = np.array([r.best for _, r in finished], dtype=float)
        running = np.minimum.accumulate(running) if better is min else np.maximum.accumulate(running)
        axis.step([n for n, _ in finished], running, where="post", color="black", linewidth=1, label="best so far")
    axis.set_xlabel("trial (in order of start)")
    axis.set_ylabel(f"best {objective}")
    axis.set_title(f"{len(finished)} trials")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    by_trial.tight_layout()

    by_time, axis = plt.subplots(figsize=(7, 4.5), dpi=PLOT_DPI)
    events = sorted(point for r in rows for point in r.curve)
    for row in rows:
        if row.curve:
            axis.plot(*zip(*row.curve), marker="o", markersize=2, linewidth=0.6, alpha=0.6)
    if events:
        times, values = zip(*events)
        best = np.minimum.accumulate(values) if better is min else np.maximum.accumulate(values)
        axis.step(times, best, where="post", color="black", linewidth=1.2, label="best so far")
        axis.legend(fontsize=8)
    axis.set_xlabel("seconds since the study started")
    axis.set_ylabel(objective)
    axis.set_title("every epoch of every trial")
    axis.grid(alpha=0.3)
    by_time.tight_layout()
    return by_trial, by_time


def parameter_importances(rows: Sequence[TrialRow], space, mode: str) -> dict[str, float]:
    """Optuna's fANOVA importances of the parameters every finished trial has (conditional ones that some
    trials lack are left out); empty when fewer than two trials finished an epoch."""
    import optuna

    from scannet_platform.tune.config import Parameter

    finished = [r for r in rows if np.isfinite(r.best)]
    common = [n for n in space if all(n in r.params for r in finished)]
    if len(finished) < 2 or not common:
        return {}

    def distribution(p: Parameter):
        if p.type == "choice":
            return optuna.distributions.CategoricalDistribution(list(p.values))
        if p.type == "int":
            return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
        return optuna.distributions.FloatDistribution(p.low, p.high, log=p.type == "loguniform")

    distributions = {n: distribution(space[n]) for n in common}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for row in finished:
        params = {n: row.params[n] for n in common}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=row.best))
    return dict(
        optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    )


def importance_figure(importances: Mapping[str, float], n_trials: int):
    plt = pyplot()
    names = list(importances)[::-1]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5), dpi=PLOT_DPI)
    axis.barh(names, [importances[n] for n in names])
    axis.set_xlabel("fANOVA importance (Optuna)")
    axis.set_title(f"parameter importances over {n_trials} trials")
    figure.tight_layout()
    return figure


def log_study(
    tracking_uri: str,
    parent_run_id: str,
    rows: Sequence[TrialRow],
    space,
    objective: str,
    mode: str,
    files: Sequence[Path],
) -> dict[str, float]:
    """The study's results on the parent run; returns the parameter importances (empty if too few trials)."""
    client = MlflowClient(tracking_uri)
    best = rows[0] if rows and np.isfinite(rows[0].best) else None
    if best is not None:
        # tags, not parameters: a resumed study may find a better trial, and MLflow parameters never change
        client.log_batch(
            parent_run_id,
            metrics=[Metric(f"best_{objective}", float(best.best), int(1000 * time.time()), 0)],
            tags=[RunTag(f"{BEST_TAG}.{k}", str(v)[:500]) for k, v in best.params.items()],
        )
        client.set_tag(parent_run_id, BEST_TAG, best.trial_id)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    client.log_batch(
        parent_run_id,
        metrics=[Metric(f"trials_{k.replace(' ', '_')}", v, int(1000 * time.time()), 0) for k, v in counts.items()],
    )
    importances = parameter_importances(rows, space, mode)
    if importances:  # values a user can sort and compare, not only the plot
        stamp = int(1000 * time.time())
        client.log_batch(
            parent_run_id, metrics=[Metric(f"importance.{k}", float(v), stamp, 0) for k, v in importances.items()]
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        by_trial, by_time = objective_figures(rows, objective, mode)
        save_figure(by_trial, folder, "objective_by_trial.png")
        save_figure(by_time, folder, "objective_by_time.png")
        plots = ["objective_by_trial.png", "objective_by_time.png"]
        if importances:
            save_figure(
                importance_figure(importances, sum(np.isfinite(r.best) for r in rows)), folder, "importance.png"
            )
            plots.append("importance.png")
        (folder / "importances.json").write_text(json.dumps(importances, indent=1))
        for name in [*plots, "importances.json"]:
            client.log_artifact(parent_run_id, str(folder / name), "plots")
    for path in files:
        client.log_artifact(parent_run_id, str(path), "study_files")
    return importances


def log_ensemble(tracking_uri: str, parent_run_id: str, folder: Path, evaluation) -> str:
    """The exported ensemble on the parent run: its folder as the artifact ``ensemble`` (the SHA-256 of its
    ``ensemble.json`` as a tag), its test MAE and calibration as metrics; returns the URI ``scannet screen
    --model`` takes (``runs:/<parent run id>/ensemble``)."""
    from scannet.io.provenance import sha256_file
    from scannet_platform.tracking.ensembles import ENSEMBLE_FILE
    from scannet_platform.tracking.registry import ENSEMBLE_ARTIFACT, ENSEMBLE_SHA_TAG

    client = MlflowClient(tracking_uri)
    stamp = int(1000 * time.time())
    client.log_batch(parent_run_id, metrics=[Metric(k, v, stamp, 0) for k, v in evaluation.metrics().items()])
    client.log_artifacts(parent_run_id, str(folder), ENSEMBLE_ARTIFACT)
    client.set_tag(parent_run_id, ENSEMBLE_SHA_TAG, sha256_file(folder / ENSEMBLE_FILE))
    return f"runs:/{parent_run_id}/{ENSEMBLE_ARTIFACT}"

