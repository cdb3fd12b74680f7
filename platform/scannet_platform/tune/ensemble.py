"""A study's top-k ensemble evaluated as the screen uses it: the members' mean on the test split, their standard
deviation (over members, ddof 0) scaled by a factor per target fitted on the validation split, and how often the
test errors fall within 1 and 2 (scaled) standard deviations (docs/tuning.md, The ensemble).

The calibration math is the library's (:mod:`scannet.train.calibration`); here the members' predictions of a split
part are gathered (structures every member featurized, matched by id) and the results written, plotted and
summarised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scannet.checkpoint import load_model
from scannet.data.loader import make_table_loader
from scannet.train.calibration import RELIABILITY_LEVELS, Coverage, reliability, std_scale
from scannet.train.trainer import predict_batches
from scannet.train.worker import WorkerConfig, split_stream
from scannet_platform.metric_names import metric_unit
from scannet_platform.tracking.plots import PLOT_DPI, pyplot

RELIABILITY_PLOT = "ensemble_reliability.png"


@dataclass(frozen=True)
class PartPredictions:
    """Every member's predictions of one split part, on the structures all of them featurized (report units)."""

    ids: list[str]
    predictions: np.ndarray  # [M, N, T]
    targets: np.ndarray  # [N, T]

    @property
    def errors(self) -> np.ndarray:  # [N, T] of the members' mean
        return self.predictions.mean(axis=0) - self.targets

    @property
    def std(self) -> np.ndarray:  # [N, T] over members, ddof 0 (as the screen computes it)
        return self.predictions.std(axis=0)


def member_predictions(worker: WorkerConfig, checkpoint: Path, part: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (prediction [T], target [T]) of one member on one split part, in the dataset's units."""
    model, _, _ = load_model(checkpoint)
    stream = split_stream(worker, part, 0, 1, shuffle=False, batch_size=256)
    stream.include_ids = True
    rows = {}
    for batch, ids in make_table_loader(stream):
        predictions, targets = predict_batches(model, [batch])
        rows.update(zip(ids, zip(predictions, targets)))
    return rows


def part_predictions(
    members: Sequence[tuple[WorkerConfig, Path]], part: str, scales: Sequence[float]
) -> PartPredictions:
    """The members' predictions of ``part`` on their common structures; ``scales`` [T]: dataset -> report units."""
    rows = [member_predictions(worker, checkpoint, part) for worker, checkpoint in members]
    ids = [i for i in rows[0] if all(i in r for r in rows[1:])]
    factor = np.asarray(scales, dtype=np.float64)
    predictions = np.array([[r[i][0] for i in ids] for r in rows], dtype=np.float64).reshape(len(rows), len(ids), -1)
    targets = np.array([rows[0][i][1] for i in ids], dtype=np.float64).reshape(len(ids), -1)
    return PartPredictions(ids, predictions * factor, targets * factor)


@dataclass(frozen=True)
class EnsembleEvaluation:
    """The ensemble on the test split (MAE of the mean; coverage before and after the std scale fitted on val)."""

    targets: tuple[str, ...]
    units: dict[str, str]  # report units
    test_structures: int
    val_structures: int
    test_mae: dict[str, float]
    member_test_mae: list[dict[str, float]]
    std_scale: dict[str, float] = field(default_factory=dict)  # empty: not calibrated (see note)
    coverage_raw: dict[str, Coverage] = field(default_factory=dict)
    coverage_calibrated: dict[str, Coverage] = field(default_factory=dict)
    reliability_raw: dict[str, list[float]] = field(default_factory=dict)  # observed at RELIABILITY_LEVELS
    reliability_calibrated: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""  # why there is no calibration

    def lines(self) -> list[str]:
        maes = ", ".join(
            f"{t} {self.test_mae[t]:.4g} {self.units[t]} (members {', '.join(f'{m[t]:.4g}' for m in self.member_test_mae)})"
            for t in self.targets
        )
        lines = [f"ensemble   : test MAE of the mean {maes} on {self.test_structures:,} test structures"]
        if self.note:
            return [*lines, f"calibration: none ({self.note})"]
        for t in self.targets:
            lines.append(
                f"calibration: {t} std x {self.std_scale[t]:.3g} (fitted on {self.val_structures:,} val structures); "
                f"test |error| within 1 / 2 std: {self.coverage_raw[t].text()} before, "
                f"{self.coverage_calibrated[t].text()} after (68 % / 95 % if calibrated)"
            )
        return lines

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the parent run: ``ensemble_test_mae_homo_meV``, ``ensemble_std_scale_homo``, ..."""
        values = {f"ensemble_test_mae_{t}_{metric_unit(self.units[t])}": self.test_mae[t] for t in self.targets}
        for t, scale in self.std_scale.items():
            values[f"ensemble_std_scale_{t}"] = scale
            for when, cover in (("raw", self.coverage_raw[t]), ("calibrated", self.coverage_calibrated[t])):
                values[f"ensemble_test_within_1sigma_{when}_{t}"] = cover.within_1sigma
                values[f"ensemble_test_within_2sigma_{when}_{t}"] = cover.within_2sigma
        return values


def evaluate_ensemble(
    members: Sequence[tuple[WorkerConfig, Path]], report: Mapping[str, tuple[float, str]]
) -> EnsembleEvaluation:
    """The ensemble of ``members`` (worker config, best checkpoint) evaluated on test, calibrated on val."""
    targets = tuple(report)
    scales = [report[t][0] for t in targets]
    test = part_predictions(members, "test", scales)
    val = part_predictions(members, "val", scales)
    mae = np.abs(test.errors).mean(axis=0)
    member_mae = np.abs(test.predictions - test.targets).mean(axis=1)  # [M, T]
    common = dict(
        targets=targets,
        units={t: report[t][1] for t in targets},
        test_structures=len(test.ids),
        val_structures=len(val.ids),
        test_mae={t: float(mae[k]) for k, t in enumerate(targets)},
        member_test_mae=[{t: float(m[k]) for k, t in enumerate(targets)} for m in member_mae],
    )
    if len(members) < 2:
        return EnsembleEvaluation(**common, note="one member has no spread")
    try:
        scale = np.atleast_1d(std_scale(val.errors, val.std))
    except ValueError as exc:  # identical members, or an empty validation split
        return EnsembleEvaluation(**common, note=str(exc))
    calibrated = test.std * scale
    return EnsembleEvaluation(
        **common,
        std_scale={t: float(scale[k]) for k, t in enumerate(targets)},
        coverage_raw={t: Coverage.of(test.errors[:, k], test.std[:, k]) for k, t in enumerate(targets)},
        coverage_calibrated={t: Coverage.of(test.errors[:, k], calibrated[:, k]) for k, t in enumerate(targets)},
        reliability_raw={t: reliability(test.errors[:, k], test.std[:, k]).tolist() for k, t in enumerate(targets)},
        reliability_calibrated={
            t: reliability(test.errors[:, k], calibrated[:, k]).tolist() for k, t in enumerate(targets)
        },
    )


def reliability_figure(evaluation: EnsembleEvaluation):
    """Observed against expected coverage on the test split, per target, before and after the std scale."""
    plt = pyplot()
    n = len(evaluation.targets)
    figure, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.6), dpi=PLOT_DPI, squeeze=False)
    for axis, t in zip(axes[0], evaluation.targets):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        axis.plot(RELIABILITY_LEVELS, evaluation.reliability_raw[t], marker="o", markersize=3, label="members' std")
        axis.plot(
            RELIABILITY_LEVELS,
            evaluation.reliability_calibrated[t],
            marker="o",
            markersize=3,
            label=f"std x {evaluation.std_scale[t]:.3g} (fitted on val)",
        )
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("expected coverage (Gaussian)")
        axis.set_ylabel("observed fraction of |error| within")
        axis.set_title(f"{t}: {evaluation.test_structures:,} test structures")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure
