"""The figures a run logs: learning curve and parity plot (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scannet.train import metrics as M
from scannet_platform.metric_names import Report

PLOT_DPI = 150


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve_figure(history: Sequence[Mapping[str, Any]], report: Report, best_epoch: int):
    """Validation MAE per target in report units (top) and the standardized loss and MAE (bottom) per epoch
    (1-based, as printed); the best epoch (0-based ``best_epoch``) marked; legends outside the data."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = [int(r[M.EPOCH]) + 1 for r in history]
    best = best_epoch + 1
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True, dpi=PLOT_DPI)
    units = {unit for _, unit in report.values()}
    for target, (scale, unit) in report.items():
        values = [r[M.VAL_MAE_PER_TARGET][target] * scale for r in history]
        label = f"validation MAE {target}" + ("" if len(units) == 1 else f" ({unit})")
        (line,) = top.plot(epochs, values, marker="o", markersize=3, label=label)
        if best in epochs:
            top.plot([best], [values[epochs.index(best)]], marker="*", markersize=12, color=line.get_color())
    top.set_ylabel(f"MAE ({units.pop()})" if len(units) == 1 else "MAE (report units)")
    bottom.plot(epochs, [r[M.TRAIN_LOSS] for r in history], label="train loss (RMSE + L2)")
    bottom.plot(epochs, [r[M.VAL_MAE] for r in history], label="validation MAE (early stopping)")
    bottom.set_ylabel("standardized (z-scores)")
    bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (top, bottom):
        axis.axvline(best, color="grey", linestyle="--", linewidth=0.8, label=f"best epoch {best}")
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
        axis.grid(alpha=0.3)
    top.set_title(f"learning curve: {len(epochs)} epochs, best epoch {best}")
    figure.tight_layout()
    return figure


def r_squared(truth: np.ndarray, pred: np.ndarray) -> float:
    total = float(((truth - truth.mean()) ** 2).sum())
    return float("nan") if total == 0 else 1.0 - float(((truth - pred) ** 2).sum()) / total


def parity_figure(
    predictions: np.ndarray, targets: np.ndarray, names: Sequence[str], report: Report, test_mae: Mapping[str, float]
):
    """One square parity panel per target in report units: identity line, N, R² and the test MAE (the
    logged value, checked against the points) in the title."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.8), squeeze=False, dpi=PLOT_DPI)
    for k, (axis, name) in enumerate(zip(axes[0], names)):
        scale, unit = report[name]
        truth, pred = targets[:, k] * scale, predictions[:, k] * scale
        mae = float(test_mae[name])
        if len(truth) and not np.isclose(np.abs(pred - truth).mean(), mae, rtol=1e-4, atol=1e-9):
            raise ValueError(f"parity {name}: test MAE {mae} differs from the points' {np.abs(pred - truth).mean()}")
        low = float(min(truth.min(), pred.min())) if len(truth) else 0.0
        high = float(max(truth.max(), pred.max())) if len(truth) else 1.0
        pad = 0.04 * (high - low or 1.0)
        low, high = low - pad, high + pad
        axis.scatter(truth, pred, s=5, alpha=0.5, linewidths=0)
        axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
        axis.set_aspect("equal", adjustable="box")
        for ticks in (axis.xaxis, axis.yaxis):
            ticks.set_major_locator(MaxNLocator(nbins=5))
        axis.set_xlabel(f"reference {name} ({unit})")
        axis.set_ylabel(f"predicted {name} ({unit})")
        axis.text(
            0.04, 0.96, f"N = {len(truth)}\nR² = {r_squared(truth, pred):.4f}", transform=axis.transAxes, va="top"
        )
        axis.set_title(f"{name}: test MAE {mae:.4g} {unit}")
    figure.tight_layout()
    return figure


def save_figure(figure, folder: Path, name: str) -> Path:
    path = folder / name
    figure.savefig(path, dpi=PLOT_DPI)
    pyplot().close(figure)
    return path
