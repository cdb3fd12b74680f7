"""Gaussian expansion of scalar edge features (docs/model-spec.md §3.2)."""

from __future__ import annotations

import torch
from torch import nn


class GaussianBasis(nn.Module):
    """φ_k(x) = exp(-(x - μ_k)² / width²), μ = linspace(0, maximum, num); no trainable parameters.

    Args:
        maximum: the last centre (Å for distances, 2π for solid angles).
        num: number of centres K (20).
        width: the Gaussian width (0.5, squared inside as in the reference).
    """

    def __init__(self, maximum: float, num: int = 20, width: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, maximum, num), persistent=False)
        self.inv_width_sq = 1.0 / width**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((x[:, None] - self.centers) ** 2) * self.inv_width_sq)  # [E] -> [E, K]
