"""Segment (scatter) operations on packed batches, in plain torch (no torch-scatter).

A segment is a group of rows sharing an id in ``index`` (the edges of one centre atom, or the atoms
of one structure). ``num_segments`` is the number of groups; a group with no rows yields zeros.
"""

from __future__ import annotations

import torch


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum rows of ``values`` [R, ...] into [num_segments, ...] by ``index`` [R]."""
    out = values.new_zeros((num_segments, *values.shape[1:]))
    return out.index_add_(0, index, values)


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``logits`` [R, ...] within each segment of ``index`` [R]; returns [R, ...].

    The per-segment maximum is subtracted for stability (it does not change the result, so it is
    taken without gradient).
    """
    expanded = index.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    seg_max = logits.new_full((num_segments, *logits.shape[1:]), float("-inf"))
    seg_max = seg_max.scatter_reduce(0, expanded, logits.detach(), reduce="amax", include_self=True)
    exp = torch.exp(logits - seg_max.index_select(0, index))  # [R, ...]
    denominator = segment_sum(exp, index, num_segments)  # [num_segments, ...]
    return exp / denominator.index_select(0, index)
