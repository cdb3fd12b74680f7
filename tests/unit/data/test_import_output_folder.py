"""``scannet data import --out`` (issue 21): a file is one line and exit 2, a symbolic link among the dataset's
entries is refused, both before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ase.build import molecule
from ase.io import write

from scannet.cli import main


@pytest.fixture
def inputs(tmp_path):
    path = tmp_path / "in.xyz"
    write(path, [molecule("H2O"), molecule("CH4")], format="extxyz")
    return path


def test_out_naming_a_file_is_one_line_and_exit_2(tmp_path, inputs):
    out = tmp_path / "dataset.parquet"
    out.write_text("not a folder")
    command = [sys.executable, "-m", "scannet.cli", "data", "import", str(inputs), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(out) in done.stderr and "not a folder" in done.stderr
    assert out.read_text() == "not a folder" and sorted(os.listdir(tmp_path)) == ["dataset.parquet", "in.xyz"]


def test_out_under_a_file_is_one_line_and_exit_2(tmp_path, inputs, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["data", "import", str(inputs), "--out", str(tmp_path / "file" / "sub"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is a file, not a folder" in err


@pytest.mark.parametrize("name", ["structures.parquet", "quarantine.parquet"])
def test_a_symbolic_link_in_out_is_refused_before_anything_is_written(tmp_path, inputs, capsys, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.parquet").write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(outside / "keep.parquet")
    assert main(["data", "import", str(inputs), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(out / name) in err and "symbolic link" in err, err
    assert (outside / "keep.parquet").read_text() == "keep me" and os.listdir(outside) == ["keep.parquet"]
    assert sorted(os.listdir(out)) == [name] and os.path.islink(out / name)
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "in.xyz", "out"], "no staging folder left beside out"


def test_a_linked_out_folder_itself_is_written_through(tmp_path, inputs, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    assert main(["data", "import", str(inputs), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (real / "structures.parquet").is_file()


@pytest.mark.parametrize("make", ["file", "link"])
def test_data_qm9_out_refuses_a_file_or_a_link_before_reading_anything(tmp_path, capsys, make):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if make == "file":
        out = tmp_path / "qm9.parquet"
        out.write_text("not a folder")
        expected = "not a folder"
    else:
        out = tmp_path / "qm9"
        out.mkdir()
        os.symlink(elsewhere / "structures.parquet", out / "structures.parquet")
        expected = "is a symbolic link"
    assert main(["data", "qm9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not any(elsewhere.iterdir())
