"""Streaming loader of a graph table for ``torch.utils.data`` (the plain path, without Ray).

:class:`GraphTableDataset` reads the graph Parquet one row group at a time and yields packed batches built
by :func:`~scannet.data.graphs_table.collate_arrow`, so memory is bounded by a row group plus the shuffle
buffer however large the table grows.

Sharding: the row groups of all files are put in a seeded order (new each epoch, :meth:`set_epoch`), and
that sequence of rows is cut into ``world_size × num_workers`` contiguous ranges of equal size (±1 row).
Each (rank, DataLoader worker) reads only the row groups its range overlaps, so every structure is seen
exactly once per epoch across all ranks and workers. Use it with ``DataLoader(dataset, batch_size=None,
num_workers=k)``; batches are already packed.

Note for DDP: with a fixed ``batch_size`` the ranks' batch counts differ by at most one; with an atom
budget they can differ more. Training loops must tolerate that (e.g. ``torch.distributed.algorithms.Join``)
or pass ``drop_last=True`` and a budget-free batch size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from scannet.batch import Batch
from scannet.data import schema as S
from scannet.data.graphs_table import (
    atom_budget_slices,
    collate_arrow,
    graph_table_files,
    open_graph_table,
    row_atom_counts,
)
from scannet.featurizer.config import FeaturizerConfig

_READ_COLUMNS = [S.NUMBERS, S.EDGE_CENTER, S.EDGE_NEIGHBOR, S.DISTANCE, S.SOLID_ANGLE, S.SOLID_ANGLE_NORM]


def _distributed_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class GraphTableDataset(IterableDataset):
    """Packed batches streamed from a graph table.

    Args:
        path: the graph table (a folder from ``featurize_table``/Ray, its ``graphs/`` folder or one file).
        targets: target columns to put in ``batch["targets"]`` [B, T], in order.
        batch_size: structures per batch (ignored when ``max_atoms`` is given).
        max_atoms: atom budget per batch instead of a fixed count; structures are never split, a structure
            above the budget gets a batch of its own.
        shuffle: shuffle the row-group order (per epoch) and rows within a local buffer.
        shuffle_buffer_size: rows gathered before they are shuffled and cut into batches.
        seed: base seed of the shuffles; the order depends only on (seed, epoch, shard).
        rank, world_size: this process's shard; default from ``torch.distributed`` (0, 1 when not set up).
        drop_last: drop each shard's last incomplete batch (fixed ``batch_size`` only).
        featurizer: when given, refuse a table made with other settings.
        include_ids: also yield the ids (``(batch, ids)`` pairs instead of batches).
    """

    def __init__(
        self,
        path: str | Path,
        targets: Sequence[str] = (),
        batch_size: int = 128,
        max_atoms: int | None = None,
        shuffle: bool = False,
        shuffle_buffer_size: int = 8192,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        featurizer: FeaturizerConfig | None = None,
        include_ids: bool = False,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        files = open_graph_table(path, featurizer)
        self.files = [str(p) for p in graph_table_files(path)]
        self.targets = list(targets)
        missing = [t for t in self.targets if t not in files[0].schema_arrow.names]
        if missing:
            raise ValueError(f"targets {missing} are not columns of the graph table {path}")
        # every row group of every file: (file index, row group index, rows)
        self.blocks = [
            (k, g, file.metadata.row_group(g).num_rows)
            for k, file in enumerate(files)
            for g in range(file.num_row_groups)
        ]
        self.num_rows = sum(rows for _, _, rows in self.blocks)
        self.batch_size = batch_size
        self.max_atoms = max_atoms
        self.shuffle = shuffle
        self.shuffle_buffer_size = max(shuffle_buffer_size, batch_size)
        self.seed = seed
        default_rank, default_world = _distributed_rank_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} not in [0, world_size={self.world_size})")
        self.drop_last = drop_last
        self.include_ids = include_ids
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle and the shard assignment, like ``DistributedSampler.set_epoch``."""
        self.epoch = epoch

    # ---------------------------------------------------------------------------------------- sharding

    def _block_order(self) -> list[int]:
        order = np.arange(len(self.blocks))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return order.tolist()

    def shard_plan(self, shard: int, num_shards: int) -> list[tuple[int, int, int, int]]:
        """(file, row group, first row, end row) pieces of shard ``shard`` of ``num_shards`` this epoch."""
        start = self.num_rows * shard // num_shards
        end = self.num_rows * (shard + 1) // num_shards
        pieces, position = [], 0
        for b in self._block_order():
            k, g, rows = self.blocks[b]
            lo, hi = max(start, position), min(end, position + rows)
            if lo < hi:
                pieces.append((k, g, lo - position, hi - position))
            position += rows
        return pieces

    def _shard(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    # ---------------------------------------------------------------------------------------- iterating

    def _tables(self, shard: int, num_shards: int) -> Iterator[pa.Table]:
        columns = [S.ID, *_READ_COLUMNS, *self.targets] if self.include_ids else [*_READ_COLUMNS, *self.targets]
        for k, g, lo, hi in self.shard_plan(shard, num_shards):
            with pq.ParquetFile(self.files[k]) as file:  # only one file open at a time, whatever the table size
                table = file.read_row_group(g, columns=columns)
            yield table.slice(lo, hi - lo)

    def _shuffled(self, tables: Iterator[pa.Table], rng: np.random.Generator) -> Iterator[pa.Table]:
        """Rows in buffers of ``shuffle_buffer_size``, each buffer permuted (the leftover of a cut carried on)."""
        buffer: list[pa.Table] = []
        rows = 0
        for table in tables:
            buffer.append(table)
            rows += table.num_rows
            if rows >= self.shuffle_buffer_size:
                merged = pa.concat_tables(buffer)
                yield merged.take(rng.permutation(merged.num_rows))
                buffer, rows = [], 0
        if rows:
            merged = pa.concat_tables(buffer)
            yield merged.take(rng.permutation(merged.num_rows))

    def _batches(self, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """Cut the row stream into batches (fixed count or atom budget), carrying remainders across tables."""
        carry: pa.Table | None = None
        for table in tables:
            if carry is not None and carry.num_rows:
                table = pa.concat_tables([carry, table])
            if self.max_atoms is not None:
                slices = atom_budget_slices(row_atom_counts(table.combine_chunks()), self.max_atoms)
                for start, end in slices[:-1]:
                    yield table.slice(start, end - start)
                start, end = slices[-1]
                carry = table.slice(start, end - start)  # the last one may still grow
            else:
                full = table.num_rows // self.batch_size * self.batch_size
                for start in range(0, full, self.batch_size):
                    yield table.slice(start, self.batch_size)
                carry = table.slice(full)
        if carry is not None and carry.num_rows and not (self.drop_last and self.max_atoms is None):
            yield carry

    def __iter__(self) -> Iterator[Batch] | Iterator[tuple[Batch, list[str]]]:
        shard, num_shards = self._shard()
        tables = self._tables(shard, num_shards)
        if self.shuffle:
            tables = self._shuffled(tables, np.random.default_rng([self.seed, self.epoch, shard]))
        for table in self._batches(tables):
            table = table.combine_chunks()
            batch = collate_arrow(table, self.targets)
            if self.include_ids:
                yield batch, table.column(S.ID).to_pylist()
            else:
                yield batch


def make_table_loader(dataset: GraphTableDataset, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over the already-packed batches of ``dataset`` (``batch_size=None``)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=num_workers, persistent_workers=False, **kwargs
    )
