"""Numeric precision of the model's forward pass, one definition for training and inference.

"fp32" runs in the weights' own precision; "bf16" runs under ``torch.autocast(dtype=torch.bfloat16)`` (matrix
products in bfloat16: faster on GPUs and on CPUs with AMX/AVX-512-BF16). ``SCANN.readout`` always runs in the
weights' precision, so GA scores and predictions keep float32 resolution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`; raises ConfigError (one line) otherwise."""
    from scannet.typed_config import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"precision: must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """The context a forward pass of ``precision`` runs in on ``device`` (a disabled autocast for fp32)."""
    import torch  # here, not at the top: the CLI reads PRECISIONS for its flags without torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
