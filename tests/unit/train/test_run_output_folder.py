"""The training run folder ``<storage_path>/<name>/`` (issue 21): a symbolic link there is refused (one line,
exit 2) before anything is read or written."""

from __future__ import annotations

import os

import pytest

from scannet.cli import main


@pytest.mark.parametrize("name", ["run_config.json", "split.json", "checkpoints", "summary.json", "best_model.pt"])
def test_a_symbolic_link_in_the_run_folder_is_refused_before_anything_is_written(tmp_path, capsys, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / name).symlink_to(outside / name)
    argv = ["train", "--name", "r1", "--storage-path", str(tmp_path / "runs"), "--data", str(tmp_path / "none.parquet")]
    assert main([*argv, "--targets", "homo"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(run_dir / name) in err and "symbolic link" in err, err
    assert os.listdir(outside) == [] and os.listdir(run_dir) == [name]


def test_the_run_folder_itself_as_a_link_is_refused(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r1").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    argv = ["train", "--name", "r1", "--storage-path", str(tmp_path / "runs"), "--data", str(tmp_path / "none.parquet")]
    assert main([*argv, "--targets", "homo"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "runs" / "r1") in err and "symbolic link" in err and not (tmp_path / "elsewhere").exists()


def test_storage_path_naming_a_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "runs").write_text("a file")
    argv = ["train", "--name", "r1", "--storage-path", str(tmp_path / "runs"), "--data", str(tmp_path / "none.parquet")]
    assert main([*argv, "--targets", "homo"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a folder" in err and (tmp_path / "runs").read_text() == "a file"


def test_a_run_config_read_back_leaves_out_the_keys_a_runner_added(tmp_path):
    import dataclasses
    import json

    from scannet.train.run_config import build_run_config
    from scannet.train.run_folder import RunFolder
    from scannet.typed_config import to_plain

    config = build_run_config(None, name="r1", data="qm9", targets=("homo",), train={"epochs": 3})
    recorded = {**to_plain(config), "num_workers": 2, "mlflow_tracking_uri": "sqlite:///x.db"}  # the platform's keys
    (tmp_path / "run_config.json").write_text(json.dumps(recorded))
    assert RunFolder(tmp_path).read_run_config() == config
    assert "num_workers" not in {field.name for field in dataclasses.fields(config)}
