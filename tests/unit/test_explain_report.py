"""The HTML report (scannet.explain.report): self-contained, escaped, every entry a row, numbers sortable by value."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

import pytest

from scannet.explain.report import Column, Entry, Report, prediction_columns, render_html, write_html_report

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle cx="5" cy="5" r="4"/></svg>'
HOSTILE = "<script>alert('x')</script> & \"quotes\" ../../etc/passwd"


class Collector(HTMLParser):
    """Tags with their attributes, and the text, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    return collector


def report(*entries: Entry, notes=()) -> Report:
    columns = (Column("name", "name"), Column("smiles", "SMILES"), *prediction_columns(["gap"], {"gap": "eV"}, True))
    return Report("GA explanations", columns, entries, tuple(notes))


def test_every_entry_is_a_row_with_its_drawing_or_its_error():
    page = render_html(
        report(
            Entry("a", {"name": "a", "smiles": "CCO", "gap": 7.25, "gap_std": 0.1}, SVG),
            Entry("b", {"name": "b", "smiles": "C1CC"}, None, "SMILES not embedded: RDKit cannot parse it"),
        )
    )
    parsed = parse(page)
    rows = [attrs for tag, attrs in parsed.tags if tag == "tr"]
    assert len(rows) == 3  # the heading and one per entry
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 1 and images[0]["alt"] == "GA drawing of a"
    assert base64.b64decode(images[0]["src"].removeprefix("data:image/svg+xml;base64,")).decode() == SVG
    assert "SMILES not embedded: RDKit cannot parse it" in "".join(parsed.text)
    assert "2 structures, 1 with an error (last column)" in "".join(parsed.text)
    headings = [attrs["data-key"] for tag, attrs in parsed.tags if tag == "th"]
    assert headings == ["name", "drawing", "smiles", "gap", "gap_std", "error"]
    assert "gap (eV)" in parsed.text and "gap ± (eV)" in parsed.text


def test_numbers_sort_by_their_full_value_and_missing_ones_are_empty():
    page = render_html(
        report(
            Entry("a", {"name": "a", "gap": 1.234567891}, SVG),
            Entry("b", {"name": "b", "gap": float("nan")}, SVG),
            Entry("c", {"name": "c"}, SVG),
        )
    )
    cells = [attrs for tag, attrs in parse(page).tags if tag == "td" and attrs.get("class") == "num"]
    values = [c["data-value"] for c in cells[::2]]  # gap, then gap_std, per row
    assert values == ["1.234567891", "", ""]
    assert ">1.235<" in page  # shown to three decimals


def test_input_text_is_escaped_everywhere():
    page = render_html(report(Entry(HOSTILE, {"name": HOSTILE, "smiles": HOSTILE}, SVG, HOSTILE), notes=[HOSTILE]))
    assert "<script>alert" not in page and html.escape(HOSTILE) in page
    scripts = re.findall(r"<script>", page)
    assert len(scripts) == 1  # the page's own sorting script only


def test_the_page_loads_nothing_from_outside():
    page = render_html(report(Entry("a", {"name": "a"}, SVG)))
    parsed = parse(page)
    policy = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in policy and "img-src data:" in policy
    for tag, attrs in parsed.tags:
        for name in ("src", "href"):
            assert not (attrs.get(name) or "data:").startswith(("http", "//", "file:")), (tag, attrs)


def test_columns_must_have_distinct_keys():
    with pytest.raises(ValueError, match="distinct keys"):
        Report("t", (Column("a", "A"), Column("a", "B")), ())


def test_written_atomically_as_utf8(tmp_path):
    path = write_html_report(tmp_path / "report.html", report(Entry("Ä", {"name": "Ä"}, SVG)))
    assert "Ä" in path.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
