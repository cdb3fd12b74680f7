"""The named run presets of :class:`scannet.train.run_config.RunConfig` as plain values: ``scannet train --help``
lists them without importing the trainer."""

from __future__ import annotations

from typing import Any

#: Named run presets, applied over the defaults (command-line values and YAML override them).
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "n_structures": 2000,
        "train": {"epochs": 3, "schedule": "cosine", "lr": 5e-4, "min_lr": 1e-4, "patience": 3},
    },
    "paper": {"n_structures": None},
    "reference": {
        "n_structures": None,
        "model_overrides": {"attention_dropout": 0.05},
        "featurizer": {"molecule_mode": "box10"},
        "split_order": "atom_count",
    },
}
