"""One self-contained HTML page for a set of explained structures: a sortable table with each GA drawing.

The page needs nothing at view time: styles and the sorting script are inline, the drawings are SVG documents
in ``data:`` URIs, and its Content-Security-Policy forbids every other source, so it opens the same offline,
attached to an e-mail or from an archive. All text from the input (names, SMILES, errors) is HTML-escaped.

Sorting: a click on a column heading sorts by it (numbers as numbers, empty cells last), a second click
reverses; ``#sort=<column>`` or ``#sort=<column>:desc`` in the address sorts on opening (``<column>`` is
the heading's ``data-key``), so a sorted view can be shared as a link. A click on a drawing enlarges it.
A drawing that fails to load is reported on the browser console, naming its structure.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scannet.io.atomic import write_text_atomic


@dataclass(frozen=True)
class Column:
    """One column of the table: its heading, the key ``#sort=`` uses, and whether its cells are numbers."""

    key: str
    title: str
    numeric: bool = False
    number_format: str = ".4g"  # how numbers are shown (sorting uses the full value); ints get thousands commas


@dataclass(frozen=True)
class Entry:
    """One structure of the report: its cells (by column key), its drawing (SVG text) and its error, if any."""

    name: str
    cells: dict[str, str | float | int | None]
    drawing_svg: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Report:
    """The page: a title, notes shown above the table (e.g. the geometry caveat), the columns and the entries."""

    title: str
    columns: tuple[Column, ...]
    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        keys = [column.key for column in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"report columns must have distinct keys, got {keys}")


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; margin: 0 0 .4rem; }
p.note { margin: .2rem 0; color: #444; max-width: 70rem; }
p.counts { margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .6rem; text-align: left; vertical-align: middle; }
td { max-width: 14rem; overflow-wrap: break-word; }
th { position: sticky; top: 0; background: #f5f5f7; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.smiles { font-family: ui-monospace, monospace; font-size: .8rem; max-width: 16rem; overflow-wrap: break-word; }
td.error { color: #a40000; max-width: 24rem; }
td.drawing { max-width: none; }
img.drawing { width: 340px; height: auto; cursor: zoom-in; display: block; }
img.drawing.large { width: 720px; cursor: zoom-out; }
tr.failed td { background: #fff6f6; }
"""

_SCRIPT = """
(function () {
  const table = document.getElementById("report");
  const body = table.tBodies[0];
  const headings = Array.from(table.tHead.rows[0].cells);
  function sortBy(index, descending) {
    const numeric = headings[index].dataset.numeric === "1";
    const rows = Array.from(body.rows);
    const value = (row) => row.cells[index].dataset.value;
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last, either way
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach((row) => body.appendChild(row));
    headings.forEach((h, k) => h.setAttribute("aria-sort", k === index ? (descending ? "descending" : "ascending") : "none"));
  }
  headings.forEach((heading, index) => heading.addEventListener("click", () => {
    sortBy(index, heading.getAttribute("aria-sort") === "ascending");
  }));
  const wanted = /^#sort=([^:]+)(:desc)?$/.exec(decodeURIComponent(location.hash));
  if (wanted) {
    const index = headings.findIndex((h) => h.dataset.key === wanted[1]);
    if (index >= 0) sortBy(index, Boolean(wanted[2]));
  }
  document.querySelectorAll("img.drawing").forEach((img) => img.addEventListener("click", () => img.classList.toggle("large")));
  window.addEventListener("load", () => {
    let loaded = 0;
    document.querySelectorAll("img.drawing").forEach((img) => {
      if (img.naturalWidth > 0) loaded += 1; else console.error("GA drawing failed to load: " + img.alt);
    });
    document.body.dataset.drawingsLoaded = String(loaded);
  });
})();
"""

#: Nothing but this page's own styles, script and data: URIs may load.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _number(value: float | int, number_format: str) -> str:
    return format(value, number_format) if isinstance(value, float) else f"{value:,}"


def _cell(column: Column, value: str | float | int | None) -> str:
    """A ``<td>`` whose ``data-value`` is what sorting compares (full precision; empty when missing)."""
    missing = value is None or (isinstance(value, float) and not math.isfinite(value))
    if column.numeric:
        shown = "" if missing else _number(value, column.number_format)
        return f'<td class="num" data-value="{"" if missing else repr(value)}">{shown}</td>'
    text = "" if value is None else str(value)
    css = ' class="smiles"' if column.key == "smiles" else ""
    return f'<td{css} data-value="{html.escape(text.casefold())}">{html.escape(text)}</td>'


def _drawing_cell(entry: Entry) -> str:
    if entry.drawing_svg is None:
        return '<td data-value=""></td>'
    encoded = base64.b64encode(entry.drawing_svg.encode("utf-8")).decode("ascii")
    alt = html.escape(f"GA drawing of {entry.name}")
    return f'<td class="drawing" data-value=""><img class="drawing" alt="{alt}" src="data:image/svg+xml;base64,{encoded}"></td>'


def render_html(report: Report) -> str:
    """The page as text (UTF-8)."""
    def heading(key: str, title: str, numeric: bool = False) -> str:
        return f'<th data-key="{html.escape(key)}" data-numeric="{int(numeric)}" aria-sort="none">{html.escape(title)}</th>'

    # The drawing comes second, after the first column (the name or the rank), so a wide table never pushes it
    # off the screen; the error comes last.
    first, rest = report.columns[:1], report.columns[1:]
    headings = "".join(heading(c.key, c.title, c.numeric) for c in first) + heading("drawing", "GA drawing")
    headings += "".join(heading(c.key, c.title, c.numeric) for c in rest) + heading("error", "error")
    rows = []
    for entry in report.entries:
        cells = "".join(_cell(c, entry.cells.get(c.key)) for c in first) + _drawing_cell(entry)
        cells += "".join(_cell(c, entry.cells.get(c.key)) for c in rest)
        error = entry.error or ""
        cells += f'<td class="error" data-value="{html.escape(error.casefold())}">{html.escape(error)}</td>'
        rows.append(f'<tr{" class=failed" if entry.error else ""}>{cells}</tr>')
    n_failed = sum(entry.error is not None for entry in report.entries)
    counts = f"{len(report.entries)} structures" + (f", {n_failed} with an error (last column)" if n_failed else "")
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in report.notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(report.title)}</h1>{notes}"
        f'<p class="counts">{counts}. Click a heading to sort, a drawing to enlarge it.</p>\n'
        f'<table id="report"><thead><tr>{headings}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + f"\n</tbody></table><script>{_SCRIPT}</script></body></html>\n"
    )


def write_html_report(path: str | Path, report: Report) -> Path:
    """Write the page atomically (a reader never sees half of it)."""
    path = Path(path)
    write_text_atomic(path, render_html(report))
    return path


def prediction_columns(targets: Sequence[str], units: dict[str, str | None], uncertainty: bool) -> tuple[Column, ...]:
    """A numeric column per target, ``gap (eV)``, followed by ``gap ± (eV)`` when there is an uncertainty (three
    decimals: meV for eV targets)."""
    columns = []
    for target in targets:
        unit = f" ({units[target]})" if units.get(target) else ""
        columns.append(Column(target, f"{target}{unit}", numeric=True, number_format=".3f"))
        if uncertainty:
            columns.append(Column(f"{target}_std", f"{target} ±{unit}", numeric=True, number_format=".3f"))
    return tuple(columns)
