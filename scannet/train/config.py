"""The training recipe (:class:`TrainConfig`): plain values, importable without torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scannet.train.schedule import ScheduleName
from scannet.typed_config import ConfigError, build


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. Defaults: the reference QM9 SCANN+ recipe (configs/model_qm9.yaml)."""

    epochs: int = 1000
    batch_size: int = 128  # the GLOBAL batch: split evenly over the DDP ranks
    lr: float = 5e-4
    min_lr: float = 1e-4
    schedule: ScheduleName = "sgdr"
    cosine_fraction: float = 0.5  # cosine: the share of all steps the decay to min_lr spans (1: to the last step)
    warmup_epochs: float = 0.0  # linear warm-up of the learning rate from 0 over this many epochs' steps
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (e.g. 0.999)
    inverse_time_decay: float = 1e-5  # legacy Keras Adam `decay`, per step
    l2: float = 1e-4  # L2 on the listed kernels, added to the loss
    adam_eps: float = 1e-7
    patience: int = 200  # epochs without a better validation MAE before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        rules = {
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            "min_lr": (math.isfinite(self.min_lr) and self.min_lr >= 0, "a finite number >= 0"),
            "cosine_fraction": (0 < self.cosine_fraction <= 1, "in (0, 1]"),
            "warmup_epochs": (0 <= self.warmup_epochs < self.epochs, "in [0, epochs)"),
            "ema_decay": (0 <= self.ema_decay < 1, "in [0, 1)"),
            "inverse_time_decay": (
                math.isfinite(self.inverse_time_decay) and self.inverse_time_decay >= 0,
                "a finite number >= 0",
            ),
            "l2": (math.isfinite(self.l2) and self.l2 >= 0, "a finite number >= 0"),
            "adam_eps": (math.isfinite(self.adam_eps) and self.adam_eps > 0, "a finite number > 0"),
            "patience": (self.patience >= 0, ">= 0"),
            "seed": (0 <= self.seed < 2**32, "between 0 and 2**32 - 1"),
        }
        for name, (holds, rule) in rules.items():
            if not holds:
                raise ConfigError(f"train.{name}: must be {rule}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return build(cls, data)
