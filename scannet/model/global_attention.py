"""Self-consistent global attention (GA), docs/model-spec.md §3.6.

Alphabet: A atoms in the batch, B structures, D global dim.

The score of atom k is its agreement with every other atom of the same structure,
s_k = K_k · Σ_{q≠k} Q_q, computed as K_k · (Σ_q Q_q − Q_k) in O(A·D). The scores are L2-normalised
across the atoms of each structure (guarded: a one-atom structure has s = 0 and gets α = 1) and
soft-maxed over those atoms into the GA scores α_k, which weight the keys into the structure vector.

An optional ``pool_mask`` [A] (True = kept) removes atoms from the pool: their scores are set to -inf
before the softmax, so the pooled vector is Σ_kept α_k K_k / Σ_kept α_k. The scores themselves (queries
and normalisation) are computed over all atoms as without a mask; only the weighted sum loses the atoms.
This is the deletion test of :mod:`scannet.explain.faithfulness`.
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

    def forward(
        self, z: torch.Tensor, graph_index: torch.Tensor, num_graphs: int, pool_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z [A, D], graph_index [A] -> (structure vectors [B, D], GA scores [A] summing to 1 per structure).

        ``pool_mask`` [A] bool, optional: False removes the atom from the pool (its GA score becomes 0);
        every structure must keep at least one atom. None pools every atom.
        """
        q = self.query(z)  # [A, D]
        k = self.key(z)  # [A, D]
        q_total = segment_sum(q, graph_index, num_graphs)  # [B, D]
        score = (k * (q_total.index_select(0, graph_index) - q)).sum(-1)  # [A]  Σ_{q≠k} K_k·Q_q
        if self.use_norm:
            # clamp before the sqrt: a one-atom structure has s = 0, and sqrt'(0) would give NaN gradients
            norm = segment_sum(score.square(), graph_index, num_graphs).clamp_min(NORM_EPS**2).sqrt()  # [B]
            score = score / norm.index_select(0, graph_index)  # [A]
        if pool_mask is not None:
            check_pool_mask(pool_mask, graph_index, num_graphs)
            score = score.masked_fill(~pool_mask, float("-inf"))  # [A]  removed atoms get α = 0
        ga = segment_softmax(score, graph_index, num_graphs)  # [A]
        pooled = segment_sum(ga[:, None] * k, graph_index, num_graphs)  # [B, D]  (value = key)
        return pooled, ga


def check_pool_mask(pool_mask: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> None:
    """Raise ValueError unless ``pool_mask`` is a bool [A] that keeps at least one atom of every structure."""
    if pool_mask.dtype != torch.bool or pool_mask.shape != graph_index.shape:
        raise ValueError(
            f"pool_mask must be a bool tensor of shape {tuple(graph_index.shape)} (one entry per atom), "
            f"got {pool_mask.dtype} {tuple(pool_mask.shape)}"
        )
    kept = segment_sum(pool_mask.to(torch.int64), graph_index, num_graphs)  # [B]
    empty = torch.nonzero(kept == 0).flatten().tolist()
    if empty:
        raise ValueError(f"pool_mask removes every atom of structures {empty[:10]} of the batch; keep at least one")
