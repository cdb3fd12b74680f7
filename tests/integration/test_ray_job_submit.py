"""The headline use, for real: `ray start --head` with token auth on loopback, then
`ray job submit --working-dir . -- python jobs/train_qm9.py ...` runs to the end and prints the model.

The cluster is this test's own: `ray start --head --block` in a new session (its own process group) with a
private `--temp-dir`, torn down by signalling exactly the processes it started. Never `ray stop`, which
stops every Ray instance on the host, other people's included."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scannet.data.qm9 import write_qm9_table
from scannet.io.process import cmdline, is_running, process_tree, terminate_running, wait_ended

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_processes(head: int, temp_dir: str) -> dict[int, int]:
    """pid -> start time of every process of the cluster started by ``head``: its process group (all that
    `ray start` spawns), whatever names the private temp dir on its command line, and all their descendants
    (job entrypoints run in sessions of their own)."""
    return process_tree({head: None}, [temp_dir])


def stop_cluster(head: subprocess.Popen, temp_dir: str, grace: float = 10.0) -> dict[int, int]:
    """SIGTERM the cluster's process group and every recorded process, wait, then SIGKILL what is left (Ray's
    dashboard and runtime-env agents ignore SIGTERM: a long grace only waits for them). Returns the processes it
    recorded."""
    recorded = cluster_processes(head.pid, temp_dir)
    if terminate_running(recorded, grace, {head.pid: None}):
        wait_ended(recorded, grace)
    head.wait(timeout=grace)
    return recorded


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node with token authentication; its dashboard (the job API) only on 127.0.0.1."""
    root = tmp_path_factory.mktemp("cluster")
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env["SCANNET_HOME"] = str(root / "home")  # jobs inherit the head's environment
    env.pop("MLFLOW_TRACKING_URI", None)
    # Ray's unix sockets live under the temp dir and their paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    dashboard = free_port()
    address = f"http://127.0.0.1:{dashboard}"
    start = [
        RAY,
        "start",
        "--head",
        "--block",
        "--temp-dir",
        temp_dir,
        "--port",
        str(free_port()),
        "--num-cpus",
        "4",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--disable-usage-stats",
    ]
    log = root / "ray-start.log"
    with log.open("wb") as out:
        head = subprocess.Popen(start, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:  # up once an authenticated client can list jobs
            assert head.poll() is None, f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"cluster not up after 180 s:\n{log.read_text()[-3000:]}"
            listed = subprocess.run(
                [RAY, "job", "list", "--address", address], env=env, capture_output=True, timeout=120
            )
            if listed.returncode == 0:
                break
            time.sleep(2)
        yield {"env": env, "address": address, "root": root}
    finally:
        recorded = stop_cluster(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    survivors = {pid: cmdline(pid) for pid, start_time in recorded.items() if is_running(pid, start_time)}
    assert len(recorded) > 3, recorded  # the head, gcs_server, raylet, dashboard, ... were found
    assert not survivors, survivors


def test_job_api_refuses_clients_without_the_token(cluster):
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_TOKEN_PATH"] = str(cluster["root"] / "no-such-token")
    result = subprocess.run(
        [RAY, "job", "list", "--address", cluster["address"]], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0


def ray_job(cluster, entrypoint: list[str], runtime_env: dict | None = None) -> subprocess.CompletedProcess:
    """``ray job submit --working-dir <repo> [--runtime-env-json ...] -- <entrypoint>``, run to its end; retried
    while the head's job agent is not up yet (under load it answers "No available agent" for a while after `ray
    job list` works)."""
    command = [RAY, "job", "submit", "--address", cluster["address"], "--working-dir", str(ROOT)]
    command += ["--runtime-env-json", json.dumps(runtime_env)] if runtime_env else []
    command += ["--", *entrypoint]
    deadline = time.monotonic() + 180
    while True:
        result = subprocess.run(command, env=cluster["env"], capture_output=True, text=True, timeout=900)
        if result.returncode == 0 or "No available agent" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def submit(cluster, name: str, table: Path) -> subprocess.CompletedProcess:
    entrypoint = ["python", "jobs/train_qm9.py", "--data", str(table), "--model-preset", "demo", "--epochs", "2"]
    return ray_job(cluster, [*entrypoint, "--batch-size", "32", "--num-workers", "2", "--name", name])


def test_ray_job_submit_trains_and_keeps_everything_outside_the_working_dir(cluster):
    """The data cache, the run and the MLflow store live in $SCANNET_HOME, not in Ray's copy of the working
    directory: they are there after the job, and a second submission reuses the cached graphs."""
    root, home = cluster["root"], cluster["root"] / "home"
    table = write_qm9_table(root / "qm9-slice", targets=["homo"], limit=160)
    first = submit(cluster, "submitted", table)
    assert "SCANNet training job finished" in first.stdout and "featurizing" in first.stdout
    assert "models:/scannet-qm9-slice-homo/1" in first.stdout
    assert (home / "runs" / "submitted" / "best_model.pt").exists()
    assert (home / "mlflow.db").exists() and any((home / "data" / "graphs").iterdir())
    found = subprocess.run(  # a fresh process in the repository finds the registered model and its run
        [
            sys.executable,
            "-c",
            "import mlflow, scannet.home as h; c = mlflow.MlflowClient(h.default_mlflow_uri()); "
            "v = c.get_model_version('scannet-qm9-slice-homo', '1'); print(c.get_run(v.run_id).info.run_name)",
        ],
        cwd=ROOT,
        env={**os.environ, "SCANNET_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 0 and found.stdout.strip().endswith("submitted"), found.stderr[-2000:]
    second = submit(cluster, "second", table)
    assert "featurizing" not in second.stdout  # the graph table of this structures table is reused
    assert (home / "runs" / "second" / "best_model.pt").exists()


def test_a_tune_study_runs_as_a_ray_job(cluster):
    """`ray job submit -- python jobs/tune_qm9.py --space ...` on the token-auth cluster: the trials run on the
    cluster's CPUs, the study ends with its summary and the registered best trial."""
    import yaml

    from tests.integration.test_tune_study import STUDY

    root = cluster["root"]
    table = write_qm9_table(root / "qm9-tune", targets=["homo"], limit=120)
    study = {**STUDY, "name": "submitted-study", "num_samples": 2, "top_k": 1}
    study["run"] = {**STUDY["run"], "data": str(table), "n_structures": None}
    space = root / "study.yaml"
    space.write_text(yaml.safe_dump(study, sort_keys=False))
    result = ray_job(cluster, ["python", "jobs/tune_qm9.py", "--space", str(space)])
    assert "2 trials at a time (1 CPU, 0 GPU each; cluster 4 CPUs" in result.stdout
    assert "models:/scannet-qm9-tune-homo-tuned/1" in result.stdout
    assert (root / "home" / "runs" / "submitted-study" / "ensemble" / "ensemble.json").exists()


def test_a_submitted_job_records_the_revision_its_submitter_passed(cluster):
    """The job package has no .git: the revision comes from $SCANNET_CODE_REVISION in the runtime env (the
    documented submit command), else from the hash of the uploaded sources; never "unknown"."""
    from scannet.io.provenance import REVISION_VARIABLE, git_revision

    show = ["python", "-c", "from scannet.io.provenance import code_revision; print('revision', code_revision())"]
    revision = git_revision(ROOT) or "no-git"
    passed = ray_job(cluster, show, {"env_vars": {REVISION_VARIABLE: revision}})
    assert f"revision {revision}" in passed.stdout
    plain = ray_job(cluster, show)
    assert "revision source-sha256:" in plain.stdout  # which hash: tests/unit/test_provenance.py


def test_a_screen_with_a_bad_input_line_succeeds_as_a_ray_job_and_its_console_is_clean(cluster):
    """`ray job submit -- python jobs/screen.py lib.smi ...` with an unparsable SMILES line: the job succeeds (exit
    0), the summary counts the quarantined record, Ray's constructor-arguments error line and Ray Data's
    progress-bar warning are not shown, and each progress bar's last line is there once."""
    root = cluster["root"]
    library = root / "library.smi"
    library.write_text("CCO ethanol\nC1CC1(( broken\nc1ccccc1 benzene\nCC(=O)O acetic acid\n")
    out = root / "screen"
    result = ray_job(cluster, ["python", "jobs/screen.py", str(library), "--out", str(out), "--no-mlflow"])
    console = result.stdout + result.stderr
    assert "screened 3 of 4 structures, quarantined 1" in console
    assert "quarantined broken" in console and "RDKit cannot parse the SMILES" in console
    assert "core_worker.cc" not in console and "Progress bars disabled" not in console, console[-3000:]
    assert console.count("screening: 100%") == 1 and console.count("reading: 4record") == 1, console[-3000:]
