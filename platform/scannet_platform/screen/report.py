"""The files a screen writes beside its Parquet shards: top-k tables (CSV and Markdown), duplicate ids (CSV),
one histogram PNG per predicted column and ``summary.json``."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from scannet.data import schema as S
from scannet.data.smiles import FORCE_FIELD_GEOMETRY, FORCE_FIELD_NOTE
from scannet.io.atomic import write_text_atomic
from scannet.io.paths import OutputFolder
from scannet_platform.screen.library import ROW
from scannet_platform.screen.models import ModelGroup
from scannet_platform.screen.select import TOP_COLUMNS, Filter, Ranking, Scan

DUPLICATES_FILE = "duplicates.csv"
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"


def top_file_stem(ranking: Ranking) -> str:
    """``top-<column>-<max|min>``, safe as a file name (``alpha_Bohr^3`` -> ``alpha_Bohr_3``)."""
    from scannet.explain import safe_file_stem

    return safe_file_stem(f"top-{ranking.column}-{ranking.direction}")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _top_rows(table: pa.Table, groups: Sequence[ModelGroup]) -> tuple[list[str], list[list]]:
    values = [
        c for g in groups for t in g.targets for c in ([g.columns[t]] + ([g.std_column(t)] if g.ensemble else []))
    ]
    header = ["rank", *TOP_COLUMNS, *values, "geometry"]
    rows = [[k + 1, *(record[c] for c in header[1:])] for k, record in enumerate(table.to_pylist())]
    return header, rows


def write_top_tables(
    out_dir: Path, scan: Scan, rankings: Sequence[Ranking], groups: Sequence[ModelGroup], filters: Sequence[Filter]
) -> list[Path]:
    """``top-<column>-<max|min>.csv`` and ``.md`` per ranking (written also when no row passed)."""
    written = []
    folder = OutputFolder(out_dir)
    for ranking in rankings:
        table = scan.tops.get(ranking.column)
        header, rows = _top_rows(table, groups) if table is not None else (["rank", *TOP_COLUMNS], [])
        stem = top_file_stem(ranking)
        csv_path, markdown_path = folder.path(f"{stem}.csv"), folder.path(f"{stem}.md")
        with open(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows([[_cell(v) for v in row] for row in rows])
        order = "largest" if ranking.direction == "max" else "smallest"
        lines = [
            f"# Top {len(rows)} by {ranking.column} ({order} first)",
            "",
            f"{scan.n_passing:,} of {scan.n_screened:,} screened structures pass the filters"
            + (": " + "; ".join(f"`{f.text}`" for f in filters) if filters else " (no filter)")
            + ".",
            "",
        ]
        if any(row[-1] == FORCE_FIELD_GEOMETRY for row in rows):
            lines += [f"**Note:** {FORCE_FIELD_NOTE}.", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
        markdown_path.write_text("\n".join(lines) + "\n")
        written += [csv_path, markdown_path]
    return written


def write_duplicates(out_dir: Path, scan: Scan) -> Path:
    """``duplicates.csv``: id, row, source and where (predictions / quarantine) of every row of a repeated id."""
    path = OutputFolder(out_dir).path(DUPLICATES_FILE)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([S.ID, ROW, S.SOURCE, "where"])
        writer.writerows([[d[S.ID], d[ROW], d[S.SOURCE] or "", d["where"]] for d in scan.duplicates])
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
