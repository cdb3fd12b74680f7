"""The typed configuration of a training job, its named presets and its YAML / command-line overrides.

Order of precedence: the dataclass defaults, then the preset, then a YAML file, then command-line flags.
Unknown keys and wrong types are rejected with the key named.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from scannet.featurizer import FeaturizerConfig
from scannet.train import TrainConfig


@dataclass(frozen=True)
class TrainJobConfig:
    """Everything a training job depends on; logged to MLflow and saved next to the run."""

    name: str = "scannet-qm9"  # the run name: re-running with the same name resumes it
    data: str = "qm9"  # "qm9" or the path of a structures table (scannet data import)
    targets: tuple[str, ...] = ("homo",)
    n_structures: int | None = None  # a seeded random slice of the data (None: all)
    model_preset: str = "qm9-scann+"  # scannet.model.PRESETS
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig.molecules)
    split_seed: int = 0
    val_fraction: float = 0.1  # non-QM9 data; QM9 uses the standard 110,000 / 10,000 / rest
    test_fraction: float = 0.1
    num_workers: int = 2  # DDP ranks
    use_gpu: bool = False
    cpus_per_worker: int = 1
    precision: str = "fp32"  # "bf16" autocast on GPU
    compile: bool = False  # torch.compile the model (GPU)
    storage_path: str = "runs"  # Ray Train storage (a local folder, a shared path or a URI)
    data_cache: str = "data_cache"  # structures and graph tables, keyed by featurizer hash
    keep_checkpoints: int = 2
    max_failures: int = 1  # worker-group restarts from the latest checkpoint
    mlflow_tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str = "scannet"
    registered_model: str | None = None  # default: scannet-<data>-<targets>
    init_from: str | None = None  # a checkpoint file or a models:/ URI to fine-tune from
    inject_failure_at_epoch: int | None = None  # testing: fail one worker once at this epoch

    @property
    def tracking_uri(self) -> str:
        return (
            self.mlflow_tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path('mlflow.db').resolve()}"
        )

    @property
    def model_name(self) -> str:
        if self.registered_model:
            return self.registered_model
        path = Path(self.data)
        data = "qm9" if self.data == "qm9" else path.stem if path.stem != "structures" else path.parent.name
        return f"scannet-{data}-{'-'.join(self.targets)}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Small and fast on a CPU: a 2,000-molecule QM9 slice, full SCANN+, 3 epochs, 2 DDP workers.
    "demo": {
        "n_structures": 2000,
        "train": {"epochs": 3, "schedule": "cosine", "lr": 5e-4, "min_lr": 1e-4, "patience": 3},
    },
    # The reference recipe (spec §4): all of QM9, standard split, SGDR, up to 1000 epochs, patience 200.
    "paper": {"n_structures": None, "train": {}},
}


def _merge(config: TrainJobConfig, overrides: dict[str, Any], where: str) -> TrainJobConfig:
    """Apply ``overrides`` (nested dicts for train / featurizer), rejecting unknown keys and bad types."""
    known = {f.name: f for f in fields(TrainJobConfig)}
    updates: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {sorted(known)}")
        if key == "train":
            updates[key] = TrainConfig.from_dict({**config.train.to_dict(), **value})
        elif key == "featurizer":
            updates[key] = FeaturizerConfig.from_dict({**config.featurizer.to_dict(), **value})
        elif key == "targets":
            updates[key] = tuple(value) if isinstance(value, list | tuple) else (value,)
        else:
            current = getattr(config, key)
            if current is not None and value is not None and not isinstance(value, type(current)):
                if not (isinstance(current, float) and isinstance(value, int)):
                    raise ValueError(f"{where}: {key!r} must be {type(current).__name__}, got {value!r}")
            updates[key] = value
    return replace(config, **updates)


def build_config(preset: str | None = None, yaml_file: str | None = None, **overrides: Any) -> TrainJobConfig:
    """Defaults -> preset -> YAML file -> explicit overrides (``None`` values are ignored)."""
    config = TrainJobConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        config = _merge(config, PRESETS[preset], f"preset {preset}")
    if yaml_file is not None:
        data = yaml.safe_load(Path(yaml_file).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{yaml_file}: expected a mapping of config keys")
        config = _merge(config, data, yaml_file)
    return _merge(config, {k: v for k, v in overrides.items() if v is not None}, "command line")
