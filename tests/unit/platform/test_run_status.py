"""The MLflow run of a training job tells the truth: parameters and status RUNNING before training starts,
FAILED when training raises, KILLED on Ctrl-C or SIGTERM (the driver's ``finally``). Ray is replaced by the
Ray-free featurizer and a stand-in for ``fit``."""

from __future__ import annotations

import os
import signal
import time

import mlflow
import pytest

from scannet.data.qm9 import write_qm9_table
from scannet.train.run import plain_featurize
from scannet_platform.tracking import runs
from scannet_platform.train import driver
from scannet_platform.train.config import build_config


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    return write_qm9_table(tmp_path_factory.mktemp("qm9") / "qm9-40", targets=["homo"], limit=40)


@pytest.fixture()
def job(structures, tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "ray_featurizer", lambda verbose: plain_featurize)
    return build_config(
        None,
        name="status",
        data=str(structures),
        targets=["homo"],
        model_preset="demo",
        train={"epochs": 1, "batch_size": 8},
        num_workers=1,
        storage_path=str(tmp_path / "runs"),
        data_cache=str(tmp_path / "cache"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )


def stand_in_fit(monkeypatch, what_happens):
    """Replace ``fit``; returns what it saw of its MLflow run (status, parameters) while "training"."""
    seen = {}

    def fit(job, prepared, run_id=None):
        run = mlflow.MlflowClient(job.tracking_uri).get_run(run_id)
        seen.update(status=run.info.status, params=run.data.params, run_id=run_id)
        what_happens()

    monkeypatch.setattr(driver, "fit", fit)
    return seen


def final_status(job, run_id):
    return runs.run_status(job.tracking_uri, run_id)


def test_running_with_parameters_during_training_then_failed_when_it_raises(job, monkeypatch):
    def crash():
        raise RuntimeError("worker group died")

    seen = stand_in_fit(monkeypatch, crash)
    with pytest.raises(RuntimeError, match="worker group died"):
        driver.run_training(job)
    assert seen["status"] == "RUNNING"
    assert seen["params"]["job.train.epochs"] == "1" and seen["params"]["job.name"] == "status"
    assert final_status(job, seen["run_id"]) == "FAILED"


def test_killed_on_ctrl_c(job, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    seen = stand_in_fit(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        driver.run_training(job)
    assert final_status(job, seen["run_id"]) == "KILLED"


def test_killed_on_sigterm_and_the_handler_is_restored(job, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        raise AssertionError("SIGTERM did not reach the driver")

    seen = stand_in_fit(monkeypatch, terminated)
    with pytest.raises(SystemExit) as raised:
        driver.run_training(job)
    assert raised.value.code == 143
    assert final_status(job, seen["run_id"]) == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_relaunch_resumes_the_same_mlflow_run(job, monkeypatch):
    def crash():
        raise RuntimeError("again")

    first = stand_in_fit(monkeypatch, crash)
    with pytest.raises(RuntimeError):
        driver.run_training(job)
    second = stand_in_fit(monkeypatch, crash)
    with pytest.raises(RuntimeError):
        driver.run_training(job)
    assert first["run_id"] == second["run_id"]
