"""The Ray Train side of the worker loop: ``RaySession`` and the ``TorchTrainer`` entry point.

The loop itself is the library's :func:`scannet.train.worker.run_worker`, the same code the Ray-free runner
executes; only the session (rank, device, DDP wrapping, checkpoints, reports) comes from Ray Train V2.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from scannet.train.worker import WorkerConfig, run_worker


class RaySession:
    """The Ray Train calls the worker loop makes."""

    def __init__(self) -> None:
        import ray.train

        self._train = ray.train
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def checkpoint_dir(self):
        checkpoint = self._train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else nullcontext(None)

    def wants_checkpoint(self, metrics: dict[str, Any]) -> bool:
        return True  # every epoch: a restarted worker group loses at most one

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, WorkerConfig]) -> None:
    """The ``TorchTrainer`` entry point: ``train_loop_config={"worker": WorkerConfig}``."""
    run_worker(config["worker"], RaySession())
