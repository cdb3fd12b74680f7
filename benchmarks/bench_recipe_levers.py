"""Validation curves of training-recipe variants on a QM9 slice that holds no molecule of the standard test split.

    python benchmarks/bench_recipe_levers.py --variants fp32-eager bf16-compiled [--seeds 0 1 2]
        [--structures 24000] [--epochs 6] [--targets homo lumo gap] [--out benchmarks/out/levers]

Each lever of the CPU-budget recipe (issue 24) is measured here, never on the test split: the structures are the
standard QM9 train + validation molecules (the shipped model's split, seed 0, table order), of which a seeded
random slice of ``--structures`` is split 80 / 10 / 10 into the runs' own train / validation / (unused) test.
Every variant trains once per seed (``train.seed``: initial weights and batch order; the slice and its split are
the same for all), variants taking turns seed by seed, with the same training loop as ``scannet train``. Runs are
resumable folders under ``--out`` (re-running the command continues or reuses them).

Every variant gets the same training compute, ``--epochs`` epochs of the slice: an ensemble variant trains its k
members for ``--epochs / k`` epochs each and is scored by the mean of their predictions; a per-target variant
trains one single-head model per target for ``--epochs / targets`` epochs each. Variants: ``fp32-eager`` and
``bf16-compiled`` (the old CPU recipe's cosine over half the steps, no weight average), ``bf16-full-cosine`` (the
budget recipe's shape: cosine to the last step after a warm-up over 1/32 of the epochs, and an EMA of the weights
whose time constant is the same share of the run's steps as the recipe's 0.999 of its 32 x 860), and that recipe as
``-per-target`` models and as a 3-member ``-ensemble3``. A single model with an EMA also records its raw weights'
validation MAE every epoch: the EMA lever is read from the same runs.

Printed per variant: the validation MAE per target in meV, median (min-max) over the seeds, per epoch for a single
model (its kept weights) and as the final value otherwise, with the training molecules/s; then each variant's final
MAE against the first variant's, with "inside the noise" where the seed ranges overlap.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from _timing import machine_load

from scannet.checkpoint import load_model
from scannet.data.loader import make_table_loader
from scannet.data.qm9 import QM9_SIZE, QM9_STANDARD_TRAIN, QM9_STANDARD_VAL, write_qm9_table
from scannet.data.splits import standard_split
from scannet.data.structures_table import STRUCTURES_FILE, StructuresWriter, read_units
from scannet.home import default_data_cache
from scannet.train import metrics as M
from scannet.train.config import TrainConfig
from scannet.train.run import prepare_run
from scannet.train.run_config import RunConfig, build_run_config
from scannet.train.run_folder import MODEL_FILE, TRAIN_STATE
from scannet.train.trainer import predict_batches
from scannet.train.worker import LocalSession, run_worker, split_stream


@dataclass(frozen=True)
class Variant:
    """A recipe to compare. ``overrides``: RunConfig keys (``train`` nested). At the same training compute as one
    model of ``--epochs`` epochs: ``members`` > 1 trains an ensemble of that many models (seeds seed, seed + 1000,
    ...) for ``--epochs / members`` epochs each and averages their predictions; ``per_target`` trains one model per
    target (one head each) for ``--epochs / targets`` epochs each."""

    overrides: dict[str, Any] = field(default_factory=dict)
    members: int = 1
    per_target: bool = False

    def models(self, n_targets: int) -> int:
        """How many models share the compute of one: the members, one per target, or 1."""
        return self.members if self.members > 1 else n_targets if self.per_target else 1


BF16 = {"precision": "bf16", "compile": True}
#: The budget recipe's schedule and weight average, as shares of each model's run so that shorter runs (the slice,
#: ensemble members, per-target models) get the same shape: warm-up over 1 of its 32 epochs; EMA decay 0.999, a
#: time constant of 1,000 of its 32 x 860 steps.
BUDGET_RUN_STEPS = 32 * 860
FULL_COSINE = {"cosine_fraction": 1.0, "warmup_share": 1 / 32, "ema_share": 1000 / BUDGET_RUN_STEPS}
VARIANTS: dict[str, Variant] = {
    "fp32-eager": Variant(),
    "bf16-compiled": Variant(BF16),
    "bf16-full-cosine": Variant({**BF16, "train": FULL_COSINE}),
    "bf16-full-cosine-per-target": Variant({**BF16, "train": FULL_COSINE}, per_target=True),
    "bf16-full-cosine-ensemble3": Variant({**BF16, "train": FULL_COSINE}, members=3),
}


@dataclass
class Curve:
    """One variant's validation MAE (meV) per target: per epoch [E] for a single model, else its final value [1];
    the training molecules/s per epoch; for a single model with a weight average, its raw weights' MAE per epoch."""

    mae: dict[str, list[float]]
    per_s: list[float]
    raw: dict[str, list[float]] = field(default_factory=dict)


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


def train_one(name: str, seed: int, epochs: int, targets: tuple[str, ...], overrides: dict[str, Any], args, data):
    """Train (or reuse) one run; returns (its prepared run, its history, this launch's reports)."""
    train = {"epochs": epochs, "seed": seed, "schedule": "cosine", "min_lr": 1e-5, **overrides.get("train", {})}
    if "warmup_share" in train:
        train["warmup_epochs"] = epochs * train.pop("warmup_share")
    if "ema_share" in train:  # the time constant 1 / (1 - decay) as that share of the run's steps
        n_train = round((1 - RunConfig.val_fraction - RunConfig.test_fraction) * args.structures)
        steps = epochs * math.ceil(n_train / train.get("batch_size", TrainConfig.batch_size))
        train["ema_decay"] = 1 - 1 / max(2.0, train.pop("ema_share") * steps)  # at least 2 steps (tiny runs)
    config = build_run_config(
        name=f"{name}-seed{seed}-n{args.structures}-e{epochs}",
        data=str(data),
        targets=targets,
        n_structures=args.structures,
        threads=args.threads,
        storage_path=str(args.out),
        **{k: v for k, v in overrides.items() if k != "train"},
        train=train,
    )
    prepared = prepare_run(config)
    scale = {t: prepared.dataset.report(t)[0] for t in targets}

    def show(metrics: dict[str, Any]) -> None:
        maes = "  ".join(f"{t} {metrics[M.mae_key('val', t)] * scale[t]:.1f}" for t in targets)
        print(f"  {name} seed {seed} epoch {metrics[M.EPOCH] + 1}: {maes} meV  {metrics[M.TRAIN_PER_S]:.0f} mol/s")

    session = LocalSession(prepared.folder.checkpoints, on_report=show)
    run_worker(prepared.worker, session)
    history = torch.load(session.latest / TRAIN_STATE, map_location="cpu", weights_only=True)["history"]
    return prepared, session, history


def val_predictions(prepared, session) -> tuple[np.ndarray, np.ndarray]:
    """(predictions [N, T], targets [N, T]) of a run's kept weights on its validation part, dataset units."""
    model, _, _ = load_model(session.latest / MODEL_FILE)
    stream = split_stream(prepared.worker, "val", 0, 1, shuffle=False, batch_size=256)
    return predict_batches(model, make_table_loader(stream))


def train_variant(name: str, seed: int, args: argparse.Namespace, data: Path) -> Curve:
    variant, targets = VARIANTS[name], tuple(args.targets)
    if variant.per_target:
        mae, per_s = {}, []
        for target in targets:
            prepared, session, history = train_one(
                f"{name}-{target}",
                seed,
                args.epochs // variant.models(len(targets)),
                (target,),
                variant.overrides,
                args,
                data,
            )
            mae[target] = [history[-1][M.VAL_MAE_PER_TARGET][target] * prepared.dataset.report(target)[0]]
            per_s += [r[M.TRAIN_PER_S] for r in session.reports]
        return Curve(mae, per_s)
    if variant.members > 1:
        predictions, per_s = [], []
        for member in range(variant.members):
            prepared, session, _ = train_one(
                f"{name}-m{member}",
                seed + 1000 * member,
                args.epochs // variant.models(len(targets)),
                targets,
                variant.overrides,
                args,
                data,
            )
            predicted, truth = val_predictions(prepared, session)
            predictions.append(predicted)
            per_s += [r[M.TRAIN_PER_S] for r in session.reports]
        error = np.abs(np.mean(predictions, axis=0) - truth).mean(axis=0)
        return Curve({t: [float(error[k]) * prepared.dataset.report(t)[0]] for k, t in enumerate(targets)}, per_s)
    prepared, session, history = train_one(name, seed, args.epochs, targets, variant.overrides, args, data)
    scale = {t: prepared.dataset.report(t)[0] for t in targets}
    mae = {t: [r[M.VAL_MAE_PER_TARGET][t] * scale[t] for r in history] for t in targets}
    with_raw = all(r.get(M.RAW_VAL_MAE_PER_TARGET) for r in history)  # runs with an EMA (and of this version)
    raw = {t: [r[M.RAW_VAL_MAE_PER_TARGET][t] * scale[t] for r in history] for t in targets} if with_raw else {}
    return Curve(mae, [r[M.TRAIN_PER_S] for r in session.reports], raw)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["fp32-eager", "bf16-compiled"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--structures", type=int, default=24000)
    parser.add_argument("--epochs", type=int, default=6, help="per single model; the compute every variant gets")
    parser.add_argument("--targets", nargs="+", default=["homo", "lumo", "gap"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/levers"))
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error("at least 3 seeds (a median and a range need them)")
    for name in args.variants:
        parts = VARIANTS[name].models(len(args.targets))
        if args.epochs % parts:
            parser.error(f"{name}: --epochs must divide evenly over its {parts} models (equal compute)")
    data = no_test_table(default_data_cache())
    curves: dict[str, list[Curve]] = {v: [] for v in args.variants}
    with machine_load():
        for seed in args.seeds:
            for variant in args.variants:
                curves[variant].append(train_variant(variant, seed, args, data))

    base = args.variants[0]
    print(f"\nvalidation MAE (meV), median (min-max) over seeds {args.seeds}; {args.structures} structures, 80/10/10")
    for variant, runs in curves.items():
        rates = [rate for c in runs for rate in c.per_s]
        print(f"{variant}: " + (f"{statistics.median(rates):,.0f} training mol/s (median of epochs)" if rates else ""))
        points = len(runs[0].mae[args.targets[0]])  # epochs of a single model, else 1 (the final value)
        for epoch in range(points):
            cells = "  ".join(f"{t} {spread([c.mae[t][epoch] for c in runs])}" for t in args.targets)
            print(f"  {f'epoch {epoch + 1:>3}' if points > 1 else 'final'}  {cells}")
            if runs[0].raw:
                print(
                    "       raw weights  "
                    + "  ".join(f"{t} {spread([c.raw[t][epoch] for c in runs])}" for t in args.targets)
                )
    print(f"\nat the same training compute, against {base}:")
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
    for variant in (v for v in args.variants if curves[v][0].raw):
        print(f"\n{variant}, its weight average against its raw weights in the same runs (last epoch):")
        for t in args.targets:
            ratios = [c.mae[t][-1] / c.raw[t][-1] for c in curves[variant]]
            print(f"  {t}: {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) over the seeds")


if __name__ == "__main__":
    main()
