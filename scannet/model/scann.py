"""SCANN and SCANN+ (Vu et al., npj Comput. Mater. 9, 215 (2023)), docs/model-spec.md §3, on packed batches.

Alphabet: A atoms in the batch, E edges (centre i <- neighbour j), B structures, T targets,
E_m embedding dim, d local dim, D global dim, K basis size.

    Z [A] -> embedding [A, E_m] -> σ(Dense) + dropout -> h^0 [A, d]
    SCANN+: G^0 = σ(Dense e(d_ij)) ⊙ σ(Dense a(Ω_ij))  [E, d];  SCANN: e(d_ij) [E, K] and w_ij [E]
    L x LocalAttentionBlock -> h^L [A, d]
    z = σ(Dense h^L) [A, D] -> GlobalAttention -> structure vectors R [B, D], GA scores α [A]
    per target t: ŷ_t = Dense(σ(Dense R)) [B]   (z-scored; de-normalised with the training statistics)

``forward`` = ``readout(encode(batch))``: ``encode`` gives z, ``readout`` pools it (optionally without
some atoms, ``pool_mask``) and applies the heads, so explanations can re-pool z without re-encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scannet import batch as keys
from scannet.batch import Batch
from scannet.model.basis import GaussianBasis
from scannet.model.config import SCANNConfig
from scannet.model.global_attention import GlobalAttention
from scannet.model.layers import dense
from scannet.model.local_attention import LocalAttentionBlock


@dataclass
class SCANNOutput:
    normalized: torch.Tensor  # [B, T] predictions in z-scored units (what the loss sees)
    prediction: torch.Tensor  # [B, T] predictions in the dataset's units
    ga_scores: torch.Tensor  # [A] global-attention score of every atom, sums to 1 per structure
    pooled: torch.Tensor  # [B, D] the structure vectors R the heads read (the applicability domain's input)


class TargetHead(nn.Module):
    """u = σ(Dense_{D→dense_out}(R)); ŷ = Dense_{dense_out→1}(u) (docs/model-spec.md §3.7)."""

    def __init__(self, global_dim: int, hidden: int, nonnegative: bool) -> None:
        super().__init__()
        self.hidden = dense(global_dim, hidden)
        self.out = dense(hidden, 1)
        self.nonnegative = nonnegative

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        y = self.out(F.silu(self.hidden(pooled)))[:, 0]  # [B]
        if self.nonnegative:  # straight-through ReLU: forward max(y, 0), identity gradient
            y = y + (y.clamp(min=0) - y).detach()
        return y


class SCANN(nn.Module):
    """SCANN (``config.g_update=False``) or SCANN+ (``True``) with one head per target."""

    def __init__(self, config: SCANNConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.max_atomic_number + 1, c.embedding_dim)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        self.embed_dense = dense(c.embedding_dim, c.local_dim)
        self.embed_dropout = nn.Dropout(c.embedding_dropout)
        self.distance_basis = GaussianBasis(c.gaussian_distance_max, c.num_gaussians, c.gaussian_width)
        if c.g_update:
            self.angle_basis = GaussianBasis(2 * math.pi, c.num_gaussians, c.gaussian_width)
            self.distance_embed = dense(c.num_gaussians, c.local_dim)
            self.angle_embed = dense(c.num_gaussians, c.local_dim)
        else:
            self.angle_basis = self.distance_embed = self.angle_embed = None
        self.blocks = nn.ModuleList(
            LocalAttentionBlock(
                c.local_dim, c.num_heads, c.g_update, c.num_gaussians, c.attention_dropout, c.ffn_dropout
            )
            for _ in range(c.num_blocks)
        )
        self.to_global = dense(c.local_dim, c.global_dim)
        self.global_attention = GlobalAttention(c.global_dim, c.use_ga_norm)
        self.heads = nn.ModuleList(TargetHead(c.global_dim, c.dense_out, t in c.nonnegative_targets) for t in c.targets)
        self.register_buffer("target_mean", torch.zeros(len(c.targets)))
        self.register_buffer("target_std", torch.ones(len(c.targets)))

    def set_target_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training-split mean and std [T] used to z-score the targets."""
        self.target_mean.copy_(torch.as_tensor(mean, dtype=self.target_mean.dtype))
        self.target_std.copy_(torch.as_tensor(std, dtype=self.target_std.dtype))

    def regularized_linears(self) -> list[nn.Linear]:
        """The kernels carrying the 1e-4 L2 penalty (docs/model-spec.md §3.8): LA q/k/filter, ResidualNorm, after_Lc,
        GA Q/K and each head's hidden layer; not the embedding, neighbor_d/w or the output layer."""
        layers = [layer for block in self.blocks for layer in block.regularized()]
        layers += [self.to_global, *self.global_attention.regularized()]
        return layers + [head.hidden for head in self.heads]

    def l2_penalty(self) -> torch.Tensor:
        return sum(layer.weight.square().sum() for layer in self.regularized_linears())

    def edge_geometry(self, batch: Batch) -> torch.Tensor:
        """SCANN+: G^0 [E, d]. SCANN: the distance basis e(d_ij) [E, K] each block filters itself."""
        dtype = self.embedding.weight.dtype
        distance_basis = self.distance_basis(batch[keys.DISTANCE].to(dtype))  # [E, K]
        if not self.config.g_update:
            return distance_basis
        angle_basis = self.angle_basis(batch[keys.SOLID_ANGLE].to(dtype))  # [E, K]
        return F.silu(self.distance_embed(distance_basis)) * F.silu(self.angle_embed(angle_basis))  # [E, d]

    def encode(self, batch: Batch) -> torch.Tensor:
        """The atoms' inputs to the global-attention pool, z [A, D] (embedding, local attention, to_global)."""
        center, neighbor = batch[keys.EDGE_CENTER], batch[keys.EDGE_NEIGHBOR]  # [E], [E]
        weight = None if self.config.g_update else batch[keys.SOLID_ANGLE_NORM].to(self.embedding.weight.dtype)

        embedded = self.embedding(batch[keys.NUMBERS])  # [A, E_m]
        h = self.embed_dropout(F.silu(self.embed_dense(embedded)))  # [A, d]
        geometry = self.edge_geometry(batch)  # [E, d] or [E, K]
        for block in self.blocks:
            h, geometry = block(h, geometry, center, neighbor, weight)  # [A, d]
        return F.silu(self.to_global(h))  # [A, D]

    def readout(
        self, z: torch.Tensor, graph_index: torch.Tensor, num_graphs: int, pool_mask: torch.Tensor | None = None
    ) -> SCANNOutput:
        """Global attention over z [A, D] and the target heads; ``pool_mask`` [A] bool removes atoms from
        the pool (see :class:`~scannet.model.global_attention.GlobalAttention`).

        Always in the weights' precision, also under ``torch.autocast``: mixed-precision inference
        (``Predictor(precision="bf16")``) runs the embedding and local attention in bfloat16, while the GA
        scores still sum to 1 and the predictions keep float32 resolution.
        """
        with torch.autocast(z.device.type, enabled=False):
            z = z.to(self.target_mean.dtype)  # [A, D]
            pooled, ga_scores = self.global_attention(z, graph_index, num_graphs, pool_mask)  # [B, D], [A]
            normalized = torch.stack([head(pooled) for head in self.heads], dim=1)  # [B, T]
            prediction = normalized * self.target_std + self.target_mean  # [B, T]
        return SCANNOutput(normalized=normalized, prediction=prediction, ga_scores=ga_scores, pooled=pooled)

    def forward(self, batch: Batch, pool_mask: torch.Tensor | None = None) -> SCANNOutput:
        """Predict a batch; ``pool_mask`` [A] bool (optional) removes atoms from the global-attention pool."""
        return self.readout(self.encode(batch), batch[keys.GRAPH_INDEX], batch[keys.N_ATOMS].shape[0], pool_mask)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
