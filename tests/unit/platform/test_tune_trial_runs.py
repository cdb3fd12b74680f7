"""A study's runs as the MLflow runs table shows them (issue 23): trials named short and unique, each with its
best objective value, the parent with parameter importances as values. No Ray: the callback is called as Tune
calls it, with stand-in trials."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

OBJECTIVE = "val_mae_homo_meV"


def trial(number: int, trial_id: str, **config):
    return SimpleNamespace(
        trial_id=trial_id, experiment_tag=f"{number}_lr={config.get('train.lr')}", config=config, last_result={}
    )


@pytest.fixture
def store(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("tune", artifact_location=str(tmp_path / "artifacts"))
    return uri, client, experiment, client.create_run(experiment, run_name="study").info.run_id


def test_trial_runs_have_short_unique_names_and_their_best_objective(store):
    from scannet_platform.tune.tracking import TrialRuns

    uri, client, experiment, parent = store
    runs = TrialRuns(uri, experiment, parent, "a-long-study-name", OBJECTIVE, "min")
    trials = [
        trial(3, "b1148f2e", **{"train.lr": 0.0003, "train.batch_size": 64, "model.g_update": True}),
        trial(12, "25ffbf7f", **{"train.lr": 0.00134, "train.batch_size": 16, "model.g_update": False}),
    ]
    for t in trials:
        runs.on_trial_start(0, trials, t)
        for epoch, value in enumerate((300.0, 250.0, 260.0)):
            result = {"epoch": epoch, "epochs": 3, "last": epoch == 2, OBJECTIVE: value}
            runs.on_trial_result(0, trials, t, result)
        t.last_result = {"last": True}
        runs.on_trial_complete(0, trials, t)
    names = {r.info.run_name: r for r in client.search_runs([experiment]) if r.info.run_id != parent}
    assert sorted(names) == ["t03-lr3e-4-bs64-guT", "t12-lr1.3e-3-bs16-guF"]
    run = names["t03-lr3e-4-bs64-guT"]
    assert run.data.metrics[f"best_{OBJECTIVE}"] == 250.0 and run.data.params["train.lr"] == "0.0003"
    assert not any("checkpoint" in key for key in run.data.params)


def test_the_parent_run_holds_the_parameter_importances_as_values(store, tmp_path, monkeypatch):
    from scannet_platform.tune import tracking
    from scannet_platform.tune.tracking import TrialRow, log_study

    uri, client, _, parent = store
    monkeypatch.setattr(tracking, "parameter_importances", lambda rows, space, mode: {"train.lr": 0.7, "x": 0.3})
    rows = [TrialRow("a", "completed", 2, 250.0, 2, 250.0, 1.0, {"train.lr": 0.001}, [(0.0, 300.0), (1.0, 250.0)])]
    log_study(uri, parent, rows, {}, OBJECTIVE, "min", [])
    metrics = client.get_run(parent).data.metrics
    assert metrics["importance.train.lr"] == 0.7 and metrics["importance.x"] == 0.3
