"""Validation curves of training-recipe variants on a QM9 slice that holds no molecule of the standard test split.

    python benchmarks/bench_recipe_levers.py --variants fp32-eager bf16-compiled [--seeds 0 1 2]
        [--structures 24000] [--epochs 6] [--targets homo lumo gap] [--out benchmarks/out/levers]

Each lever of the CPU-budget recipe (issue 24) is measured here, never on the test split: the structures are the
standard QM9 train + validation molecules (the shipped model's split, seed 0, table order), of which a seeded
random slice of ``--structures`` is split 80 / 10 / 10 into the runs' own train / validation / (unused) test.
Every variant trains once per seed (``train.seed``: initial weights and batch order; the slice and its split are
the same for all), variants taking turns seed by seed, with the same training loop as ``scannet train``. Runs are
resumable folders under ``--out`` (re-running the command continues or reuses them).

Printed per variant and epoch: the validation MAE per target in meV, median (min-max) over the seeds, and the
training molecules/s; then each variant's last-epoch MAE against the first variant's, with "inside the noise"
where the seed ranges overlap.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from _timing import machine_load

from scannet.data.qm9 import QM9_SIZE, QM9_STANDARD_TRAIN, QM9_STANDARD_VAL, write_qm9_table
from scannet.data.splits import standard_split
from scannet.data.structures_table import STRUCTURES_FILE, StructuresWriter, read_units
from scannet.home import default_data_cache
from scannet.train import metrics as M
from scannet.train.run import prepare_run
from scannet.train.run_config import build_run_config
from scannet.train.worker import LocalSession, run_worker

#: name -> RunConfig overrides (``train`` keys nested) of each variant.
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32-eager": {},
    "bf16-compiled": {"precision": "bf16", "compile": True},
}


@dataclass
class Curve:
    """One run's validation MAE per epoch [E] per target (meV) and its training molecules/s per epoch."""

    mae: dict[str, list[float]]
    per_s: list[float]


def no_test_table(cache: Path) -> Path:
    """The QM9 molecules of the standard train and validation splits (seed 0, table order): a structures table."""
    path = cache / "qm9-no-standard-test" / STRUCTURES_FILE
    if path.exists():
        return path
    qm9 = cache / "qm9" / STRUCTURES_FILE
    if not qm9.exists():
        write_qm9_table(qm9.parent)
    split = standard_split(QM9_SIZE, QM9_SIZE, QM9_STANDARD_TRAIN, QM9_STANDARD_VAL, seed=0)
    kept = np.sort(np.concatenate([split.train, split.val]))
    with StructuresWriter(path, read_units(qm9)) as writer:
        writer.write_table(pq.read_table(qm9).take(pa.array(kept)))
    return path


def train_variant(name: str, seed: int, args: argparse.Namespace, data: Path) -> Curve:
    overrides = VARIANTS[name]
    train = {"epochs": args.epochs, "seed": seed, "schedule": "cosine", "min_lr": 1e-5, **overrides.get("train", {})}
    config = build_run_config(
        name=f"{name}-seed{seed}-n{args.structures}-e{args.epochs}",
        data=str(data),
        targets=tuple(args.targets),
        n_structures=args.structures,
        threads=args.threads,
        storage_path=str(args.out),
        **{k: v for k, v in overrides.items() if k != "train"},
        train=train,
    )
    prepared = prepare_run(config)
    scale = {t: prepared.dataset.report(t)[0] for t in config.targets}

    def show(metrics: dict[str, Any]) -> None:
        maes = "  ".join(f"{t} {metrics[M.mae_key('val', t)] * scale[t]:.1f}" for t in config.targets)
        print(f"  {name} seed {seed} epoch {metrics[M.EPOCH] + 1}: {maes} meV  {metrics[M.TRAIN_PER_S]:.0f} mol/s")

    session = LocalSession(prepared.folder.checkpoints, on_report=show)
    run_worker(prepared.worker, session)
    history = torch.load(session.latest / "train_state.pt", map_location="cpu", weights_only=True)["history"]
    mae = {t: [r[M.VAL_MAE_PER_TARGET][t] * scale[t] for r in history] for t in config.targets}
    per_s = [r.get(M.TRAIN_PER_S, float("nan")) for r in session.reports] or [float("nan")] * len(history)
    return Curve(mae, per_s)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["fp32-eager", "bf16-compiled"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--structures", type=int, default=24000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--targets", nargs="+", default=["homo", "lumo", "gap"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/levers"))
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error("at least 3 seeds (a median and a range need them)")
    data = no_test_table(default_data_cache())
    curves: dict[str, list[Curve]] = {v: [] for v in args.variants}
    with machine_load():
        for seed in args.seeds:
            for variant in args.variants:
                curves[variant].append(train_variant(variant, seed, args, data))

    base = args.variants[0]
    print(f"\nvalidation MAE (meV), median (min-max) over seeds {args.seeds}; {args.structures} structures, 80/10/10")
    for variant, runs in curves.items():
        print(f"{variant}:")
        for epoch in range(args.epochs):
            cells = "  ".join(f"{t} {spread([c.mae[t][epoch] for c in runs])}" for t in args.targets)
            rate = statistics.median(c.per_s[epoch] for c in runs if epoch < len(c.per_s))
            print(f"  epoch {epoch + 1:>3}  {cells}  {rate:,.0f} mol/s")
    print(f"\nlast epoch against {base}:")
    for variant in args.variants[1:]:
        for t in args.targets:
            ours = [c.mae[t][-1] for c in curves[variant]]
            theirs = [c.mae[t][-1] for c in curves[base]]
            overlap = min(ours) <= max(theirs) and min(theirs) <= max(ours)
            ratio = statistics.median(ours) / statistics.median(theirs)
            print(
                f"  {variant} {t}: {ratio:.3f}x {base}"
                + (" (inside the noise: the seed ranges overlap)" if overlap else "")
            )


if __name__ == "__main__":
    main()
