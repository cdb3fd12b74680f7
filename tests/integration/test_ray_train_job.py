"""The Ray Train job end to end on a local cluster: DDP over 2 workers, an injected worker failure
recovered by FailureConfig, resume by re-running with the same name (the same MLflow run, no duplicate model
version), MLflow metrics logged live in report units, plots, files and a registered model (code, not a
pickle; its checkpoint checked by SHA-256) that loads and predicts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import pytest
from ase.build import molecule

import scannet
from scannet.data.qm9 import write_qm9_table
from scannet.train.run_config import FaultHooks
from scannet.train.run_folder import TRAIN_STATE
from scannet_platform.tracking.registry import download_checkpoint, load_registered
from scannet_platform.train.config import build_config
from scannet_platform.train.driver import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    structures = write_qm9_table(root / "qm9-slice", targets=["homo", "lumo"], limit=200)
    return build_config(
        None,
        name="ddp-test",
        data=str(structures),
        targets=["homo", "lumo"],
        model_preset="demo",
        train={"epochs": 3, "batch_size": 32, "schedule": "cosine", "lr": 1e-3},
        num_workers=2,
        storage_path=str(root / "runs"),
        data_cache=str(root / "cache"),
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        hooks={"fail_once_at_epoch": 1},
        max_failures=1,
    )


@pytest.fixture(scope="module")
def first_run(ray_cluster, job):
    return run_training(job)


def test_training_survives_a_worker_failure_and_finishes(first_run, job):
    assert first_run.epochs_run == 3
    marker = Path(job.storage_path) / job.name / "injected_failure.rank0"
    assert marker.read_text() == "failed once"
    assert first_run.resumed_from_epoch == 1  # the restarted worker group resumed from the epoch-0 checkpoint
    assert set(first_run.test_mae) == {"homo", "lumo"} and all(v > 0 for v in first_run.test_mae.values())
    assert first_run.test_evaluated == first_run.split_sizes["test"] > 0


def test_mlflow_holds_metrics_plots_files_and_a_registered_model(first_run, job):
    client = mlflow.MlflowClient(job.tracking_uri)
    run = client.get_run(first_run.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["scannet.run_name"] == job.name
    assert {
        "test_mae_homo_meV",
        "test_mae_lumo_meV",
        "val_mae_homo_meV",
        "val_mae_lumo_meV",
        "val_mae_standardized",
        "train_loss_standardized",
    } <= set(run.data.metrics)
    assert run.data.metrics["test_mae_homo_meV"] == first_run.test_mae["homo"]
    assert run.data.metrics["test_structures"] == first_run.test_evaluated
    losses = client.get_metric_history(run.info.run_id, "train_loss_standardized")
    assert [m.step for m in losses] == [1, 2, 3] and losses[-1].value < losses[0].value
    assert len(client.get_metric_history(run.info.run_id, "val_mae_standardized")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/learning_curve.png", "plots/parity.png", "plots/plots.json"}
    plots = json.loads(Path(client.download_artifacts(run.info.run_id, "plots/plots.json")).read_text())
    assert plots["parity"]["titles"] == [
        f"{t}: test MAE {run.data.metrics[f'test_mae_{t}_meV']:.4g} meV" for t in ("homo", "lumo")
    ]
    assert plots["parity"]["n"] == first_run.test_evaluated and plots["dpi"] >= 150
    files = {a.path for a in client.list_artifacts(run.info.run_id, "run_files")}
    assert "run_files/split.json" in files and "run_files/split_ids.parquet" in files
    checkpoint = download_checkpoint(first_run.model_uri, job.tracking_uri)
    assert checkpoint.name == "best_model.pt"
    result = scannet.load(checkpoint).predict_one(molecule("CH3CHO"))
    assert set(result.values) == {"homo", "lumo"} and abs(result.ga_scores.sum() - 1) < 1e-5


def test_epoch_metrics_reach_mlflow_while_training_runs(first_run, job):
    """Epoch 1's metrics were logged (by the callback in the Ray Train controller) before the last epoch's
    checkpoint was written; logging at the end would stamp them after it."""
    client = mlflow.MlflowClient(job.tracking_uri)
    first_epoch = client.get_metric_history(first_run.mlflow_run_id, "val_mae_homo_meV")[0]
    assert first_epoch.step == 1
    states = (Path(job.storage_path) / job.name / "ray_train").rglob(TRAIN_STATE)
    last_checkpoint_ms = 1000 * max(p.stat().st_mtime for p in states)
    assert first_epoch.timestamp < last_checkpoint_ms - 500


def test_the_registered_version_says_what_it_is(first_run, job):
    client = mlflow.MlflowClient(job.tracking_uri)
    name, version = first_run.model_uri.removeprefix("models:/").split("/")
    registered = client.get_model_version(name, version)
    tags = registered.tags
    assert tags["targets"] == "homo,lumo" and tags["report_units"] == "homo=meV, lumo=meV"
    assert tags["run_name"] == job.name and tags["dataset"] == "qm9-slice" and len(tags["split_sha256"]) == 64
    assert float(tags["test_mae_homo_meV"]) == first_run.test_mae["homo"]
    assert tags["test_structures"] == f"{first_run.test_evaluated} of {first_run.split_sizes['test']}"
    assert set(tags["elements"].split()) <= {"H", "C", "N", "O", "F"} and tags["featurizer_hash"]
    assert "homo" in registered.description and str(client.get_model_version_by_alias(name, "best").version)
    model = load_registered(first_run.model_uri, job.tracking_uri)
    water = molecule("H2O")
    out = model.predict([{"numbers": water.numbers.tolist(), "positions": water.positions.tolist()}])
    assert list(out.columns) == ["homo", "lumo", "ga_scores", "error"] and out["error"][0] == ""


def test_rerun_with_the_same_name_resumes(first_run, job):
    longer = dataclasses.replace(job, train=dataclasses.replace(job.train, epochs=5), hooks=FaultHooks())
    second = run_training(longer)
    assert second.resumed_from_epoch == 3
    assert second.epochs_run == 5
    assert second.mlflow_run_id == first_run.mlflow_run_id  # one MLflow run per training run
    steps = mlflow.MlflowClient(job.tracking_uri).get_metric_history(second.mlflow_run_id, "train_loss_standardized")
    assert [m.step for m in steps] == [1, 2, 3, 4, 5]

    again = run_training(longer)  # finished already: nothing to train, the same checkpoint
    assert again.mlflow_run_id == first_run.mlflow_run_id and again.model_uri == second.model_uri
    client = mlflow.MlflowClient(job.tracking_uri)
    experiment = client.get_experiment_by_name(job.experiment).experiment_id
    assert len(client.search_runs([experiment], f"tags.`scannet.run_name` = '{job.name}'")) == 1
    assert client.get_run(again.mlflow_run_id).info.status == "FINISHED"


def test_fine_tune_from_the_registered_model(first_run, job):
    tuned = dataclasses.replace(
        job,
        name="fine-tune",
        init_from=first_run.model_uri,
        registered_model="scannet-fine-tuned",
        train=dataclasses.replace(job.train, epochs=1),
        hooks=FaultHooks(),
    )
    result = run_training(tuned)
    assert result.epochs_run == 1 and result.model_uri == "models:/scannet-fine-tuned/1"
    config = scannet.load(download_checkpoint(result.model_uri, job.tracking_uri)).model.config
    assert config.local_dim == 64 and config.targets == ("homo", "lumo")  # the architecture of the source model


def test_registered_model_loads_by_uri_in_the_library_and_the_cli(first_run, job, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", job.tracking_uri)
    predictor = scannet.load(first_run.model_uri)  # models:/name/1, resolved through the platform's entry point
    assert predictor.targets == ("homo", "lumo")
    best = scannet.load(first_run.model_uri.rsplit("/", 1)[0] + "@best")
    assert best.targets == ("homo", "lumo")
    from ase.io import write

    from scannet.cli import main as cli_main

    write(tmp_path / "ethanol.xyz", molecule("CH3CH2OH"))
    assert (
        cli_main(
            ["predict", "--model", first_run.model_uri, str(tmp_path / "ethanol.xyz"), "--out", str(tmp_path / "p")]
        )
        == 0
    )
    assert cli_main(["predict", "--model", "models:/no-such-model/1", str(tmp_path / "ethanol.xyz")]) == 2
