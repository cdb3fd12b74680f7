"""Self-consistent global attention (GA), spec §3.6.

Alphabet: A atoms in the batch, B structures, D global dim.

The score of atom k is its agreement with every other atom of the same structure,
s_k = K_k · Σ_{q≠k} Q_q, computed as K_k · (Σ_q Q_q − Q_k) in O(A·D). The scores are L2-normalised
across the atoms of each structure (guarded: a one-atom structure has s = 0 and gets α = 1) and
soft-maxed over those atoms into the GA scores α_k, which weight the keys into the structure vector.
"""

from __future__ import annotations

import torch
from torch import nn

from scannet.model.layers import dense
from scannet.model.ops import segment_softmax, segment_sum

NORM_EPS = 1e-12


class GlobalAttention(nn.Module):
    """Args: dim: D. use_norm: L2-normalise the scores across atoms before the softmax."""

    def __init__(self, dim: int, use_norm: bool = True) -> None:
        super().__init__()
        self.query = dense(dim, dim)
        self.key = dense(dim, dim)
        self.use_norm = use_norm

    def regularized(self) -> list[nn.Linear]:
        return [self.query, self.key]

    def forward(self, z: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z [A, D], graph_index [A] -> (structure vectors [B, D], GA scores [A] summing to 1 per structure)."""
        q = self.query(z)  # [A, D]
        k = self.key(z)  # [A, D]
        q_total = segment_sum(q, graph_index, num_graphs)  # [B, D]
        score = (k * (q_total.index_select(0, graph_index) - q)).sum(-1)  # [A]  Σ_{q≠k} K_k·Q_q
        if self.use_norm:
            # clamp before the sqrt: a one-atom structure has s = 0, and sqrt'(0) would give NaN gradients
            norm = segment_sum(score.square(), graph_index, num_graphs).clamp_min(NORM_EPS**2).sqrt()  # [B]
            score = score / norm.index_select(0, graph_index)  # [A]
        ga = segment_softmax(score, graph_index, num_graphs)  # [A]
        pooled = segment_sum(ga[:, None] * k, graph_index, num_graphs)  # [B, D]  (value = key)
        return pooled, ga
