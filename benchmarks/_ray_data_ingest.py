"""Ray Data ingest of a graph table into packed batches, for ``bench_data_pipeline.py`` only: training reads its
graph table with :class:`scannet.data.loader.GraphTableDataset` (one ingest path), this is the alternative the
benchmark measures against it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.data.collate_fn import ArrowBatchCollateFn

from scannet.batch import Batch
from scannet.data.graphs_table import atom_budget_slices, collate_arrow, graph_table_files, row_atom_counts


def read_graph_dataset(path: str | Path) -> Any:
    """A graph table as a Ray dataset (one block per row group)."""
    import ray.data

    return ray.data.read_parquet([str(f) for f in graph_table_files(path)])


class GraphCollate(ArrowBatchCollateFn):
    """``iter_torch_batches`` collate: a pyarrow batch of graph rows -> the packed dict of tensors."""

    def __init__(self, targets: Sequence[str] = ()) -> None:
        self.targets = list(targets)

    def __call__(self, batch: pa.Table) -> Batch:
        return collate_arrow(batch, self.targets)


def iter_graph_batches(
    ds: Any,
    targets: Sequence[str] = (),
    batch_size: int = 128,
    max_atoms: int | None = None,
    local_shuffle_buffer_size: int | None = None,
    seed: int | None = None,
) -> Iterator[Batch]:
    """Packed graph batches (on the CPU) from a Ray dataset: ``batch_size`` structures each through
    ``iter_torch_batches(collate_fn=...)``, or at most ``max_atoms`` atoms each (rows fetched in chunks of
    ``batch_size`` and re-cut; a structure larger than the budget alone in its batch)."""
    shuffle = {"local_shuffle_buffer_size": local_shuffle_buffer_size, "local_shuffle_seed": seed}
    if max_atoms is None:
        yield from ds.iter_torch_batches(batch_size=batch_size, collate_fn=GraphCollate(targets), **shuffle)
        return
    carry: pa.Table | None = None
    for chunk in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow", **shuffle):
        table = (pa.concat_tables([carry, chunk]) if carry is not None else chunk).combine_chunks()
        slices = atom_budget_slices(row_atom_counts(table), max_atoms)
        for start, end in slices[:-1]:
            yield collate_arrow(table.slice(start, end - start), targets)
        start, end = slices[-1]
        carry = table.slice(start, end - start)
    if carry is not None and carry.num_rows:
        yield collate_arrow(carry, targets)
