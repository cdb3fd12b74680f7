"""An exponential moving average (EMA) of a model's parameters, updated after every optimiser step.

``average ← d_t · average + (1 - d_t) · weights`` with ``d_t = min(decay, (1 + t) / (10 + t))`` at update t (the
usual warm-up: early updates follow the weights closely, so the average does not drag the random initial weights
along). Buffers (the target statistics) are not averaged: they are constants of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.model, self.decay, self.updates = model, decay, 0
        self.names = [name for name, _ in model.named_parameters()]
        self.average = [p.detach().clone() for p in model.parameters()]

    def _parameters(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.model.parameters()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, self._parameters(), 1.0 - decay)

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own weights again after it."""
        weights = self._parameters()
        saved = [w.clone() for w in weights]
        torch._foreach_copy_(weights, self.average)
        try:
            yield
        finally:
            torch._foreach_copy_(weights, saved)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "average": dict(zip(self.names, self.average))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        average = state["average"]
        if list(average) != self.names:
            raise ValueError("the checkpoint's weight average holds other parameters than the model")
        self.updates = state["updates"]
        self.average = [average[name].to(p.device) for name, p in zip(self.names, self.average)]
