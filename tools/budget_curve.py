"""The learning curve of a run against wall clock: validation MAE per target over the hours its epochs took.

    python tools/budget_curve.py RUN_DIR --out curve.png [--goal homo=50 lumo=60 gap=75] [--budget-hours 2.5]

Maintainer tooling (issue 24: how far a CPU budget goes). Reads the run's history (``history.json`` of a finished
run, else the latest checkpoint's, so a run between launches can be drawn), puts each epoch at the sum of the epoch
wall times up to it, and draws per target the validation MAE of the kept weights (the EMA when the run keeps one)
and, dashed, of the raw weights; goal lines dotted; the budget as a vertical line. Prints the same figures as a
table. Validation only: nothing here reads the test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from scannet.train import metrics as M
from scannet.train.run_folder import LATEST_CHECKPOINT, TRAIN_STATE, RunFolder


def run_history(run_dir: Path) -> list[dict[str, Any]]:
    folder = RunFolder(run_dir)
    if folder.history.is_file():
        return json.loads(folder.history.read_text())
    state = folder.checkpoints / LATEST_CHECKPOINT / TRAIN_STATE
    if not state.is_file():
        raise FileNotFoundError(f"{run_dir}: neither history.json nor {state.relative_to(run_dir)}")
    return torch.load(state, map_location="cpu", weights_only=True)["history"]


def curve_rows(history: list[dict[str, Any]], scales: dict[str, float]) -> list[dict[str, Any]]:
    """Per epoch: its number (1-based), the hours of epochs up to its end, and the MAEs in report units."""
    hours, rows = 0.0, []
    for record in history:
        if record.get(M.SECONDS) is None:
            raise ValueError(f"epoch {record[M.EPOCH] + 1} has no wall time: the run predates epoch timing")
        hours += record[M.SECONDS] / 3600
        raw = record.get(M.RAW_VAL_MAE_PER_TARGET) or {}
        rows.append(
            {
                "epoch": record[M.EPOCH] + 1,
                "hours": hours,
                "val": {t: record[M.VAL_MAE_PER_TARGET][t] * s for t, s in scales.items()},
                "raw": {t: raw[t] * s for t, s in scales.items() if t in raw},
            }
        )
    return rows


def draw(rows: list[dict[str, Any]], units: dict[str, str], goals: dict[str, float], budget: float | None, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, axis = plt.subplots(figsize=(8, 5), dpi=150)
    hours = [row["hours"] for row in rows]
    for target in units:
        (line,) = axis.plot(hours, [row["val"][target] for row in rows], marker="o", markersize=3, label=f"{target}")
        if any(target in row["raw"] for row in rows):
            raw = [row["raw"].get(target, float("nan")) for row in rows]
            axis.plot(hours, raw, linestyle="--", linewidth=0.9, color=line.get_color(), label=f"{target}, raw weights")
        if target in goals:
            axis.axhline(goals[target], linestyle=":", color=line.get_color(), label=f"{target} goal {goals[target]:g}")
    if budget is not None:
        axis.axvline(budget, color="black", linewidth=0.8, label=f"budget {budget:g} h")
    axis.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 40, 50, 60 ... rather than 4 x 10^1
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_formatter(plain)
    axis.tick_params(axis="y", which="minor", labelsize=7)
    axis.set_xlabel("wall clock of the epochs (h), training and validation")
    axis.set_ylabel(f"validation MAE ({', '.join(sorted(set(units.values())))})")
    kept = "EMA of the weights" if any(row["raw"] for row in rows) else "weights"
    axis.set_title(f"validation MAE over {len(rows)} epochs ({kept}; dashed: raw weights)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    figure.tight_layout()
    figure.savefig(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/budget_curve.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--goal", nargs="*", default=[], metavar="TARGET=MAE", help="goal lines, report units")
    parser.add_argument("--budget-hours", type=float, help="the budget, drawn as a vertical line")
    args = parser.parse_args(argv)
    config = RunFolder(args.run_dir).read_run_config()
    from scannet.train.run import resolve_dataset

    dataset = resolve_dataset(config.data, config.cache_dir)
    report = {t: dataset.report(t) for t in config.targets}
    goals = {}
    for item in args.goal:
        target, _, value = item.partition("=")
        if target not in report or not value:
            parser.error(f"--goal {item}: give TARGET=MAE with a target of the run ({', '.join(report)})")
        goals[target] = float(value)
    rows = curve_rows(run_history(args.run_dir), {t: scale for t, (scale, _) in report.items()})
    draw(rows, {t: unit for t, (_, unit) in report.items()}, goals, args.budget_hours, args.out)
    print(f"{'epoch':>5} {'hours':>6}  " + "  ".join(f"{t:>14}" for t in report))
    for row in rows:
        cells = "  ".join(
            f"{row['val'][t]:6.1f} ({row['raw'][t]:5.1f})" if t in row["raw"] else f"{row['val'][t]:14.1f}"
            for t in report
        )
        print(f"{row['epoch']:>5} {row['hours']:6.2f}  {cells}")
    print(
        f"wrote {args.out} (validation MAE, {', '.join(f'{t} {u}' for t, (_, u) in report.items())}; raw weights in brackets)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
