"""The names of a training epoch's metrics, in this one place.

A history record (``history.json``, the ``history`` of a checkpoint) is an :class:`~scannet.train.trainer.EpochRecord`
as a dict: its fields are :data:`HISTORY_KEYS`. The worker loop reports each epoch (:func:`epoch_report`) with the
same values, the per-target MAE flattened to :func:`mae_key` names (``val_mae_homo``, dataset units) and a few
more keys. MAEs are in dataset units, the loss and :data:`VAL_MAE` in z-scores. The platform derives its MLflow /
Tune names, in report units, from these (``scannet_platform.metric_names``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EPOCH = "epoch"  # 0-based
TRAIN_LOSS = "train_loss"  # standardized: RMSE of the z-scored targets + L2
VAL_MAE = "val_mae"  # mean over targets of the z-scored validation MAE: the early-stopping metric
VAL_MAE_PER_TARGET = "val_mae_per_target"  # history: {target: validation MAE in dataset units}
LR = "lr"
SECONDS = "seconds"  # wall time of the epoch, training and validation
RAW_VAL_MAE_PER_TARGET = "raw_val_mae_per_target"  # with an EMA of the weights: the raw weights' MAE, else None
HISTORY_KEYS = (EPOCH, TRAIN_LOSS, VAL_MAE, VAL_MAE_PER_TARGET, LR, SECONDS, RAW_VAL_MAE_PER_TARGET)

# the worker's report adds
EPOCHS = "epochs"  # the epoch budget
LAST = "last"  # the epoch budget is spent or early stopping triggered
START_EPOCH = "start_epoch"  # epochs finished before this launch's worker group started
VAL_STRUCTURES = "val_structures"  # validation structures evaluated (over all ranks)
TRAIN_PER_S = "train_per_s"  # training structures per second (training steps alone)
TIMING = (SECONDS, TRAIN_PER_S)  # reported, and kept in the history only as far as SECONDS goes


def mae_key(part: str, target: str) -> str:
    """``val_mae_homo``: the MAE of ``target`` on the split ``part`` (dataset units where it is a value)."""
    return f"{part}_mae_{target}"


def mae_target(name: str, part: str = "val") -> str | None:
    """The target of a :func:`mae_key` name (``val_mae_homo`` -> ``homo``); None for any other name."""
    prefix = mae_key(part, "")
    return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None


def per_target_mae(record: Mapping[str, Any], targets) -> dict[str, float]:
    """The validation MAE per target (dataset units) of a history record or of a worker's report."""
    per_target = record.get(VAL_MAE_PER_TARGET)
    return dict(per_target) if per_target else {t: record[mae_key("val", t)] for t in targets}


def epoch_report(record: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A worker's report of one epoch: the history record with the per-target MAEs flattened (``val_mae_homo``; with
    an EMA also ``raw_val_mae_homo``, the raw weights'), and ``extra``."""
    report = {k: v for k, v in record.items() if k not in (VAL_MAE_PER_TARGET, RAW_VAL_MAE_PER_TARGET)}
    report.update({mae_key("val", t): v for t, v in record[VAL_MAE_PER_TARGET].items()})
    report.update({mae_key("raw_val", t): v for t, v in (record.get(RAW_VAL_MAE_PER_TARGET) or {}).items()})
    return {**report, **extra}
