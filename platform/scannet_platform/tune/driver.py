"""The driver of a hyperparameter study: the training run's steps, with Ray Tune choosing the trials.

    from scannet_platform.tune.config import load_study
    from scannet_platform.tune.driver import run_study
    summary = run_study(load_study("tune_spaces/small_cpu.yaml"))

[1] ``prepare_run`` on the study's base run (checks, the split shared by every trial, target statistics, the
    graph table) and one more graph table per featurizer value the space can choose; [2] how many trials fit
    at a time, from the cluster's nodes and each trial's resources (refused, with the numbers, when a trial
    fits on no node); [3] Tune: plain function trainables running the library's worker loop
    (:mod:`scannet_platform.tune.trial`), Optuna TPE or random search over the space, ASHA on the validation
    metric, sparse checkpoints; one console line per trial event and MLflow child runs under the study's
    parent run; [4] the results: ``results.csv``, plots and importances on the parent run, the best trial's
    weights evaluated on the test split and registered (tags point at the study), the top-k trials exported
    as an ensemble (``ensemble/ensemble.json``) for screening.

Re-running a study of the same name resumes it: finished trials are kept, unfinished ones resume from their
last checkpoint (or restart), and the searcher continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from ray import tune

from scannet.io.paths import OutputFolder
from scannet.train import metrics as M
from scannet.train.run import PreparedRun, config_changes, data_facts, finish_run, graph_table_for, prepare_run
from scannet.train.run_folder import checked_run_dir
from scannet.typed_config import ConfigError, to_plain
from scannet_platform.data_pipeline import ray_featurizer
from scannet_platform.environment import run_environment
from scannet_platform.metric_names import objective_metric, objective_unit
from scannet_platform.runtime import checkpoint_resolver, ensure_ray, quiet_libraries, tracked_run
from scannet_platform.tracking.ensembles import ENSEMBLE_FILE, STD_SCALE_KEY
from scannet_platform.tracking.results import register_model
from scannet_platform.tune.config import StudyConfig
from scannet_platform.tune.ensemble import RELIABILITY_PLOT, EnsembleEvaluation, evaluate_ensemble, reliability_figure
from scannet_platform.tune.resources import cluster_nodes, plan_concurrency
from scannet_platform.tune.trial import EPOCHS_DONE, TrialPlan, run_trial

STUDY_FILE = "study.json"


OUTCOMES_FILE = "outcomes.json"


TUNE_FOLDER = "tune"  # Ray Tune's experiment inside the study folder
#: What a study writes in its folder besides the base run's files (no symbolic link allowed, checked_run_dir).
STUDY_ENTRIES = (STUDY_FILE, OUTCOMES_FILE, TUNE_FOLDER, "trials", "results.csv", "ensemble")


#: Keys a resumed study may change; anything else would make it another study.
RESUMABLE_STUDY_KEYS = frozenset({"verbose", "top_k", "evaluate_best", "registered_model"})


def check_study_resume(study: StudyConfig, study_dir: Path) -> None:
    """Refuse to resume a study whose recorded settings differ in anything but :data:`RESUMABLE_STUDY_KEYS`."""
    changes = config_changes(study_dir / STUDY_FILE, study, RESUMABLE_STUDY_KEYS)
    if changes:
        raise ConfigError(
            f"study {study.name!r} exists in {study_dir} with other settings ({changes}); resume it unchanged or "
            "choose a new name"
        )


def prepare_study(study: StudyConfig) -> tuple[PreparedRun, TrialPlan]:
    """Step [1]: the base run prepared (shared split and statistics), a graph table per featurizer choice."""
    base = study.base_run()
    study_dir = checked_run_dir(base.runs_dir, study.name, STUDY_ENTRIES)  # before anything is read or written
    check_study_resume(study, study_dir)
    featurize = ray_featurizer(study.verbose)
    prepared = prepare_run(base, featurize=featurize, resolve=checkpoint_resolver(study.tracking_uri))
    worker = prepared.worker
    study.model_grid(worker.model, worker.featurizer)  # the space against the model made for this data
    tables = {worker.featurizer.content_hash(): worker.graph_table}
    facts = None
    for featurizer in study.featurizer_choices(worker.featurizer):
        if featurizer.content_hash() not in tables:
            facts = facts or data_facts(prepared.dataset.structures)
            folder, _, _ = graph_table_for(prepared.dataset, facts, featurizer, base.cache_dir, featurize)
            tables[featurizer.content_hash()] = str(folder)
    OutputFolder(study_dir).path(STUDY_FILE).write_text(json.dumps(to_plain(study), indent=1))
    report = {t: prepared.dataset.report(t) for t in base.targets}
    plan = TrialPlan(study, worker, tables, report, str(study_dir / "trials"))
    return prepared, plan


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class TrialLines(tune.Callback):
    """One console line per trial event; each trial's outcome recorded in ``outcomes.json`` (it survives resumes)."""

    def __init__(self, study_dir: str, objective: str, unit: str) -> None:
        self.study_dir, self.objective, self.unit = study_dir, objective, unit

    @property
    def outcomes_file(self) -> Path:
        return Path(self.study_dir) / OUTCOMES_FILE

    def _record(self, trial_id: str, outcome: str) -> None:
        from scannet.io.atomic import AtomicWrite

        outcomes = read_outcomes(Path(self.study_dir))
        outcomes[trial_id] = outcome
        with AtomicWrite(self.outcomes_file, file=True) as write:
            write.path.write_text(json.dumps(outcomes, indent=1))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        print(f"trial {trial.trial_id} started: {_short(trial.config)}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.objective)
        print(
            f"trial {trial.trial_id} epoch {result[M.EPOCH] + 1:>3}/{result[M.EPOCHS]}  {self.objective} "
            f"{value:.4g}{' ' + self.unit if self.unit else ''}  ({result.get('time_this_iter_s', 0):.1f} s)",
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        outcome = "completed" if last.get(M.LAST) else "stopped early"
        self._record(trial.trial_id, outcome)
        print(f"trial {trial.trial_id} {outcome} after epoch {last.get(EPOCHS_DONE, 0)}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial.trial_id, "errored")
        error = str(getattr(trial, "error_message", None) or "see the trial's error.txt").strip().splitlines()
        print(f"trial {trial.trial_id} errored: {error[-1] if error else ''}", flush=True)


def read_outcomes(study_dir: Path) -> dict[str, str]:
    path = study_dir / OUTCOMES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def searcher(study: StudyConfig, objective: str):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    config = study.searcher
    if config.type == "tpe":
        sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=config.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(space=study.sampler(), metric=objective, mode=study.mode, sampler=sampler)


def scheduler(study: StudyConfig, epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    if study.scheduler.type == "fifo":
        return None
    return ASHAScheduler(
        time_attr=EPOCHS_DONE,
        max_t=epochs,
        grace_period=study.scheduler.grace_period,
        reduction_factor=study.scheduler.reduction_factor,
    )


def make_tuner(study: StudyConfig, plan: TrialPlan, concurrency: int, callbacks: list) -> tune.Tuner:
    """A new Tuner, or the study's Tuner restored (finished trials kept, unfinished ones resumed)."""
    objective = objective_metric(study.metric, plan.report)
    resources = {"cpu": study.resources_per_trial.cpu, "gpu": study.resources_per_trial.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), resources)
    study_dir = Path(plan.trials_dir).parent
    path = study_dir / TUNE_FOLDER
    if tune.Tuner.can_restore(str(path)):
        print(f"study {study.name}: resuming from {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=objective,
            mode=study.mode,
            search_alg=searcher(study, objective),
            scheduler=scheduler(study, plan.worker.train.epochs),
            num_samples=study.num_samples,
            max_concurrent_trials=concurrency,
            time_budget_s=study.time_budget_s,
            # a trial's process (torch, the library, the plan) serves the next one: much faster for short
            # trials (figures: benchmarks/README.md, bench_tune.py)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_FOLDER,
            storage_path=str(study_dir),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            verbose=1 if study.verbose else 0,
        ),
    )


@dataclass
class TrialResult:
    """One trial, read back from Tune's results."""

    trial_id: str
    outcome: str
    params: dict[str, Any]
    curve: list[tuple[float, float]]  # (time stamp, objective) per epoch
    seconds: float
    checkpoint: str | None


def read_trials(results, objective: str, outcomes: dict[str, str]) -> list[TrialResult]:
    trials = []
    for result in results:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_")[2]
        if frame is None or objective not in getattr(frame, "columns", ()):
            curve, seconds = [], 0.0
        else:
            curve = list(zip(frame["timestamp"].astype(float), frame[objective].astype(float)))
            seconds = float(frame["time_total_s"].max())
        outcome = outcomes.get(trial_id) or ("errored" if result.error else "interrupted" if curve else "not started")
        checkpoint = result.checkpoint.path if result.checkpoint is not None else None
        trials.append(TrialResult(trial_id, outcome, dict(result.config or {}), curve, seconds, checkpoint))
    return trials


def to_rows(trials: list[TrialResult], mode: str):
    """Results-table rows, best first (trials without a finished epoch last); times from the first epoch."""
    from scannet_platform.tune.tracking import TrialRow

    starts = [t.curve[0][0] - (t.seconds / max(len(t.curve), 1)) for t in trials if t.curve]
    origin = min(starts, default=0.0)
    rows = []
    for t in trials:
        values = np.array([v for _, v in t.curve], dtype=float)
        if len(values):
            k = int(np.argmin(values) if mode == "min" else np.argmax(values))
            best, best_epoch, last = float(values[k]), k + 1, float(values[-1])
        else:
            best, best_epoch, last = math.nan, 0, math.nan
        curve = [(stamp - origin, value) for stamp, value in t.curve]
        rows.append(
            TrialRow(
                t.trial_id, t.outcome, len(values), best, best_epoch, last, t.seconds, t.params, curve, t.checkpoint
            )
        )
    sign = 1.0 if mode == "min" else -1.0
    return sorted(rows, key=lambda r: (not np.isfinite(r.best), sign * r.best if np.isfinite(r.best) else 0.0))


@dataclass
class StudySummary:
    name: str
    study_dir: str
    objective: str
    unit: str
    counts: dict[str, int]
    seconds: float
    concurrency: str
    best_trial: str | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    test_mae: dict[str, float] = field(default_factory=dict)
    test_units: dict[str, str] = field(default_factory=dict)
    test_text: str = ""
    checkpoint: str | None = None
    model_uri: str | None = None
    ensemble: str | None = None
    ensemble_uri: str | None = None  # runs:/<parent>/ensemble, for scannet screen --model
    ensemble_lines: list[str] = field(default_factory=list)  # its test MAE and calibration
    results: str | None = None
    mlflow_run_id: str | None = None
    mlflow_runs_url: str | None = None  # the experiment's runs table in the MLflow UI
    importances: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    budget_reached: bool = False  # time_budget_s ended the study before every trial ended
    ended_this_launch: int = 0  # trials that completed, stopped early or errored during this launch

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        rate = self.ended_this_launch / self.seconds * 3600 if self.seconds else 0.0
        lines = [
            f"study      : {self.name} in {self.study_dir}",
            f"trials     : {total} ({counts}); {self.concurrency}",
            f"time       : {self.seconds:.1f} s this launch, {self.ended_this_launch} trials ended ({rate:.0f} per hour)",
        ]
        if self.best_trial is not None:
            unit = f" {self.unit}" if self.unit else ""
            lines.append(f"best trial : {self.best_trial}: {self.objective} {self.best_value:.4g}{unit}")
            lines.append(f"parameters : {_short(self.best_params)}")
        if self.test_mae:
            lines.append(f"test MAE   : {self.test_text}")
        for label, value in (
            ("checkpoint", self.checkpoint),
            ("model", self.model_uri),
            ("ensemble", self.ensemble),
            ("screen with", self.ensemble_uri and f"scannet screen --model {self.ensemble_uri} ..."),
            ("results", self.results),
            ("MLflow run", self.mlflow_run_id),
            ("MLflow UI", self.mlflow_runs_url),
        ):
            if value:
                lines.append(f"{label:<11}: {value}")
        lines += self.ensemble_lines
        if self.importances:
            top = sorted(self.importances.items(), key=lambda kv: -kv[1])[:3]
            lines.append("importance : " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        if self.interrupted:
            lines.append("interrupted: re-run the same command to resume the unfinished trials")
        if self.budget_reached:
            lines.append("time budget: reached before every trial ended; re-running the name continues the study")
        return lines


def run_study(study: StudyConfig) -> StudySummary:
    """Prepare, run (or resume) the trials, evaluate and register the best, export the top-k; MLflow throughout."""
    from scannet_platform.tracking import runs

    start = time.perf_counter()
    quiet_libraries(study.verbose)
    if not study.verbose:  # Tune's status tables and snapshot warnings: the trial lines say what happens
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    prepared, plan = prepare_study(study)
    study_dir = prepared.run_dir
    objective = objective_metric(study.metric, plan.report)
    unit = objective_unit(study.metric, plan.report)
    print(
        f"study {study.name}: {study_dir}\n"
        f"data: {prepared.featurized_sizes} structures (train/val/test), {len(plan.graph_tables)} graph table(s)"
    )
    ensure_ray(study.verbose)
    concurrency, reason = plan_concurrency(study, cluster_nodes())
    print(f"trials: {study.num_samples}, {reason}")

    uri = study.tracking_uri
    environment = run_environment()
    parent = runs.begin_run(
        tracking_uri=uri,
        experiment=study.experiment,
        run_name=study.name,
        run_dir=study_dir,
        params={"study": to_plain(study), "environment": environment},
    )
    experiment_id = MlflowClient(uri).get_run(parent).info.experiment_id
    print(f"MLflow parent run {parent}: {uri}")

    from scannet_platform.tune.tracking import TrialRuns

    callbacks = [
        TrialLines(str(study_dir), objective, unit),
        TrialRuns(uri, experiment_id, parent, study.name, objective, study.mode),
    ]
    with tracked_run(uri, parent) as end:
        summary = _run_and_report(study, prepared, plan, concurrency, reason, callbacks, parent, uri, start)
        end.status = "KILLED" if summary.interrupted else "FINISHED"
        return summary


def _run_and_report(
    study: StudyConfig,
    prepared: PreparedRun,
    plan: TrialPlan,
    concurrency: int,
    reason: str,
    callbacks,
    parent,
    uri,
    start,
) -> StudySummary:
    from scannet_platform.tracking.runs import runs_url
    from scannet_platform.tune.tracking import log_study, write_results_csv

    study_dir = prepared.run_dir
    objective = objective_metric(study.metric, plan.report)
    ended_before = len(read_outcomes(study_dir))
    tuner = make_tuner(study, plan, concurrency, callbacks)
    sigint = signal.getsignal(signal.SIGINT)
    fit_started = time.perf_counter()
    try:
        results = tuner.fit()
    finally:  # Tune installs a SIGINT handler of its own: Ctrl-C must stop the driver again
        signal.signal(signal.SIGINT, sigint)
    budget = study.time_budget_s is not None and time.perf_counter() - fit_started >= 0.98 * study.time_budget_s

    trials = read_trials(results, objective, read_outcomes(study_dir))
    rows = to_rows(trials, study.mode)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    unfinished = any(r.outcome in ("interrupted", "not started") for r in rows) or len(rows) < study.num_samples
    interrupted = unfinished and not budget  # the time budget ends a study: its best so far is evaluated
    summary = StudySummary(
        study.name, str(study_dir), objective, objective_unit(study.metric, plan.report), counts, 0.0, reason, interrupted=interrupted
    )
    summary.budget_reached = unfinished and budget
    summary.ended_this_launch = len(read_outcomes(study_dir)) - ended_before
    parameters = list(study.parameters)
    results_csv = write_results_csv(rows, parameters, objective, study_dir / "results.csv")
    summary.results = str(results_csv)
    summary.mlflow_run_id, summary.mlflow_runs_url = parent, runs_url(uri, parent)
    if rows and np.isfinite(rows[0].best):
        summary.best_trial, summary.best_value, summary.best_params = rows[0].trial_id, rows[0].best, rows[0].params
    summary.importances = log_study(
        uri, parent, rows, study.parameters, objective, study.mode, [results_csv, study_dir / STUDY_FILE]
    )
    if not interrupted:
        _evaluate_and_export(study, prepared, plan, rows, summary, parent, uri)
    summary.seconds = time.perf_counter() - start
    prepared.folder.summary.write_text(json.dumps(asdict(summary), indent=1, default=str))
    return summary


def _trial_prepared(prepared: PreparedRun, plan: TrialPlan, row) -> PreparedRun:
    """The trial as a training run to finish; its folder gets the run's config and split ids, so it is a
    training run folder (what its checkpoint's applicability domain is built from)."""
    from scannet.train.run_folder import RunFolder

    worker = plan.worker_for(row.params, row.trial_id)
    config = replace(prepared.config, name=f"{prepared.config.name}-{row.trial_id}")
    folder = RunFolder(Path(worker.run_dir))
    folder.run_config.write_text(json.dumps(to_plain(config), indent=1))
    shutil.copyfile(prepared.split_ids, folder.split_ids)
    return replace(
        prepared,
        config=config,
        run_dir=Path(worker.run_dir),
        worker=worker,
        graphs=Path(worker.graph_table),
        split_ids=folder.split_ids,
    )


def _evaluate_and_export(
    study: StudyConfig, prepared: PreparedRun, plan: TrialPlan, rows, summary, parent, uri
) -> None:
    """The best trials with a checkpoint: evaluated on the test split; the best registered; top-k exported."""
    from scannet_platform.tune.tracking import PARENT_TAG, TRIAL_TAG, log_ensemble

    ranked = [r for r in rows if r.checkpoint and np.isfinite(r.best)]
    wanted = max(study.top_k, 1 if study.evaluate_best else 0)
    if not ranked or wanted == 0:
        return
    evaluations = []
    for row in ranked[:wanted]:
        trial = _trial_prepared(prepared, plan, row)
        evaluations.append((row, trial, finish_run(trial, Path(row.checkpoint), time.perf_counter())))
    row, trial, evaluation = evaluations[0]
    best = evaluation.summary
    if row.trial_id != rows[0].trial_id:
        print(f"the best trial {rows[0].trial_id} left no checkpoint; evaluating {row.trial_id}, the best that did")
    summary.test_mae, summary.test_units, summary.checkpoint = best.test_mae, best.report_units, best.checkpoint
    summary.test_text = ", ".join(f"{t} {v:.4g} {best.report_units[t]}" for t, v in best.test_mae.items()) + (
        f" ({best.test_evaluated:,} of {best.split_sizes['test']:,} test structures; trial {row.trial_id})"
    )
    if study.evaluate_best:
        client = MlflowClient(uri)
        child = client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{row.trial_id}'",
        )
        run_id = child[0].info.run_id if child else parent
        model_name = study.model_name(prepared.dataset.name)
        files = [prepared.split_file, prepared.split_ids, prepared.run_dir / STUDY_FILE]
        version = register_model(
            trial.config,
            trial,
            evaluation,
            uri=uri,
            run_id=run_id,
            model_name=model_name,
            files=files,
            environment=run_environment(),
        )
        for key, value in {
            "scannet.study": study.name,
            "scannet.study_run_id": parent,
            "scannet.trial_id": row.trial_id,
        }.items():
            client.set_model_version_tag(model_name, version, key, value)
        summary.model_uri = f"models:/{model_name}/{version}"
    if study.top_k:
        top = evaluations[: study.top_k]
        ensemble = evaluate_ensemble([(t.worker, Path(e.summary.checkpoint)) for _, t, e in top], plan.report)
        manifest = export_ensemble(study, top, ensemble, summary.objective, prepared.run_dir)
        summary.ensemble, summary.ensemble_lines = str(manifest), ensemble.lines()
        summary.ensemble_uri = log_ensemble(uri, parent, manifest.parent, ensemble)


def export_ensemble(
    study: StudyConfig, evaluations, ensemble: EnsembleEvaluation, objective: str, study_dir: Path
) -> Path:
    """``ensemble/``: the top-k trials' best weights (``member-XX.pt``), ``ensemble.json`` (with the ensemble's
    test MAE, the std scale the screen applies and the test coverage) and the reliability plot, replaced whole
    (staged beside it and swapped in by :class:`~scannet.io.atomic.AtomicWrite`: a crash leaves the old one)."""
    from scannet.io.atomic import AtomicWrite
    from scannet.io.provenance import sha256_file
    from scannet_platform.tracking.plots import save_figure

    folder = study_dir / "ensemble"
    members = []
    plot = (RELIABILITY_PLOT,) if ensemble.std_scale else ()
    with AtomicWrite(folder, owned=(ENSEMBLE_FILE, *plot)) as write:
        for k, (row, _, evaluation) in enumerate(evaluations):
            name = f"member-{k:02d}.pt"
            shutil.copy2(evaluation.summary.checkpoint, write.path / name)
            members.append(
                {
                    "checkpoint": name,
                    "sha256": sha256_file(write.path / name),
                    "trial_id": row.trial_id,
                    "val_metric": row.best,
                    "test_mae": evaluation.summary.test_mae,
                }
            )
        manifest = {
            "study": study.name,
            "metric": objective,
            "mode": study.mode,
            "members": members,
            "test_mae": ensemble.test_mae,
            "test_mae_units": ensemble.units,
            STD_SCALE_KEY: ensemble.std_scale,
            "calibration": {
                "test_structures": ensemble.test_structures,
                "val_structures": ensemble.val_structures,
                "before": {t: asdict(c) for t, c in ensemble.coverage_raw.items()},
                "after": {t: asdict(c) for t, c in ensemble.coverage_calibrated.items()},
                "note": ensemble.note,
            },
        }
        (write.path / ENSEMBLE_FILE).write_text(json.dumps(manifest, indent=1))
        if ensemble.std_scale:
            save_figure(reliability_figure(ensemble), write.path, RELIABILITY_PLOT)
    kept = {m["checkpoint"] for m in members} | set(plot)
    for stale in ({p.name for p in folder.glob("member-*.pt")} | {RELIABILITY_PLOT}) - kept:
        (folder / stale).unlink(missing_ok=True)  # carried over from an earlier ensemble (AtomicWrite keeps others)
    return folder / ENSEMBLE_FILE
