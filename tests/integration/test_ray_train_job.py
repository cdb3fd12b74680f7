"""The Ray Train job end to end on a local cluster: DDP over 2 workers, an injected worker failure
recovered by FailureConfig, resume by re-running with the same name, MLflow metrics, plots, files and
a registered model that loads and predicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import pytest
from ase.build import molecule

import scannet
from scannet.data.qm9 import write_qm9_table
from scannet.train.run_config import FaultHooks
from scannet_platform.tracking import download_checkpoint
from scannet_platform.train_config import build_config
from scannet_platform.train_driver import run_training

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
    assert {"test_mae_homo", "test_mae_lumo", "val_mae", "train_loss"} <= set(run.data.metrics)
    assert run.data.metrics["test_structures"] == first_run.test_evaluated
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert len(client.get_metric_history(run.info.run_id, "val_mae")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/learning_curve.png", "plots/parity.png"}
    files = {a.path for a in client.list_artifacts(run.info.run_id, "run_files")}
    assert "run_files/split.json" in files and "run_files/split_ids.parquet" in files
    checkpoint = download_checkpoint(first_run.model_uri, job.tracking_uri)
    result = scannet.load(checkpoint).predict_one(molecule("CH3CHO"))
    assert set(result.values) == {"homo", "lumo"} and abs(result.ga_scores.sum() - 1) < 1e-5


def test_rerun_with_the_same_name_resumes(first_run, job):
    longer = dataclasses.replace(job, train=dataclasses.replace(job.train, epochs=5), hooks=FaultHooks())
    second = run_training(longer)
    assert second.resumed_from_epoch == 3
    assert second.epochs_run == 5


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
