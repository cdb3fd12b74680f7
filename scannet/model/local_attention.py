"""Local attention (LA) over Voronoi neighbours, docs/model-spec.md §3.3.

Alphabet: A atoms in the batch, E edges (centre i <- neighbour j), d local dim, H heads,
d_h = d / H head dim, K basis size.

Each block: the neighbour vectors h_j are modulated by a geometry filter F_ij, projected into keys
k_ij (the value is the key), attended to by the projected query q_i of the centre with a softmax over
the centre's neighbours, and added to q_i (the residual is the projected query, not h_i), then an FFN
ResidualNorm. An atom with no neighbour gets an empty context: h_i' = LN(q_i).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scannet.model.layers import dense, layer_norm
from scannet.model.ops import segment_softmax, segment_sum


class ResidualNorm(nn.Module):
    """h'' = LN(h' + Dropout(W_2 σ(W_1 h'))) with an FFN of the same width (docs/model-spec.md §3.3 step 8)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.inner = dense(dim, dim)
        self.outer = dense(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = layer_norm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.dropout(self.outer(F.silu(self.inner(h)))))  # [A, d]

    def regularized(self) -> list[nn.Linear]:
        return [self.inner, self.outer]


class LocalAttentionBlock(nn.Module):
    """One LA block of SCANN (static geometry filter) or SCANN+ (edge features updated here).

    Args:
        dim: d, the local dim.
        num_heads: H.
        g_update: SCANN+ when True: G_ij <- LN_g(σ(W[h_i, G_ij, h_j]) + G_ij) and F_ij = G_ij.
            SCANN when False: F_ij = σ(W e(d_ij)) · w_ij with this block's own filter W.
        num_gaussians: K, width of the distance basis the SCANN filter reads.
        attention_dropout: dropout on the attention maps.
        ffn_dropout: dropout inside the ResidualNorm.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        g_update: bool,
        num_gaussians: int = 20,
        attention_dropout: float = 0.0,
        ffn_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.g_update = g_update
        if g_update:
            self.geometry = dense(3 * dim, dim)  # W over [h_i, G_ij, h_j]
            self.geometry_norm = layer_norm(dim)
        else:
            self.geometry = dense(num_gaussians, dim)  # W over the distance basis e(d_ij)
            self.geometry_norm = None
        self.query = dense(dim, dim)
        self.key = dense(dim, dim)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.norm = layer_norm(dim)
        self.ffn = ResidualNorm(dim, ffn_dropout)

    def regularized(self) -> list[nn.Linear]:
        return [self.geometry, self.query, self.key, *self.ffn.regularized()]

    def updated_geometry(
        self, h: torch.Tensor, geometry: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor
    ) -> torch.Tensor:
        """SCANN+ edge update G' = LN_g(σ(W [h_i, G, h_j] + b) + G).

        W [d, 3d] is applied block-wise: W_i h and W_j h once per atom, then gathered per edge, which
        is exact and saves two [E, d] x [d, d] products per block.
        """
        w_center, w_edge, w_neighbor = self.geometry.weight.split(self.dim, dim=1)  # 3 x [d, d]
        projected = (
            F.linear(h, w_center).index_select(0, center)  # [E, d]
            + F.linear(geometry, w_edge, self.geometry.bias)  # [E, d]
            + F.linear(h, w_neighbor).index_select(0, neighbor)  # [E, d]
        )
        return self.geometry_norm(F.silu(projected) + geometry)  # [E, d]

    def forward(
        self,
        h: torch.Tensor,
        geometry: torch.Tensor,
        center: torch.Tensor,
        neighbor: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the local-structure vectors.

        Args:
            h: [A, d] local-structure vectors.
            geometry: SCANN+: G [E, d], the edge features of the previous block. SCANN: e(d_ij) [E, K].
            center, neighbor: [E] batch indices of i and j for every edge.
            weight: SCANN only, [E] the normalised solid angle w_ij.

        Returns:
            (h'' [A, d], geometry for the next block: G' [E, d] for SCANN+, the unchanged basis for SCANN).
        """
        A, E, H, d_h = h.shape[0], center.shape[0], self.num_heads, self.head_dim
        if self.g_update:
            geometry = self.updated_geometry(h, geometry, center, neighbor)  # [E, d]
            edge_filter = geometry  # [E, d]
        else:
            edge_filter = F.silu(self.geometry(geometry)) * weight[:, None]  # [E, d]
        x = h.index_select(0, neighbor) * edge_filter  # [E, d]  neighbour modulated by geometry
        q = self.query(h)  # [A, d]
        k = self.key(x).view(E, H, d_h)  # [E, H, d_h]  (value = key)
        logits = (q.index_select(0, center).view(E, H, d_h) * k).sum(-1) * d_h**-0.5  # [E, H]
        alpha = self.attention_dropout(segment_softmax(logits, center, A))  # [E, H]
        context = segment_sum(alpha[..., None] * k, center, A).view(A, self.dim)  # [A, d]
        h = self.norm(context + q)  # [A, d]
        return self.ffn(h), geometry
