"""The library of a screen: its inputs cut into numbered chunks, the unit of work and of exactly-once output.

Every input record gets a ``row``: its position in the library (inputs in the order given, records in file
order). ``row`` is stable across launches and is the key of the exactly-once accounting: each row ends up once
either in the predictions or in the quarantine.

Inputs, by suffix:

* ``.parquet``: a structures table (``scannet data import`` / ``scannet data qm9``). It is read in place: a
  chunk is a row range inside one row group (:func:`scannet.data.structures_table.structure_pieces`).
* a graph table (a folder written by ``featurize_table`` / the training cache, or one of its ``.parquet``
  files): read in place the same way; its rows are graphs already, so the screen does not featurize them
  (their featurizer must be the models'), and they carry no coordinates (no SMILES, structure key or drawing).
* ``.xyz`` / ``.extxyz`` (multi-frame, streamed), ``.db`` (ASE database), ``.traj``, ``.cif`` and folders of
  structure files: read by the streaming readers of ``scannet data import``
  (:func:`scannet.data.importers.iter_records`), frame by frame.
* ``.smi`` (``SMILES [id]`` per line) and ``.csv`` (a ``smiles`` column, an optional ``id`` column): read line
  by line (:func:`scannet.data.smiles.read_smiles_file`); the 3D structure is embedded later, in the workers
  (:func:`scannet.data.smiles.embed_smiles`).

Inputs other than structures tables are staged once, streamed, into ``<out>/library/chunk-*.parquet`` (the
structures schema plus ``smiles`` and ``error`` columns; unreadable frames keep their reason in ``error``)
with a ``manifest.json`` naming the inputs' sizes and modification times. The folder is written with
:class:`~scannet.io.atomic.AtomicWrite`, so it exists only when complete; a later launch reuses it while
the inputs are unchanged. Memory holds one chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ase import Atoms

from scannet.data import schema as S
from scannet.data.graphs_table import GRAPHS_SUBDIR, graph_table_files
from scannet.data.importers import _record_id, expand_inputs, iter_records
from scannet.data.smiles import SMILES_SUFFIXES, read_smiles_file
from scannet.data.structures_table import Piece, open_structures, structure_pieces, structures_to_table
from scannet.io.atomic import AtomicWrite
from scannet.io.paths import OutputFolder
from scannet.typed_config import ConfigError
from scannet_platform.console import Progress

ROW = "row"
SMILES = "smiles"
ERROR = "error"
STAGED_DIR = "library"
MANIFEST = "manifest.json"
TABLE_SUFFIXES = (".parquet",)

#: A staged chunk: the structures-table columns plus the SMILES (null: a structure) and the read error.
STAGED_SCHEMA = pa.schema(
    [*S.structures_schema({}), pa.field(SMILES, pa.string()), pa.field(ERROR, pa.string())],
    metadata=S.structures_schema({}).metadata,
)


@dataclass
class Library:
    pieces: list[Piece] = field(default_factory=list)
    fingerprint: list[dict] = field(default_factory=list)
    n_smiles_inputs: int = 0

    @property
    def total(self) -> int:
        return sum(p.rows for p in self.pieces)


def is_graph_table(path: str | Path) -> bool:
    """Whether ``path`` is a graph table: a folder with ``graphs/``, or a Parquet file with graph-table metadata."""
    path = Path(path)
    if path.is_dir():
        return (path / GRAPHS_SUBDIR).is_dir()
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return False
    return (pq.read_schema(path).metadata or {}).get(S.META_TABLE) == b"graphs"


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if is_graph_table(path):
        return "graphs"
    if path.is_dir():
        return "folder"
    if suffix in TABLE_SUFFIXES:
        return "table"
    if suffix in SMILES_SUFFIXES:
        return "smiles"
    return "structures"


def stat_fingerprint(path: Path) -> dict:
    """A file as its path, size and modification time (no read of its bytes: libraries can be large)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def library_fingerprint(inputs: Sequence[str | Path]) -> list[dict]:
    """What identifies the library: every input file (folders expanded) with its size and modification time."""
    entries = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        files = graph_table_files(path) if is_graph_table(path) else expand_inputs([path]) if path.is_dir() else [path]
        entries.append({"input": str(item), "kind": _kind(path), "files": [stat_fingerprint(f) for f in files]})
    return entries


# ------------------------------------------------------------------------------------------------- records


@dataclass
class Record:
    """One library record as staged: a structure, a SMILES string, or the reason it could not be read."""

    id: str
    source: str
    atoms: Atoms | None = None
    smiles: str | None = None
    error: str | None = None


def _structure_records(path: Path, max_atoms: int) -> Iterator[Record]:
    for file in expand_inputs([path]) if path.is_dir() else [path]:
        source = str(file)
        for record in iter_records(file, max_atoms):
            if record.error is not None:
                key = f"{source}:{record.key}" if record.key else source
                yield Record(key, source, error=record.error)
            else:
                yield Record(_record_id(record, file), source, atoms=record.atoms)


def _smiles_records(path: Path, smiles_column: str | None, id_column: str | None) -> Iterator[Record]:
    for record in read_smiles_file(path, smiles_column, id_column):
        yield Record(record.id, record.source, smiles=record.smiles, error=record.error)


def _staged_table(records: list[Record]) -> pa.Table:
    structures = [r.atoms if r.atoms is not None else Atoms() for r in records]
    table = structures_to_table(structures, {}, [r.source for r in records], [r.id for r in records])
    table = table.append_column(SMILES, pa.array([r.smiles for r in records], pa.string()))
    table = table.append_column(ERROR, pa.array([r.error for r in records], pa.string()))
    return table.cast(STAGED_SCHEMA)


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------------------------- the plan


def _stage(
    entries: list[tuple[int, Path]],
    folder: Path,
    chunk_size: int,
    max_atoms: int,
    smiles_column: str | None,
    id_column: str | None,
    progress: bool,
    manifest: dict,
) -> dict[int, list[dict]]:
    """Stage the inputs ``entries`` ((index, path)) into ``folder`` with its manifest (``manifest`` plus the
    chunks); returns {input index: [{file, rows}]}."""
    chunks: dict[int, list[dict]] = {}
    with AtomicWrite(folder) as staged, Progress(desc="reading", unit="record", disable=not progress) as bar:
        number = 0
        for index, path in entries:
            records = (
                _smiles_records(path, smiles_column, id_column)
                if _kind(path) == "smiles"
                else _structure_records(path, max_atoms)
            )
            chunks[index] = []
            for chunk in _chunks(records, chunk_size):
                name = f"chunk-{number:06d}.parquet"
                pq.write_table(_staged_table(chunk), staged.path / name, compression="zstd")
                chunks[index].append({"file": name, "rows": len(chunk)})
                number += 1
                bar.update(len(chunk))
        (staged.path / MANIFEST).write_text(json.dumps({**manifest, "chunks": chunks}, indent=1))
    return chunks


def plan_library(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    chunk_size: int,
    max_atoms: int,
    smiles_column: str | None = None,
    id_column: str | None = None,
    progress: bool = False,
) -> Library:
    """The chunks of the library (structures tables in place, the other inputs staged under ``out_dir``)."""
    if not inputs:
        raise ConfigError("no input: give structures tables, structure files, folders or SMILES files")
    fingerprint = library_fingerprint(inputs)
    paths = [Path(item) for item in inputs]
    folder = OutputFolder(out_dir).path(STAGED_DIR)  # written whole (AtomicWrite), never through a link
    to_stage = [(k, p) for k, p in enumerate(paths) if _kind(p) not in ("table", "graphs")]
    staged: dict[int, list[dict]] = {}
    if to_stage:
        wanted = {
            "inputs": [fingerprint[k] for k, _ in to_stage],
            "chunk_size": chunk_size,
            "max_atoms": max_atoms,
            "smiles_column": smiles_column,
            "id_column": id_column,
        }
        manifest = folder / MANIFEST
        previous = json.loads(manifest.read_text()) if manifest.is_file() else None
        if previous is not None and {k: v for k, v in previous.items() if k != "chunks"} == wanted:
            staged = {int(k): v for k, v in previous["chunks"].items()}
        else:
            staged = _stage(to_stage, folder, chunk_size, max_atoms, smiles_column, id_column, progress, wanted)
    library = Library(fingerprint=fingerprint, n_smiles_inputs=sum(_kind(p) == "smiles" for p in paths))
    first_row = 0
    for index, path in enumerate(paths):
        chunk = len(library.pieces)
        if index in staged:
            parts = []
            for c in staged[index]:
                parts.append(Piece(str(folder / c["file"]), 0, 0, c["rows"], chunk + len(parts), first_row))
                first_row += c["rows"]
        elif _kind(path) == "graphs":
            parts = []
            for file in graph_table_files(path):
                pieces = structure_pieces(file, chunk_size, chunk + len(parts), first_row)
                first_row += sum(piece.rows for piece in pieces)
                parts += pieces
        else:
            open_structures(path)  # TableKindError for a Parquet file that is not a structures table
            parts = structure_pieces(path, chunk_size, chunk, first_row)
            first_row += sum(part.rows for part in parts)
        library.pieces.extend(parts)
    return library


def read_piece(piece: Piece) -> pa.Table:
    """The rows of one chunk (staged or in place), with ``row`` (library positions) as the first column."""
    table = piece.read()
    rows = pa.array(range(piece.first_row, piece.first_row + piece.rows), pa.int64())
    return table.add_column(0, ROW, rows)
