"""Stage F of a screen: one chunk of the library -> its featurized chunk (CPU only, no model loaded).

For chunk ``k`` and each distinct featurizer of the models (by content hash) the featurized chunk holds one
Arrow table, one row per record of the chunk in library order:

    graph columns     scannet.data.schema.GRAPH_FIELDS (graphs_to_table; empty lists for a quarantined record)
    identity columns  row, formula, n_atoms, smiles, canonical_smiles, geometry, structure_key, key_kind
    reason            null for a good record, else why it was quarantined (unreadable, embedding, too large,
                      featurization failed)

Its schema metadata is that of a graph table of the featurizer (hash checked on reading) plus the chunk and
its first row. The model stage (:mod:`~scannet_platform.screen.chunk`) predicts the good rows.

A chunk of a graph table given as input is not featurized: its graph columns are taken as they are (no
coordinates: smiles, canonical_smiles and structure_key are null, geometry :data:`GRAPH_TABLE_GEOMETRY`).

The graph store: with ``graphs_dir`` the tables are also kept, one file per chunk and featurizer,

    <graphs_dir>/<featurizer hash>-seed<seed>-max<max_atoms>/part-<k>.parquet

written atomically; a later screen of the same library (same chunking) with any models of the same featurizer
reads them instead of featurizing. A part that cannot be read, or belongs to another chunk or featurizer, is
refused with its path and the reason (one line on stderr) and the chunk is featurized again.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ase import Atoms

from scannet.data import schema as S
from scannet.data.graphs_table import check_featurizer, graph_table_schema, graphs_to_table, table_to_graphs
from scannet.data.importers import _over_limit
from scannet.data.smiles import FORCE_FIELD_GEOMETRY, INPUT_GEOMETRY, EmbeddingError, embed_smiles
from scannet.data.structure_key import structure_key
from scannet.data.structures_table import Piece, table_to_structures_or_errors
from scannet.featurizer import FeaturizerConfig, featurize_each
from scannet.featurizer.neighbors import Graph
from scannet.io.atomic import AtomicWrite
from scannet.predictor import describe_error
from scannet.structures import StructureError
from scannet_platform.screen.library import ERROR, ROW, SMILES, is_graph_table, read_piece

#: The canonical SMILES (from the input SMILES, or perceived from the coordinates; null when no bonds are known),
#: and the structure key that finds the same molecule under two names or forms (scannet.data.structure_key).
CANONICAL_SMILES, STRUCTURE_KEY, KEY_KIND = "canonical_smiles", "structure_key", "key_kind"
REASON = "reason"
#: Leading columns of the predictions: who each record is (stage F computes them).
LEADING_FIELDS = (
    pa.field(ROW, pa.int64()),
    pa.field(S.ID, pa.string()),
    pa.field(S.SOURCE, pa.string()),
    pa.field("formula", pa.string()),
    pa.field("n_atoms", pa.int32()),
    pa.field(SMILES, pa.string()),
    pa.field(CANONICAL_SMILES, pa.string()),
    pa.field("geometry", pa.string()),
    pa.field(STRUCTURE_KEY, pa.string()),
    pa.field(KEY_KIND, pa.string()),
)
LEADING = tuple(f.name for f in LEADING_FIELDS)
#: The identity columns a featurized chunk carries beside the graph columns (id and source are graph columns).
IDENTITY_FIELDS = (*(f for f in LEADING_FIELDS if f.name not in (S.ID, S.SOURCE)), pa.field(REASON, pa.string()))
META_CHUNK, META_FIRST_ROW = b"scannet.screen.chunk", b"scannet.screen.first_row"
GRAPHS_STORE = "screen-graphs"
GRAPH_TABLE_GEOMETRY = "graph table"
_EMPTY_GRAPH = Graph(
    numbers=np.zeros(0, np.int64),
    edge_center=np.zeros(0, np.int64),
    edge_neighbor=np.zeros(0, np.int64),
    distance=np.zeros(0, np.float32),
    solid_angle=np.zeros(0, np.float32),
    solid_angle_norm=np.zeros(0, np.float32),
)


def part_name(chunk: int) -> str:
    return f"part-{chunk:06d}.parquet"


def write_part(table: pa.Table, path: Path) -> None:
    """Write one shard: staged, then put in place by one rename (never a partial file at ``path``)."""
    with AtomicWrite(path, file=True) as staged:
        pq.write_table(table, staged.path, compression="zstd")


def library_graphs_dir(cache: str | Path, fingerprint: list[dict], chunking: dict) -> Path:
    """``<cache>/screen-graphs/<hash>``: the graph store of one library (its files, sizes and modification times)
    cut into chunks one way (``chunking``: chunk size, SMILES and id columns)."""
    content = json.dumps({"library": fingerprint, "chunking": chunking}, sort_keys=True)
    return Path(cache) / GRAPHS_STORE / hashlib.sha256(content.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class FeaturizeSpec:
    """What every featurize worker needs: built once by the job, sent to each worker."""

    featurizers: tuple[FeaturizerConfig, ...]  # one per distinct content hash among the models
    max_atoms: int  # larger structures are quarantined
    seed: int  # RDKit embedding seed
    graphs_dir: str | None = None  # the library's graph store (library_graphs_dir); None: featurize every chunk

    def part_path(self, featurizer: FeaturizerConfig, chunk: int) -> Path | None:
        if self.graphs_dir is None:
            return None
        settings = f"{featurizer.content_hash()}-seed{self.seed}-max{self.max_atoms}"
        return Path(self.graphs_dir) / settings / part_name(chunk)


@dataclass(frozen=True)
class FeaturizedChunk:
    """One chunk after stage F: ``tables`` maps each featurizer hash to the chunk's table (module docstring)."""

    piece: Piece
    tables: dict[str, pa.Table]
    n_cached: int = 0  # tables read from the graph store

    def to_row(self) -> dict:
        """One row of a Ray Data block (the tables as Arrow IPC streams)."""
        return {
            "piece": json.dumps(self.piece.to_dict()),
            "hashes": list(self.tables),
            "tables": [_to_ipc(table) for table in self.tables.values()],
            "n_cached": self.n_cached,
        }

    @classmethod
    def from_row(cls, row: dict) -> FeaturizedChunk:
        tables = {key: pa.ipc.open_stream(blob).read_all() for key, blob in zip(row["hashes"], row["tables"])}
        return cls(Piece(**json.loads(row["piece"])), tables, row["n_cached"])

    def reasons(self) -> dict[int, str]:
        """Position in the chunk -> why the record was quarantined (the first featurizer's reason first)."""
        bad: dict[int, str] = {}
        for table in self.tables.values():
            for k, reason in enumerate(table[REASON].to_pylist()):
                if reason is not None:
                    bad.setdefault(k, reason)
        return bad

    def graphs(self, key: str, positions: Sequence[int]) -> list[Graph]:
        """The graphs of featurizer ``key`` at ``positions`` of the chunk."""
        return table_to_graphs(self.tables[key].take(pa.array(positions, pa.int64())), targets=())[0]

    def identity(self) -> pa.Table:
        """The identity columns (:data:`LEADING`) of every record, in chunk order."""
        return next(iter(self.tables.values())).select(list(LEADING))


def _to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


# ----------------------------------------------------------------------------------------------- stage F


class ChunkFeaturizer:
    """The ``map_batches`` callable of the featurize pool: a batch of chunk descriptors -> featurized chunks."""

    def __init__(self, spec: FeaturizeSpec) -> None:
        self.spec = spec

    def __call__(self, pieces: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([featurize_piece(self.spec, Piece(**p)).to_row() for p in pieces.to_pylist()])


def featurize_piece(spec: FeaturizeSpec, piece: Piece) -> FeaturizedChunk:
    """The featurized chunk of ``piece``: each featurizer's table from the graph store when it holds a sound one,
    else featurized (all missing featurizers from one read of the piece) and put in the store; a graph table's
    chunk as it is."""
    if is_graph_table(piece.path):
        (featurizer,) = spec.featurizers  # the job checked that the models have this one featurizer
        return FeaturizedChunk(piece, {featurizer.content_hash(): graph_table_chunk(piece, featurizer, spec.max_atoms)})
    tables: dict[str, pa.Table] = {}
    missing = []
    for featurizer in spec.featurizers:
        path = spec.part_path(featurizer, piece.chunk)
        table = read_stored_part(path, featurizer, piece) if path is not None and path.is_file() else None
        if table is None:
            missing.append(featurizer)
        else:
            tables[featurizer.content_hash()] = table
    if missing:
        made = featurize_records(piece, missing, spec.max_atoms, spec.seed)
        for featurizer in missing:
            path = spec.part_path(featurizer, piece.chunk)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_part(made[featurizer.content_hash()], path)
        tables.update(made)
    ordered = {f.content_hash(): tables[f.content_hash()] for f in spec.featurizers}
    return FeaturizedChunk(piece, ordered, n_cached=len(spec.featurizers) - len(missing))


def read_stored_part(path: Path, featurizer: FeaturizerConfig, piece: Piece) -> pa.Table | None:
    """The stored table of ``piece`` at ``path``, or None (with the reason on stderr) when it is unreadable or is
    not this chunk's table for ``featurizer``."""
    try:
        table = pq.read_table(path)
        check_featurizer(table.schema, featurizer, path)
        metadata = table.schema.metadata or {}
        found = (int(metadata.get(META_CHUNK, b"-1")), int(metadata.get(META_FIRST_ROW, b"-1")), table.num_rows)
        if found != (piece.chunk, piece.first_row, piece.rows):
            raise ValueError(f"holds chunk, first row, rows {found}, not {(piece.chunk, piece.first_row, piece.rows)}")
        rows = table[ROW].to_numpy()
        if not np.array_equal(rows, np.arange(piece.first_row, piece.first_row + piece.rows)):
            raise ValueError("its rows are not the chunk's")
        return table
    except Exception as exc:
        print(
            f"scannet screen: refused stored graphs {path}: {describe_error(exc)}; featurizing again", file=sys.stderr
        )
        return None


def featurize_records(
    piece: Piece, featurizers: Sequence[FeaturizerConfig], max_atoms: int, seed: int
) -> dict[str, pa.Table]:
    """Read, check (readable, embeddable, at most ``max_atoms``) and featurize every record of ``piece``: one
    table per featurizer hash (module docstring)."""
    table = read_piece(piece)
    rows = table[ROW].to_pylist()
    ids = table[S.ID].to_pylist()
    sources = table[S.SOURCE].to_pylist()
    names = table.schema.names
    smiles = table[SMILES].to_pylist() if SMILES in names else [None] * len(rows)
    read_errors = table[ERROR].to_pylist() if ERROR in names else [None] * len(rows)
    structures = table_to_structures_or_errors(table)  # 0 atoms for a SMILES or an unreadable record
    bad: dict[int, str] = {}  # position in the chunk -> reason
    good: list[int] = []
    geometry: dict[int, str] = {}
    for k, atoms in enumerate(structures):
        try:
            if read_errors[k] is not None:
                raise StructureError(ids[k], read_errors[k])
            if isinstance(atoms, Exception):
                raise StructureError(ids[k], f"unreadable record: {describe_error(atoms)}")
            geometry[k] = INPUT_GEOMETRY
            if smiles[k] is not None and len(atoms) == 0:
                structures[k], geometry[k] = _embed(ids[k], smiles[k], seed, max_atoms), FORCE_FIELD_GEOMETRY
            if len(structures[k]) > max_atoms:
                raise StructureError(ids[k], _over_limit(len(structures[k]), max_atoms))
            good.append(k)
        except StructureError as exc:
            bad[k] = exc.reason
        except Exception as exc:  # anything else raised for this record is its reason too
            bad[k] = f"featurization failed: {describe_error(exc)}"
    keys = {k: structure_key(structures[k], smiles[k]) for k in good}
    identity = {
        ROW: rows,
        "formula": [structures[k].get_chemical_formula() if k in keys else None for k in range(len(rows))],
        "n_atoms": [len(structures[k]) if k in keys else None for k in range(len(rows))],
        SMILES: smiles,
        CANONICAL_SMILES: [keys[k].smiles if k in keys else None for k in range(len(rows))],
        "geometry": [geometry.get(k) if k in keys else None for k in range(len(rows))],
        STRUCTURE_KEY: [keys[k].key if k in keys else None for k in range(len(rows))],
        KEY_KIND: [keys[k].kind if k in keys else None for k in range(len(rows))],
    }
    tables = {}
    for featurizer in featurizers:  # all records at once: vectorised for molecules
        reasons = dict(bad)
        graphs = [_EMPTY_GRAPH] * len(rows)
        for k, graph in zip(good, featurize_each([structures[k] for k in good], featurizer, [ids[k] for k in good])):
            if isinstance(graph, StructureError):
                reasons[k] = graph.reason
            else:
                graphs[k] = graph
        reason = [reasons.get(k) for k in range(len(rows))]
        graph_table = graphs_to_table(graphs, ids, sources, featurizer=featurizer)
        tables[featurizer.content_hash()] = _chunk_table(piece, graph_table, identity, reason)
    return tables


def graph_table_chunk(piece: Piece, featurizer: FeaturizerConfig, max_atoms: int) -> pa.Table:
    """The chunk table of a graph table's ``piece`` (made with ``featurizer``): its graphs, larger ones than
    ``max_atoms`` quarantined."""
    table = read_piece(piece)
    check_featurizer(table.schema, featurizer, piece.path)
    schema = graph_table_schema(featurizer, {})
    graphs = pa.Table.from_arrays([table[f.name] for f in schema], schema=schema)
    numbers = table[S.NUMBERS].to_pylist()
    rows = len(numbers)
    identity = {
        ROW: table[ROW].to_pylist(),
        "formula": [Atoms(numbers=z).get_chemical_formula() for z in numbers],
        "n_atoms": [len(z) for z in numbers],
        SMILES: [None] * rows,
        CANONICAL_SMILES: [None] * rows,
        "geometry": [GRAPH_TABLE_GEOMETRY] * rows,
        STRUCTURE_KEY: [None] * rows,
        KEY_KIND: [None] * rows,
    }
    reason = [_over_limit(len(z), max_atoms) if len(z) > max_atoms else None for z in numbers]
    return _chunk_table(piece, graphs, identity, reason)


def _chunk_table(piece: Piece, graphs: pa.Table, identity: dict, reason: list) -> pa.Table:
    """The graph columns ``graphs`` (a graph table), then the identity columns and the reason."""
    metadata = {
        **graphs.schema.metadata,
        META_CHUNK: str(piece.chunk).encode(),
        META_FIRST_ROW: str(piece.first_row).encode(),
    }
    columns = {**identity, REASON: reason}
    arrays = list(graphs.columns) + [pa.array(columns[f.name], f.type) for f in IDENTITY_FIELDS]
    return pa.Table.from_arrays(arrays, schema=pa.schema([*graphs.schema, *IDENTITY_FIELDS], metadata=metadata))


def _embed(identifier: str, smiles: str, seed: int, max_atoms: int):
    try:
        atoms = embed_smiles(smiles, seed=seed, max_atoms=max_atoms)
    except EmbeddingError as exc:
        raise StructureError(identifier, str(exc)) from None
    atoms.info["id"] = identifier
    return atoms
