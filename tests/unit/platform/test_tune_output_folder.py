"""The tuning study folder ``<storage_path>/<study>/`` (issue 21): a symbolic link there is refused before anything
is read or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scannet.io.paths import OutputPathError

pytest.importorskip("ray")

SPACE = Path(__file__).parents[3] / "tune_spaces" / "small_cpu.yaml"


@pytest.mark.parametrize("name", ["study.json", "outcomes.json", "results.csv", "tune", "trials", "ensemble"])
def test_a_symbolic_link_in_the_study_folder_is_refused(tmp_path, name):
    from scannet_platform.tune.config import load_study
    from scannet_platform.tune.driver import prepare_study

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    study_dir = tmp_path / "runs" / "s1"
    study_dir.mkdir(parents=True)
    (study_dir / name).symlink_to(outside / name)
    study = load_study(SPACE, name="s1", run={"storage_path": str(tmp_path / "runs"), "data": str(tmp_path / "no")})
    with pytest.raises(OutputPathError, match="symbolic link"):
        prepare_study(study)
    assert os.listdir(outside) == [] and os.listdir(study_dir) == [name]
