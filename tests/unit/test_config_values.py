"""Numeric config values are checked before anything runs (issue 21): a bad one is one line naming the key and the
rule, exit code 2, and no run folder, data cache or MLflow store is created."""

from __future__ import annotations

import pytest

from scannet.cli import main
from scannet.train.run_config import build_run_config
from scannet.train.trainer import TrainConfig
from scannet.typed_config import ConfigError

BAD_TRAIN_FLAGS = [
    (["--epochs", "-1"], "epochs"),
    (["--epochs", "0"], "epochs"),
    (["--lr", "0"], "lr"),
    (["--lr=-1e-3"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--lr", "inf"], "lr"),
    (["--patience", "-1"], "patience"),
    (["--n-structures", "0"], "n_structures"),
    (["--threads", "0"], "threads"),
    (["--split-seed", "-1"], "split_seed"),
    (["--distance-threshold", "-2"], "distance_threshold"),
]


@pytest.mark.parametrize("flags, key", BAD_TRAIN_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_bad_numeric_flag_is_one_line_naming_the_key_exit_2_and_creates_nothing(
    flags, key, tmp_path, monkeypatch, capsys
):
    home, storage, cache = tmp_path / "home", tmp_path / "runs", tmp_path / "cache"
    for folder in (home, storage, cache):
        folder.mkdir()
    monkeypatch.setenv("SCANNET_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    data = tmp_path / "missing" / "structures.parquet"  # the old code failed here, after creating the run folder
    code = main(["train", *flags, "--storage-path", str(storage), "--data-cache", str(cache), "--data", str(data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("scannet: error:"), err
    assert key in err[0], err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "values, key",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"min_lr": -1e-5}, "min_lr"),
        ({"inverse_time_decay": -1.0}, "inverse_time_decay"),
        ({"l2": -1.0}, "l2"),
        ({"adam_eps": 0.0}, "adam_eps"),
        ({"patience": -1}, "patience"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
    ],
)
def test_every_numeric_train_field_is_checked(values, key):
    with pytest.raises(ConfigError, match=rf"train\.{key}\b"):
        TrainConfig.from_dict(values)
    with pytest.raises(ConfigError, match=rf"train\.{key}\b"):
        build_run_config(train=values)


def test_the_shipped_presets_and_defaults_pass():
    for preset in (None, "demo", "paper", "reference"):
        build_run_config(preset)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"num_workers": 0}, "num_workers"),
        ({"cpus_per_worker": 0}, "cpus_per_worker"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"max_failures": -1}, "max_failures"),
        ({"train": {"epochs": 0}}, "train.epochs"),
    ],
)
def test_the_training_job_names_the_bad_key(values, key):
    pytest.importorskip("ray")
    from scannet_platform.train.config import build_config

    with pytest.raises(ConfigError) as error:
        build_config(**values)
    message = str(error.value)
    assert key in message
    for other in {"num_workers", "cpus_per_worker", "keep_checkpoints", "max_failures"} - {key}:
        assert other not in message, message


@pytest.mark.parametrize(
    "values, key",
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"max_atoms": 0}, "max_atoms"),
        ({"top_k": -1}, "top_k"),
        ({"atom_budget": 0}, "atom_budget"),
        ({"threads": 0}, "threads"),
        ({"seed": -1}, "seed"),
    ],
)
def test_the_screen_names_the_bad_key(values, key, tmp_path):
    pytest.importorskip("ray")
    from scannet_platform.screen.job import build_screen_config

    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_screen_config({"inputs": ["lib.parquet"], "out": str(tmp_path / "out"), **values})


@pytest.mark.parametrize(
    "values, key",
    [
        ({"reserve_cpus": -1.0}, "reserve_cpus"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"top_k": -1}, "top_k"),
        ({"searcher": {"startup_trials": -1}}, "searcher.startup_trials"),
        ({"searcher": {"seed": -1}}, "searcher.seed"),
    ],
)
def test_the_study_names_the_bad_key(values, key):
    pytest.importorskip("ray")
    from scannet.typed_config import build
    from scannet_platform.tune.config import StudyConfig

    base = {
        "run": {"preset": "demo", "n_structures": 100, "train": {"epochs": 4}},
        "space": {"train.lr": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-3}},
    }
    with pytest.raises(ConfigError) as error:
        build(StudyConfig, {**base, **values})
    message = str(error.value)
    assert key in message
    for other in {"reserve_cpus", "checkpoint_every", "top_k"} - {key}:
        assert other not in message, message
