"""Preparing a run (no Ray): model/featurizer pairing, vocabulary, content-keyed graph cache, resume checks,
test-set coverage; and the Ray-free runner end to end on a small table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from scannet.checkpoint import save_model
from scannet.data.qm9 import write_qm9_table
from scannet.data.structures_table import write_structures
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, preset
from scannet.train.launches import read_launches
from scannet.train.run import LaunchStopped, prepare_run, run_local
from scannet.train.run_config import build_run_config
from scannet.train.run_folder import RunFolder
from scannet.typed_config import ConfigError


def run_config(tmp_path, data, **overrides):
    values = {"storage_path": str(tmp_path / "runs"), "data_cache": str(tmp_path / "cache"), "data": str(data)}
    return build_run_config(None, **{**values, **overrides})


def crystals(n: int = 12) -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        atoms = bulk("NaCl", "rocksalt", a=5.64) if k % 2 else bulk("Si", "diamond", a=5.43)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info["energy"] = float(k)
        out.append(atoms)
    return out


def pt_clusters(n: int = 12) -> list[Atoms]:
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        atoms = Atoms("Pt4", positions=[[0, 0, 0], [2.6, 0, 0], [0, 2.6, 0], [0, 0, 2.6]])
        atoms.positions += rng.normal(scale=0.05, size=(4, 3))
        atoms.info["energy"] = float(k)
        out.append(atoms)
    return out


def table(tmp_path, name, structures):
    return write_structures(tmp_path / name / "structures.parquet", structures, units={"energy": "eV"})


def test_periodic_data_gets_the_crystal_model_and_featurizer(tmp_path):
    data = table(tmp_path, "cryst", crystals())
    prepared = prepare_run(run_config(tmp_path, data, targets=["energy"]))
    assert prepared.worker.featurizer == FeaturizerConfig.crystals()
    assert prepared.worker.model.gaussian_distance_max == 6.0  # mp2018-scann+
    with pytest.raises(ValueError, match="distance basis ends at gaussian_distance_max=4.0"):
        prepare_run(run_config(tmp_path, data, targets=["energy"], model_preset="qm9-scann+", name="x"))


def test_vocabulary_comes_from_the_data_when_the_preset_lacks_its_elements(tmp_path):
    data = table(tmp_path, "pt", pt_clusters())
    prepared = prepare_run(run_config(tmp_path, data, targets=["energy"]))
    assert prepared.worker.model.elements == (78,) and prepared.worker.model.max_atomic_number == 78


def test_fine_tuning_on_elements_the_model_lacks_is_refused_before_training(tmp_path):
    data = table(tmp_path, "pt", pt_clusters())
    source = save_model(tmp_path / "qm9.pt", SCANN(preset("demo", targets=("energy",))), FeaturizerConfig())
    with pytest.raises(ConfigError, match=r"elements \['Pt'\] that the model's vocabulary"):
        prepare_run(run_config(tmp_path, data, targets=["energy"], init_from=str(source)))
    assert not (tmp_path / "runs").exists()  # nothing written


def test_graph_cache_is_keyed_by_content_not_by_folder_name(tmp_path):
    first = table(tmp_path / "a", "mols", pt_clusters(12))
    second = table(tmp_path / "b", "mols", pt_clusters(14))
    one = prepare_run(run_config(tmp_path, first, targets=["energy"], name="one"))
    two = prepare_run(run_config(tmp_path, second, targets=["energy"], name="two"))
    assert one.graphs != two.graphs
    assert sum(two.featurized_sizes.values()) == 14


def test_resuming_with_a_changed_recipe_is_refused_naming_the_keys(tmp_path):
    data = table(tmp_path, "pt", pt_clusters())
    prepare_run(run_config(tmp_path, data, targets=["energy"], train={"epochs": 2}))
    recorded = (tmp_path / "runs" / "scannet-qm9" / "run_config.json").read_text()
    prepare_run(run_config(tmp_path, data, targets=["energy"], train={"epochs": 5}))  # more epochs: allowed
    with pytest.raises(ConfigError, match=r"train.lr: 0.0005 -> 0.001"):
        prepare_run(run_config(tmp_path, data, targets=["energy"], train={"lr": 1e-3}))
    assert json.loads((tmp_path / "runs" / "scannet-qm9" / "run_config.json").read_text())["train"]["epochs"] == 5
    assert json.loads(recorded)["train"]["lr"] == 5e-4


def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default_and_is_refused_off_it(tmp_path):
    data = table(tmp_path, "pt", pt_clusters())
    prepare_run(run_config(tmp_path, data, targets=["energy"], train={"epochs": 2}))
    recorded_file = tmp_path / "runs" / "scannet-qm9" / "run_config.json"
    older = json.loads(recorded_file.read_text())
    del older["train"]["ema_decay"], older["compile"]  # written by a version without these settings
    recorded_file.write_text(json.dumps(older))
    prepare_run(run_config(tmp_path, data, targets=["energy"], train={"epochs": 2}))  # their defaults: the same run
    recorded_file.write_text(json.dumps(older))
    with pytest.raises(ConfigError, match=r"train.ema_decay: None -> 0.999"):
        prepare_run(run_config(tmp_path, data, targets=["energy"], train={"epochs": 2, "ema_decay": 0.999}))


def test_test_structures_that_fail_featurization_fail_the_run_unless_allowed(tmp_path):
    good = pt_clusters(30)
    for atoms in good[1::2]:
        atoms.positions[1] = atoms.positions[0]  # overlapping atoms: quarantined by the featurizer
    data = table(tmp_path, "bad", good)
    with pytest.raises(RuntimeError, match=r"of \d+ test structures could not be featurized"):
        prepare_run(run_config(tmp_path, data, targets=["energy"]))
    prepared = prepare_run(run_config(tmp_path, data, targets=["energy"], allow_missing_test=True, name="partial"))
    assert prepared.quarantined == 15
    assert prepared.featurized_sizes["test"] < prepared.split_sizes["test"]


def test_reference_split_order_sorts_by_atom_count(tmp_path):
    structures = write_qm9_table(tmp_path / "qm9", targets=["homo"], limit=60)
    table_order = prepare_run(run_config(tmp_path, structures, name="table"))
    atom_order = prepare_run(run_config(tmp_path, structures, name="atoms", split_order="atom_count"))
    assert table_order.split_sizes == atom_order.split_sizes
    a = json.loads((table_order.run_dir / "split.json").read_text())
    b = json.loads((atom_order.run_dir / "split.json").read_text())
    assert a["test"] != b["test"]


@pytest.mark.slow
def test_local_runner_trains_evaluates_and_resumes(tmp_path):
    structures = write_qm9_table(tmp_path / "qm9", targets=["homo", "gap"], limit=120)

    def run(epochs: int):
        train = {"epochs": epochs, "batch_size": 32}
        return run_local(
            run_config(tmp_path, structures, targets=["homo", "gap"], model_preset="demo", threads=2, train=train)
        )

    summary = run(2)
    assert summary.epochs_run == 2 and summary.test_evaluated == summary.split_sizes["test"] > 0
    assert set(summary.test_mae) == {"homo", "gap"} and summary.report_units["homo"] == "meV"
    model = torch.load(summary.checkpoint, weights_only=True)
    assert model["metadata"]["units"] == {"homo": "eV", "gap": "eV"}
    assert model["metadata"]["test_mae"] == summary.test_mae and model["metadata"]["test_structures"] > 0
    longer = run(3)
    assert longer.resumed_from_epoch == 2 and longer.epochs_run == 3
    ethanol = molecule("CH3CH2OH")
    import scannet

    assert abs(scannet.load(longer.checkpoint).predict_one(ethanol).ga_scores.sum() - 1) < 1e-5


def test_a_launch_ends_at_its_time_limit_without_the_test_and_every_launch_is_recorded(tmp_path):
    structures = write_qm9_table(tmp_path / "qm9", targets=["homo"], limit=60)

    def launch(**limit):
        train = {"epochs": 3, "batch_size": 16}
        config = run_config(tmp_path, structures, model_preset="demo", threads=1, train=train, **limit)
        return run_local(config)

    stopped = launch(launch_hours=1e-9)  # any epoch overruns it: the launch ends after its first
    assert isinstance(stopped, LaunchStopped) and stopped.epochs_done == 1 and not stopped.finished
    folder = RunFolder(stopped.run_dir)
    assert not folder.summary.exists() and not folder.best_model.exists()  # the test split was not read
    summary = launch()
    assert summary.resumed_from_epoch == 1 and summary.epochs_run == 3
    launches = read_launches(folder.launches)
    assert [(r["first_epoch"], r["last_epoch"], r["ended_by"]) for r in launches] == [
        (0, 1, "time limit"),
        (1, 3, "finished"),
    ]
    assert launches[0]["limit_hours"] == 1e-9 and launches[1]["limit_hours"] is None
    assert all(
        r["seconds"] > 0 and r["machine"]["cpus"] and "bf16 instructions" in r["machine"]["cpu"] for r in launches
    )


def test_a_launch_time_limit_is_refused_on_ray_and_must_be_positive():
    from scannet_platform.train.config import build_config

    with pytest.raises(ConfigError, match="launch_hours: the Ray-free runner"):
        build_config(launch_hours=1.0)
    with pytest.raises(ConfigError, match="launch_hours: must be > 0"):
        build_run_config(None, launch_hours=0.0)


def test_a_missing_data_table_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such structures table"):
        prepare_run(run_config(tmp_path, tmp_path / "nowhere" / "structures.parquet"))
    assert not (tmp_path / "runs").exists()
