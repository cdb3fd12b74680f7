"""Static shapes for CUDA graphs: packed batches padded up to a small set of bucket sizes.

A packed batch (:mod:`scannet.batch`) has a new shape every step (A atoms, E edges, B structures), so
``torch.compile(mode="reduce-overhead")`` (CUDA graphs) would record a graph per batch. :func:`pad_batch`
rounds A, E and B up to a bucket of a fixed geometric ladder (:func:`bucket_size`: ``steps_per_octave``
sizes between consecutive powers of two, so at most 1 / steps_per_octave of a batch is padding and an epoch
sees a handful of shapes: the sums over 128 molecules vary by a few percent).

Padding that cannot change the real structures' results:

- every padded atom (Z = 0) belongs to ONE extra dummy structure, index B (so there is always at least one
  padded atom and one dummy structure); further dummy structures B+1.. have no atoms;
- every padded edge goes from the first padded atom to itself (distance 1 Å, solid angles 0): local attention
  is a softmax over each centre atom's edges, so padded edges only reach padded atoms;
- global attention (scores, normalisation, softmax, pooling) is per structure: the dummy structures'
  atoms never enter a real structure's sums;
- ``graph_mask`` [B_pad] bool marks the real structures (a prefix): :func:`real_output` and
  :func:`real_targets` drop the rest before the loss, the predictions and the GA scores.

Everything stays finite (the empty dummy structures pool to zeros), so the masked-out rows carry no NaN into
the gradients: the loss, its gradients, the predictions and the GA scores equal the packed batch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scannet import batch as keys
from scannet.batch import Batch
from scannet.model.scann import SCANNOutput

#: Compiled graphs allowed with static shapes (one per bucket shape): an epoch of QM9 has ~14 (benchmarks/README.md),
#: above dynamo's default of 8 recompilations, after which it would run the forward eagerly.
STATIC_SHAPE_GRAPHS = 64
GRAPH_MASK = "graph_mask"  # [B_pad] bool: True for the real structures (a prefix), only in padded batches
PADDED_DISTANCE = 1.0  # Å, any finite value: padded edges only reach the padded atom


@dataclass(frozen=True)
class ShapeBuckets:
    """The ladder of padded sizes: ``steps_per_octave`` sizes per power of two (a power of two itself)."""

    steps_per_octave: int = 16

    def __post_init__(self) -> None:
        if self.steps_per_octave < 1 or self.steps_per_octave & (self.steps_per_octave - 1):
            raise ValueError(f"steps_per_octave must be a power of two >= 1, got {self.steps_per_octave}")

    def size(self, n: int) -> int:
        """The smallest ladder size >= ``n``: ``n`` rounded up to a multiple of 2^(p - log2 steps), 2^p <= n."""
        if n <= self.steps_per_octave:
            return self.steps_per_octave
        step = 1 << max(0, n.bit_length() - self.steps_per_octave.bit_length())
        return -(-n // step) * step


def _padded(values: torch.Tensor, size: int, fill: float | int) -> torch.Tensor:
    """``values`` [N, ...] followed by ``fill`` rows up to [size, ...]."""
    pad = values.new_full((size - values.shape[0], *values.shape[1:]), fill)
    return torch.cat([values, pad])


def pad_batch(batch: Batch, buckets: ShapeBuckets = ShapeBuckets()) -> Batch:
    """``batch`` (packed, A atoms, E edges, B structures) padded to bucket sizes (A_pad > A, E_pad >= E,
    B_pad > B), with ``graph_mask`` [B_pad] added; see the module docstring for why nothing real changes."""
    n_atoms = batch[keys.N_ATOMS]  # [B]
    A, E, B = batch[keys.NUMBERS].shape[0], batch[keys.EDGE_CENTER].shape[0], n_atoms.shape[0]
    A_pad, E_pad, B_pad = buckets.size(A + 1), buckets.size(E), buckets.size(B + 1)
    dummy_atoms = n_atoms.new_tensor([A_pad - A])
    padded = {
        keys.NUMBERS: _padded(batch[keys.NUMBERS], A_pad, 0),
        keys.GRAPH_INDEX: _padded(batch[keys.GRAPH_INDEX], A_pad, B),
        keys.N_ATOMS: _padded(torch.cat([n_atoms, dummy_atoms]), B_pad, 0),
        keys.EDGE_CENTER: _padded(batch[keys.EDGE_CENTER], E_pad, A),
        keys.EDGE_NEIGHBOR: _padded(batch[keys.EDGE_NEIGHBOR], E_pad, A),
        keys.DISTANCE: _padded(batch[keys.DISTANCE], E_pad, PADDED_DISTANCE),
        keys.SOLID_ANGLE: _padded(batch[keys.SOLID_ANGLE], E_pad, 0.0),
        keys.SOLID_ANGLE_NORM: _padded(batch[keys.SOLID_ANGLE_NORM], E_pad, 0.0),
        GRAPH_MASK: torch.arange(B_pad) < B,
    }
    if keys.TARGETS in batch:
        padded[keys.TARGETS] = _padded(batch[keys.TARGETS], B_pad, 0.0)
    return padded


def real_output(output: SCANNOutput, batch: Batch) -> SCANNOutput:
    """The real structures' rows of a padded batch's output ([B] rows, [A] GA scores); ``output`` itself for a
    packed batch."""
    if GRAPH_MASK not in batch:
        return output
    graphs = batch[GRAPH_MASK]  # [B_pad]
    atoms = graphs.index_select(0, batch[keys.GRAPH_INDEX])  # [A_pad]
    return SCANNOutput(
        normalized=output.normalized[graphs],
        prediction=output.prediction[graphs],
        ga_scores=output.ga_scores[atoms],
        pooled=output.pooled[graphs],
    )


def real_targets(batch: Batch) -> torch.Tensor:
    """The real structures' targets [B, T] of a padded or packed batch."""
    targets = batch[keys.TARGETS]
    return targets[batch[GRAPH_MASK]] if GRAPH_MASK in batch else targets


def compile_forward(forward: torch.nn.Module, static_shapes: bool, device: torch.device) -> torch.nn.Module:
    """``torch.compile`` as training and inference use it: dynamic shapes for packed batches; for padded ones
    (``static_shapes``) a graph per bucket shape, replayed as CUDA graphs on a GPU (``mode="reduce-overhead"``)."""
    if not static_shapes:
        return torch.compile(forward, dynamic=True)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, STATIC_SHAPE_GRAPHS)
    return torch.compile(forward, dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)
