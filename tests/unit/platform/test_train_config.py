"""Job configuration: defaults -> preset -> YAML -> command line, with unknown keys and bad types rejected."""

from __future__ import annotations

import pytest

from scannet_platform.train_config import build_config


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


def test_paper_preset_is_the_reference_recipe():
    job = build_config("paper")
    assert job.n_structures is None
    assert (job.train.schedule, job.train.lr, job.train.min_lr, job.train.epochs, job.train.patience) == (
        "sgdr",
        5e-4,
        1e-4,
        1000,
        200,
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("train:\n  nope: 1\n", "unknown TrainConfig keys"),
        ("num_workers: two\n", "'num_workers' must be int"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_yaml_is_rejected_with_the_key_named(tmp_path, text, message):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ValueError, match=message):
        build_config(None, str(yaml_file))


def test_unknown_preset_and_registered_model_name():
    with pytest.raises(ValueError, match="unknown preset"):
        build_config("huge")
    assert build_config(None, data="/d/pt/structures.parquet", targets=["energy"]).model_name == "scannet-pt-energy"
