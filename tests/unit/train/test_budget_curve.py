"""tools/budget_curve.py: a run's validation curve placed at the wall-clock hours its epochs took."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from scannet.train import metrics as M
from scannet.train.run_folder import LATEST_CHECKPOINT, TRAIN_STATE

# maintainer tooling outside the package: loaded by its path
_SPEC = importlib.util.spec_from_file_location(
    "budget_curve", Path(__file__).resolve().parents[3] / "tools" / "budget_curve.py"
)
budget_curve = sys.modules["budget_curve"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(budget_curve)


def _record(epoch: int, seconds: float | None, val: float, raw: float | None) -> dict:
    return {
        M.EPOCH: epoch,
        M.SECONDS: seconds,
        M.VAL_MAE_PER_TARGET: {"homo": val},
        M.RAW_VAL_MAE_PER_TARGET: None if raw is None else {"homo": raw},
    }


def test_epochs_sit_at_the_sum_of_their_wall_times_in_report_units():
    history = [_record(0, 3600.0, 0.080, 0.090), _record(1, 1800.0, 0.050, 0.060)]
    rows = budget_curve.curve_rows(history, {"homo": 1000.0})
    assert [row["epoch"] for row in rows] == [1, 2]
    assert [row["hours"] for row in rows] == pytest.approx([1.0, 1.5])
    assert [row["val"]["homo"] for row in rows] == pytest.approx([80.0, 50.0])
    assert [row["raw"]["homo"] for row in rows] == pytest.approx([90.0, 60.0])


def test_a_run_without_a_weight_average_has_no_raw_curve():
    rows = budget_curve.curve_rows([_record(0, 60.0, 0.1, None)], {"homo": 1000.0})
    assert rows[0]["raw"] == {}


def test_an_epoch_without_a_wall_time_is_refused_by_number():
    with pytest.raises(ValueError, match="epoch 2 has no wall time"):
        budget_curve.curve_rows([_record(0, 60.0, 0.1, None), _record(1, None, 0.1, None)], {"homo": 1.0})


def test_an_unfinished_run_is_read_from_its_latest_checkpoint(tmp_path):
    history = [_record(0, 60.0, 0.1, 0.2)]
    (tmp_path / "checkpoints" / LATEST_CHECKPOINT).mkdir(parents=True)
    torch.save({"history": history}, tmp_path / "checkpoints" / LATEST_CHECKPOINT / TRAIN_STATE)
    assert budget_curve.run_history(tmp_path) == history
    with pytest.raises(FileNotFoundError, match="neither history.json nor"):
        budget_curve.run_history(tmp_path / "elsewhere")
