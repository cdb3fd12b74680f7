"""Every shipped YAML loads through the loader that reads it for real: the training recipes
(``scannet/pretrained/*.yaml``) through the run-config builder, the study files (``tune_spaces/*.yaml``)
through ``load_study``; and every model preset has its featurizer settings in the pairing table."""

from __future__ import annotations

from pathlib import Path

import pytest

from scannet.featurizer import FeaturizerConfig
from scannet.model.config import PRESETS as MODEL_PRESETS
from scannet.model.config import preset
from scannet.train.run_config import DEFAULT_MODEL, MODEL_FEATURIZERS, RunConfig, build_run_config
from scannet_platform.train.config import build_config as build_job_config
from scannet_platform.tune.config import load_study

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "scannet" / "pretrained").glob("*.yaml"))
SPACES = sorted((ROOT / "tune_spaces").glob("*.yaml"))


def test_the_shipped_files_are_found():
    assert {p.name for p in RECIPES} >= {"qm9-cpu-recipe.yaml", "qm9-gpu-recipe.yaml"}
    assert {p.name for p in SPACES} >= {"small_cpu.yaml", "qm9_gpu.yaml"}


def check_model_and_featurizer(run: RunConfig) -> None:
    """The model and featurizer the run would get, for molecules and for crystals, fit together."""
    for periodic in (False, True):
        name = run.resolved_model_preset(periodic)
        if periodic and MODEL_FEATURIZERS[name] == "molecules":
            continue  # a molecule model on crystals is refused by design (test_run.py)
        model = preset(name, targets=tuple(run.targets), **run.model_overrides)
        run.resolved_featurizer(periodic).check_distance_basis(model.gaussian_distance_max, f"{name}")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_each_shipped_recipe_loads_through_the_run_config_builders(path):
    run = build_run_config(None, str(path))
    assert run.name and run.targets
    check_model_and_featurizer(run)
    job = build_job_config(None, str(path))  # `scannet train --ray --config` reads the same file
    assert job.name == run.name and job.train == run.train


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_each_shipped_space_loads_through_load_study(path):
    study = load_study(path)  # also builds the model of every discrete combination of the space
    assert study.parameters
    check_model_and_featurizer(study.base_run())


def test_the_pairing_table_covers_every_model_preset():
    assert set(MODEL_FEATURIZERS) == set(MODEL_PRESETS)
    assert set(DEFAULT_MODEL.values()) <= set(MODEL_PRESETS)
    assert MODEL_FEATURIZERS[DEFAULT_MODEL[False]] == "molecules"
    assert MODEL_FEATURIZERS[DEFAULT_MODEL[True]] == "crystals"


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_each_model_preset_reaches_the_cutoff_of_its_featurizer(name):
    featurizer = FeaturizerConfig.for_kind(MODEL_FEATURIZERS[name])
    featurizer.check_distance_basis(preset(name).gaussian_distance_max, name)
