"""``scannet screen`` writes only inside ``--out`` (issue 21): a symbolic link under it is refused before anything
is written, a refused re-launch leaves the folder byte-identical, and ``--out`` naming a file is one line, exit 2
(in-process executor: no Ray)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from ase.io import write

from scannet.cli import main
from scannet.data.structures_table import write_structures
from scannet.typed_config import ConfigError
from tests.screening import candidates, two_tiny_models
from tests.unit.platform.test_screen_inputs import screen

pytest.importorskip("ray")

FOLDERS = ("plots", "predictions", "quarantine", "models", "library")
FILES = ("duplicates.csv", "top-homo_eV-max.csv", "top-homo_eV-max.md", "summary.json", "screen.json")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return two_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    write(folder / "lib.xyz", candidates(6), format="extxyz")  # staged into <out>/library/
    return folder / "lib.xyz"


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links not followed): its kind and, for files, the sha256 of its bytes."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                found[relative] = f"link {os.readlink(path)}"
            elif path.is_dir():
                found[relative] = "folder"
            else:
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_cli(capsys, library, model, out) -> tuple[int, str]:
    argv = ["screen", str(library), "--model", str(model), "--out", str(out), "--local", "--no-mlflow", "--no-progress"]
    code = main([*argv, "--chunk-size", "4"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", FOLDERS + FILES)
def test_a_symbolic_link_under_out_is_refused_and_nothing_is_written_outside(tmp_path, capsys, models, library, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    if name in FOLDERS:
        (outside / name).mkdir()
        (out / name).symlink_to(outside / name, target_is_directory=True)
    else:
        (out / name).symlink_to(outside / name)  # dangling: open() would create it out there
    code, err = run_cli(capsys, library, models["a"], out)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(out / name) in lines[0] and "symbolic link" in lines[0] and "leaving the output folder" in lines[0]
    assert snapshot(outside) == ({name: "folder"} if name in FOLDERS else {}), "nothing written outside"
    assert sorted(os.listdir(out)) == [name], "nothing written inside either: refused before any write"


def test_a_link_to_a_part_file_is_refused(tmp_path, capsys, models, library):
    out = tmp_path / "out"
    code, err = run_cli(capsys, library, models["a"], out)
    assert code == 0, err
    part = out / "predictions" / "part-000001.parquet"
    part.unlink()
    part.symlink_to(tmp_path / "stolen.parquet")
    before = snapshot(out)
    code, err = run_cli(capsys, library, models["a"], out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(part) in err, err
    assert not os.path.lexists(tmp_path / "stolen.parquet") and snapshot(out) == before


def test_a_refused_relaunch_with_other_models_leaves_out_byte_identical(tmp_path, models, library):
    out = tmp_path / "out"
    screen(out, [library], [models["a"]])
    before = snapshot(out)
    assert any(name.startswith("models/") for name in before)
    with pytest.raises(ConfigError, match="holds a screen made with other models"):
        screen(out, [library], [models["b"]])
    assert snapshot(out) == before


def test_a_folder_of_an_older_predictions_format_is_refused_before_anything_is_written(tmp_path, models, library):
    out = tmp_path / "out"
    screen(out, [library], [models["a"]])
    state = json.loads((out / "screen.json").read_text())
    del state["format"]  # as written before the format was recorded
    (out / "screen.json").write_text(json.dumps(state))
    before = snapshot(out)
    with pytest.raises(ConfigError, match="holds a screen made with other format"):
        screen(out, [library], [models["a"]])
    assert snapshot(out) == before


def test_out_naming_a_file_is_one_line_exit_2(tmp_path, capsys, models, library):
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    code, err = run_cli(capsys, library, models["a"], out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(out) in err and "not a folder" in err
    assert out.read_text() == "not a folder" and sorted(os.listdir(tmp_path)) == ["results.txt"]


def test_a_table_input_screens_into_a_linked_out_folder(tmp_path, capsys, models):
    """The folder the user names may itself be a link: only what lies below it is checked."""
    table = write_structures(tmp_path / "lib.parquet", candidates(5), {})
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    code, err = run_cli(capsys, table, models["a"], tmp_path / "out")
    assert code == 0, err
    assert (real / "predictions").is_dir() and (real / "summary.json").is_file()
