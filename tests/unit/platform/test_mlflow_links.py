"""What a user follows from a summary to MLflow (issue 23): the runs-table URL in the "Model training" view, and a
screening run tagged with the models (reference and checkpoint SHA-256) it used."""

from __future__ import annotations

import pytest

from scannet.data.structures_table import write_structures
from scannet.io.provenance import sha256_file
from tests.screening import candidates, tiny_model
from tests.unit.platform.test_screen_inputs import screen

pytest.importorskip("mlflow")


def test_the_runs_url_opens_the_model_training_view_of_the_runs_experiment(tmp_path):
    from mlflow import MlflowClient

    from scannet_platform.tracking.runs import runs_url

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    route = f"#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert runs_url(store, run_id) == (
        f"http://127.0.0.1:5000/{route} (serve it: mlflow ui --backend-store-uri {store})"
    )


def test_a_screening_run_is_tagged_with_its_models_and_prints_the_runs_url(tmp_path):
    from mlflow import MlflowClient

    from scannet_platform.screen.job import summary_lines

    model = tiny_model(tmp_path / "a.pt")
    library = write_structures(tmp_path / "lib.parquet", candidates(3), {})
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary, scan = screen(tmp_path / "out", [library], [model], mlflow=True, mlflow_tracking_uri=store)
    tags = MlflowClient(store).get_run(summary.mlflow_run_id).data.tags
    assert tags["scannet.model.homo_gap.0"] == f"{model} sha256 {sha256_file(model)}"
    assert tags["scannet.model.homo_gap"] == str(model)
    assert any(
        line.startswith("MLflow UI: http://") and "workflowType=machine_learning" in line
        for line in summary_lines(summary, scan)
    )


def test_quiet_libraries_stop_mlflows_view_run_lines(monkeypatch):
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    from scannet_platform.runtime import quiet_libraries

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)  # restored after the test
    for name in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "PYTHONWARNINGS"):  # what else it sets, restored too
        monkeypatch.setenv(name, "")
    quiet_libraries(verbose=False)
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True
