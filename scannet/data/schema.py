"""Column names and Arrow schemas of the two on-disk tables (Parquet).

Structures table: one row per structure, the input of featurization.

    id            string                         stable identifier (unique within a dataset)
    numbers       list<int16>                    atomic numbers [n]
    positions     list<fixed_size_list<f64, 3>>  Cartesian coordinates [n, 3], Å
    cell          fixed_size_list<f64, 9>        lattice vectors as rows, row-major [3, 3], Å (zeros: none)
    pbc           fixed_size_list<bool, 3>       periodic directions (all False: non-periodic)
    source        string                         where the structure came from (file, dataset)
    <target>      float64, one column each       e.g. homo, energy; units in the schema metadata

Graph table: one row per featurized structure, the input of training (batch keys in scannet.batch).

    id, numbers, source, <target>                as above
    edge_center, edge_neighbor   list<int32>     centre i and neighbour j of each kept edge [E]
    distance, solid_angle, solid_angle_norm      list<float32> [E]

``cell`` and ``pbc`` are declared nullable but always written: pyarrow cannot read back a Parquet
fixed-size-list column holding nulls. Readers treat a null as non-periodic.

Schema metadata (bytes keys/values): ``scannet.table`` = "structures" | "graphs",
``scannet.version`` = format version, ``scannet.units`` = JSON {target: unit}, and for graph tables
``scannet.featurizer`` = JSON of the FeaturizerConfig and ``scannet.featurizer_hash`` = its content hash.
"""

from __future__ import annotations

import json

import pyarrow as pa

TABLE_VERSION = "1"

ID = "id"
NUMBERS = "numbers"
POSITIONS = "positions"
CELL = "cell"
PBC = "pbc"
SOURCE = "source"
EDGE_CENTER = "edge_center"
EDGE_NEIGHBOR = "edge_neighbor"
DISTANCE = "distance"
SOLID_ANGLE = "solid_angle"
SOLID_ANGLE_NORM = "solid_angle_norm"

META_TABLE = b"scannet.table"
META_VERSION = b"scannet.version"
META_UNITS = b"scannet.units"
META_FEATURIZER = b"scannet.featurizer"
META_FEATURIZER_HASH = b"scannet.featurizer_hash"

STRUCTURE_FIELDS = [
    pa.field(ID, pa.string(), nullable=False),
    pa.field(NUMBERS, pa.list_(pa.int16()), nullable=False),
    pa.field(POSITIONS, pa.list_(pa.list_(pa.float64(), 3)), nullable=False),
    pa.field(CELL, pa.list_(pa.float64(), 9)),
    pa.field(PBC, pa.list_(pa.bool_(), 3)),
    pa.field(SOURCE, pa.string()),
]

GRAPH_FIELDS = [
    pa.field(ID, pa.string(), nullable=False),
    pa.field(NUMBERS, pa.list_(pa.int16()), nullable=False),
    pa.field(EDGE_CENTER, pa.list_(pa.int32()), nullable=False),
    pa.field(EDGE_NEIGHBOR, pa.list_(pa.int32()), nullable=False),
    pa.field(DISTANCE, pa.list_(pa.float32()), nullable=False),
    pa.field(SOLID_ANGLE, pa.list_(pa.float32()), nullable=False),
    pa.field(SOLID_ANGLE_NORM, pa.list_(pa.float32()), nullable=False),
    pa.field(SOURCE, pa.string()),
]


def _with_targets(fields: list[pa.Field], units: dict[str, str], metadata: dict[bytes, bytes]) -> pa.Schema:
    reserved = {f.name for f in fields}
    clash = reserved & set(units)
    if clash:
        raise ValueError(f"target names {sorted(clash)} clash with reserved columns")
    targets = [pa.field(name, pa.float64()) for name in units]
    return pa.schema(fields + targets, metadata={META_UNITS: json.dumps(units).encode(), **metadata})


def structures_schema(units: dict[str, str]) -> pa.Schema:
    """The structures-table schema with one float64 column per target ({name: unit})."""
    return _with_targets(STRUCTURE_FIELDS, units, {META_TABLE: b"structures", META_VERSION: TABLE_VERSION.encode()})


def graphs_schema(units: dict[str, str], featurizer_json: str, featurizer_hash: str) -> pa.Schema:
    """The graph-table schema, keyed by the featurizer settings that produced it."""
    metadata = {
        META_TABLE: b"graphs",
        META_VERSION: TABLE_VERSION.encode(),
        META_FEATURIZER: featurizer_json.encode(),
        META_FEATURIZER_HASH: featurizer_hash.encode(),
    }
    return _with_targets(GRAPH_FIELDS, units, metadata)


def table_units(schema: pa.Schema) -> dict[str, str]:
    """{target: unit} recorded in a table's schema metadata."""
    return json.loads((schema.metadata or {}).get(META_UNITS, b"{}"))
