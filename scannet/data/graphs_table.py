"""The graph table on Parquet: featurized structures keyed by the featurizer settings, and its fast collate.

A graph table holds one row per featurized structure (columns in :mod:`scannet.data.schema`). Its schema
metadata records the :class:`FeaturizerConfig` and its content hash, and the cache folder is named after the
hash (:func:`graph_cache_dir`), so a change of settings never reuses a stale table: :func:`open_graph_table`
refuses a table made with other settings.

On disk a featurized dataset is a folder::

    <root>/graphs-<hash>/
        graphs/part-*.parquet    the graph table (one or more files, row groups of ``row_group_size``)
        quarantine.parquet       the structures that could not be featurized: id, source, reason (0 rows: none)
        summary.json             counts, featurizer settings and hash, seconds

The folder is staged and put in place as a whole (:class:`scannet.io.atomic.AtomicWrite`), by the plain
writer and by the Ray one alike: a folder that exists is complete.

:func:`collate_arrow` packs a record batch of the table straight into a :data:`scannet.batch.Batch` from the
list columns' flat values and offsets (no per-structure Python objects); it gives exactly
:func:`scannet.batch.collate_graphs`'s result. :func:`featurize_table` is the plain single-process path from a
structures table to a graph table; ``scannet_platform.data_pipeline`` is the Ray one, and both share
:func:`featurize_records`, so they give identical graphs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from scannet.data import schema as S
from scannet.featurizer import FeaturizerConfig, featurize_each
from scannet.featurizer.neighbors import Graph
from scannet.io.atomic import AtomicWrite, Writer, recover_path
from scannet.structures import StructureError

if TYPE_CHECKING:  # torch is imported where batches are made, not by featurizing workers (1 s per process)
    from scannet.batch import Batch

#: Column of :func:`featurize_records` output naming why a row could not be featurized (null when it could).
ERROR = "error"
GRAPHS_SUBDIR = "graphs"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.json"
#: The entries of a graph table folder, written and replaced together.
GRAPH_TABLE_ENTRIES = (GRAPHS_SUBDIR, QUARANTINE_FILE, SUMMARY_FILE)
#: Rows per Parquet row group of a written graph table: the unit the streaming loader reads and shards.
DEFAULT_ROW_GROUP_SIZE = 2048

_GRAPH_COLUMNS = {f.name for f in S.GRAPH_FIELDS}
_EDGE_COLUMNS = (S.EDGE_CENTER, S.EDGE_NEIGHBOR, S.DISTANCE, S.SOLID_ANGLE, S.SOLID_ANGLE_NORM)

ArrowData = pa.RecordBatch | pa.Table


class FeaturizerMismatchError(ValueError):
    """A graph table was made with other featurizer settings than the ones asked for (a stale cache)."""


# ------------------------------------------------------------------------------------------ cache keys


def graph_cache_dir(root: str | Path, featurizer: FeaturizerConfig) -> Path:
    """The folder of the graph table for ``featurizer`` under ``root``: ``root / "graphs-<content hash>"``."""
    return Path(root) / f"graphs-{featurizer.content_hash()}"


def featurizer_json(featurizer: FeaturizerConfig) -> str:
    return json.dumps(featurizer.to_dict(), sort_keys=True)


def graph_table_schema(featurizer: FeaturizerConfig, units: Mapping[str, str]) -> pa.Schema:
    """The graph-table schema for these settings and targets ({name: unit})."""
    if ERROR in units:
        raise ValueError(f"a target may not be named {ERROR!r} (reserved for the quarantine reason)")
    return S.graphs_schema(dict(units), featurizer_json(featurizer), featurizer.content_hash())


def check_featurizer(schema: pa.Schema, featurizer: FeaturizerConfig, where: str | Path = "graph table") -> None:
    """Raise :class:`FeaturizerMismatchError` unless ``schema`` is a graph table made with ``featurizer``."""
    metadata = schema.metadata or {}
    if metadata.get(S.META_TABLE) != b"graphs":
        raise FeaturizerMismatchError(f"{where}: not a graph table (no {S.META_TABLE.decode()}=graphs metadata)")
    found = metadata.get(S.META_FEATURIZER_HASH, b"").decode()
    wanted = featurizer.content_hash()
    if found != wanted:
        settings = metadata.get(S.META_FEATURIZER, b"{}").decode()
        raise FeaturizerMismatchError(
            f"{where}: made with featurizer settings {settings} (hash {found or 'missing'}), but "
            f"{featurizer_json(featurizer)} (hash {wanted}) was asked for; featurize again into "
            f"graph_cache_dir(root, featurizer) instead of reusing this table"
        )


def graph_table_files(path: str | Path) -> list[Path]:
    """The Parquet files of a graph table: ``path`` itself, ``path/graphs/*.parquet`` or ``path/*.parquet``."""
    path = Path(path)
    recover_path(path)  # a crash in the middle of a commit: put the table back first
    if path.is_file():
        return [path]
    folder = path / GRAPHS_SUBDIR if (path / GRAPHS_SUBDIR).is_dir() else path
    files = sorted(p for p in folder.glob("*.parquet") if p.name != QUARANTINE_FILE)
    if not files:
        raise FileNotFoundError(f"no graph table (*.parquet) in {folder}")
    return files


def open_graph_table(path: str | Path, featurizer: FeaturizerConfig | None = None) -> list[pq.ParquetFile]:
    """The table's Parquet files, opened (footers only); with ``featurizer`` every file's hash is checked.

    Raises:
        FeaturizerMismatchError: when a file was made with other featurizer settings.
    """
    files = [pq.ParquetFile(p) for p in graph_table_files(path)]
    if featurizer is not None:
        for file in files:
            check_featurizer(file.schema_arrow, featurizer, path)
    return files


def read_graph_table(
    path: str | Path, featurizer: FeaturizerConfig | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """The whole graph table in memory (small datasets, tests); checks the featurizer hash when given."""
    files = open_graph_table(path, featurizer)
    return pa.concat_tables([f.read(columns=list(columns) if columns else None) for f in files])


def target_columns(schema: pa.Schema) -> list[str]:
    """Target names of a graph (or structures) table: its units metadata, else the non-reserved columns."""
    units = S.table_units(schema)
    if units:
        return list(units)
    reserved = _GRAPH_COLUMNS | {f.name for f in S.STRUCTURE_FIELDS} | {ERROR}
    return [name for name in schema.names if name not in reserved]


# ------------------------------------------------------------------------------------ graphs <-> table


def _list_array(arrays: Sequence[np.ndarray], dtype: pa.DataType, np_dtype: type) -> pa.ListArray:
    lengths = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    offsets = np.zeros(len(arrays) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(arrays).astype(np_dtype, copy=False) if len(arrays) else np.zeros(0, np_dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=dtype))


def graphs_to_table(
    graphs: Sequence[Graph],
    ids: Sequence[str],
    sources: Sequence[str | None] | None = None,
    targets: Mapping[str, np.ndarray] | None = None,
    units: Mapping[str, str] | None = None,
    featurizer: FeaturizerConfig | None = None,
) -> pa.Table:
    """A graph table of ``graphs`` (one row each) with the :func:`graph_table_schema` of ``featurizer``.

    Args:
        graphs: featurized structures.
        ids: their identifiers (stored as strings).
        sources: where each came from (``None`` entries allowed).
        targets: ``{name: [N] values}``; every name must have a unit in ``units`` (missing: ``""``).
        units: ``{name: unit}`` of the targets, recorded in the schema metadata.
        featurizer: the settings that produced ``graphs`` (default ``FeaturizerConfig()``).
    """
    featurizer = featurizer or FeaturizerConfig()
    targets = dict(targets or {})
    units = {name: (units or {}).get(name, "") for name in targets} | dict(units or {})
    n = len(graphs)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} graphs")
    schema = graph_table_schema(featurizer, units)
    columns: dict[str, pa.Array] = {
        S.ID: pa.array([str(i) for i in ids], pa.string()),
        S.NUMBERS: _list_array([g.numbers for g in graphs], pa.int16(), np.int16),
        S.EDGE_CENTER: _list_array([g.edge_center for g in graphs], pa.int32(), np.int32),
        S.EDGE_NEIGHBOR: _list_array([g.edge_neighbor for g in graphs], pa.int32(), np.int32),
        S.DISTANCE: _list_array([g.distance for g in graphs], pa.float32(), np.float32),
        S.SOLID_ANGLE: _list_array([g.solid_angle for g in graphs], pa.float32(), np.float32),
        S.SOLID_ANGLE_NORM: _list_array([g.solid_angle_norm for g in graphs], pa.float32(), np.float32),
        S.SOURCE: pa.array(list(sources) if sources is not None else [None] * n, pa.string()),
    }
    for name in units:
        if name not in targets:
            raise ValueError(f"no values for target {name!r}")
        values = targets[name]
        if isinstance(values, pa.ChunkedArray | pa.Array):  # keeps nulls (missing values) as nulls
            values = values.cast(pa.float64())
            values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        else:
            values = pa.array(np.asarray(values, dtype=np.float64).reshape(-1), pa.float64())
        if len(values) != n:
            raise ValueError(f"target {name!r} has {len(values)} values for {n} graphs")
        columns[name] = values
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _flat(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """(offsets [B+1] int64 starting at 0, flat values) of a list column: Arrow (chunked) or numpy.

    Numpy columns are what Ray's ``batch_format="numpy"`` gives: an object array of per-row arrays, or a
    2-D array when every row happens to have the same length.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column, pa.Array):
        offsets = column.offsets.to_numpy().astype(np.int64)
        values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        return offsets - offsets[0], values
    column = np.asarray(column)
    if column.dtype == object:
        lengths = np.fromiter((len(row) for row in column), np.int64, len(column))
        values = np.concatenate([np.asarray(row) for row in column]) if len(column) else np.zeros(0)
    else:  # [B, L] regular
        lengths = np.full(column.shape[0], column.shape[1] if column.ndim == 2 else 0, np.int64)
        values = column.reshape(-1)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, values


def _scalar_column(data: ArrowData | Mapping[str, Any], name: str) -> np.ndarray:
    column = data[name]
    if isinstance(column, pa.ChunkedArray | pa.Array):
        return column.to_numpy(zero_copy_only=False)
    return np.asarray(column)


def _column_names(data: ArrowData | Mapping[str, Any]) -> list[str]:
    return list(data.schema.names) if isinstance(data, pa.RecordBatch | pa.Table) else list(data)


def table_to_graphs(data: ArrowData, targets: Sequence[str] | None = None) -> tuple[list[Graph], list[str], np.ndarray]:
    """The graphs, ids and targets [N, T] (float64; ``targets`` names, default all) of a graph table."""
    if targets is None:
        targets = target_columns(data.schema)
    numbers_offsets, numbers = _flat(data[S.NUMBERS])
    edges = {name: _flat(data[name]) for name in _EDGE_COLUMNS}
    edge_offsets = edges[S.EDGE_CENTER][0]
    graphs = []
    for k in range(len(numbers_offsets) - 1):
        a0, a1 = numbers_offsets[k], numbers_offsets[k + 1]
        e0, e1 = edge_offsets[k], edge_offsets[k + 1]
        graphs.append(
            Graph(
                numbers=numbers[a0:a1].astype(np.int64),
                edge_center=edges[S.EDGE_CENTER][1][e0:e1].astype(np.int64),
                edge_neighbor=edges[S.EDGE_NEIGHBOR][1][e0:e1].astype(np.int64),
                distance=edges[S.DISTANCE][1][e0:e1].astype(np.float32),
                solid_angle=edges[S.SOLID_ANGLE][1][e0:e1].astype(np.float32),
                solid_angle_norm=edges[S.SOLID_ANGLE_NORM][1][e0:e1].astype(np.float32),
            )
        )
    ids = [str(i) for i in _scalar_column(data, S.ID)]
    values = np.stack([_scalar_column(data, t).astype(np.float64) for t in targets], axis=1) if targets else None
    return graphs, ids, values if values is not None else np.zeros((len(graphs), 0))


# ------------------------------------------------------------------------------------------- collate


def collate_arrow(data: ArrowData | Mapping[str, Any], targets: Sequence[str] = ()) -> Batch:
    """Pack the rows of a graph-table batch into one :data:`~scannet.batch.Batch`, vectorised.

    ``data`` is a ``pyarrow.RecordBatch`` / ``Table`` (the fast path: flat values and offsets, zero copy) or
    a ``{column: numpy array}`` dict as Ray's numpy batches give. The result equals
    ``collate_graphs(graphs, targets_array)`` exactly (same keys, dtypes and values); ``targets`` names the
    target columns, in order (empty: no ``targets`` key).
    """
    import torch

    from scannet import batch as keys

    atom_offsets, numbers = _flat(data[S.NUMBERS])  # [B+1], [A]
    edge_offsets, center = _flat(data[S.EDGE_CENTER])  # [B+1], [E]
    n_graphs = len(atom_offsets) - 1
    if n_graphs == 0:
        raise ValueError("cannot collate an empty batch")
    edge_values = {}
    for name in _EDGE_COLUMNS[1:]:
        offsets, values = _flat(data[name])
        if len(values) != len(center) or not np.array_equal(offsets, edge_offsets):
            raise ValueError(f"column {name!r} does not have one value per edge of {S.EDGE_CENTER!r}")
        edge_values[name] = values
    n_atoms = np.diff(atom_offsets)  # [B]
    n_edges = np.diff(edge_offsets)  # [B]
    atom_offset = np.repeat(atom_offsets[:-1], n_edges)  # [E] index of each edge's first atom in the batch
    batch = {
        keys.NUMBERS: numbers.astype(np.int64),
        keys.GRAPH_INDEX: np.repeat(np.arange(n_graphs, dtype=np.int64), n_atoms),
        keys.N_ATOMS: n_atoms,
        keys.EDGE_CENTER: center.astype(np.int64) + atom_offset,
        keys.EDGE_NEIGHBOR: edge_values[S.EDGE_NEIGHBOR].astype(np.int64) + atom_offset,
        keys.DISTANCE: edge_values[S.DISTANCE].astype(np.float32),
        keys.SOLID_ANGLE: edge_values[S.SOLID_ANGLE].astype(np.float32),
        keys.SOLID_ANGLE_NORM: edge_values[S.SOLID_ANGLE_NORM].astype(np.float32),
    }
    if len(targets):
        columns = [_scalar_column(data, name).astype(np.float32) for name in targets]
        batch[keys.TARGETS] = np.stack(columns, axis=1)  # [B, T]
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


def row_atom_counts(data: ArrowData) -> np.ndarray:
    """Atoms of every row [B] (from the offsets of the ``numbers`` column, no data copied)."""
    return np.diff(_flat(data[S.NUMBERS])[0])


def atom_budget_slices(n_atoms: np.ndarray, max_atoms: int) -> list[tuple[int, int]]:
    """Greedy consecutive ``[start, end)`` row ranges holding at most ``max_atoms`` atoms each.

    Structures are never split: a structure larger than the budget gets a batch of its own.
    """
    if max_atoms <= 0:
        raise ValueError(f"max_atoms must be > 0, got {max_atoms}")
    ends = np.cumsum(n_atoms)  # [B]
    slices, start = [], 0
    while start < len(n_atoms):
        before = ends[start - 1] if start else 0
        end = int(np.searchsorted(ends, before + max_atoms, side="right"))
        end = max(end, start + 1)
        slices.append((start, end))
        start = end
    return slices


# ---------------------------------------------------------------------------------------- featurizing


@dataclass
class FeaturizeSummary:
    """Counts of one featurization run."""

    out_dir: str
    featurizer: dict[str, Any]
    featurizer_hash: str
    n_input: int = 0
    n_graphs: int = 0
    n_quarantined: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def featurize_records(
    data: ArrowData, featurizer: FeaturizerConfig, units: Mapping[str, str] | None = None
) -> pa.Table:
    """Featurize the rows of a structures-table batch: a graph table plus an ``error`` column.

    Rows that cannot be featurized (a :class:`StructureError`, or a row that cannot even be read back as a
    structure) keep their id, source and targets, empty edge lists and the reason in ``error``; the others
    have ``error`` null. This one function serves the plain and the Ray pipelines.
    """
    from scannet.data.structures_table import table_to_structures_or_errors

    names = data.schema.names
    units = dict(units) if units is not None else {t: "" for t in target_columns(data.schema)}
    ids = [str(i) for i in _scalar_column(data, S.ID)]
    sources = _scalar_column(data, S.SOURCE).tolist() if S.SOURCE in names else [None] * len(ids)
    structures = table_to_structures_or_errors(data)
    empty = Graph(*(np.zeros(0, np.int64),) * 3, *(np.zeros(0, np.float32),) * 3)
    graphs: list[Graph] = [empty] * len(ids)
    errors: list[str | None] = [None] * len(ids)
    readable = []
    for k, atoms in enumerate(structures):
        if isinstance(atoms, Exception):
            errors[k] = f"unreadable record: {atoms}"
        else:
            readable.append(k)
    featurized = featurize_each([structures[k] for k in readable], featurizer, [ids[k] for k in readable])
    for k, result in zip(readable, featurized):
        if isinstance(result, StructureError):
            errors[k] = result.reason
        else:
            graphs[k] = result
    targets = {name: data[name] if name in names else pa.nulls(len(ids), pa.float64()) for name in units}
    table = graphs_to_table(graphs, ids, sources, targets, units, featurizer)
    return table.append_column(pa.field(ERROR, pa.string()), pa.array(errors, pa.string()))


def split_errors(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(good rows without the ``error`` column, bad rows as ``id, source, reason``) of featurized records."""
    import pyarrow.compute as pc

    bad_mask = pc.is_valid(table[ERROR])
    good = table.filter(pc.invert(bad_mask)).drop_columns([ERROR])
    bad = table.filter(bad_mask).select([S.ID, S.SOURCE, ERROR]).rename_columns([S.ID, S.SOURCE, "reason"])
    return good, bad


class GraphTableWriter(Writer):
    """Writes a graph table folder (``graphs/part-00000.parquet``, quarantine, summary) atomically.

    The folder is staged by :class:`~scannet.io.atomic.AtomicWrite` and put in place on :meth:`close`, so a
    crashed or interrupted run never leaves a table that looks complete (nor touches an existing one);
    :meth:`abort` (or a ``with`` block that raises) discards it. Feed it :func:`featurize_records` output.
    """

    def __init__(
        self,
        out_dir: str | Path,
        featurizer: FeaturizerConfig,
        units: Mapping[str, str],
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        overwrite: bool = False,
    ) -> None:
        from scannet.data.structures_table import Quarantine

        self.out_dir = Path(out_dir)
        self.schema = graph_table_schema(featurizer, units)
        self.row_group_size = row_group_size
        self._stage = AtomicWrite(self.out_dir, GRAPH_TABLE_ENTRIES, overwrite=overwrite)
        self._writer: pq.ParquetWriter | None = None
        self.quarantine: Quarantine | None = None
        try:
            (self._stage.path / GRAPHS_SUBDIR).mkdir()
            self._writer = pq.ParquetWriter(self._stage.path / GRAPHS_SUBDIR / "part-00000.parquet", self.schema)
            self.quarantine = Quarantine(self._stage.path / QUARANTINE_FILE)
        except BaseException:
            self.abort()
            raise
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.summary = FeaturizeSummary(str(self.out_dir), featurizer.to_dict(), featurizer.content_hash())
        self._start = time.perf_counter()

    def write(self, records: pa.Table) -> None:
        """Append featurized records: good rows to the table, bad ones to the quarantine."""
        good, bad = split_errors(records)
        self.summary.n_input += records.num_rows
        for row in bad.to_pylist():
            self.quarantine.add(row[S.ID], row[S.SOURCE], row["reason"])
        self.summary.n_quarantined += bad.num_rows
        if good.num_rows:
            self._pending.append(good.cast(self.schema))
            self._pending_rows += good.num_rows
            self.summary.n_graphs += good.num_rows
        while self._pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        self._writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> FeaturizeSummary:
        """Write what is pending, the quarantine and the summary, and put the folder in place."""
        try:
            if self._pending_rows:
                self._flush(self._pending_rows)
            self._writer.close()
            self.quarantine.close()
            self.summary.seconds = time.perf_counter() - self._start
            (self._stage.path / SUMMARY_FILE).write_text(json.dumps(self.summary.to_dict(), indent=2))
        except BaseException:
            self.abort()
            raise
        self._stage.commit()
        return self.summary

    def abort(self) -> None:
        """Discard the staged folder; ``out_dir`` is left as it was."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self.quarantine is not None:
                self.quarantine.abort()
        finally:
            self._stage.discard()


def write_featurized(
    records: Iterable[pa.Table],
    out_dir: str | Path,
    featurizer: FeaturizerConfig,
    units: Mapping[str, str],
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    overwrite: bool = False,
) -> FeaturizeSummary:
    """Stream :func:`featurize_records` tables into a graph table folder; returns the counts."""
    with GraphTableWriter(out_dir, featurizer, units, row_group_size, overwrite) as writer:
        for table in records:
            writer.write(table)
    return writer.summary


def featurize_table(
    structures_path: str | Path,
    out_dir: str | Path,
    featurizer: FeaturizerConfig | None = None,
    batch_size: int = 1024,
    progress: bool = False,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    overwrite: bool = False,
) -> FeaturizeSummary:
    """Featurize a structures table into a graph table folder, in one process (the plain path, no Ray).

    The structures are read in streamed batches of ``batch_size``; memory stays bounded by a batch and a
    row group. Bad records go to ``out_dir/quarantine.parquet`` with their reason and the run goes on.
    Use ``out_dir = graph_cache_dir(root, featurizer)`` to key the result by the settings.
    """
    from scannet.data.structures_table import iter_structure_batches, read_units

    featurizer = featurizer or FeaturizerConfig()
    units = read_units(structures_path)

    def records() -> Iterator[pa.Table]:
        bar = tqdm(desc="featurizing", unit="structure", disable=not progress)
        for data in iter_structure_batches(structures_path, batch_size=batch_size):
            yield featurize_records(data, featurizer, units)
            bar.update(data.num_rows)
        bar.close()

    return write_featurized(records(), out_dir, featurizer, units, row_group_size, overwrite)


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / SUMMARY_FILE).read_text())
