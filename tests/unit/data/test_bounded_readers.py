"""Bounded reading of structure files (issue 21): every entry point (``predict``, ``explain``, ``data import``,
``screen``) reads through one streaming record reader (:func:`scannet.data.importers.iter_records`) with the atom
limit; a frame that cannot be parsed costs only its own row; a line longer than the limit is never held whole and
quarantines its frame with the reason; oversized ``info`` quarantines its structure."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from ase.build import molecule
from ase.io import write

from scannet.checkpoint import save_model
from scannet.cli import main as cli_main
from scannet.data import importers
from scannet.data.importers import import_structures, iter_records
from scannet.data.structures_table import read_quarantine
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, preset

#: the default line-length limit of the xyz reader (``importers.MAX_LINE_LENGTH``)
LINE_LIMIT = 1 << 20
#: 4 lines whose count line claims 10^9 atoms
HOSTILE_XYZ = "1000000000\nhostile\nH 0 0 0\nH 0 0 1\n"
#: three frames, the middle one unparsable (a letter where a coordinate belongs)
MIDDLE_BAD_XYZ = "3\nfirst\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n1\nbad\nH x 0 0\n3\nlast\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = SCANN(preset("demo", targets=("homo",)))
    return save_model(
        tmp_path_factory.mktemp("model") / "model.pt", model, FeaturizerConfig(), {"units": {"homo": "eV"}}
    )


def run_cli(capsys, *argv):
    code = cli_main([*map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def predictions(out):
    return pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])


def water_frames(*comments: str) -> str:
    return "".join(f"3\n{c}\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n" for c in comments)


# 1. predict / explain: the streaming reader and --max-atoms ------------------------------------------------


def test_predict_refuses_a_hostile_count_line_in_seconds(model_path, tmp_path):
    """A count line claiming 10^9 atoms: refused by the atom limit, the other file predicted; in a child process
    so that a reader that spins (ASE's, before) is killed instead of holding the test run."""
    hostile = tmp_path / "hostile.xyz"
    hostile.write_text(HOSTILE_XYZ)
    good = tmp_path / "good.xyz"
    write(good, molecule("H2O"), format="extxyz")
    out = tmp_path / "out"
    child = textwrap.dedent(f"""
        import resource, sys, time
        from scannet.cli import main
        resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))
        start = time.perf_counter()
        code = main(["predict", "--model", {str(model_path)!r}, {str(hostile)!r}, {str(good)!r},
                     "--out", {str(out)!r}, "--no-progress"])
        print("RESULT", code, round(time.perf_counter() - start, 3))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("predict on a 4-line xyz whose count line claims 10^9 atoms did not finish within 40 s")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    _, code, seconds = line.split()
    assert code == "1", done.stderr[-2000:]
    assert float(seconds) < 20
    rows = predictions(out)
    assert rows["source_file"].tolist() == [str(hostile), str(good)]
    assert "over the limit of 100000 atoms per structure (--max-atoms)" in rows["error"][0]
    assert np.isfinite(rows["homo_eV"][1]) and pd.isna(rows["error"][1])
    assert f"{hostile}: cannot read: " in done.stderr


@pytest.mark.parametrize("suffix", [".xyz", ".traj"])
def test_predict_max_atoms_refuses_a_larger_structure(model_path, tmp_path, capsys, suffix):
    big = tmp_path / f"big{suffix}"
    write(big, molecule("CH4"))
    small = tmp_path / "small.xyz"
    write(small, molecule("H2O"), format="extxyz")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "predict", "--model", model_path, big, small, "--out", out, "--max-atoms", 4)
    assert code == 1, err
    rows = predictions(out)
    assert "5 atoms, over the limit of 4 atoms per structure (--max-atoms)" in rows["error"][0]
    assert np.isfinite(rows["homo_eV"][1]) and pd.isna(rows["error"][1])
    assert f"{big}: cannot read: " in err and "over the limit of 4 atoms" in err


def test_explain_takes_max_atoms(model_path, tmp_path, capsys):
    big = tmp_path / "big.xyz"
    write(big, molecule("CH4"), format="extxyz")
    small = tmp_path / "small.xyz"
    write(small, molecule("H2O"), format="extxyz")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "explain", "--model", model_path, big, small, "--out", out, "--max-atoms", 4)
    assert code == 1, err
    rows = pd.read_csv(out / "explanations.csv", keep_default_na=False, na_values=[""])
    assert "over the limit of 4 atoms" in rows["error"][0] and pd.isna(rows["error"][1])


def test_max_atoms_is_one_flag_for_every_command():
    import argparse

    from scannet.cli import data, explain, predict
    from scannet.cli.args import positive_int
    from scannet.data.importers import DEFAULT_MAX_ATOMS

    def option(add, *argv):
        parser = argparse.ArgumentParser()
        add(parser)
        if argv[0] == "import":
            parser = parser._subparsers._group_actions[0].choices["import"]
            argv = argv[1:]
        action = next(a for a in parser._actions if "--max-atoms" in a.option_strings)
        given = parser.parse_args([*argv, "--max-atoms", "7"]).max_atoms
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--max-atoms", "0"])
        return action.dest, action.default, action.type, action.help, given

    expected = option(data.add_arguments, "import", "x", "--out", "o")
    assert expected[:3] == ("max_atoms", DEFAULT_MAX_ATOMS, positive_int) and expected[4] == 7
    assert option(predict.add_arguments, "x.xyz") == expected
    assert option(explain.add_arguments, "x.xyz") == expected


# 2. a frame that cannot be parsed costs only its own row --------------------------------------------------


def test_predict_gives_every_frame_after_a_bad_one_its_row(model_path, tmp_path, capsys):
    path = tmp_path / "three.xyz"
    path.write_text(MIDDLE_BAD_XYZ)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "predict", "--model", model_path, path, "--out", out, "--no-progress")
    assert code == 1, err
    rows = predictions(out)
    assert rows["name"].tolist() == ["three-0", "three-1", "three-2"] and rows["frame"].tolist() == [0, 1, 2]
    assert rows["error"].isna().tolist() == [True, False, True]
    assert np.isfinite(rows["homo_eV"][0]) and np.isfinite(rows["homo_eV"][2])
    assert "could not convert string to float" in rows["error"][1]
    assert f"{path}: frame 1: cannot read: " in err and "predicted 2 of 3" in stdout


def test_explain_gives_every_frame_after_a_bad_one_its_row(model_path, tmp_path, capsys):
    path = tmp_path / "three.xyz"
    path.write_text(MIDDLE_BAD_XYZ)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "explain", "--model", model_path, path, "--out", out)
    assert code == 1, err
    rows = pd.read_csv(out / "explanations.csv", keep_default_na=False, na_values=[""])
    assert rows["error"].isna().tolist() == [True, False, True]
    assert (out / "three-2_ga.xyz").exists()


# 3. line length and info size ------------------------------------------------------------------------------


def test_a_comment_line_over_the_limit_quarantines_its_frame_only(tmp_path):
    path = tmp_path / "long.xyz"
    long_comment = "x" * (3 * LINE_LIMIT)  # a few MB
    path.write_text(water_frames("first", long_comment, "last"))
    records = list(iter_records(path))
    assert [r.key for r in records] == ["0", "1", "2"]
    assert records[0].atoms is not None and records[2].atoms is not None and "last" in records[2].atoms.info
    assert records[1].atoms is None
    assert records[1].error == f"frame 1 (line 6): comment line longer than {LINE_LIMIT} characters"

    summary = import_structures([path], tmp_path / "out", progress=False)
    assert (summary.n_written, summary.n_quarantined) == (2, 1)
    assert "comment line longer than" in read_quarantine(summary.quarantine_path)[0]["reason"]


def test_the_line_limit_is_one_mib():
    assert importers.MAX_LINE_LENGTH == LINE_LIMIT


def test_a_long_line_is_never_held_whole(tmp_path):
    path = tmp_path / "long.xyz"
    path.write_text(water_frames("first", "y" * (8 * LINE_LIMIT), "last"))
    tracemalloc.start()
    try:
        records = list(iter_records(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.error is None for r in records] == [True, False, True]
    assert peak < 4 * LINE_LIMIT, f"peak {peak / 2**20:.1f} MiB while reading an 8 MiB line"


def test_an_atom_line_over_the_limit_quarantines_its_frame_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "MAX_LINE_LENGTH", 100, raising=False)
    path = tmp_path / "atom.xyz"
    frames = water_frames("first") + "2\nsecond\nH 0 0 0 " + "1" * 500 + "\nH 0 0 1\n" + water_frames("last")
    path.write_text(frames)
    records = list(iter_records(path))
    assert [r.error is None for r in records] == [True, False, True]
    assert records[1].error == "frame 1 (line 6): atom line 1 (line 8) longer than 100 characters"


def test_a_count_line_over_the_limit_stops_the_file_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "MAX_LINE_LENGTH", 100, raising=False)
    path = tmp_path / "count.xyz"
    path.write_text(water_frames("first") + "9" * 500 + "\n" + water_frames("never"))
    records = list(iter_records(path))
    assert [r.error is None for r in records] == [True, False]
    assert records[1].error.startswith("frame 1 (line 6): line longer than 100 characters where an atom count belongs")
    assert records[1].error.endswith("the rest of the file is skipped")


def test_oversized_info_is_quarantined(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "MAX_INFO_SIZE", 1000, raising=False)
    path = tmp_path / "info.xyz"
    path.write_text(water_frames("first", "note=" + "z" * 5000, "last"))
    records = list(iter_records(path))
    assert [r.error is None for r in records] == [True, False, True]
    assert records[1].error.startswith("frame 1: info holds about 50")
    assert records[1].error.endswith("key=value pairs), over the limit of 1000 bytes")


def test_predict_quarantines_a_long_comment_line_and_writes_no_huge_ga_file(model_path, tmp_path, capsys):
    path = tmp_path / "long.xyz"
    path.write_text(water_frames("first", "x" * (2 * LINE_LIMIT), "last"))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "predict", "--model", model_path, path, "--out", out, "--no-progress")
    assert code == 1, err
    rows = predictions(out)
    assert rows["error"].isna().tolist() == [True, False, True]
    assert "comment line longer than" in rows["error"][1]
    assert max(f.stat().st_size for f in out.iterdir()) < 100_000


def test_screen_staging_quarantines_a_long_comment_line(tmp_path):
    pytest.importorskip("scannet_platform")
    from scannet_platform.screen.library import _structure_records

    path = tmp_path / "long.xyz"
    path.write_text(water_frames("first", "x" * (2 * LINE_LIMIT), "last"))
    records = list(_structure_records(path, 1000))
    assert [r.error is None for r in records] == [True, False, True]
    assert "comment line longer than" in records[1].error


def test_screen_takes_the_same_max_atoms_flag():
    import argparse

    pytest.importorskip("scannet_platform")
    from scannet.cli.args import positive_int
    from scannet_platform.screen import cli as screen_cli
    from scannet_platform.screen.job import ScreenConfig

    parser = argparse.ArgumentParser()
    screen_cli.add_arguments(parser)
    action = next(a for a in parser._actions if "--max-atoms" in a.option_strings)
    assert (action.dest, action.type, action.default) == ("max_atoms", positive_int, None)  # None: the config's
    assert f"(default {ScreenConfig.max_atoms})" in action.help
    assert parser.parse_args(["x.smi", "--out", "o", "--max-atoms", "7"]).max_atoms == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["x.smi", "--out", "o", "--max-atoms", "0"])
