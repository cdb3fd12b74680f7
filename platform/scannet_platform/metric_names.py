"""Names and values of the per-epoch metrics, in report units (``val_mae_homo_meV``): what MLflow logs and
what Tune trials report. No MLflow import, so trial processes stay light."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scannet.train import metrics as M

STANDARDIZED = "_standardized"  # the suffix of the z-scored values' names
#: The name of each per-epoch value that is not a per-target MAE: the z-scored ones marked, timings spelled out.
EPOCH_NAMES = {
    M.TRAIN_LOSS: M.TRAIN_LOSS + STANDARDIZED,
    M.VAL_MAE: M.VAL_MAE + STANDARDIZED,  # the early-stopping metric (mean z-scored MAE)
    M.LR: M.LR,
}
TIMING_NAMES = {M.SECONDS: "epoch_seconds", M.TRAIN_PER_S: "train_structures_per_s"}
#: Logged for every epoch: the step of an epoch is logged when this is.
EPOCH_STEP_METRIC = EPOCH_NAMES[M.TRAIN_LOSS]
TEST_STRUCTURES = "test_structures"


def metric_unit(unit: str) -> str:
    """A unit as a metric-name suffix: ``meV`` -> ``meV``, ``meV/atom`` -> ``meV_per_atom``, ``cal/(mol K)``
    -> ``cal_per_mol_K``, ``Bohr^3`` -> ``Bohr3``."""
    text = unit.replace("/", "_per_").replace("^", "")
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    return re.sub(r"_+", "_", text).strip("_")


def mae_metric(part: str, target: str, unit: str) -> str:
    """``val_mae_homo_meV``: the MAE of ``target`` on ``part`` in its report ``unit``."""
    suffix = metric_unit(unit)
    return f"{M.mae_key(part, target)}_{suffix}" if suffix else M.mae_key(part, target)


Report = Mapping[str, tuple[float, str]]  # target -> (scale, report unit), DatasetInfo.report


def objective_metric(metric: str, report: Report) -> str:
    """The reported name of a library metric: ``val_mae`` -> ``val_mae_standardized`` (the mean z-scored MAE
    over targets, the early-stopping metric), ``val_mae_homo`` -> ``val_mae_homo_meV`` (report units)."""
    target = M.mae_target(metric)
    return EPOCH_NAMES[metric] if target is None else mae_metric("val", target, report[target][1])


def objective_unit(metric: str, report: Report) -> str:
    """The report unit of a library metric (none for the standardized ``val_mae``)."""
    target = M.mae_target(metric)
    return "" if target is None else report[target][1]


def epoch_metrics(record: Mapping[str, Any], report: Report) -> dict[str, float]:
    """The MLflow metrics of one epoch, from a worker report or a history record (step: ``epoch + 1``)."""
    per_target = M.per_target_mae(record, report)
    metrics = {name: float(record[key]) for key, name in EPOCH_NAMES.items()}
    raw = record.get(M.RAW_VAL_MAE_PER_TARGET) or {
        t: record[M.mae_key("raw_val", t)] for t in report if M.mae_key("raw_val", t) in record
    }
    for target, (scale, unit) in report.items():
        metrics[mae_metric("val", target, unit)] = float(per_target[target]) * scale
        if target in raw:  # an EMA of the weights: the raw weights' MAE beside the average's
            metrics[mae_metric("raw_val", target, unit)] = float(raw[target]) * scale
    if M.TRAIN_PER_S in record:  # a worker's report (a history record has no rate)
        metrics.update({name: float(record[key]) for key, name in TIMING_NAMES.items()})
    return metrics
