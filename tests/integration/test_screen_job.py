"""scannet screen on Ray, killed with SIGKILL halfway and launched again: every library row is written exactly
once (0 lost, 0 duplicated), for a killed driver and for a killed worker.

Each screen runs as ``python -m scannet.cli screen`` in a new session (its own process group) with its own
local Ray. A test kills exactly the processes it started: the driver's process group, and then any of the
driver's descendants (Ray's processes) still alive, by pid; the worker test kills one actor process found
among the driver's descendants. Never ``ray stop``, ``pkill`` or ``killall``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scannet.data.structures_table import write_structures
from scannet.io.process import cmdline, descendants, is_running, signal_running
from tests.screening import candidates, tiny_model

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

N_MOLECULES = 400
CHUNK = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screen-job")
    library = write_structures(folder / "lib.parquet", candidates(N_MOLECULES), {})
    return folder, library, tiny_model(folder / "model.pt")


def _environment(folder: Path) -> dict:
    env = dict(os.environ)
    env["SCANNET_HOME"] = str(folder / "home")
    env["RAY_AUTH_TOKEN_PATH"] = str(folder / "ray_token")  # never the user's ~/.ray/auth_token
    env.pop("RAY_ADDRESS", None)
    return env


def _launch(folder: Path, library: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "scannet.cli", "screen", str(library), "--model", str(model), "--out", str(out)]
    command += ["--chunk-size", str(CHUNK), "--actors", "1", "--no-progress", *extra]
    log = open(folder / f"{out.name}-{time.time_ns()}.log", "w")
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=_environment(folder), start_new_session=True
    )


def kill_run(process: subprocess.Popen) -> None:
    """SIGKILL the driver's process group, then every descendant of the driver still alive (by pid)."""
    family = descendants(process.pid)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    signal_running(dict.fromkeys(family), signal.SIGKILL)
    deadline = time.time() + 30
    while any(is_running(pid) for pid in family) and time.time() < deadline:
        time.sleep(0.2)


def _parts(out: Path) -> int:
    return len(list((out / "predictions").glob("part-*.parquet")))


def _wait_for_parts(process: subprocess.Popen, out: Path, n: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while _parts(out) < n:
        assert process.poll() is None, f"the screen ended (exit {process.returncode}) before {n} parts were written"
        assert time.time() < deadline, f"no {n} parts after {timeout} s"
        time.sleep(0.05)


def _finish(process: subprocess.Popen, timeout: float = 300) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            kill_run(process)


def assert_exactly_once(out: Path) -> None:
    predictions, quarantine = pq.read_table(out / "predictions"), pq.read_table(out / "quarantine")
    rows = sorted(predictions["row"].to_pylist() + quarantine["row"].to_pylist())
    assert len(rows) == N_MOLECULES and rows == list(range(N_MOLECULES)), (
        f"{N_MOLECULES - len(set(rows))} lost, {len(rows) - len(set(rows))} duplicated"
    )
    assert sorted(predictions["id"].to_pylist()) == [f"c{k:04d}" for k in range(N_MOLECULES)]


def test_a_driver_killed_halfway_and_launched_again_writes_every_row_exactly_once(setup):
    folder, library, model = setup
    out = folder / "driver-killed"
    mlflow = ["--mlflow-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    first = _launch(folder, library, model, out, *mlflow)
    try:
        _wait_for_parts(first, out, 5)
    finally:
        kill_run(first)
    done = _parts(out)
    assert 5 <= done < N_MOLECULES // CHUNK, "killed halfway"
    second = _launch(folder, library, model, out, *mlflow)
    assert _finish(second) == 0
    assert_exactly_once(out)
    log = sorted(folder.glob("driver-killed-*.log"))[-1].read_text()
    assert f"{done:,} chunks finished by an earlier launch" in log or "chunks finished by an earlier launch" in log
    assert "marked KILLED" in log and "resumed (launch 2)" in log

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("scannet-screening").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["screened"] == N_MOLECULES
    assert run.data.metrics["quarantined"] == 0 and run.data.metrics["structures_per_s"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/hist-homo_eV.png", "plots/hist-gap_eV.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "top_k")} >= {"top_k/top-homo_eV-max.md"}


def test_a_worker_killed_halfway_is_replaced_and_every_row_written_exactly_once(setup):
    folder, library, model = setup
    out = folder / "worker-killed"
    process = _launch(folder, library, model, out, "--no-mlflow")
    try:
        _wait_for_parts(process, out, 5)
        workers = [pid for pid in descendants(process.pid) if "ChunkPredictor" in cmdline(pid)]
        assert len(workers) == 1, f"one actor process expected, found {workers}"
        os.kill(workers[0], signal.SIGKILL)
        killed_at = _parts(out)
        assert _finish(process) == 0
    finally:
        if process.poll() is None:
            kill_run(process)
    assert killed_at < N_MOLECULES // CHUNK, "the worker was killed before the end"
    assert_exactly_once(out)
