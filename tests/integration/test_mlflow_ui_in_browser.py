"""The MLflow UI (3.17) in headless Chromium: the runs URL our summaries print opens the experiment's runs table
("Model training"), not the GenAI "Overview" that the experiment's own link lands on. A real ``mlflow server``
(its own process group, stopped by its id) on a free loopback port with an SQLite store in the test's folder;
the run is logged through the platform's code path (``tracking.runs.begin_run``). Screenshot kept in
test-artifacts/mlflow-runs-table.png."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium, open_page

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240  # the server's start on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``(http URL, the store's URI)`` of an MLflow server this test started; stopped with its process group."""
    chromium()  # skip before starting anything when there is no browser
    port, store = free_port(), f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", store, "--artifacts-destination", str(tmp_path / "artifacts")]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(1)
        yield url, store
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server we started and its workers, nothing else
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_the_printed_runs_url_opens_the_runs_table(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from scannet_platform.tracking.runs import begin_run, runs_url

    url, _ = mlflow_server
    run_id = begin_run(
        tracking_uri=url, experiment="scannet-tune", run_name="ui-check-run", run_dir=tmp_path / "run", params={}
    )
    client = MlflowClient(url)
    client.log_metric(run_id, "val_mae_homo_meV", 123.0)
    client.set_terminated(run_id, "FINISHED")
    printed = runs_url(url, run_id)
    experiment = client.get_run(run_id).info.experiment_id
    assert printed == f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"

    page = open_page(printed, "mlflow-runs-table.png", settle_ms=15000)
    assert "ui-check-run" in page.dom, "the run is listed in the runs table"
    assert "Training runs" in page.dom or ">Runs<" in page.dom
    assert "No data available for the selected time range" not in page.dom, "not the GenAI overview"
