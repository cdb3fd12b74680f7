"""The MLflow settings: one TrackingConfig, one resolver and one group of flags for the training job, the study
and the screen."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from scannet.cli import main
from scannet.cli.args import config_overrides
from scannet.typed_config import ConfigError
from scannet_platform.screen import cli as screen_cli
from scannet_platform.screen.job import ScreenConfig, build_screen_config
from scannet_platform.tracking.config import TrackingConfig
from scannet_platform.train.cli import main as job_main
from scannet_platform.train.config import TrainJobConfig
from scannet_platform.tune.config import StudyConfig

SPACE = Path(__file__).parents[3] / "tune_spaces" / "small_cpu.yaml"
TRACKING_FLAGS = ["--mlflow-uri", "sqlite:///m.db", "--experiment", "e", "--verbose"]


@pytest.mark.parametrize("config", [TrainJobConfig, StudyConfig, ScreenConfig])
def test_every_tracked_config_has_the_tracking_fields(config):
    assert issubclass(config, TrackingConfig)
    assert {f.name for f in fields(TrackingConfig)} <= {f.name for f in fields(config)}
    defaults = {f.name: f.default for f in fields(config)}
    assert defaults["mlflow_tracking_uri"] is None and defaults["verbose"] is False


def test_experiment_defaults_stay_per_job():
    assert (TrainJobConfig().experiment, ScreenConfig(out="o").experiment) == ("scannet", "scannet-screening")
    assert {f.name: f.default for f in fields(StudyConfig)}["experiment"] == "scannet-tune"


def test_one_resolver(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert TrackingConfig().tracking_uri == f"sqlite:///{tmp_path.resolve() / 'env.db'}"
    assert TrackingConfig(mlflow_tracking_uri="mlruns").tracking_uri == str(tmp_path.resolve() / "mlruns")
    assert TrainJobConfig(mlflow_tracking_uri="http://h:5000").tracking_uri == "http://h:5000"


def test_tracking_flags_of_the_training_job(capsys):
    assert job_main(["--preset", "demo", "--model-preset", "demo", *TRACKING_FLAGS, "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["mlflow_tracking_uri"], shown["experiment"], shown["verbose"]) == ("sqlite:///m.db", "e", True)
    assert shown["model_preset"] == "demo"


def test_tracking_flags_of_the_study(capsys):
    assert main(["tune", "--space", str(SPACE), *TRACKING_FLAGS, "--registered-model", "r", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["mlflow_tracking_uri"], shown["experiment"], shown["verbose"]) == ("sqlite:///m.db", "e", True)
    assert shown["registered_model"] == "r" and shown["space"]  # --space is the file, not the space


def test_tune_flags_reach_the_study_and_its_run(capsys, tmp_path):
    argv = ["tune", "--space", str(SPACE), "--name", "s1", "--n-structures", "50", "--storage-path", str(tmp_path)]
    assert main([*argv, "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "s1" and "name" not in shown["run"]
    assert shown["run"]["n_structures"] == 50 and shown["run"]["storage_path"] == str(tmp_path)


def test_tracking_flags_of_the_screen():
    parser = argparse.ArgumentParser()
    screen_cli.add_arguments(parser)
    args = parser.parse_args(["lib.parquet", "--out", "o", "--model", "a.pt", *TRACKING_FLAGS, "--no-mlflow"])
    config = build_screen_config(config_overrides(args, ScreenConfig))
    assert (config.mlflow_tracking_uri, config.experiment, config.verbose, config.mlflow) == (
        "sqlite:///m.db",
        "e",
        True,
        False,
    )
    assert config.inputs == ("lib.parquet",) and config.models == ("a.pt",) and config.progress
    assert "--registered-model" not in {flag for action in parser._actions for flag in action.option_strings}
    with pytest.raises(ConfigError, match="registers no model"):
        build_screen_config({"out": "o", "registered_model": "m"})
