"""Learning-rate schedules of the reference recipe (docs/model-spec.md §4.2), with state for exact resume.

The learning rate at optimiser step t of epoch e is ``warmup(t) · base(t, e) / (1 + decay · t)``: an optional
linear warm-up, the base schedule (cosine per step, or SGDR per epoch driven by the validation MAE) and the legacy
Keras Adam inverse-time decay.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

ScheduleName = Literal["cosine", "sgdr", "constant"]


@dataclass
class SGDRState:
    """State of the reference's SGDRC callback (warm restarts with shrinking peaks)."""

    triggered: bool = False
    cycle_length: int = 50
    t_cur: int = 1
    peak_current: float = 0.0
    peak_next: float = 0.0
    best: float = math.inf


class LearningRateSchedule:
    """Args:
    name: "cosine" (per step, lr -> min_lr over ``cosine_fraction`` of all steps, then flat; after a warm-up the
        cosine starts where the warm-up ends),
        "sgdr" (per epoch warm restarts: cycles t0, t0·tmult, ...; each new peak is the previous one
        divided by ``compression`` but never below the lr at the last improvement), or "constant".
    lr, min_lr: peak and floor.
    steps_per_epoch, epochs: the run's length (cosine).
    inverse_time_decay: the legacy Adam ``decay`` factor 1 / (1 + decay · step) (1e-5).
    """

    def __init__(
        self,
        name: ScheduleName,
        lr: float,
        min_lr: float,
        steps_per_epoch: int,
        epochs: int,
        inverse_time_decay: float = 1e-5,
        cosine_fraction: float = 0.5,
        warmup_steps: int = 0,
        sgdr_t0: int = 50,
        sgdr_tmult: float = 2.0,
        sgdr_compression: float = 1.2,
    ) -> None:
        if name not in ("cosine", "sgdr", "constant"):
            raise ValueError(f"unknown schedule {name!r}; choose cosine, sgdr or constant")
        self.name, self.lr, self.min_lr = name, lr, min_lr
        self.warmup_steps = warmup_steps
        self.decay_steps = max(1, int(cosine_fraction * steps_per_epoch * epochs) - warmup_steps)
        self.inverse_time_decay = inverse_time_decay
        self.sgdr_tmult, self.sgdr_compression = sgdr_tmult, sgdr_compression
        self.sgdr = SGDRState(cycle_length=sgdr_t0, peak_current=lr, peak_next=lr)
        self.epoch_lr = lr

    def start_epoch(self) -> None:
        """SGDR: advance the cycle at the start of an epoch (no effect for the other schedules)."""
        s = self.sgdr
        if self.name != "sgdr" or not s.triggered:
            self.epoch_lr = self.lr
            return
        s.t_cur += 1
        if s.t_cur > s.cycle_length:
            s.cycle_length, s.t_cur, s.peak_current = int(s.cycle_length * self.sgdr_tmult), 1, s.peak_next
        cosine = (1 + math.cos(math.pi * s.t_cur / s.cycle_length)) / 2
        self.epoch_lr = self.min_lr + (s.peak_current - self.min_lr) * cosine

    def end_epoch(self, val_mae: float, trigger: float = 300.0) -> None:
        """SGDR: record the epoch's validation MAE (z-scored units, as the reference)."""
        s = self.sgdr
        if self.name != "sgdr":
            return
        if val_mae <= trigger:
            s.triggered = True
        if s.triggered and val_mae < s.best:
            s.best = val_mae
            s.peak_next = max(s.peak_current / self.sgdr_compression, self.epoch_lr)

    def lr_at(self, step: int) -> float:
        if self.name == "cosine":
            alpha = self.min_lr / self.lr
            progress = min(max(step - self.warmup_steps, 0), self.decay_steps) / self.decay_steps
            base = self.lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)
        else:
            base = self.epoch_lr
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warmup * base / (1 + self.inverse_time_decay * step)

    def state_dict(self) -> dict[str, Any]:
        return {"sgdr": asdict(self.sgdr), "epoch_lr": self.epoch_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sgdr = SGDRState(**state["sgdr"])
        self.epoch_lr = state["epoch_lr"]
