"""Exit codes of a screen, the same for ``scannet screen`` and the Ray job entry ``jobs/screen.py`` (what
``ray job submit`` reports): 0 when everything that could be screened was screened (quarantined records and
repeated ids only counted and listed), 1 only with ``--strict``, 2 when nothing could be screened."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from scannet_platform.screen.cli import exit_code
from tests.screening import tiny_model

pytest.importorskip("ray")

JOB = Path(__file__).resolve().parents[3] / "jobs" / "screen.py"


@pytest.mark.parametrize(
    "n_screened, n_quarantined, n_duplicate_ids, strict, code",
    [
        (5, 0, 0, False, 0),
        (5, 2, 0, False, 0),  # bad input lines: counted and listed, not a failed screen
        (5, 0, 1, False, 0),
        (5, 0, 0, True, 0),
        (5, 2, 0, True, 1),
        (5, 0, 1, True, 1),
        (0, 3, 0, False, 2),  # nothing screened
        (0, 3, 0, True, 2),
    ],
)
def test_exit_code(n_screened, n_quarantined, n_duplicate_ids, strict, code):
    assert exit_code(n_screened, n_quarantined, n_duplicate_ids, strict) == code


def run_job(argv: list[str], monkeypatch) -> int:
    """``python jobs/screen.py ARGV`` in this process: its exit code."""
    monkeypatch.setattr(sys, "argv", [str(JOB), *argv])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(JOB), run_name="__main__")
    return exited.value.code


def test_the_ray_job_entry_succeeds_when_only_input_lines_were_quarantined(tmp_path, monkeypatch, capsys):
    model = tiny_model(tmp_path / "model.pt")
    library = tmp_path / "library.smi"
    library.write_text("CCO ethanol\nC1CC1(( broken\nc1ccccc1 benzene\nCCO ethanol\n")
    out = tmp_path / "out"
    argv = [str(library), "--model", str(model), "--out", str(out), "--local", "--no-mlflow", "--no-progress"]

    assert run_job(argv, monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "screened 3 of 4 structures, quarantined 1" in printed
    assert f"quarantine (id, source, reason): {out / 'quarantine'}/part-*.parquet" in printed
    assert "duplicate ids: 1 ids occur on 2 rows" in printed

    assert run_job([*argv, "--strict"], monkeypatch) == 1  # the same screen, resumed: nothing left to do
    assert "screened 3 of 4 structures, quarantined 1" in capsys.readouterr().out


def test_the_ray_job_entry_exits_2_when_nothing_could_be_screened(tmp_path, monkeypatch, capsys):
    model = tiny_model(tmp_path / "model.pt")
    library = tmp_path / "library.smi"
    library.write_text("C1CC1(( broken\n")
    argv = [str(library), "--model", str(model), "--out", str(tmp_path / "out"), "--local", "--no-mlflow"]
    assert run_job([*argv, "--no-progress"], monkeypatch) == 2
    assert "no structure could be screened" in capsys.readouterr().err
