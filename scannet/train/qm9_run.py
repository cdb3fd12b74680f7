"""Train a SCANN model on QM9 (or a reproducible slice of it) end to end, without Ray.

Steps: load QM9 from qm9pack -> pick the slice -> split (saved) -> featurize (bad molecules are
reported, never fatal) -> train -> evaluate the best weights on the test split -> save the model,
the split, the per-epoch history and a summary in ``out_dir``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scannet.checkpoint import save_model
from scannet.data.qm9 import QM9_TARGETS, load_qm9, qm9_split
from scannet.featurizer import FeaturizerConfig, featurize_many
from scannet.model import SCANN, count_parameters, preset
from scannet.train.data import GraphDataset
from scannet.train.trainer import TrainConfig, Trainer, seed_everything


@dataclass(frozen=True)
class QM9RunConfig:
    """Everything a QM9 run depends on; saved next to its results."""

    out_dir: str = "runs/qm9"
    n_molecules: int | None = None  # None: all 130,831; else a random slice of that size
    targets: tuple[str, ...] = ("homo",)
    model_preset: str = "qm9-scann+"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig.molecules)
    seed: int = 0  # slice and split seed
    num_threads: int | None = None  # torch intra-op threads (None: torch's default)


#: Named run presets; command-line values override them.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes on a laptop CPU: a 3,000-molecule slice, the full SCANN+ model, 5 epochs.
    "demo": {
        "n_molecules": 3000,
        "train": TrainConfig(epochs=5, schedule="cosine", lr=5e-4, min_lr=1e-4, patience=5),
    },
    # The reference recipe (spec §4): all of QM9, standard split, SGDR, up to 1000 epochs.
    "paper": {"n_molecules": None, "train": TrainConfig()},
}


def run_preset(name: str, **overrides: Any) -> QM9RunConfig:
    if name not in RUN_PRESETS:
        raise ValueError(f"unknown run preset {name!r}; choose from {sorted(RUN_PRESETS)}")
    return QM9RunConfig(**{**RUN_PRESETS[name], **overrides})


@dataclass
class QM9RunSummary:
    out_dir: str
    checkpoint: str
    split_file: str
    n_train: int
    n_val: int
    n_test: int
    n_rejected: int
    parameters: int
    epochs_run: int
    best_epoch: int
    test_mae: dict[str, float]  # report units (meV for orbital energies)
    units: dict[str, str]
    seconds: float

    def lines(self) -> list[str]:
        maes = ", ".join(f"{t} {v:.4g} {self.units[t]}" for t, v in self.test_mae.items())
        return [
            f"data      : {self.n_train} train / {self.n_val} val / {self.n_test} test molecules "
            f"({self.n_rejected} rejected)",
            f"model     : {self.parameters:,} parameters, {self.epochs_run} epochs (best {self.best_epoch})",
            f"test MAE  : {maes}",
            f"checkpoint: {self.checkpoint}",
            f"split     : {self.split_file}",
            f"time      : {self.seconds:.1f} s",
        ]


def slice_indices(n_total: int, n_molecules: int | None, seed: int) -> np.ndarray:
    """Indices of the molecules used: all of them, or a seeded random slice in gdb order."""
    if n_molecules is None or n_molecules >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.RandomState(seed).permutation(n_total)[:n_molecules])


def run_qm9(config: QM9RunConfig, progress: bool = True) -> QM9RunSummary:
    start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    unknown = [t for t in config.targets if t not in QM9_TARGETS]
    if unknown:
        raise ValueError(f"unknown QM9 targets {unknown}; choose from {sorted(QM9_TARGETS)}")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)

    molecules = load_qm9(targets=config.targets)
    chosen = slice_indices(len(molecules), config.n_molecules, config.seed)
    molecules = [molecules[i] for i in chosen]
    graphs, errors = featurize_many(molecules, config.featurizer, progress=progress)
    for error in errors:
        print(f"rejected: {error}")
    targets = np.array([[m.info[t] for t in config.targets] for m in molecules])  # [N, T]

    split = qm9_split(len(molecules), seed=config.seed)
    split_file = out / "split.json"
    split.save(split_file)
    (out / "molecule_ids.json").write_text(json.dumps([int(m.info["id"]) for m in molecules]))
    datasets = {part: _dataset(graphs, targets, getattr(split, part)) for part in ("train", "val", "test")}

    model = SCANN(preset(config.model_preset, targets=tuple(config.targets), **config.model_overrides))
    trainer = Trainer(model, config.train, datasets["train"], datasets["val"])
    history = trainer.fit(progress=progress)
    test_mae = trainer.evaluate(datasets["test"])

    units = {t: QM9_TARGETS[t].report_unit for t in config.targets}
    test_report = {t: float(QM9_TARGETS[t].to_report(v)) for t, v in test_mae.items()}
    checkpoint = save_model(
        out / "model.pt",
        model,
        config.featurizer,
        metadata={
            "dataset": "qm9",
            "units": {t: QM9_TARGETS[t].unit for t in config.targets},
            "test_mae": test_mae,
            "split_sha256": split.sha256,
        },
    )
    (out / "history.json").write_text(json.dumps([asdict(r) for r in history.records], indent=1))
    summary = QM9RunSummary(
        out_dir=str(out),
        checkpoint=str(checkpoint),
        split_file=str(split_file),
        n_train=len(datasets["train"]),
        n_val=len(datasets["val"]),
        n_test=len(datasets["test"]),
        n_rejected=len(errors),
        parameters=count_parameters(model),
        epochs_run=len(history.records),
        best_epoch=history.best_epoch,
        test_mae=test_report,
        units=units,
        seconds=time.perf_counter() - start,
    )
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary


def _dataset(graphs: list, targets: np.ndarray, indices: np.ndarray) -> GraphDataset:
    """The featurized molecules of one split part (rejected molecules are left out)."""
    kept = [i for i in indices if graphs[i] is not None]
    return GraphDataset([graphs[i] for i in kept], targets[kept])
