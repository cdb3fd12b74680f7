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
Loader worker processes (:func:`make_table_loader` with ``num_workers=k``): worker ``w`` reads the same row
sequence, gathers and collates global batches ``w, w + k, ...`` and sends each as one buffer; the
DataLoader's round-robin order yields them in the same order as ``k = 0``.
"""

from __future__ import annotations

import math
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
from scannet.static_shapes import pad_batch

#: a table and the rows of it [N] int64 that make a batch (or a shuffle buffer), in order
Rows = tuple[pa.Table, np.ndarray]

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
        static_shapes: pad every batch to a bucket shape (:func:`scannet.static_shapes.pad_batch`) in the
            loader (its worker processes, when there are any), for CUDA graphs.
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
        static_shapes: bool = False,
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
        self.static_shapes = static_shapes
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

    def _shuffled(self, tables: Iterator[pa.Table], rng: np.random.Generator) -> Iterator[Rows]:
        """Rows in buffers of ``shuffle_buffer_size``: each buffer with its rows in a permuted order [N] (the
        rows are gathered later, per batch, by the process that collates it: loader workers share that work)."""
        buffer: list[pa.Table] = []
        rows = 0
        for table in tables:
            buffer.append(table)
            rows += table.num_rows
            if rows >= self.shuffle_buffer_size:
                yield pa.concat_tables(buffer).combine_chunks(), rng.permutation(rows)
                buffer, rows = [], 0
        if rows:
            yield pa.concat_tables(buffer).combine_chunks(), rng.permutation(rows)

    def _batches(self, stream: Iterator[Rows]) -> Iterator[Rows]:
        """Cut the row stream into batches (fixed count or atom budget), carrying remainders across tables."""
        carry: pa.Table | None = None  # the rows of the last table not yet in a batch, in stream order
        for table, rows in stream:
            if carry is not None and carry.num_rows:
                rows = np.concatenate([np.arange(carry.num_rows), rows + carry.num_rows])
                table = pa.concat_tables([carry, table]).combine_chunks()  # take() from one chunk is far faster
            if self.max_atoms is not None:
                slices = atom_budget_slices(row_atom_counts(table)[rows], self.max_atoms)
                for start, end in slices[:-1]:
                    yield table, rows[start:end]
                start, end = slices[-1]  # the last one may still grow
            else:
                full = len(rows) // self.batch_size * self.batch_size
                for start in range(0, full, self.batch_size):
                    yield table, rows[start : start + self.batch_size]
                start, end = full, len(rows)
            carry = table.take(rows[start:end])
        if carry is not None and carry.num_rows and not (self.drop_last and self.max_atoms is None):
            yield carry, np.arange(carry.num_rows)

    def global_batches(self) -> Iterator[Rows]:
        """This epoch's global batches (all ranks' rows), the same sequence on every rank: each as a table
        and the rows of it [b] that make the batch, in order (``table.take(rows)``)."""
        tables = self._tables()
        if self.shuffle:
            stream = self._shuffled(tables, np.random.default_rng([self.seed, self.epoch]))
        else:
            stream = ((table, np.arange(table.num_rows)) for table in tables)
        return self._batches(stream)

    def __iter__(self) -> Iterator[Batch] | Iterator[tuple[Batch, list[str]]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for k, (table, rows) in enumerate(self.global_batches()):
            if k % workers != worker:
                continue
            rows = rows[self.rank :: self.world_size]
            if len(rows) == 0:
                continue
            table = table.take(rows).combine_chunks()
            batch = collate_arrow(table, self.targets)
            if self.static_shapes:
                batch = pad_batch(batch)
            if info is not None:  # a loader worker process: one buffer through the pipe
                batch = to_wire(batch)
            if self.include_ids:
                yield batch, table.column(S.ID).to_pylist()
            else:
                yield batch


# ------------------------------------------------------------------------------ loader worker processes

#: (key, dtype, shape, byte offset) of every tensor of a batch in its wire buffer
WireLayout = tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]
_ALIGN = 8  # bytes: every tensor starts at a multiple of the largest itemsize (int64)


def to_wire(batch: Batch) -> tuple[WireLayout, bytearray]:
    """A batch as one byte buffer and its layout, what a loader worker sends to the training process.

    Torch would send every tensor of a worker's batch through a shared-memory segment of its own (a file and
    a descriptor per tensor); one pickled buffer per batch goes through the pipe several times faster
    (figures: benchmarks/README.md).
    """
    layout, parts, offset = [], [], 0
    for key, value in batch.items():
        data = memoryview(value.contiguous().numpy()).cast("B")
        pad = -len(data) % _ALIGN
        layout.append((key, value.dtype, tuple(value.shape), offset))
        parts += [data, bytes(pad)]
        offset += len(data) + pad
    return tuple(layout), bytearray().join(parts)


def from_wire(wire: tuple[WireLayout, bytearray], pin_memory: bool = False) -> Batch:
    """The batch of :func:`to_wire`: views of one tensor holding the buffer (pinned when asked: one copy)."""
    layout, data = wire
    flat = torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.zeros(0, dtype=torch.uint8)
    if pin_memory:
        flat = flat.pin_memory()
    batch = {}
    for key, dtype, shape, offset in layout:
        size = math.prod(shape) * dtype.itemsize
        batch[key] = flat[offset : offset + size].view(dtype).view(shape)
    return batch


def _unchanged(item: object) -> object:
    """The loader's collate function: the dataset's items are already batches (default_convert would turn
    a wire buffer into a list of ints)."""
    return item


def pin_batch(batch: Batch) -> Batch:
    return {key: value.pin_memory() for key, value in batch.items()}


class TableLoader:
    """The batches of a :class:`GraphTableDataset`, collated in this process (``num_workers=0``) or in
    ``num_workers`` loader worker processes (a ``DataLoader``: worker ``w`` collates global batches
    ``w, w + k, ...`` and the round-robin yields them in the order of ``num_workers=0``).

    ``pin_memory``: the batches come in page-locked memory, so ``batch_to(batch, "cuda")`` (non-blocking)
    copies them asynchronously; only where CUDA exists.
    """

    def __init__(self, dataset: GraphTableDataset, num_workers: int = 0, pin_memory: bool = False) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory

    def __iter__(self) -> Iterator[Batch] | Iterator[tuple[Batch, list[str]]]:
        items = self.dataset
        if self.num_workers:
            items = torch.utils.data.DataLoader(  # a generator of its own: the global RNG (dropout) stays untouched
                self.dataset,
                batch_size=None,
                num_workers=self.num_workers,
                collate_fn=_unchanged,
                generator=torch.Generator(),
            )
        for item in items:
            batch, ids = item if self.dataset.include_ids else (item, None)
            if self.num_workers:
                batch = from_wire(batch, self.pin_memory)
            elif self.pin_memory:
                batch = pin_batch(batch)
            yield batch if ids is None else (batch, ids)


def make_table_loader(dataset: GraphTableDataset, num_workers: int = 0, pin_memory: bool = False) -> TableLoader:
    """The batches of ``dataset``, collated in ``num_workers`` loader processes (0: in this one)."""
    return TableLoader(dataset, num_workers, pin_memory)
