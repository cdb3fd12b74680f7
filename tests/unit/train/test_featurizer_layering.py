"""A partial ``featurizer:`` override layers over the settings the model preset and the data imply (issue 20):
crystals keep the crystal cutoff (6 Å) when only ``molecule_mode`` is given, molecules keep the molecule
settings, and a featurizer given in full still wins. Training (``build_run_config``, ``prepare_run``) and
tuning (``load_study``) resolve it the same way."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from ase.build import bulk

from scannet.data.structures_table import write_structures
from scannet.featurizer import FeaturizerConfig
from scannet.train.run import prepare_run
from scannet.train.run_config import build_run_config
from scannet_platform.tune.config import load_study

CRYSTAL = FeaturizerConfig.crystals()
MOLECULE = FeaturizerConfig.molecules()


def crystal_table(tmp_path):
    rng = np.random.default_rng(0)
    structures = []
    for k in range(8):
        atoms = bulk("NaCl", "rocksalt", a=5.64) if k % 2 else bulk("Si", "diamond", a=5.43)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info["energy"] = float(k)
        structures.append(atoms)
    return write_structures(tmp_path / "cryst" / "structures.parquet", structures, units={"energy": "eV"})


def local(tmp_path, data, **values):
    return {"storage_path": str(tmp_path / "runs"), "data_cache": str(tmp_path / "cache"), "data": str(data), **values}


@pytest.mark.parametrize("periodic", [False, True])
def test_a_partial_override_with_a_crystal_model_preset_gets_the_crystal_settings(periodic):
    config = build_run_config(model_preset="mp2018-scann+", featurizer={"molecule_mode": "box10"})
    assert config.resolved_featurizer(periodic) == FeaturizerConfig.crystals(molecule_mode="box10")


def test_the_reference_preset_on_periodic_data_keeps_the_crystal_cutoff():
    config = build_run_config("reference")
    assert config.resolved_featurizer(True) == FeaturizerConfig.crystals(molecule_mode="box10")
    assert config.resolved_featurizer(True).distance_threshold == 6.0


def test_molecules_keep_the_molecule_settings_under_a_partial_override():
    assert build_run_config("reference").resolved_featurizer(False) == FeaturizerConfig.molecules(molecule_mode="box10")
    config = build_run_config(featurizer={"molecule_mode": "box10", "voronoi_cutoff": 8.0})
    assert config.resolved_featurizer(False) == FeaturizerConfig.molecules(molecule_mode="box10", voronoi_cutoff=8.0)
    assert build_run_config().resolved_featurizer(False) == MOLECULE  # nothing given: unchanged


def test_partial_overrides_accumulate_over_the_layers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("featurizer:\n  voronoi_cutoff: 8.0\n")
    config = build_run_config("reference", str(path), featurizer={"solid_angle_threshold": 0.3})
    expected = FeaturizerConfig.crystals(molecule_mode="box10", voronoi_cutoff=8.0, solid_angle_threshold=0.3)
    assert config.resolved_featurizer(True) == expected


def test_given_keys_win_over_the_implied_settings():
    config = build_run_config("reference", featurizer={"distance_threshold": 5.0})
    assert config.resolved_featurizer(True) == FeaturizerConfig.crystals(molecule_mode="box10", distance_threshold=5.0)
    assert config.resolved_featurizer(False) == FeaturizerConfig.molecules(
        molecule_mode="box10", distance_threshold=5.0
    )


def test_an_explicit_full_featurizer_still_wins():
    full = FeaturizerConfig(distance_threshold=4.5, molecule_mode="box10", voronoi_cutoff=7.5)
    for config in (
        build_run_config(featurizer=full),
        build_run_config("reference", featurizer=full),
        build_run_config(model_preset="mp2018-scann+", featurizer=full),
    ):
        assert config.resolved_featurizer(True) == full and config.resolved_featurizer(False) == full


def test_the_recorded_config_is_unchanged():
    """The run config keeps what was given (over the dataclass defaults); only the resolution changed."""
    assert build_run_config("reference").featurizer == FeaturizerConfig(molecule_mode="box10")
    assert build_run_config().featurizer is None


def test_prepare_run_featurizes_a_crystal_table_at_the_crystal_cutoff_under_a_partial_override(tmp_path):
    data = crystal_table(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model_preset": "mp2018-scann+", "featurizer": {"molecule_mode": "box10"}}))
    prepared = prepare_run(build_run_config(None, str(path), **local(tmp_path, data, targets=["energy"], name="a")))
    assert prepared.worker.featurizer == FeaturizerConfig.crystals(molecule_mode="box10")
    assert prepared.worker.model.gaussian_distance_max == 6.0

    prepared = prepare_run(build_run_config("reference", **local(tmp_path, data, targets=["energy"], name="b")))
    assert prepared.worker.featurizer == FeaturizerConfig.crystals(molecule_mode="box10")


def test_a_study_layers_its_run_featurizer_the_same_way(tmp_path):
    path = tmp_path / "study.yaml"
    study = {
        "run": {"model_preset": "mp2018-scann+", "featurizer": {"molecule_mode": "box10"}, "train": {"epochs": 3}},
        "space": {"featurizer.solid_angle_threshold": {"type": "choice", "values": [0.3, 0.4]}},
        "scheduler": {"grace_period": 1},
    }
    path.write_text(yaml.safe_dump(study))
    loaded = load_study(path)
    base = loaded.base_run().resolved_featurizer(True)
    assert base == FeaturizerConfig.crystals(molecule_mode="box10")
    assert {f.distance_threshold for f in loaded.featurizer_choices(base)} == {6.0}
    assert {f for _, f in loaded.model_grid(loaded.base_model(True))} == {
        FeaturizerConfig.crystals(molecule_mode="box10", solid_angle_threshold=w) for w in (0.3, 0.4)
    }
