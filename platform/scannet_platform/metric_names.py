"""Names and values of the per-epoch metrics, in report units (``val_mae_homo_meV``): what MLflow logs and
what Tune trials report. No MLflow import, so trial processes stay light."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def metric_unit(unit: str) -> str:
    """A unit as a metric-name suffix: ``meV`` -> ``meV``, ``meV/atom`` -> ``meV_per_atom``, ``cal/(mol K)``
    -> ``cal_per_mol_K``, ``Bohr^3`` -> ``Bohr3``."""
    text = unit.replace("/", "_per_").replace("^", "")
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    return re.sub(r"_+", "_", text).strip("_")


def mae_metric(part: str, target: str, unit: str) -> str:
    """``val_mae_homo_meV``: the MAE of ``target`` on ``part`` in its report ``unit``."""
    suffix = metric_unit(unit)
    return f"{part}_mae_{target}_{suffix}" if suffix else f"{part}_mae_{target}"


Report = Mapping[str, tuple[float, str]]  # target -> (scale, report unit), DatasetInfo.report


def epoch_metrics(record: Mapping[str, Any], report: Report) -> dict[str, float]:
    """The MLflow metrics of one epoch, from a worker report or a history record (step: ``epoch + 1``)."""
    per_target = record.get("val_mae_per_target") or {t: record[f"val_mae_{t}"] for t in report}
    metrics = {
        "train_loss_standardized": float(record["train_loss"]),
        "val_mae_standardized": float(record["val_mae"]),  # the early-stopping metric (mean z-scored MAE)
        "lr": float(record["lr"]),
    }
    for target, (scale, unit) in report.items():
        metrics[mae_metric("val", target, unit)] = float(per_target[target]) * scale
    if "seconds" in record:
        metrics["epoch_seconds"] = float(record["seconds"])
        metrics["train_structures_per_s"] = float(record["train_per_s"])
    return metrics
