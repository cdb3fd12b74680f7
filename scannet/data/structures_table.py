"""The structures table on Parquet: ASE ``Atoms`` to Arrow and back, streaming writer and reader, quarantine.

One row per structure, columns and metadata as in :mod:`scannet.data.schema`::

    id         string, unique within a dataset
    numbers    list<int16>                    atomic numbers
    positions  list<fixed_size_list<f64, 3>>  Cartesian coordinates, Å (float64, stored bit for bit)
    cell       fixed_size_list<f64, 9>        lattice vectors as rows (all zero for a molecule without cell)
    pbc        fixed_size_list<bool, 3>       periodic directions (all False: non-periodic)
    source     string                         file or dataset the structure came from (null: unknown)
    <target>   float64, one column each       null where the structure has no value

``scannet.units`` in the schema metadata maps each target to its unit; ``scannet.table`` is "structures".

``cell`` and ``pbc`` are always written, never null, although the schema allows null there: pyarrow (25.0)
cannot read back a Parquet ``fixed_size_list`` column holding nulls ("Expected all lists to be of size=9").
A non-periodic structure therefore has ``pbc = [False, False, False]`` and its cell as is (zeros for a
plain molecule). Readers treat a null cell/pbc (tables made by other tools, in memory) as non-periodic.

Round trip: :func:`table_to_structures` (``structures_to_table(s)``) gives back the same atomic numbers,
bit-identical positions, the cell and pbc, ``info["id"]`` (as a string),
``info["source"]`` and each non-null target in ``info[name]``. Other ``info`` entries, calculators,
constraints, tags, momenta, ... are not stored.

Both conversions are vectorised: the Arrow arrays are built from flat numpy arrays and offsets, and read
back through ``.values`` / ``.offsets`` with one slice per structure (no Python object per atom).

:class:`Quarantine` records the inputs a pipeline could not use (``id``, ``source``, ``reason``) in a small
Parquet file, streamed. The file is always written, with 0 rows when nothing was quarantined, so a dataset
folder always holds its table and its quarantine together.

Both writers stage their file with :class:`scannet.io.atomic.AtomicWrite`: ``path`` changes only when the
writer is closed, and a failed write leaves it as it was. A dataset folder (``structures.parquet`` plus
``quarantine.parquet``, see :func:`scannet.data.importers.import_structures`) is staged as a whole the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ase import Atoms

from scannet.data import schema as S
from scannet.io.atomic import AtomicWrite, Writer, recover_path

#: Rows per Parquet row group of a structures table written by :class:`StructuresWriter`.
DEFAULT_ROWS_PER_GROUP = 4096
#: Name of the structures table file in a dataset folder (``scannet data qm9`` / ``scannet data import``).
STRUCTURES_FILE = "structures.parquet"
#: Name of the quarantine file in a dataset folder.
QUARANTINE_FILE = "quarantine.parquet"
#: The entries of a structures dataset folder, written and replaced together.
DATASET_FILES = (STRUCTURES_FILE, QUARANTINE_FILE)

_COMPRESSION = "zstd"

ArrowData = pa.Table | pa.RecordBatch


class TableKindError(ValueError):
    """A Parquet file is not the kind of scannet table expected (e.g. a graph table read as structures)."""


# ---------------------------------------------------------------------------------------- Atoms -> Arrow


def _source_stem(source: str | None) -> str:
    if not source:
        return "structure"
    return Path(source).stem or str(source)


def _structure_id(atoms: Atoms, index: int, source: str | None) -> str:
    for key in ("id", "name"):
        value = atoms.info.get(key)
        if value is not None and str(value) != "":
            return str(value)
    return f"{_source_stem(source)}:{index}"


def _fixed_size(values: np.ndarray, size: int, value_type: pa.DataType) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), value_type), size)


def structures_table_from_arrays(
    ids: Sequence[str] | pa.Array,
    n_atoms: np.ndarray,
    numbers: np.ndarray,
    positions: np.ndarray,
    units: Mapping[str, str],
    targets: Mapping[str, np.ndarray | pa.Array] | None = None,
    cells: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    sources: Sequence[str | None] | pa.Array | str | None = None,
) -> pa.Table:
    """A structures table from flat arrays (the vectorised core of :func:`structures_to_table`).

    Args:
        ids: one id per structure.
        n_atoms: atoms per structure ``[m]``.
        numbers: all atomic numbers, concatenated ``[sum(n_atoms)]``.
        positions: all positions, concatenated ``[sum(n_atoms), 3]`` (float64, Å).
        units: ``{target: unit}``, the target columns in order.
        targets: ``{target: values [m]}``; NaN-free float arrays, or Arrow arrays with nulls. A target of
            ``units`` missing here is all null.
        cells: ``[m, 3, 3]`` (or ``[m, 9]``) lattice vectors; ``None``: all zero.
        pbc: ``[m, 3]`` booleans; ``None`` means every structure is non-periodic.
        sources: one source per structure, or one string for all (empty / None: null).
    """
    n_atoms = np.asarray(n_atoms, dtype=np.int64).reshape(-1)
    m = len(n_atoms)
    offsets = np.zeros(m + 1, dtype=np.int32)
    np.cumsum(n_atoms, out=offsets[1:])
    numbers = np.asarray(numbers).reshape(-1)
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(numbers) != offsets[-1] or len(positions) != offsets[-1]:
        raise ValueError(f"{offsets[-1]} atoms in n_atoms but {len(numbers)} numbers and {len(positions)} positions")

    pbc_values = np.zeros((m, 3), dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(m, 3)
    cell_values = np.zeros((m, 9)) if cells is None else np.asarray(cells, dtype=np.float64).reshape(m, 9)
    if cells is None and pbc_values.any():
        raise ValueError("periodic structures need cells")

    if sources is None or isinstance(sources, str):
        source_array = pa.array([sources or None] * m, pa.string())
    elif isinstance(sources, pa.Array | pa.ChunkedArray):
        source_array = sources
    else:
        source_array = pa.array([s or None for s in sources], pa.string())

    columns: dict[str, pa.Array] = {
        S.ID: ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array([str(i) for i in ids], pa.string()),
        S.NUMBERS: pa.ListArray.from_arrays(pa.array(offsets), pa.array(numbers.astype(np.int16))),
        S.POSITIONS: pa.ListArray.from_arrays(
            pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(positions.reshape(-1)), 3)
        ),
        S.CELL: _fixed_size(cell_values, 9, pa.float64()),
        S.PBC: _fixed_size(pbc_values, 3, pa.bool_()),
        S.SOURCE: source_array,
    }
    targets = targets or {}
    for name in units:
        values = targets.get(name)
        if values is None:
            columns[name] = pa.nulls(m, pa.float64())
        elif isinstance(values, pa.Array | pa.ChunkedArray):
            columns[name] = values.cast(pa.float64())
        else:
            columns[name] = pa.array(np.asarray(values, dtype=np.float64))
    schema = S.structures_schema(dict(units))
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _target_value(value: object) -> float | None:
    if value is None:
        return None
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"a target must be a scalar, got shape {value.shape}")
    return float(value.reshape(()))


def structures_to_table(
    structures: Sequence[Atoms],
    targets: Mapping[str, str],
    source: str | Sequence[str] = "",
    ids: Sequence[str] | None = None,
    start: int = 0,
) -> pa.Table:
    """The structures table of ``structures`` (schema :func:`scannet.data.schema.structures_schema`).

    Args:
        structures: ASE structures.
        targets: ``{name: unit}``; each value is read from ``atoms.info[name]`` (missing or None: null).
        source: one source for all structures or one per structure; an empty source falls back to
            ``atoms.info["source"]`` and stays null when there is none.
        ids: one id per structure; by default ``atoms.info["id"]`` or ``["name"]`` as a string, else
            ``f"{stem of the source}:{start + index}"`` (``"structure:..."`` without a source).
        start: index of the first structure in its dataset, used by the default ids.

    The cell and pbc are stored as they are (never null, see the module docstring).
    """
    m = len(structures)
    if ids is not None and len(ids) != m:
        raise ValueError(f"{len(ids)} ids for {m} structures")
    if isinstance(source, str):
        sources = [source] * m
    else:
        sources = list(source)
        if len(sources) != m:
            raise ValueError(f"{len(sources)} sources for {m} structures")
    sources = [s or atoms.info.get("source") or None for s, atoms in zip(sources, structures)]
    if ids is None:
        ids = [_structure_id(atoms, start + k, src) for k, (atoms, src) in enumerate(zip(structures, sources))]

    n_atoms = np.fromiter((len(a) for a in structures), dtype=np.int64, count=m)
    numbers = np.concatenate([a.numbers for a in structures]) if m else np.zeros(0, np.int64)
    positions = np.concatenate([a.positions for a in structures]) if m else np.zeros((0, 3))
    pbc = np.array([a.pbc for a in structures], dtype=bool).reshape(m, 3)
    cells = np.array([a.cell.array for a in structures], dtype=np.float64).reshape(m, 9)
    target_arrays = {}
    for name in targets:
        values = [_target_value(a.info.get(name)) for a in structures]
        mask = np.array([v is None for v in values], dtype=bool)
        data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        target_arrays[name] = pa.array(data, mask=mask) if mask.any() else data
    return structures_table_from_arrays(ids, n_atoms, numbers, positions, targets, target_arrays, cells, pbc, sources)


# ---------------------------------------------------------------------------------------- Arrow -> Atoms


def _flat_values(array: pa.Array, width: int) -> np.ndarray:
    """The child values of a fixed-size list array as ``[len(values) // width, width]``, from row 0 of the
    unsliced child (so that absolute indices ``array.offset + i`` address rows)."""
    values = array.values.to_numpy(zero_copy_only=False)
    return values.reshape(-1, width)


def _list_parts(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(absolute offsets ``[n + 1]`` into ``array.values``, ``array.values``) of a list array."""
    return array.offsets.to_numpy(), array.values


def _batches(data: ArrowData) -> list[pa.RecordBatch]:
    if isinstance(data, pa.RecordBatch):
        return [data]
    return data.to_batches()


def table_to_structures(table: ArrowData) -> list[Atoms]:
    """ASE structures from a structures table or record batch: the exact inverse of :func:`structures_to_table`.

    Each structure carries ``info["id"]``, ``info["source"]`` (when not null) and ``info[target]`` for each
    non-null target column (targets: the float columns not reserved by the schema).
    """
    structures: list[Atoms] = []
    for batch in _batches(table):
        structures.extend(_batch_to_structures(batch))
    return structures


def table_to_structures_or_errors(table: ArrowData) -> list[Atoms | Exception]:
    """:func:`table_to_structures`, except that a row which cannot be read back as a structure becomes its
    exception and the other rows are still read (one malformed row must not sink a batch)."""
    try:
        return list(table_to_structures(table))
    except Exception:  # find the culprits row by row
        structures: list[Atoms | Exception] = []
        for k in range(table.num_rows):
            try:
                structures.extend(table_to_structures(table.slice(k, 1)))
            except Exception as exc:
                structures.append(exc)
        return structures


def _batch_to_structures(batch: pa.RecordBatch) -> list[Atoms]:
    m = batch.num_rows
    names = batch.schema.names
    reserved = {f.name for f in S.STRUCTURE_FIELDS}
    missing = [n for n in (S.ID, S.NUMBERS, S.POSITIONS) if n not in names]
    if missing:
        raise ValueError(f"not a structures table: columns {missing} are missing")
    ids = batch.column(S.ID).to_pylist()
    sources = batch.column(S.SOURCE).to_pylist() if S.SOURCE in names else [None] * m

    number_offsets, number_values = _list_parts(batch.column(S.NUMBERS))
    numbers = number_values.to_numpy(zero_copy_only=False)
    position_offsets, position_child = _list_parts(batch.column(S.POSITIONS))
    positions = _flat_values(position_child, 3)[position_child.offset :]
    if not np.array_equal(number_offsets, position_offsets):
        raise ValueError("numbers and positions have different lengths in some rows")

    has_cell = np.zeros(m, dtype=bool)  # rows with a (non-null) cell and pbc; the others are non-periodic
    cells = pbcs = None
    if m and S.CELL in names and S.PBC in names:
        cell_array, pbc_array = batch.column(S.CELL), batch.column(S.PBC)
        has_cell = cell_array.is_valid().to_numpy(zero_copy_only=False)
        has_cell &= pbc_array.is_valid().to_numpy(zero_copy_only=False)
        if has_cell.any():
            cells = _flat_values(cell_array, 9)[cell_array.offset : cell_array.offset + m].reshape(m, 3, 3)
            pbcs = _flat_values(pbc_array, 3)[pbc_array.offset : pbc_array.offset + m].astype(bool)

    targets = {}
    for field in batch.schema:
        if field.name not in reserved and pa.types.is_floating(field.type):
            column = batch.column(field.name)
            values = column.to_numpy(zero_copy_only=False).astype(np.float64)
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            targets[field.name] = (values.tolist(), valid.tolist())

    structures = []
    for i in range(m):
        start, end = int(number_offsets[i]), int(number_offsets[i + 1])
        if has_cell[i]:
            atoms = Atoms(numbers=numbers[start:end], positions=positions[start:end], cell=cells[i], pbc=pbcs[i])
        else:
            atoms = Atoms(numbers=numbers[start:end], positions=positions[start:end])
        atoms.info["id"] = ids[i]
        if sources[i] is not None:
            atoms.info["source"] = sources[i]
        for name, (values, valid) in targets.items():
            if valid[i]:
                atoms.info[name] = values[i]
        structures.append(atoms)
    return structures


# ------------------------------------------------------------------------------------------------ files


def check_structures_schema(schema: pa.Schema, path: str | Path = "table") -> None:
    """Raise :class:`TableKindError` unless ``schema`` is that of a structures table."""
    kind = (schema.metadata or {}).get(S.META_TABLE)
    if kind != b"structures":
        found = "no scannet.table metadata" if kind is None else f"a {kind.decode(errors='replace')!r} table"
        raise TableKindError(f"{path}: not a scannet structures table ({found})")


def open_structures(path: str | Path) -> pq.ParquetFile:
    """The Parquet file of a structures table, checked to be one (:class:`TableKindError` otherwise)."""
    recover_path(path)  # a crash in the middle of a commit: put the dataset back first
    file = pq.ParquetFile(path)
    check_structures_schema(file.schema_arrow, path)
    return file


def read_units(path: str | Path) -> dict[str, str]:
    """``{target: unit}`` of a structures table file, from its schema metadata."""
    return S.table_units(open_structures(path).schema_arrow)


def num_structures(path: str | Path) -> int:
    """Number of rows of a structures table file (from the Parquet footer, nothing else is read)."""
    return open_structures(path).metadata.num_rows


def iter_structure_batches(
    path: str | Path, batch_size: int = 1024, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a structures table file as Arrow record batches of at most ``batch_size`` rows."""
    file = open_structures(path)
    yield from file.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)


def read_structures(path: str | Path, batch_size: int = 1024) -> Iterator[list[Atoms]]:
    """Stream a structures table file as lists of at most ``batch_size`` ASE structures (never the whole file)."""
    for batch in iter_structure_batches(path, batch_size):
        yield table_to_structures(batch)


def read_structures_table(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A whole structures table file in memory (for small tables; prefer the streaming readers)."""
    open_structures(path)
    return pq.read_table(path, columns=list(columns) if columns else None)


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of row group ``row_group`` of the Parquet file ``path``: the unit a table is cut into
    for parallel work (a featurization task, a screening chunk), read without touching the rest of the file.

    ``chunk`` numbers the piece within its sequence and ``first_row`` is the sequence's position of its first row
    (a screening library numbers them across all its files)."""

    path: str
    row_group: int
    start: int
    stop: int
    chunk: int = 0
    first_row: int = 0

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The piece's rows (all columns by default)."""
        table = pq.ParquetFile(self.path).read_row_group(self.row_group, columns=columns)
        return table.slice(self.start, self.rows)

    def to_dict(self) -> dict:
        return asdict(self)


def structure_pieces(path: str | Path, rows_per_piece: int, first_chunk: int = 0, first_row: int = 0) -> list[Piece]:
    """A table file cut into :class:`Piece` s of at most ``rows_per_piece`` rows within its row groups, numbered
    from ``first_chunk`` and placed from ``first_row`` on."""
    metadata = pq.ParquetFile(path).metadata
    pieces = []
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        for start in range(0, rows, rows_per_piece):
            stop = min(rows, start + rows_per_piece)
            pieces.append(Piece(str(path), group, start, stop, first_chunk + len(pieces), first_row))
            first_row += stop - start
    return pieces


class StructuresWriter(Writer):
    """Streams structures into one Parquet structures table; a context manager.

    Each :meth:`write` (or :meth:`write_table`) appends its rows in row groups of at most ``rows_per_group``.
    Default ids continue across calls (``f"{stem}:{running index}"``). The rows go to a staged file
    (:class:`~scannet.io.atomic.AtomicWrite`) that replaces ``path`` on :meth:`close`, so ``path`` never
    holds a partial table; :meth:`abort` (or a ``with`` block that raises) discards it.
    """

    def __init__(
        self, path: str | Path, units: Mapping[str, str], rows_per_group: int = DEFAULT_ROWS_PER_GROUP
    ) -> None:
        self.path = Path(path)
        self.units = dict(units)
        self.schema = S.structures_schema(self.units)
        self.rows_per_group = rows_per_group
        self.n_rows = 0
        self._stage = AtomicWrite(self.path, file=True)
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                self._stage.path, self.schema, compression=_COMPRESSION
            )
        except BaseException:
            self._stage.discard()
            raise

    def write(
        self, structures: Sequence[Atoms], source: str | Sequence[str] = "", ids: Sequence[str] | None = None
    ) -> None:
        """Append ``structures`` (targets from ``atoms.info``, see :func:`structures_to_table`)."""
        self.write_table(structures_to_table(structures, self.units, source, ids, start=self.n_rows))

    def write_table(self, table: pa.Table) -> None:
        """Append a table that already follows the structures schema (same targets, in the same order)."""
        if self._writer is None:
            raise ValueError(f"{self.path}: the writer is closed")
        if table.schema.names != self.schema.names:
            raise ValueError(f"columns {table.schema.names} do not match the table's {self.schema.names}")
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema), row_group_size=self.rows_per_group)
            self.n_rows += table.num_rows

    def close(self) -> None:
        """Finish the file and put it in place at ``path``."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except BaseException:
                self._stage.discard()
                raise
            self._stage.commit()

    def abort(self) -> None:
        """Close and discard the partial file (``path`` is left as it was)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            finally:
                self._stage.discard()


def write_structures(
    path: str | Path,
    structures: Sequence[Atoms],
    units: Mapping[str, str],
    source: str | Sequence[str] = "",
    ids: Sequence[str] | None = None,
    rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
) -> Path:
    """Write ``structures`` as one structures table file; returns its path."""
    with StructuresWriter(path, units, rows_per_group) as writer:
        writer.write(structures, source, ids)
    return writer.path


# ------------------------------------------------------------------------------------------- quarantine

QUARANTINE_SCHEMA = pa.schema(
    [pa.field(S.ID, pa.string()), pa.field(S.SOURCE, pa.string()), pa.field("reason", pa.string())],
    metadata={S.META_TABLE: b"quarantine", S.META_VERSION: S.TABLE_VERSION.encode()},
)


class Quarantine(Writer):
    """Records rejected inputs (``id``, ``source``, ``reason``, strings) in a Parquet file, streamed.

    The file is staged (:class:`~scannet.io.atomic.AtomicWrite`) and replaces ``path`` on :meth:`close`,
    with 0 rows when nothing was added: after a run the file always exists and holds that run's records
    only. :meth:`abort` (or a ``with`` block that raises) leaves ``path`` as it was. Records are buffered
    and written in row groups of ``flush_every``.
    """

    def __init__(self, path: str | Path, flush_every: int = 1024) -> None:
        self.path = Path(path)
        self.flush_every = flush_every
        self.count = 0
        self._rows: dict[str, list[str | None]] = {S.ID: [], S.SOURCE: [], "reason": []}
        self._writer: pq.ParquetWriter | None = None
        self._closed = False
        self._stage = AtomicWrite(self.path, file=True)

    def add(self, id: object, source: object, reason: object) -> None:
        """Quarantine one record (``None`` source allowed); values are stored as strings."""
        if self._closed:
            raise ValueError(f"{self.path}: the quarantine is closed")
        self._rows[S.ID].append(None if id is None else str(id))
        self._rows[S.SOURCE].append(None if source is None else str(source))
        self._rows["reason"].append(str(reason))
        self.count += 1
        if len(self._rows["reason"]) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._stage.path, QUARANTINE_SCHEMA)
        if self._rows["reason"]:
            self._writer.write_table(pa.table(self._rows, schema=QUARANTINE_SCHEMA))
            self._rows = {key: [] for key in self._rows}

    def close(self) -> None:
        """Write the remaining records and put the file in place (also with 0 records)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
            self._writer.close()
        except BaseException:
            self._stage.discard()
            raise
        self._stage.commit()

    def abort(self) -> None:
        """Discard the records; ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._stage.discard()


def read_quarantine(path: str | Path) -> list[dict[str, str | None]]:
    """The records of a quarantine file as ``[{"id", "source", "reason"}]`` (``[]`` for 0 rows or no file)."""
    path = Path(path)
    recover_path(path)
    if not path.exists():
        return []
    return pq.read_table(path).to_pylist()
