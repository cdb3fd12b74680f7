"""Small building blocks with the reference's (Keras) numerics: Glorot init, zero bias, LN eps 1e-6."""

from __future__ import annotations

from torch import nn

LAYER_NORM_EPS = 1e-6


def dense(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A Linear layer initialised like Keras' Dense: Glorot-uniform kernel, zero bias."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
