"""What a finished training run logs to its MLflow run: missing epochs, test metrics, plots, files, and a
registered model version (:func:`register_model`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from ase.data import chemical_symbols
from mlflow import MlflowClient

from scannet.train.run import Evaluation, PreparedRun, RunSummary
from scannet.train.run_config import RunConfig
from scannet.train.run_folder import RunFolder
from scannet_platform.metric_names import TEST_STRUCTURES, mae_metric
from scannet_platform.tracking.plots import PLOT_DPI, learning_curve_figure, parity_figure, r_squared, save_figure
from scannet_platform.tracking.registry import BEST_ALIAS, ModelRecord, log_model_version, update_best_alias
from scannet_platform.tracking.runs import log_missing_epochs


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
    for key, value in {**test, TEST_STRUCTURES: record.test_evaluated}.items():
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
        save_figure(curve, folder, "learning_curve.png")
        save_figure(parity, folder, "parity.png")
        (folder / "plots.json").write_text(json.dumps(texts, indent=1))
        for name in ("learning_curve.png", "parity.png", "plots.json"):
            client.log_artifact(run_id, str(folder / name), "plots")
        RunFolder(folder).history.write_text(json.dumps(list(history), indent=1))
        for path in [*files, RunFolder(folder).history]:
            client.log_artifact(run_id, str(path), "run_files")
    version, new = log_model_version(client, run_id, Path(checkpoint), registered_model, record)
    best = update_best_alias(client, registered_model)
    if not new:
        print(f"model: {registered_model} version {version} holds this checkpoint already; no new version")
    if best is not None:
        print(f"model: {registered_model}@{BEST_ALIAS} -> version {best}")
    return version


def model_record(job: RunConfig, prepared: PreparedRun, summary: RunSummary, environment: dict):
    from scannet.io.provenance import content_fingerprint
    from scannet_platform.tracking.registry import ModelRecord

    model = prepared.worker.model
    kind = "SCANN+" if model.g_update else "SCANN"
    origin = f"fine-tuned from {job.init_from}" if job.init_from else f"preset {job.model_preset or 'default'}"
    return ModelRecord(
        run_name=job.name,
        dataset=prepared.dataset.name,
        dataset_sha256=content_fingerprint(prepared.dataset.structures),
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
    from scannet_platform.tracking import results

    return results.log_results(
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
