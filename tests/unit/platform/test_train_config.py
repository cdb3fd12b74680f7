"""Job configuration: defaults -> preset -> YAML -> command line, every key and value checked at once."""

from __future__ import annotations

import json

import pytest

from scannet.featurizer import FeaturizerConfig
from scannet.train.run_config import RunConfig, build_run_config
from scannet.typed_config import ConfigError
from scannet_platform.train.cli import main as job_main
from scannet_platform.train.config import TrainJobConfig, build_config


def test_precedence_preset_then_yaml_then_overrides(tmp_path):
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text(
        "targets: [homo, lumo]\ntrain:\n  epochs: 7\n  lr: 0.001\nfeaturizer:\n  distance_threshold: 3.5\n"
    )
    job = build_config("demo", str(yaml_file), train={"epochs": 9}, num_workers=4, name=None)
    assert job.n_structures == 2000  # preset
    assert job.targets == ("homo", "lumo") and job.train.lr == 0.001  # YAML
    assert job.featurizer.distance_threshold == 3.5 and job.featurizer.solid_angle_threshold == 0.4
    assert job.train.epochs == 9 and job.num_workers == 4  # command line wins
    assert job.name == "scannet-qm9"  # None means "not given"


def test_the_job_config_is_the_run_config_plus_scaling_storage_and_tracking():
    run_keys = set(RunConfig.__dataclass_fields__)
    job_keys = set(TrainJobConfig.__dataclass_fields__)
    assert run_keys < job_keys
    assert job_keys - run_keys == {
        "num_workers",
        "use_gpu",
        "cpus_per_worker",
        "keep_checkpoints",
        "max_failures",
        "mlflow_tracking_uri",
        "experiment",
        "registered_model",
        "verbose",
    }
    assert build_run_config("demo").train == build_config("demo").train  # one preset table


def test_paper_preset_is_the_reference_recipe_and_reference_the_published_setup():
    job = build_config("paper")
    assert job.n_structures is None and job.featurizer is None and job.split_order == "table"
    assert (job.train.schedule, job.train.lr, job.train.min_lr, job.train.epochs, job.train.patience) == (
        "sgdr",
        5e-4,
        1e-4,
        1000,
        200,
    )
    reference = build_config("reference")
    assert reference.featurizer == FeaturizerConfig(molecule_mode="box10")
    assert reference.model_overrides == {"attention_dropout": 0.05}
    assert reference.split_order == "atom_count" and reference.train == job.train


@pytest.mark.parametrize(
    "text, message",
    [
        ("bogus: 1\n", "unknown TrainJobConfig key"),
        ("train:\n  nope: 1\n", "unknown TrainConfig key"),
        ('train:\n  epochs: "ten"\n', "train.epochs: must be an integer, got 'ten'"),
        ("featurizer:\n  molecule_mode: box\n", "featurizer.molecule_mode: must be one of"),
        ("num_workers: two\n", "num_workers: must be an integer"),
        ("targets: homo\n", "targets: must be a list"),
        ("- a list\n", "expected a mapping"),
        ("train: [1\n", "not valid YAML"),
        ("name: ../../x\n", "name '../../x'"),
        ("num_workers: 3\n", "must divide evenly over num_workers 3"),
    ],
)
def test_bad_yaml_is_rejected_with_the_key_named(tmp_path, text, message):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_config(None, str(yaml_file))


def test_unknown_preset_and_registered_model_name():
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("huge")
    assert build_config(None, targets=["energy"]).model_name("pt") == "scannet-pt-energy"


def test_print_config_shows_the_resolved_config_and_runs_nothing(capsys, tmp_path):
    code = job_main(["--preset", "demo", "--epochs", "4", "--storage-path", str(tmp_path), "--print-config"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0 and shown["train"]["epochs"] == 4 and shown["n_structures"] == 2000
    assert shown["num_workers"] == 2 and not any(tmp_path.iterdir())


def test_user_mistakes_are_one_line_errors(capsys, tmp_path):
    assert job_main(["--name", "/etc/x", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scannet: error:") and "no paths" in err[0]
    assert job_main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
