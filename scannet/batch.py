"""Packed graph batches: the one input layout of every SCANN model.

Structures are concatenated, not padded: a batch of B structures with A atoms and E edges in total
holds flat atom and edge arrays plus the structure index of every atom. Nothing is padded to the
largest molecule, so the cost of a batch is proportional to its real size.

Keys and shapes (A = atoms in the batch, E = kept neighbour edges, B = structures, T = targets):

    numbers           [A] int64    Z of every atom
    graph_index       [A] int64    structure (0..B-1) each atom belongs to, non-decreasing
    n_atoms           [B] int64    atoms per structure
    edge_center       [E] int64    batch index of the centre atom i (edge i <- j), non-decreasing
    edge_neighbor     [E] int64    batch index of the neighbour atom j
    distance          [E] float32  d_ij, Å
    solid_angle       [E] float32  Ω_ij, sr (SCANN+ weight)
    solid_angle_norm  [E] float32  Ω_ij / Ω_max,i (SCANN weight)
    targets           [B, T] float32  optional, in the units of the dataset

The atom and edge keys are the field names of :class:`~scannet.featurizer.neighbors.Graph` and the
column names of the graph table (:mod:`scannet.data.schema`, which defines them once).

A batch is a plain ``dict[str, torch.Tensor]`` so that Ray Train and ``tensor.to(device)`` move it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from scannet.data.schema import DISTANCE, EDGE_CENTER, EDGE_NEIGHBOR, NUMBERS, SOLID_ANGLE, SOLID_ANGLE_NORM
from scannet.featurizer.neighbors import Graph

GRAPH_INDEX = "graph_index"
N_ATOMS = "n_atoms"
TARGETS = "targets"

__all__ = [
    "DISTANCE",
    "EDGE_CENTER",
    "EDGE_NEIGHBOR",
    "GRAPH_INDEX",
    "N_ATOMS",
    "NUMBERS",
    "SOLID_ANGLE",
    "SOLID_ANGLE_NORM",
    "TARGETS",
    "Batch",
    "batch_to",
    "collate_graphs",
    "num_graphs",
]

Batch = dict[str, torch.Tensor]


def collate_graphs(graphs: Sequence[Graph], targets: np.ndarray | None = None) -> Batch:
    """Pack featurized structures (and optionally their [B, T] targets) into one batch."""
    if len(graphs) == 0:
        raise ValueError("cannot collate an empty list of graphs")
    n_atoms = np.fromiter((g.n_atoms for g in graphs), np.int64, len(graphs))  # [B]
    n_edges = np.fromiter((g.n_edges for g in graphs), np.int64, len(graphs))  # [B]
    atom_offset = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges)  # [E]
    batch = {
        NUMBERS: np.concatenate([g.numbers for g in graphs]),
        GRAPH_INDEX: np.repeat(np.arange(len(graphs), dtype=np.int64), n_atoms),
        N_ATOMS: n_atoms,
        EDGE_CENTER: np.concatenate([g.edge_center for g in graphs]) + atom_offset,
        EDGE_NEIGHBOR: np.concatenate([g.edge_neighbor for g in graphs]) + atom_offset,
        DISTANCE: np.concatenate([g.distance for g in graphs]),
        SOLID_ANGLE: np.concatenate([g.solid_angle for g in graphs]),
        SOLID_ANGLE_NORM: np.concatenate([g.solid_angle_norm for g in graphs]),
    }
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float32).reshape(len(graphs), -1)
        batch[TARGETS] = targets
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def num_graphs(batch: Batch) -> int:
    return int(batch[N_ATOMS].shape[0])
