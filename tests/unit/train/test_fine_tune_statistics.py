"""Fine-tuning (``init_from``) keeps the source model's target statistics: its heads output z-scores of those, so
the small training set's own mean and std would move every prediction before a single step (the quickstart's
fine-tune got about 3x worse that way)."""

from __future__ import annotations

import torch
from ase.build import molecule

from scannet.checkpoint import save_model
from scannet.data.structures_table import write_structures
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, preset
from scannet.train.run import prepare_run
from scannet.train.run_config import build_run_config


def molecules(n: int = 12):
    out = []
    for k in range(n):
        atoms = molecule(["CH4", "H2O", "NH3", "HCN"][k % 4])
        atoms.positions += 0.01 * k
        atoms.info["energy"] = 100.0 + k  # far from the source's statistics
        out.append(atoms)
    return out


def test_fine_tuning_keeps_the_source_models_target_statistics(tmp_path):
    data = write_structures(tmp_path / "mine" / "structures.parquet", molecules(), units={"energy": "eV"})
    source_model = SCANN(preset("demo", targets=("energy",)))
    source_model.set_target_statistics(torch.tensor([-5.0]), torch.tensor([0.5]))
    source = save_model(tmp_path / "source.pt", source_model, FeaturizerConfig.molecules())
    values = {"storage_path": str(tmp_path / "runs"), "data_cache": str(tmp_path / "cache"), "data": str(data)}

    tuned = prepare_run(build_run_config(None, **values, targets=["energy"], init_from=str(source), name="ft"))
    assert (tuned.worker.target_mean, tuned.worker.target_std) == ((-5.0,), (0.5,))

    fresh = prepare_run(build_run_config(None, **values, targets=["energy"], model_preset="demo", name="new"))
    assert fresh.worker.target_mean[0] > 99  # a new model: the training split's own statistics


def test_the_summary_says_which_weights_a_fine_tune_started_from():
    from scannet.train.run import RunSummary

    sizes = {"train": 8, "val": 2, "test": 2}
    fields = dict(name="ft", run_dir="r", checkpoint="c", split_file="s", split_sizes=sizes, featurized_sizes=sizes)
    fields |= dict(quarantined=0, parameters=1, epochs_run=2, best_epoch=1, test_evaluated=2, seconds=1.0)
    fields |= dict(test_mae={"homo": 0.05}, report_units={"homo": "eV"})
    tuned = RunSummary(**fields, resumed_from_epoch=0, init_from="qm9-homo-lumo-gap-cpu")
    assert "this launch started from the weights of qm9-homo-lumo-gap-cpu" in tuned.lines()[2]
    assert "started from scratch" in RunSummary(**fields, resumed_from_epoch=0).lines()[2]
    assert "resumed after epoch 1" in RunSummary(**fields, resumed_from_epoch=1, init_from="m").lines()[2]
