"""In-memory datasets of featurized structures and their loaders (the plain path, without Ray)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scannet.batch import Batch, collate_graphs
from scannet.featurizer.neighbors import Graph


@dataclass
class GraphDataset(Dataset):
    """Graphs with their targets [N, T] (NaN-free, in the dataset's units)."""

    graphs: Sequence[Graph]
    targets: np.ndarray  # [N, T] float

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.float32).reshape(len(self.graphs), -1)
        if not np.all(np.isfinite(self.targets)):
            raise ValueError("targets contain NaN or inf; drop those structures before training")

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> int:
        return index  # the collate function gathers graphs by index, avoiding per-item tuples

    def subset(self, indices: Sequence[int]) -> GraphDataset:
        indices = np.asarray(indices, dtype=np.int64)
        return GraphDataset([self.graphs[i] for i in indices], self.targets[indices])

    def collate(self, indices: Sequence[int]) -> Batch:
        return collate_graphs([self.graphs[i] for i in indices], self.targets[np.asarray(indices)])


def make_loader(dataset: GraphDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A loader of packed batches; shuffled with its own seeded generator when ``shuffle``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate, generator=generator)
