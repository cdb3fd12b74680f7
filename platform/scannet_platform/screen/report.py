"""The files a screen writes beside its Parquet shards: top-k tables (CSV, Markdown, and an HTML page with each
molecule's GA drawing), duplicate ids and structures (CSV), one histogram PNG per predicted column and
``summary.json``.

The top-k tables are sized for a chemist: each predicted value (and its ensemble standard deviation) is shown to
the decimal of the first significant digit of the model's recorded test MAE (0.063 eV: 2 decimals;
:data:`FALLBACK_DECIMALS` when the checkpoint records none), the Markdown and HTML headers name each model with its
test MAE, and ``source`` is shown relative to the common folder of the library's inputs. The Parquet keeps every
value at full precision and every source as read.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from ase import Atoms

from scannet.data import schema as S
from scannet.data.smiles import FORCE_FIELD_GEOMETRY, FORCE_FIELD_NOTE
from scannet.data.structures_table import Piece
from scannet.io.atomic import write_text_atomic
from scannet.io.paths import OutputFolder
from scannet_platform.screen.chunk import CANONICAL_SMILES
from scannet_platform.screen.library import ROW, SMILES
from scannet_platform.screen.models import ModelGroup
from scannet_platform.screen.select import (
    TOP_COLUMNS,
    Filter,
    Ranking,
    Scan,
    domain_table_columns,
    in_domain_columns,
    numeric_columns,
)

DUPLICATES_FILE = "duplicates.csv"
#: What a top-k page shows instead of the drawing of a row screened from a graph table.
GRAPH_TABLE_NOTE = "no coordinates in a graph table: no drawing"
#: Most rows of a top-k HTML page (each is drawn, ~10-50 ms per molecule).
HTML_ROWS = 200
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"
#: Decimals of a predicted value in the top-k tables when its model records no test MAE.
FALLBACK_DECIMALS = 3


def top_file_stem(ranking: Ranking) -> str:
    """``top-<column>-<max|min>``, safe as a file name (``alpha_Bohr^3`` -> ``alpha_Bohr_3``)."""
    from scannet.explain import safe_file_stem

    return safe_file_stem(f"top-{ranking.column}-{ranking.direction}")


def _cell(value, decimals: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:.6g}"
    return str(value)


def value_decimals(groups: Sequence[ModelGroup]) -> dict[str, int]:
    """Predicted column (and its ``_std``) -> the decimals the top-k tables show: those of the first significant
    digit of the model's recorded test MAE (0.063 -> 2, 0.5 -> 1, 12 -> 0), else :data:`FALLBACK_DECIMALS`."""
    decimals = {}
    for group in groups:
        for target in group.targets:
            mae = group.test_mae.get(target)
            shown = max(0, -math.floor(math.log10(mae))) if mae else FALLBACK_DECIMALS
            decimals[group.columns[target]] = shown
            if group.ensemble:
                decimals[group.std_column(target)] = shown
    return decimals


def model_lines(groups: Sequence[ModelGroup]) -> list[str]:
    """Per model group: what it is and the test MAE its checkpoint records per target, in the unit errors are
    reported in (``homo 62.8 meV``), and how the values are rounded."""
    from scannet.units import report_unit

    lines = []
    for group in groups:
        errors = []
        for target in group.targets:
            mae = group.test_mae.get(target)
            scale, unit = report_unit(group.units[target] or "")
            errors.append(f"{target} {mae * scale:.3g} {unit}".rstrip() if mae else f"{target} not recorded")
        best = " (the best of its members)" if group.ensemble else ""
        missing = f", {FALLBACK_DECIMALS} decimals where none is recorded" if len(group.test_mae) < len(errors) else ""
        lines.append(
            f"Model {group.describe()}: test MAE{best} {', '.join(errors)}. Values are rounded to the first digit of "
            f"that error{missing}; the Parquet keeps full precision."
        )
    return lines


def source_root(inputs: Sequence[str | Path]) -> Path:
    """The common folder of the library's inputs (a file's folder, a folder's parent): the top-k tables show each
    source relative to it."""
    return Path(os.path.commonpath([str(Path(item).resolve().parent) for item in inputs]))


def shown_source(source: str | None, root: Path) -> str:
    """``source`` relative to ``root``, or its file name when it lies elsewhere."""
    if not source:
        return ""
    path = Path(source).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def _value_columns(groups: Sequence[ModelGroup]) -> list[str]:
    """The predicted columns, each target's standard deviation after it for an ensemble."""
    return [c for g in groups for t in g.targets for c in ([g.columns[t]] + ([g.std_column(t)] if g.ensemble else []))]


def _top_header(groups: Sequence[ModelGroup]) -> list[str]:
    return ["rank", *TOP_COLUMNS, *_value_columns(groups), *domain_table_columns(groups), "geometry"]


def domain_note(scan: Scan, records: Sequence[dict], groups: Sequence[ModelGroup]) -> str | None:
    """How many of the rows shown (``records``) and of all screened rows lie outside the applicability domain;
    None when no model has a domain."""
    if scan.n_out_of_domain is None:
        return None
    columns = in_domain_columns(groups)
    outside = sum(any(record[c] != 1 for c in columns) for record in records)
    return (
        f"{outside:,} of the {len(records):,} rows shown, and {scan.n_out_of_domain:,} of all {scan.n_screened:,} "
        f"screened structures, lie outside the model's applicability domain ({', '.join(columns)} = 0: elements, "
        "heavy atoms or pooled-vector distance unlike its training data; docs/screening.md)"
    )


def _top_rows(table: pa.Table, groups: Sequence[ModelGroup], root: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a top-k table as text: values rounded (:func:`value_decimals`), sources relative
    to ``root``."""
    header = _top_header(groups)
    decimals = value_decimals(groups)
    rows = []
    for k, record in enumerate(table.to_pylist()):
        record = record | {S.SOURCE: shown_source(record[S.SOURCE], root)}
        rows.append([str(k + 1), *(_cell(record[c], decimals.get(c)) for c in header[1:])])
    return header, rows


def write_top_tables(
    out_dir: Path,
    scan: Scan,
    rankings: Sequence[Ranking],
    groups: Sequence[ModelGroup],
    filters: Sequence[Filter],
    root: Path,
) -> list[Path]:
    """``top-<column>-<max|min>.csv`` and ``.md`` per ranking (written also when no row passed); sources shown
    relative to ``root`` (:func:`source_root`)."""
    written = []
    folder = OutputFolder(out_dir)
    for ranking in rankings:
        table = scan.tops.get(ranking.column)
        header, rows = _top_rows(table, groups, root) if table is not None else (["rank", *TOP_COLUMNS], [])
        note = domain_note(scan, table.to_pylist() if table is not None else [], groups)
        stem = top_file_stem(ranking)
        csv_path, markdown_path = folder.path(f"{stem}.csv"), folder.path(f"{stem}.md")
        with open(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        order = "largest" if ranking.direction == "max" else "smallest"
        lines = [
            f"# Top {len(rows)} by {ranking.column} ({order} first)",
            "",
            f"{scan.n_passing:,} of {scan.n_screened:,} screened structures pass the filters"
            + (": " + "; ".join(f"`{f.text}`" for f in filters) if filters else " (no filter)")
            + ".",
            "",
            *(line for model in model_lines(groups) for line in (model, "")),
        ]
        if note is not None:
            lines += [f"**Applicability domain:** {note}.", ""]
        if any(row[-1] == FORCE_FIELD_GEOMETRY for row in rows):
            lines += [f"**Note:** {FORCE_FIELD_NOTE}.", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        markdown_path.write_text("\n".join(lines) + "\n")
        written += [csv_path, markdown_path]
    return written


def _top_structures(rows: Sequence[int], pieces: Sequence[Piece], seed: int, max_atoms: int) -> dict[int, Atoms | str]:
    """Library row -> its structure (SMILES re-embedded with the screen's seed: the geometry that was screened), or
    the reason it cannot be had; only the chunks holding ``rows`` are read."""
    from scannet.data.smiles import EmbeddingError, embed_smiles
    from scannet.data.structures_table import table_to_structures_or_errors
    from scannet_platform.screen.library import SMILES, is_graph_table, read_piece

    wanted, found = set(rows), {}
    for piece in pieces:
        inside = [r for r in wanted if piece.first_row <= r < piece.first_row + piece.rows]
        if not inside:
            continue
        if is_graph_table(piece.path):
            found |= dict.fromkeys(inside, GRAPH_TABLE_NOTE)
            continue
        table = read_piece(piece)
        table = table.take(pa.array(sorted(r - piece.first_row for r in inside), pa.int64()))
        smiles = table[SMILES].to_pylist() if SMILES in table.column_names else [None] * table.num_rows
        for row, text, structure in zip(table[ROW].to_pylist(), smiles, table_to_structures_or_errors(table)):
            if text:
                try:
                    found[row] = embed_smiles(text, seed=seed, max_atoms=max_atoms)
                except EmbeddingError as exc:
                    found[row] = f"SMILES not embedded: {exc}"
            else:
                found[row] = structure if isinstance(structure, Atoms) else f"structure not read back: {structure}"
    return found


def write_top_reports(
    out_dir: Path,
    scan: Scan,
    rankings: Sequence[Ranking],
    groups: Sequence[ModelGroup],
    filters: Sequence[Filter],
    pieces: Sequence[Piece],
    seed: int,
    max_atoms: int,
    root: Path,
) -> list[Path]:
    """``top-<column>-<max|min>.html`` per ranking: the top rows (at most :data:`HTML_ROWS`) as a sortable page
    with each molecule's GA drawing (:mod:`scannet.explain.report`); a row that cannot be drawn keeps its values
    and gets the reason. Values are rounded and sources shown as in the CSV and Markdown tables."""
    from scannet.explain import explained_quantity
    from scannet.explain.drawing import Caption, draw_ga
    from scannet.explain.report import Column, Entry, Report, write_html_report
    from scannet.predictor import describe_error

    written = []
    for ranking in rankings:
        table = scan.tops.get(ranking.column)
        records = table.slice(0, HTML_ROWS).to_pylist() if table is not None else []
        group = _group_of(ranking.column, groups)
        structures = _top_structures([r[ROW] for r in records], pieces, seed, max_atoms)
        header = _top_header(groups)
        numeric = {"rank", *numeric_columns(groups).values()}
        formats = {c: f".{d}f" for c, d in value_decimals(groups).items()}
        columns = tuple(
            Column(c, c, numeric=c in numeric, number_format=formats.get(c, Column.number_format)) for c in header
        )
        entries = []
        for k, record in enumerate(records):
            structure = structures.get(record[ROW], "not found in the library")
            error, svg = (structure, None) if isinstance(structure, str) else (None, None)
            if error is None:
                values = tuple((t, float(record[group.columns[t]]), group.units[t] or "") for t in group.targets)
                caption = Caption(f"#{k + 1} {record[S.ID]}", values, explained_quantity(group.targets))
                scores = np.asarray(record[group.ga_column], dtype=float)
                try:
                    svg = draw_ga(structure, scores, caption, record[SMILES], formats=("svg",)).svg
                except Exception as exc:
                    error = f"not drawn: {describe_error(exc)}"
            cells = {"rank": k + 1, **{c: record[c] for c in header[1:]}}
            cells[S.SOURCE] = shown_source(record[S.SOURCE], root)
            entries.append(Entry(str(record[S.ID]), cells, svg, error))
        order = "largest" if ranking.direction == "max" else "smallest"
        shown = f"; the first {len(records)} of {table.num_rows} rows are shown" if len(records) < _rows(table) else ""
        notes = [
            f"{scan.n_passing:,} of {scan.n_screened:,} screened structures pass the filters"
            + (": " + "; ".join(f.text for f in filters) if filters else " (no filter)")
            + f". Ranked by {ranking.column}, {order} first{shown}.",
            f"GA scores explain {explained_quantity(group.targets)}" + (", the mean over the ensemble's members."
                                                                        if group.ensemble else "."),
            *model_lines(groups),
        ]
        note = domain_note(scan, records, groups)
        if note is not None:
            notes.append(f"Applicability domain: {note}.")
        if any(r["geometry"] == FORCE_FIELD_GEOMETRY for r in records):
            notes.append(f"{FORCE_FIELD_NOTE}.")
        title = f"Top {len(records)} by {ranking.column} ({order} first)"
        path = OutputFolder(out_dir).path(f"{top_file_stem(ranking)}.html")
        written.append(write_html_report(path, Report(title, columns, tuple(entries), tuple(notes))))
    return written


def _rows(table: pa.Table | None) -> int:
    return 0 if table is None else table.num_rows


def _group_of(column: str, groups: Sequence[ModelGroup]) -> ModelGroup:
    """The model group that predicts ``column`` (a target's value or standard deviation); the first otherwise."""
    for group in groups:
        if column in group.columns.values() or (group.ensemble and column in map(group.std_column, group.targets)):
            return group
    return groups[0]


#: The columns of ``duplicates.csv``.
DUPLICATE_COLUMNS = ("reason", "key", ROW, S.ID, CANONICAL_SMILES, S.SOURCE, "where")


def write_duplicates(out_dir: Path, scan: Scan) -> Path:
    """``duplicates.csv``: every row of a repeated id (reason ``same id``, key: the id) and of a repeated structure
    (``same structure``, key: the InChIKey or geometry hash), with its row, id, canonical SMILES, source and where
    (predictions / quarantine); a row can be listed for both reasons."""
    path = OutputFolder(out_dir).path(DUPLICATES_FILE)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DUPLICATE_COLUMNS)
        for batch in scan.duplicates.select(list(DUPLICATE_COLUMNS)).to_batches(max_chunksize=4096):
            writer.writerows([[_cell(value) for value in row.values()] for row in batch.to_pylist()])
    return path


def write_histograms(out_dir: Path, scan: Scan, groups: Sequence[ModelGroup]) -> list[Path]:
    """``plots/hist-<column>.png`` for each predicted column (and ensemble standard deviation)."""
    from scannet.explain import safe_file_stem
    from scannet_platform.tracking.plots import PLOT_DPI, pyplot, save_figure

    plt = pyplot()
    output = OutputFolder(out_dir)
    folder = output.folder(PLOTS_DIR)
    units = {g.columns[t]: g.units[t] for g in groups for t in g.targets}
    units |= {g.std_column(t): g.units[t] for g in groups if g.ensemble for t in g.targets}
    paths = []
    for column, (counts, edges) in scan.histograms.items():
        figure, axis = plt.subplots(figsize=(6, 4), dpi=PLOT_DPI)
        axis.stairs(counts, edges, fill=True, alpha=0.7)
        unit = f" ({units[column]})" if units.get(column) else ""
        axis.set_xlabel(f"{column}{unit}")
        axis.set_ylabel("structures")
        axis.set_title(f"{column}: {int(counts.sum()):,} screened structures")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = output.path(PLOTS_DIR, f"{safe_file_stem(f'hist-{column}')}.png")
        paths.append(save_figure(figure, folder, path.name))
    return paths


def write_summary(out_dir: Path, summary: dict) -> Path:
    return write_text_atomic(OutputFolder(out_dir).path(SUMMARY_FILE), json.dumps(summary, indent=1, default=str))
