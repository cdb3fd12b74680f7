"""MLflow logging of a training run: parameters, per-epoch metrics, plots, files, a registered model.

The registered model is an MLflow pyfunc whose artifact is the SCANNet checkpoint, so
``load_registered("models:/scannet-qm9-homo/1")`` (or ``scannet.load`` on the downloaded file) gives a
predictor anywhere MLflow is reachable. Logging happens on the driver after training (ray#36257: a
callback inside trials would ignore the tracking URI).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

CHECKPOINT_ARTIFACT = "checkpoint"


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


def learning_curve_figure(history: Sequence[Mapping[str, Any]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(epochs, [r["train_loss"] for r in history], label="train loss (RMSE + L2, z-scored)")
    axis.plot(epochs, [r["val_mae"] for r in history], label="validation MAE (z-scored)")
    axis.set_xlabel("epoch")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    return figure


def parity_figure(predictions: np.ndarray, targets: np.ndarray, names: Sequence[str], units: Mapping[str, str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4.2), squeeze=False)
    for k, (axis, name) in enumerate(zip(axes[0], names)):
        truth, pred = targets[:, k], predictions[:, k]
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        axis.scatter(truth, pred, s=4, alpha=0.5)
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        unit = units.get(name, "")
        axis.set_xlabel(f"DFT {name} ({unit})")
        axis.set_ylabel(f"predicted {name} ({unit})")
        axis.set_title(f"{name}: test MAE {np.abs(pred - truth).mean():.4g} {unit}")
    figure.tight_layout()
    return figure


class SCANNetModel(PythonModel):
    """The MLflow pyfunc flavour of a SCANNet checkpoint (predicts lists of ASE ``Atoms``)."""

    def load_context(self, context) -> None:
        import scannet

        self.predictor = scannet.load(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input, params=None):
        return self.predictor.predict(list(model_input))


def log_run(
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    test_metrics: Mapping[str, float],
    predictions: np.ndarray,
    targets: np.ndarray,
    target_names: Sequence[str],
    units: Mapping[str, str],
    files: Sequence[str | Path],
    checkpoint: str | Path,
    registered_model: str,
) -> tuple[str, str]:
    """Log everything about a finished run; returns (MLflow run id, registered model version)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        for record in history:
            step = int(record["epoch"])
            mlflow.log_metrics(
                {"train_loss": record["train_loss"], "val_mae": record["val_mae"], "lr": record["lr"]}, step
            )
            mlflow.log_metrics({f"val_mae_{t}": v for t, v in record["val_mae_per_target"].items()}, step)
        mlflow.log_metrics(dict(test_metrics))
        mlflow.log_figure(learning_curve_figure(history), "plots/learning_curve.png")
        mlflow.log_figure(parity_figure(predictions, targets, target_names, units), "plots/parity.png")
        for path in files:
            mlflow.log_artifact(str(path), "run_files")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "history.json").write_text(json.dumps(list(history), indent=1))
            mlflow.log_artifact(str(Path(folder) / "history.json"), "run_files")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SCANNetModel(),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
            pip_requirements=["scannet"],
            registered_model_name=registered_model,
        )
        version = str(info.registered_model_version)
    return run.info.run_id, version


def download_checkpoint(model_uri: str, tracking_uri: str | None = None) -> Path:
    """The checkpoint file of a registered (``models:/name/version``) or logged model URI."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    matches = sorted(folder.rglob("*.pt"))
    if not matches:
        raise FileNotFoundError(f"{model_uri}: no SCANNet checkpoint among the model's artifacts")
    return matches[0]
