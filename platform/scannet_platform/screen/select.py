"""What is read back from a screen's shards, streamed one part at a time: counts, filters, top-k per target,
histograms and duplicate ids. Nothing is sorted globally and no part is held after it is read.

Filters (``--filter``, all must hold; a null value fails) and rankings name a numeric column of the predictions
exactly as it is written (``gap_eV``, ``gap_eV_std``, ``n_atoms``, ``row``, the domain's ``heavy_atoms``,
``domain_distance``, ``in_domain``); the bare target name (``gap``, ``gap_std``) is accepted as an alias of its
column where it names no other column::

    "gap_eV between 4 6"   4 <= gap_eV <= 6 (bounds included)
    "homo_eV < -5.5"       also <=, >, >=, ==, !=
    "gap_eV_std <= 0.1"    the ensemble's standard deviation of gap
    "in_domain == 1"       inside the model's applicability domain (a model with a domain file)

Top-k (``--top-k``, ``--rank COLUMN:max|min``, default max): per ranked column (the ``--rank`` ones, else the
first predicted target, largest first) the k best rows that pass the filters, ties broken by library row. Each part gives its own k best (``np.lexsort`` of at most k + part rows)
and they are merged with the k kept so far, so memory holds 2k rows per target, not the library.

Duplicates: the 64-bit hash of every id (``pandas.util.hash_array``, 8 bytes a row, screened and quarantined
rows alike) and of every screened row's structure key (:mod:`scannet.data.structure_key`, 8 bytes more) is kept;
repeated hashes are confirmed on the ids or keys themselves in a second pass over the parts that hold them, and
every row of a repeated id (``same id``) or structure (``same structure``) is listed (all are kept, none
overwritten).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scannet.data import schema as S
from scannet.typed_config import ConfigError
from scannet_platform.screen.chunk import (
    CANONICAL_SMILES,
    HEAVY_ATOMS,
    PREDICTIONS_DIR,
    QUARANTINE_DIR,
    STRUCTURE_KEY,
    domain_columns,
)
from scannet_platform.screen.library import ROW, SMILES
from scannet_platform.screen.models import ModelGroup

COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
DIRECTIONS = ("max", "min")
HISTOGRAM_BINS = 50
#: Columns of the top-k tables before the predictions.
TOP_COLUMNS = (ROW, S.ID, "formula", "n_atoms", CANONICAL_SMILES, S.SOURCE)
#: ``reason`` of a row of ``duplicates.csv``.
SAME_ID, SAME_STRUCTURE = "same id", "same structure"
#: The rows of duplicates.csv: every row of a repeated id or structure key, with the reason.
DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string()),
        pa.field("key", pa.string()),
        pa.field(ROW, pa.int64()),
        pa.field(S.ID, pa.string()),
        pa.field(CANONICAL_SMILES, pa.string()),
        pa.field(S.SOURCE, pa.string()),
        pa.field("where", pa.string()),
    ]
)


def numeric_columns(groups: Sequence[ModelGroup]) -> dict[str, str]:
    """Names a filter or a ranking may use -> the column: every numeric column by its own name (``gap_eV``,
    ``gap_eV_std``, ``n_atoms``, ``row``), and the bare target name (``gap``, ``gap_std``) as an alias where it
    names no other column."""
    names = {"n_atoms": "n_atoms", ROW: ROW}
    aliases = {}
    for group in groups:
        for target in group.targets:
            names[group.columns[target]] = aliases[target] = group.columns[target]
            if group.ensemble:
                names[group.std_column(target)] = aliases[f"{target}_std"] = group.std_column(target)
        domain = domain_columns(group, groups)
        if domain:
            names[HEAVY_ATOMS] = HEAVY_ATOMS
            for criterion in ("domain_distance", "in_domain"):  # unknown_elements is text
                names[domain[criterion]] = domain[criterion]
    return names | {alias: column for alias, column in aliases.items() if alias not in names}


def unknown_column(where: str, name: str, names: Mapping[str, str]) -> ConfigError:
    """The error for a name that is no column; it lists the column names (not the aliases)."""
    ensemble = name.endswith("_std") and name.removesuffix("_std") in names
    hint = " (a standard deviation needs an ensemble: several models of the same targets)" if ensemble else ""
    return ConfigError(f"{where}: unknown column {name!r}{hint}; the columns: {', '.join(sorted(set(names.values())))}")


def in_domain_columns(groups: Sequence[ModelGroup]) -> list[str]:
    """The ``in_domain`` column of every model group that has an applicability domain."""
    return [columns["in_domain"] for columns in (domain_columns(g, groups) for g in groups) if columns]


def domain_table_columns(groups: Sequence[ModelGroup]) -> list[str]:
    """The domain columns of the top-k tables: ``heavy_atoms``, then each group's criteria; none without a domain."""
    per_group = [list(domain_columns(g, groups).values()) for g in groups]
    return [HEAVY_ATOMS, *(c for columns in per_group for c in columns)] if any(per_group) else []


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None
    if math.isnan(value):
        raise ConfigError(f"{where}: NaN is not a bound")
    return value


@dataclass(frozen=True)
class Filter:
    """``column op value``, or ``column between low high`` (bounds included)."""

    text: str
    column: str
    op: str
    value: float
    high: float | None = None

    def mask(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            if self.op == "between":
                return (values >= self.value) & (values <= self.high)
            return COMPARISONS[self.op](values, self.value)


def parse_filter(text: str, names: Mapping[str, str]) -> Filter:
    where = f"--filter {text!r}"
    tokens = text.split()
    if len(tokens) < 3:
        raise ConfigError(
            f"{where}: write 'COLUMN between LOW HIGH' or 'COLUMN OP VALUE' (OP: {' '.join(COMPARISONS)})"
        )
    name, op = tokens[0], tokens[1].lower()
    if name not in names:
        raise unknown_column(where, name, names)
    if op == "between":
        if len(tokens) != 4:
            raise ConfigError(f"{where}: 'between' takes two bounds, e.g. 'gap_eV between 4 6'")
        low, high = _number(tokens[2], where), _number(tokens[3], where)
        if low > high:
            raise ConfigError(f"{where}: the lower bound {low:g} is above the upper bound {high:g}")
        return Filter(text, names[name], op, low, high)
    if op not in COMPARISONS or len(tokens) != 3:
        raise ConfigError(
            f"{where}: write 'COLUMN between LOW HIGH' or 'COLUMN OP VALUE' (OP: {' '.join(COMPARISONS)})"
        )
    return Filter(text, names[name], op, _number(tokens[2], where))


@dataclass(frozen=True)
class Ranking:
    column: str
    direction: str  # "max": largest first; "min": smallest first


def parse_rankings(texts: Sequence[str], groups: Sequence[ModelGroup]) -> list[Ranking]:
    """``--rank COLUMN[:max|min]`` (default max), in the order given; without any, the first predicted target,
    largest first. Only ranked columns get a top-k table."""
    names = numeric_columns(groups)
    chosen: dict[str, str] = {}
    for text in texts:
        name, _, direction = text.partition(":")
        direction = direction or "max"
        if name not in names:
            raise unknown_column(f"--rank {text!r}", name, names)
        if direction not in DIRECTIONS:
            raise ConfigError(f"--rank {text!r}: the direction must be max or min, got {direction!r}")
        chosen[names[name]] = direction
    if not chosen and groups:
        chosen[groups[0].columns[groups[0].targets[0]]] = "max"
    return [Ranking(column, direction) for column, direction in chosen.items()]


class TopK:
    """The k best rows of a stream of tables for one ranking (ties: lower library row first)."""

    def __init__(self, ranking: Ranking, k: int) -> None:
        self.ranking, self.k = ranking, k
        self.best: pa.Table | None = None

    def add(self, table: pa.Table) -> None:
        if self.k <= 0 or table.num_rows == 0:
            return
        merged = table if self.best is None else pa.concat_tables([self.best, table])
        values = merged[self.ranking.column].to_numpy(zero_copy_only=False).astype(np.float64)
        keys = -values if self.ranking.direction == "max" else values
        valid = np.flatnonzero(~np.isnan(keys))
        rows = merged[ROW].to_numpy()
        order = valid[np.lexsort((rows[valid], keys[valid]))][: self.k]
        self.best = merged.take(pa.array(order, pa.int64()))

    def table(self) -> pa.Table | None:
        return self.best


@dataclass
class Scan:
    """Everything read back from a finished screen."""

    n_screened: int = 0
    n_quarantined: int = 0
    n_passing: int = 0  # screened rows that pass every filter
    n_force_field: int = 0  # rows with a geometry embedded from SMILES
    n_out_of_domain: int | None = None  # screened rows outside a model group's applicability domain (None: no domain)
    tops: dict[str, pa.Table] = field(default_factory=dict)  # ranked column -> top-k rows, GA scores included
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    duplicates: pa.Table = field(default_factory=DUPLICATE_SCHEMA.empty_table)  # rows of a repeated id or structure
    quarantine_sample: list[dict] = field(default_factory=list)

    def _keys(self, reason: str) -> pa.ChunkedArray:
        return self.duplicates.filter(pc.equal(self.duplicates["reason"], reason))["key"]

    @property
    def n_duplicate_ids(self) -> int:
        return pc.count_distinct(self._keys(SAME_ID)).as_py()

    @property
    def n_duplicate_id_rows(self) -> int:
        return len(self._keys(SAME_ID))

    @property
    def n_duplicate_structures(self) -> int:
        return pc.count_distinct(self._keys(SAME_STRUCTURE)).as_py()

    @property
    def n_duplicate_structure_rows(self) -> int:
        return len(self._keys(SAME_STRUCTURE))


def _parts(out_dir: Path, folder: str) -> list[Path]:
    return sorted((out_dir / folder).glob("part-*.parquet"))


def _value_ranges(parts: Sequence[Path], columns: Sequence[str]) -> dict[str, tuple[float, float]]:
    """min and max of each column over all parts, from the Parquet footers' statistics (no data read)."""
    ranges: dict[str, list[float]] = {c: [math.inf, -math.inf] for c in columns}
    for path in parts:
        metadata = pq.ParquetFile(path).metadata
        names = [metadata.schema.column(j).name for j in range(metadata.num_columns)]
        for group in range(metadata.num_row_groups):
            for column in columns:
                statistics = metadata.row_group(group).column(names.index(column)).statistics
                if statistics is not None and statistics.has_min_max:
                    ranges[column][0] = min(ranges[column][0], float(statistics.min))
                    ranges[column][1] = max(ranges[column][1], float(statistics.max))
    return {c: (lo, hi) for c, (lo, hi) in ranges.items() if lo <= hi}


def _string_hashes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """[n] uint64: the 64-bit hash of each string of ``values`` (ids, structure keys)."""
    from pandas.util import hash_array

    return hash_array(np.asarray(values.to_pylist(), dtype=object))


def scan_results(
    out_dir: str | Path,
    groups: Sequence[ModelGroup],
    filters: Sequence[Filter] = (),
    rankings: Sequence[Ranking] = (),
    top_k: int = 100,
    bins: int = HISTOGRAM_BINS,
    sample: int = 10,
) -> Scan:
    """Read the finished parts back (value columns only, one part at a time) into a :class:`Scan`."""
    from scannet.data.smiles import FORCE_FIELD_GEOMETRY

    out_dir = Path(out_dir)
    scan = Scan()
    predictions, quarantines = _parts(out_dir, PREDICTIONS_DIR), _parts(out_dir, QUARANTINE_DIR)
    value_columns = [
        c for g in groups for t in g.targets for c in ([g.columns[t]] + ([g.std_column(t)] if g.ensemble else []))
    ]
    ranges = _value_ranges(predictions, value_columns)
    counts = {c: np.zeros(bins, np.int64) for c in ranges}
    edges = {c: np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1) for c, (lo, hi) in ranges.items()}
    tops = [TopK(r, top_k) for r in rankings]
    wanted = [*TOP_COLUMNS, SMILES, "geometry", STRUCTURE_KEY, *value_columns]
    wanted += dict.fromkeys(g.ga_column for g in groups)
    wanted += domain_table_columns(groups)
    in_domain = in_domain_columns(groups)
    if in_domain:
        scan.n_out_of_domain = 0
    hashes, key_hashes = [], []
    for path in predictions:
        table = pq.read_table(path, columns=wanted)
        scan.n_screened += table.num_rows
        geometry = table["geometry"].to_numpy(zero_copy_only=False)
        scan.n_force_field += int(np.sum(geometry == FORCE_FIELD_GEOMETRY))
        if in_domain:
            inside = np.all([table[c].to_numpy(zero_copy_only=False) == 1 for c in in_domain], axis=0)
            scan.n_out_of_domain += int(np.count_nonzero(~inside))
        for column in ranges:
            values = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
            counts[column] += np.histogram(values[~np.isnan(values)], edges[column])[0]
        keep = np.ones(table.num_rows, bool)
        for rule in filters:
            keep &= rule.mask(table[rule.column].to_numpy(zero_copy_only=False).astype(np.float64))
        passing = table.filter(pa.array(keep)) if filters else table
        scan.n_passing += passing.num_rows
        for top in tops:
            top.add(passing)
        hashes.append(_string_hashes(table[S.ID]))
        key_hashes.append(_string_hashes(table[STRUCTURE_KEY]))
    for path in quarantines:
        table = pq.read_table(path)
        scan.n_quarantined += table.num_rows
        if len(scan.quarantine_sample) < sample:
            scan.quarantine_sample += table.slice(0, sample - len(scan.quarantine_sample)).to_pylist()
        hashes.append(_string_hashes(table[S.ID]))
    scan.histograms = {c: (counts[c], edges[c]) for c in ranges}
    scan.tops = {top.ranking.column: top.table() for top in tops if top.table() is not None}
    scan.duplicates = pa.concat_tables(
        [
            _repeated(hashes, predictions + quarantines, S.ID, SAME_ID),
            _repeated(key_hashes, predictions, STRUCTURE_KEY, SAME_STRUCTURE),
        ]
    )
    return scan


def _repeated(hashes: list[np.ndarray], parts: Sequence[Path], column: str, reason: str) -> pa.Table:
    """The rows of ``parts`` whose ``column`` value occurs more than once (``hashes``: that column's hashes, one
    array per part; repeats confirmed on the values; a null value, e.g. no structure key, repeats nothing), as a
    :data:`DUPLICATE_SCHEMA` table (``reason``, ``key``: the value, row, id, source, canonical SMILES, where:
    predictions / quarantine) ordered by key and row. An Arrow table, about 100 bytes a row: in a library of many
    copies nearly every row is listed."""
    empty = DUPLICATE_SCHEMA.empty_table()
    if not hashes:
        return empty
    values, repeats = np.unique(np.concatenate(hashes), return_counts=True)
    suspects = values[repeats > 1]
    if not len(suspects):
        return empty
    pieces = []
    for part, part_hashes in zip(parts, hashes):
        hit = np.isin(part_hashes, suspects)
        if not hit.any():
            continue
        where = "quarantine" if part.parent.name == QUARANTINE_DIR else "predictions"
        smiles = [CANONICAL_SMILES] if where == "predictions" else []
        found = pq.read_table(part, columns=list(dict.fromkeys([ROW, S.ID, S.SOURCE, column, *smiles])))
        found = found.filter(pa.array(hit))
        n = found.num_rows
        columns = {
            "reason": pa.array([reason] * n, pa.string()),
            "key": found[column],
            ROW: found[ROW],
            S.ID: found[S.ID],
            S.SOURCE: found[S.SOURCE],
            CANONICAL_SMILES: found[CANONICAL_SMILES] if smiles else pa.nulls(n, pa.string()),
            "where": pa.array([where] * n, pa.string()),
        }
        pieces.append(pa.table({f.name: columns[f.name].cast(f.type) for f in DUPLICATE_SCHEMA}, schema=DUPLICATE_SCHEMA))
    table = pa.concat_tables(pieces) if pieces else empty
    table = table.filter(pc.is_valid(table["key"]))
    counts = pc.value_counts(table["key"])
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    return table.filter(pc.is_in(table["key"], value_set=repeated)).sort_by([("key", "ascending"), (ROW, "ascending")])
