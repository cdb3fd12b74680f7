"""Streaming loader of a graph table for ``torch.utils.data`` (the one training ingest path).

:class:`GraphTableDataset` reads the graph Parquet one row group at a time and yields packed batches built
by :func:`~scannet.data.graphs_table.collate_arrow`, so memory is bounded by a row group plus the shuffle
buffer however large the table grows.

Global batches: every rank reads the same seeded sequence of rows (row groups in a per-epoch order, rows
shuffled within a buffer, :meth:`set_epoch`) and cuts it into the same GLOBAL batches of ``batch_size``
structures (or of an atom budget). Rank ``r`` of ``W`` keeps rows ``r, r + W, ...`` of each global batch.
So the union of the ranks' step-``k`` batches is the global batch ``k`` whatever ``W`` is (the recipe does
not change with the number of workers), every rank takes the same number of steps (DDP needs that), and
every selected structure is seen exactly once per epoch. A rank whose share of the last global batch is
empty skips it (use ``drop_last`` when training, see ``scannet.train.worker.split_stream``). Each rank
reads (but only collates its share of) the whole selection: reading is far cheaper than collating.

``select_ids`` restricts the stream to a subset of structures (a split part) without copying the table.
With ``DataLoader(dataset, batch_size=None, num_workers=k)`` loader worker ``w`` collates global batches
``w, w + k, ...``; the DataLoader's round-robin order then yields them in the same order as ``k = 0``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
from scannet.distributed import rank_and_world
from scannet.featurizer.config import FeaturizerConfig

_READ_COLUMNS = [S.NUMBERS, S.EDGE_CENTER, S.EDGE_NEIGHBOR, S.DISTANCE, S.SOLID_ANGLE, S.SOLID_ANGLE_NORM]


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
        seed: base seed of the shuffles; the order depends only on (seed, epoch), never on the rank.
        rank, world_size: this process's share of every global batch; default from ``torch.distributed``.
        drop_last: drop the last incomplete global batch (fixed ``batch_size`` only).
        featurizer: when given, refuse a table made with other settings.
        include_ids: also yield the ids (``(batch, ids)`` pairs instead of batches).
        select_ids: only these structure ids (e.g. one split part); None: every row.
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
        select_ids: Sequence[str] | pa.Array | None = None,
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
        # every row group of every file: (file index, row group index, first row in the file, rows)
        self.blocks = []
        for k, file in enumerate(files):
            first = 0
            for g in range(file.num_row_groups):
                rows = file.metadata.row_group(g).num_rows
                self.blocks.append((k, g, first, rows))
                first += rows
        # selected rows of each file: a boolean mask (None: all); ids are matched in Arrow, no Python strings
        self.masks: list[np.ndarray | None] = [None] * len(files)
        if select_ids is not None:
            wanted = pa.array(select_ids, pa.string()) if not isinstance(select_ids, pa.Array) else select_ids
            for k, file in enumerate(files):
                ids = file.read(columns=[S.ID]).column(S.ID)
                self.masks[k] = pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False)
        self.num_rows = sum(
            rows if mask is None else int(mask.sum()) for mask, rows in zip(self.masks, self._file_rows(files))
        )
        self.batch_size = batch_size
        self.max_atoms = max_atoms
        self.shuffle = shuffle
        self.shuffle_buffer_size = max(shuffle_buffer_size, batch_size)
        self.seed = seed
        default_rank, default_world = rank_and_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} not in [0, world_size={self.world_size})")
        self.drop_last = drop_last
        self.include_ids = include_ids
        self.epoch = 0

    @staticmethod
    def _file_rows(files: list[pq.ParquetFile]) -> list[int]:
        return [file.metadata.num_rows for file in files]

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle for the next pass, like ``DistributedSampler.set_epoch``."""
        self.epoch = epoch

    def num_batches(self) -> int:
        """Global batches per epoch (= steps of every rank) for a fixed ``batch_size``."""
        if self.max_atoms is not None:
            raise ValueError("the number of batches of an atom-budget stream is only known after reading it")
        full, rest = divmod(self.num_rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _block_order(self) -> list[int]:
        order = np.arange(len(self.blocks))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return order.tolist()

    # ---------------------------------------------------------------------------------------- iterating

    def _tables(self) -> Iterator[pa.Table]:
        """The selected rows of every row group, in this epoch's block order (one file open at a time)."""
        columns = [S.ID, *_READ_COLUMNS, *self.targets] if self.include_ids else [*_READ_COLUMNS, *self.targets]
        for b in self._block_order():
            k, g, first, rows = self.blocks[b]
            mask = self.masks[k]
            if mask is not None and not mask[first : first + rows].any():
                continue
            with pq.ParquetFile(self.files[k]) as file:
                table = file.read_row_group(g, columns=columns)
            yield table if mask is None else table.filter(pa.array(mask[first : first + rows]))

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

    def global_batches(self) -> Iterator[pa.Table]:
        """This epoch's global batches (all ranks' rows), the same sequence on every rank."""
        tables = self._tables()
        if self.shuffle:
            tables = self._shuffled(tables, np.random.default_rng([self.seed, self.epoch]))
        return self._batches(tables)

    def __iter__(self) -> Iterator[Batch] | Iterator[tuple[Batch, list[str]]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for k, table in enumerate(self.global_batches()):
            if k % workers != worker:
                continue
            if self.world_size > 1:
                table = table.take(np.arange(self.rank, table.num_rows, self.world_size))
            if table.num_rows == 0:
                continue
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
