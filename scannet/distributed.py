"""The few collectives a training run needs; each is the identity without an initialised process group."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) without an initialised process group."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def all_reduce_sum(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sum a vector over ranks in float64; returns a numpy array."""
    tensor = torch.as_tensor(values, dtype=torch.float64).detach().clone()
    if not is_distributed():
        return tensor.cpu().numpy()
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (a one-element list without a process group)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
