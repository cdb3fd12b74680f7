"""A study's ensemble (issue 23): the members' mean evaluated on test, the std scale fitted on val and written
with the ensemble, applied by the screen, and the ensemble logged on the parent run where
``runs:/<run>/ensemble`` reaches it (checked against the recorded SHA-256). No Ray: members' predictions are given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from scannet.checkpoint import CheckpointError
from tests.screening import candidates, tiny_model
from tests.unit.platform.test_screen_inputs import outputs, screen

pytest.importorskip("ray")

REPORT = {"homo": (1000.0, "meV")}  # dataset eV -> report meV


def fake_members(monkeypatch, predictions: dict[str, dict[str, list[float]]], targets: dict[str, list[float]]):
    """Members ``m0``, ``m1``, ... whose predictions (eV) of each part are given; ids ``s0``, ``s1``, ..."""
    from scannet_platform.tune import ensemble

    def member_predictions(worker, checkpoint, part):
        values = predictions[part][str(checkpoint)]
        return {f"s{k}": (np.array([v]), np.array([targets[part][k]])) for k, v in enumerate(values)}

    monkeypatch.setattr(ensemble, "member_predictions", member_predictions)
    return [(None, Path(name)) for name in predictions["test"]]


def test_the_ensemble_mean_is_evaluated_and_its_std_scaled_to_the_validation_errors(monkeypatch):
    from scannet_platform.tune.ensemble import evaluate_ensemble

    # val: member spread 0.01 eV (std), errors of the mean 0.02 eV -> the spread is 2x too small
    predictions = {
        "val": {"m0": [0.01, 0.01, -0.03, -0.03], "m1": [0.03, 0.03, -0.01, -0.01]},
        "test": {"m0": [0.0, 0.1, 0.2], "m1": [0.2, 0.1, 0.4]},
    }
    targets = {"val": [0.0, 0.0, 0.0, 0.0], "test": [0.1, 0.0, 0.35]}
    members = fake_members(monkeypatch, predictions, targets)
    result = evaluate_ensemble(members, REPORT)
    # test mean 0.1, 0.1, 0.3: errors 0, 100, 50 meV; members' MAE (100 + 100 + 150) / 3 and (100 + 100 + 50) / 3
    assert result.test_mae["homo"] == pytest.approx(50.0)
    assert [m["homo"] for m in result.member_test_mae] == pytest.approx([350 / 3, 250 / 3])
    assert result.std_scale["homo"] == pytest.approx(2.0)
    # test std 100, 0, 100 meV: |errors| 0, 100, 50 -> within 1 sigma: 2 of 3 (0 <= 0 counts), 2 sigma: the same
    assert result.coverage_raw["homo"].within_1sigma == pytest.approx(2 / 3)
    assert result.coverage_calibrated["homo"].within_2sigma == pytest.approx(2 / 3)
    assert result.metrics()["ensemble_test_mae_homo_meV"] == pytest.approx(50.0)
    assert any("std x 2" in line for line in result.lines())


def test_members_are_compared_on_the_structures_all_of_them_have(monkeypatch):
    from scannet_platform.tune import ensemble

    rows = [
        {"a": (np.array([1.0]), np.array([0.0])), "b": (np.array([2.0]), np.array([0.0]))},
        {"b": (np.array([4.0]), np.array([0.0])), "c": (np.array([9.0]), np.array([0.0]))},
    ]
    monkeypatch.setattr(ensemble, "member_predictions", lambda worker, checkpoint, part: rows[int(str(checkpoint))])
    part = ensemble.part_predictions([(None, Path("0")), (None, Path("1"))], "test", [1.0])
    assert part.ids == ["b"] and part.predictions[:, 0, 0].tolist() == [2.0, 4.0]


def test_one_member_or_identical_members_are_not_calibrated(monkeypatch):
    from scannet_platform.tune.ensemble import evaluate_ensemble

    same = {"val": {"m0": [0.1, 0.2], "m1": [0.1, 0.2]}, "test": {"m0": [0.1], "m1": [0.1]}}
    members = fake_members(monkeypatch, same, {"val": [0.0, 0.0], "test": [0.0]})
    assert "identical members" in evaluate_ensemble(members, REPORT).note
    assert evaluate_ensemble(members[:1], REPORT).note == "one member has no spread"
    assert evaluate_ensemble(members[:1], REPORT).std_scale == {}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [tiny_model(folder / "a.pt", seed=0), tiny_model(folder / "b.pt", seed=1)]


def exported(tmp_path, two_models, monkeypatch) -> Path:
    """The ensemble of the two tiny models exported by the study's export, with a gap scale of 3."""
    from scannet.train.calibration import Coverage
    from scannet_platform.tune.driver import export_ensemble
    from scannet_platform.tune.ensemble import EnsembleEvaluation

    rows = []
    for k, path in enumerate(two_models):
        summary = SimpleNamespace(checkpoint=path, test_mae={"gap": 0.1 * k})
        rows.append((SimpleNamespace(trial_id=f"t{k}", best=float(k)), None, SimpleNamespace(summary=summary)))
    curve = [0.5] * 19
    evaluation = EnsembleEvaluation(
        ("gap",),
        {"gap": "meV"},
        10,
        8,
        {"gap": 40.0},
        [{"gap": 45.0}, {"gap": 50.0}],
        {"gap": 3.0},
        {"gap": Coverage(0.3, 0.5)},
        {"gap": Coverage(0.7, 0.95)},
        {"gap": curve},
        {"gap": curve},
    )
    study = SimpleNamespace(name="s", mode="min")
    return export_ensemble(study, rows, evaluation, "val_mae_gap", tmp_path)


def test_the_export_records_the_scale_the_coverage_and_the_members_sha256(tmp_path, two_models, monkeypatch):
    from scannet.io.provenance import sha256_file

    manifest = exported(tmp_path, two_models, monkeypatch)
    recorded = json.loads(manifest.read_text())
    assert recorded["std_scale"] == {"gap": 3.0} and recorded["test_mae"] == {"gap": 40.0}
    assert recorded["calibration"]["after"]["gap"] == {"within_1sigma": 0.7, "within_2sigma": 0.95}
    assert recorded["members"][1]["sha256"] == sha256_file(two_models[1])
    assert (manifest.parent / "ensemble_reliability.png").stat().st_size > 10_000


def test_the_screen_multiplies_the_members_std_by_the_ensemble_scale(tmp_path, two_models, monkeypatch):
    from scannet.data.structures_table import write_structures

    library = write_structures(tmp_path / "lib.parquet", candidates(6), {})
    folder = exported(tmp_path / "study", two_models, monkeypatch).parent
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain)
    manifest = json.loads((plain / "ensemble.json").read_text())
    (plain / "ensemble.json").write_text(json.dumps({**manifest, "std_scale": {}}))
    screen(tmp_path / "scaled", [library], [folder])
    screen(tmp_path / "raw", [library], [plain])
    scaled, raw = (outputs(tmp_path / name)[0].sort_by("row") for name in ("scaled", "raw"))
    np.testing.assert_allclose(scaled["gap_eV_std"].to_numpy(), 3.0 * raw["gap_eV_std"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(scaled["homo_eV_std"].to_numpy(), raw["homo_eV_std"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(scaled["gap_eV"].to_numpy(), raw["gap_eV"].to_numpy(), rtol=1e-6)


def test_the_ensemble_logged_on_the_parent_run_is_reached_by_its_runs_uri(tmp_path, two_models, monkeypatch):
    from mlflow import MlflowClient

    from scannet_platform.screen.models import resolve_models
    from scannet_platform.tune.tracking import log_ensemble

    folder = exported(tmp_path / "study", two_models, monkeypatch).parent
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    evaluation = SimpleNamespace(metrics=lambda: {"ensemble_test_mae_gap_meV": 40.0})
    reference = log_ensemble(uri, run_id, folder, evaluation)
    assert reference == f"runs:/{run_id}/ensemble"
    assert client.get_run(run_id).data.metrics["ensemble_test_mae_gap_meV"] == 40.0
    (group,) = resolve_models([reference], uri)
    assert len(group.members) == 2 and group.std_scale == {"gap": 3.0}

    stored = tmp_path / "artifacts" / run_id / "artifacts" / "ensemble" / "member-01.pt"
    stored.write_bytes(stored.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match="member-01.pt is missing or differs"):
        resolve_models([reference], uri)
    with pytest.raises(CheckpointError, match="not found in the MLflow store"):
        resolve_models(["runs:/0123456789abcdef/ensemble"], uri)
