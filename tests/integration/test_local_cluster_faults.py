"""Faults on a real multi-node Ray cluster on this machine (``infra/local/cluster.py``: a head and two worker nodes
of 1 CPU each, token auth, an MLflow server), with the training job submitted as users do
(``ray job submit --working-dir . -- python jobs/train_qm9.py ...``, 2 DDP workers, 3 epochs):

- the MLflow server killed after an epoch and restarted after the next epoch ended: no metric of a finished
  epoch is lost (every epoch's metrics are in the run, equal to the run's history);
- the job's driver killed (SIGKILL) mid-run and the job submitted again with the same name: it resumes after
  the last checkpointed epoch and finishes;
- a worker node that hosts a training worker killed (SIGKILL to its raylet, agents and workers: a lost
  machine) mid-run: Ray Train restarts the worker group on the nodes left, from the last checkpoint; every
  epoch is reported exactly once (nothing redone but the epoch in progress) and the test set is evaluated;
- a worker node that hosts a screening actor killed mid-run (``jobs/screen.py``, chunks of 4): after the job
  (and a re-run into the same folder if it failed) every library row is written exactly once.

A killed node is started again afterwards (``restart_node``), so each test has the whole cluster.

Each test prints what it killed, when, and what was lost. The cluster is this module's own (its own state
folder, temp dirs and ports) and ``cluster.py stop`` ends exactly what it started, checked at the end."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scannet.data.qm9 import write_qm9_table
from scannet.io.process import cmdline, is_running, process_tree

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "local" / "cluster.py"
RAY = str(Path(sys.executable).parent / "ray")
EPOCHS = 4
SCREENED = 400  # library rows of the screening test

spec = importlib.util.spec_from_file_location("local_cluster", SCRIPT)
local_cluster = importlib.util.module_from_spec(spec)
spec.loader.exec_module(local_cluster)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@pytest.fixture(scope="module")
def cluster():
    # not under pytest's basetemp: other pytest sessions on this machine rotate (delete) old basetemp folders
    state_dir = Path(tempfile.mkdtemp(prefix="scannet-faults-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    command = [sys.executable, str(SCRIPT), "--state-dir", str(state_dir)]
    started = subprocess.run(
        [*command, "start", "--timeout", "240"], env=env, capture_output=True, text=True, timeout=600
    )
    state = local_cluster.read_state(state_dir)
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        log(started.stdout.strip().split("client environment")[0])
        client = {**env, **local_cluster.client_env(state), "SCANNET_HOME": state["storage"]}
        table = write_qm9_table(Path(state["storage"]) / "qm9-400", targets=["homo"], limit=400)
        yield {"state": state, "env": client, "table": table, "command": command}
    finally:
        state = local_cluster.read_state(state_dir) or state  # restarts rewrite it
        recorded = local_cluster.cluster_processes(state) if state else {}
        stopped = subprocess.run(
            [*command, "stop", "--grace", "10"], env=env, capture_output=True, text=True, timeout=300
        )
        log(stopped.stdout.strip() + stopped.stderr.strip())
        survivors = {p: cmdline(p) for p, t in recorded.items() if is_running(p, t)}
        if not survivors:  # also after a failed start
            shutil.rmtree(state_dir, ignore_errors=True)
    assert stopped.returncode == 0 and not survivors, survivors
    assert len(recorded) > 10  # three nodes' raylets, agents, workers, the GCS, dashboard, MLflow ...


def api(cluster, path: str):
    token = Path(cluster["state"]["token"]).read_text().strip()
    request = urllib.request.Request(cluster["state"]["dashboard"] + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def submit(cluster, name: str, submission_id: str) -> str:
    command = [RAY, "job", "submit", "--no-wait", "--submission-id", submission_id, "--working-dir", str(ROOT), "--"]
    command += ["python", "jobs/train_qm9.py", "--data", str(cluster["table"]), "--model-preset", "demo"]
    # a small global batch: ~80 DDP steps per epoch, seconds per epoch, so that a kill lands inside an epoch
    command += ["--epochs", str(EPOCHS), "--batch-size", "4", "--num-workers", "2", "--max-failures", "2"]
    command += ["--name", name, "--mlflow-uri", cluster["state"]["mlflow"]["uri"]]
    result = subprocess.run(command, env=cluster["env"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log(f"submitted {submission_id}: train_qm9.py --name {name}")
    return submission_id


def job_status(cluster, submission_id: str) -> str:
    return api(cluster, f"/api/jobs/{submission_id}")["status"]


def job_logs(cluster, submission_id: str) -> str:
    return api(cluster, f"/api/jobs/{submission_id}/logs")["logs"]


def wait_job(cluster, submission_id: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while (status := job_status(cluster, submission_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, f"{submission_id} still {status} after {timeout} s"
        time.sleep(2)
    log(f"{submission_id}: {status}")
    return status


def run_dir(cluster, name: str) -> Path:
    return Path(cluster["state"]["storage"]) / "runs" / name


def epochs_logged(cluster, name: str) -> list[int]:
    """The epoch numbers in the run's epochs.log (one line per reported, checkpointed epoch)."""
    path = run_dir(cluster, name) / "epochs.log"
    text = path.read_text() if path.exists() else ""
    return [int(n) for n in re.findall(r"^epoch\s+(\d+)/", text, re.M)]


def wait_epochs(cluster, name: str, submission_id: str, at_least: int, timeout: float = 400) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(epochs := epochs_logged(cluster, name)) < at_least:
        status = job_status(cluster, submission_id)
        assert status in ("PENDING", "RUNNING"), (
            f"{submission_id} {status}:\n{job_logs(cluster, submission_id)[-3000:]}"
        )
        assert time.monotonic() < deadline, f"{name}: {epochs} after {timeout} s"
        time.sleep(0.5)
    return epochs


def summary(cluster, name: str) -> dict:
    return json.loads((run_dir(cluster, name) / "summary.json").read_text())


def assert_finished_whole(cluster, name: str) -> dict:
    result = summary(cluster, name)
    assert result["epochs_run"] == EPOCHS
    assert result["test_evaluated"] == result["split_sizes"]["test"] > 0  # the whole test split, as always
    return result


def test_cluster_is_multi_node_token_authenticated_and_on_loopback_only(cluster):
    state = cluster["state"]
    assert [n["name"] for n in state["nodes"]] == ["head", "worker-1", "worker-2"]
    assert len({n["pgid"] for n in state["nodes"]}) == 3 and len({n["temp_dir"] for n in state["nodes"]}) == 3
    env = {**os.environ, **local_cluster.client_env(state)}
    assert local_cluster.alive_nodes(state, env) == 3
    assert stat.S_IMODE(Path(state["token"]).stat().st_mode) == 0o600
    assert local_cluster.exposed_sockets(state) == []  # GCS, raylets, agents, metrics, dashboard, MLflow
    with pytest.raises(urllib.error.HTTPError) as refused:  # the job API without the token
        urllib.request.urlopen(state["dashboard"] + "/api/jobs/", timeout=30)
    assert refused.value.code == 401
    assert local_cluster.http_ok(state["mlflow"]["uri"] + "/health")


def test_mlflow_server_restarted_mid_run_loses_no_epoch_metric(cluster):
    import mlflow

    name = "fault-mlflow"
    sid = submit(cluster, name, "fault-mlflow-1")
    before = wait_epochs(cluster, name, sid, 1)
    pids = local_cluster.kill_entry(cluster["state"], "mlflow")  # SIGKILL: the server and its workers
    log(f"KILLED the MLflow server ({len(pids)} processes {pids}) after epochs {before}")
    down = time.monotonic()
    during = wait_epochs(cluster, name, sid, len(before) + 1, timeout=300)
    time.sleep(3)  # the epoch ended while the server was down; its live logging has met the dead server
    entry = local_cluster.restart_mlflow(cluster["state"])
    log(f"RESTARTED MLflow (pid {entry['pid']}) after {time.monotonic() - down:.0f} s down; epochs {during} ended")
    assert wait_job(cluster, sid) == "SUCCEEDED", job_logs(cluster, sid)[-4000:]
    result = assert_finished_whole(cluster, name)
    history = json.loads((run_dir(cluster, name) / "history.json").read_text())
    client = mlflow.MlflowClient(cluster["state"]["mlflow"]["uri"])
    names = ["train_loss_standardized", "val_mae_standardized", "lr", "val_mae_homo_meV", "epoch_seconds"]
    for metric in names:
        steps = sorted(m.step for m in client.get_metric_history(result["mlflow_run_id"], metric))
        assert set(steps) == set(range(1, EPOCHS + 1)), (metric, steps)
    losses = {m.step: m.value for m in client.get_metric_history(result["mlflow_run_id"], "train_loss_standardized")}
    assert losses == pytest.approx({r["epoch"] + 1: r["train_loss"] for r in history})
    counts = {metric: len(client.get_metric_history(result["mlflow_run_id"], metric)) for metric in names}
    log(f"lost: nothing (epochs 1-{EPOCHS} in MLflow for {names}); values per metric {counts}")


def test_driver_killed_and_resubmitted_resumes(cluster):
    name = "fault-driver"
    first = submit(cluster, name, "fault-driver-1")
    wait_epochs(cluster, name, first, 1)
    time.sleep(1.0)  # into the next epoch
    processes = local_cluster.cluster_processes(cluster["state"])
    (driver,) = [
        pid
        for pid in processes
        if re.match(r"\S*python[\d.]*\s+jobs/train_qm9\.py\s", cmdline(pid))
        and f"--name {name} " in cmdline(pid)
    ]
    os.kill(driver, signal.SIGKILL)
    done = epochs_logged(cluster, name)
    log(f"KILLED the driver (pid {driver}, SIGKILL) of {first} with epochs {done} checkpointed")
    assert len(done) < EPOCHS
    assert wait_job(cluster, first) == "FAILED"
    second = submit(cluster, name, "fault-driver-2")
    assert wait_job(cluster, second) == "SUCCEEDED", job_logs(cluster, second)[-4000:]
    result = assert_finished_whole(cluster, name)
    resumed = result["resumed_from_epoch"]
    logs = job_logs(cluster, second)
    assert f"resumed after epoch {resumed}" in logs
    assert len(done) <= resumed <= len(done) + 1  # one more epoch may have ended between the read and the kill
    relaunch_epochs = [int(n) for n in re.findall(r"^epoch\s+(\d+)/", logs, re.M)]
    assert relaunch_epochs == list(range(resumed + 1, EPOCHS + 1))
    log(
        f"lost: the epoch in progress at the kill (re-run); resumed after epoch {resumed}, epochs {relaunch_epochs} run"
    )


def processes_per_node(state: dict, marker: str) -> dict[str, int]:
    """How many processes whose command line holds ``marker`` each node runs."""
    hosts = {}
    for entry in state["nodes"]:
        tree = process_tree({entry["pgid"]: entry["start_time"]}, [entry["temp_dir"]])
        hosts[entry["name"]] = sum(marker in cmdline(p) for p in tree)
    return hosts


def worker_node_running(state: dict, marker: str) -> tuple[str | None, dict[str, int]]:
    """A worker node (not the head) running a process whose command line holds ``marker`` (None: none yet), and
    the count per node."""
    hosts = processes_per_node(state, marker)
    victims = [n for n, count in hosts.items() if count and n != "head"]
    return (victims[0] if victims else None), hosts


def test_worker_node_killed_mid_epoch_training_finishes_from_checkpoint(cluster):
    name = "fault-node"
    state = cluster["state"]
    sid = submit(cluster, name, "fault-node-1")
    wait_epochs(cluster, name, sid, 1)
    victim, hosts = worker_node_running(state, "RayTrainWorker")
    assert victim is not None, f"no training worker on a worker node: {hosts}"  # 2 workers of 1 CPU, 1 on the head
    time.sleep(1.0)  # into the next epoch
    done = epochs_logged(cluster, name)
    pids = local_cluster.kill_entry(state, victim)
    try:
        log(
            f"KILLED node {victim} ({len(pids)} processes, SIGKILL; training workers per node {hosts}) with epochs {done} done"
        )
        assert len(done) < EPOCHS
        assert wait_job(cluster, sid) == "SUCCEEDED", job_logs(cluster, sid)[-4000:]
        assert_finished_whole(cluster, name)
        epochs = epochs_logged(cluster, name)
        assert epochs == list(range(1, EPOCHS + 1)), epochs  # each once: the restart began at the last checkpoint
        env = {**os.environ, **local_cluster.client_env(state)}
        assert local_cluster.alive_nodes(state, env) == len(state["nodes"]) - 1  # the node is really gone
        log(f"lost: the epoch in progress on the killed node (re-run after the restart); epochs reported {epochs}")
    finally:
        entry = local_cluster.restart_node(state, victim)  # the next test has the whole cluster again
        log(f"restarted node {victim} (pid {entry['pid']})")


def test_screening_worker_node_killed_every_input_written_exactly_once(cluster):
    import pyarrow.parquet as pq

    from scannet.data.structures_table import write_structures
    from tests.screening import candidates, tiny_model

    state = cluster["state"]
    folder = Path(state["storage"]) / "screening"
    library = write_structures(folder / "library.parquet", candidates(SCREENED), {})
    model = tiny_model(folder / "model.pt")
    out = folder / "node-killed"
    command = [RAY, "job", "submit", "--no-wait", "--working-dir", str(ROOT), "--"]
    command += ["python", "jobs/screen.py", str(library), "--model", str(model), "--out", str(out)]
    command += ["--chunk-size", "4", "--actors", "2", "--no-mlflow", "--no-progress"]

    def launch(submission_id: str) -> str:
        result = subprocess.run(
            [*command[:4], "--submission-id", submission_id, *command[4:]],
            env=cluster["env"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        log(f"submitted {submission_id}: screen.py ({SCREENED} structures, chunks of 4, 2 actors)")
        return submission_id

    def parts() -> int:
        return len(list((out / "predictions").glob("part-*.parquet")))

    first = launch("fault-screen-1")
    deadline = time.monotonic() + 300
    victim = None
    while victim is None:  # a few chunks written and an actor placed on a worker node (placement takes its time)
        assert job_status(cluster, first) in ("PENDING", "RUNNING"), job_logs(cluster, first)[-3000:]
        assert time.monotonic() < deadline, f"no 5 parts and a worker-node actor after 300 s ({parts()} parts)"
        time.sleep(0.2)
        if parts() >= 5:
            victim, hosts = worker_node_running(state, "ChunkPredictor")
    done = parts()
    pids = local_cluster.kill_entry(state, victim)
    log(
        f"KILLED node {victim} ({len(pids)} processes, SIGKILL; screening actors per node {hosts}) at {done} of {SCREENED // 4} chunks"
    )
    assert done < SCREENED // 4, "killed before the end"
    try:
        status = wait_job(cluster, first)
        relaunched = status != "SUCCEEDED"
        if relaunched:  # the same --out resumes: finished chunks are skipped
            log(f"{first} {status} after the node loss; launching again into the same folder")
            assert wait_job(cluster, launch("fault-screen-2")) == "SUCCEEDED"
    finally:
        local_cluster.restart_node(state, victim)
    predictions, quarantine = pq.read_table(out / "predictions"), pq.read_table(out / "quarantine")
    rows = sorted(predictions["row"].to_pylist() + quarantine["row"].to_pylist())
    lost, duplicated = SCREENED - len(set(rows)), len(rows) - len(set(rows))
    assert rows == list(range(SCREENED)), f"{lost} lost, {duplicated} duplicated"
    log(f"lost: nothing ({SCREENED} rows, each exactly once; {'after a re-run' if relaunched else 'no re-run needed'})")
