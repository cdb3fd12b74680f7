"""The HTML reports in a real browser (Debian's headless Chromium): `scannet explain`'s report.html and a
screen's top-k page load without a console message, every drawing loads, `#sort=` sorts; the screenshots are kept
in test-artifacts/ (or $SCANNET_TEST_ARTIFACTS)."""

from __future__ import annotations

import re

import pytest
from ase.build import molecule
from ase.io import write

from scannet.cli import main as cli_main
from tests.browser import open_page
from tests.screening import tiny_model

pytest.importorskip("rdkit")

MOLECULES = ["CCO ethanol", "c1ccccc1O phenol", "CC(=O)O acetic acid", "N#CC#N cyanogen"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


def rows_of(dom: str) -> list[str]:
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[^>]*>.*?</tr>", body, flags=re.S)


def cell_values(row: str) -> list[str]:
    return re.findall(r'<td[^>]*data-value="([^"]*)"', row)


def test_the_explain_report_loads_with_every_drawing_and_sorts(model, tmp_path, capsys):
    write(tmp_path / "benzene.xyz", molecule("C6H6"))
    arguments = ["explain", "--model", str(model), str(tmp_path / "benzene.xyz"), "--out", str(tmp_path / "out")]
    for text in [*MOLECULES, "C1CC broken", "CCO <img src=x onerror=alert(1)>"]:
        arguments += ["--smiles", text]
    assert cli_main(arguments) == 1  # the broken SMILES has its row with the reason
    capsys.readouterr()
    report = tmp_path / "out" / "report.html"

    page = open_page(report, "explain_report.png")
    assert page.console == []
    assert 'data-drawings-loaded="6"' in page.dom  # benzene, four SMILES and the hostile name's ethanol
    assert len(re.findall(r'<img class="drawing', page.dom)) == 6
    assert "RDKit cannot parse the SMILES" in page.dom
    assert "<img src=x" not in page.dom and "&lt;img src=x onerror=alert(1)&gt;" in page.dom
    assert page.screenshot.stat().st_size > 20_000

    headings = re.findall(r'<th data-key="([^"]+)"', page.dom)
    homo = headings.index("homo")
    sorted_page = open_page(report, "explain_report_sorted.png", fragment="#sort=homo:desc")
    assert sorted_page.console == []
    values = [cell_values(row)[homo] for row in rows_of(sorted_page.dom)]
    numbers = [float(v) for v in values if v]
    assert len(numbers) == 6 and numbers == sorted(numbers, reverse=True)
    assert values[-1] == ""  # the row without a prediction comes last
    assert 'data-key="homo" data-numeric="1" aria-sort="descending"' in sorted_page.dom


def test_a_screens_top_k_page_loads_with_every_drawing(model, tmp_path):
    pytest.importorskip("ray")
    from scannet_platform.screen.job import build_screen_config, run_screen

    (tmp_path / "library.smi").write_text("\n".join(MOLECULES) + "\nC1CC broken\n")
    write(tmp_path / "structures.xyz", [molecule("C6H6"), molecule("CH3CH2OH")])
    config = {
        "inputs": [str(tmp_path / "library.smi"), str(tmp_path / "structures.xyz")],
        "models": [str(model)],
        "out": str(tmp_path / "screen"),
        "executor": "local",
        "mlflow": False,
        "progress": False,
        "top_k": 5,
    }
    run_screen(build_screen_config(config))
    page = open_page(tmp_path / "screen" / "top-homo_eV-max.html", "screen_top_k.png")
    assert page.console == []
    assert 'data-drawings-loaded="5"' in page.dom
    ranks = [int(cell_values(row)[0]) for row in rows_of(page.dom)]
    assert ranks == [1, 2, 3, 4, 5]
    assert "force-field geometries differ from the DFT geometries" in page.dom
