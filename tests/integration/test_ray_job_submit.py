"""The headline use, for real: `ray start --head` with token auth on loopback, then
`ray job submit --working-dir . -- python jobs/train_qm9.py ...` runs to the end and prints the model."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scannet.data.qm9 import write_qm9_table

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node with token authentication; its dashboard (the job API) only on 127.0.0.1."""
    root = tmp_path_factory.mktemp("cluster")
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    dashboard = free_port()
    start = [
        RAY,
        "start",
        "--head",
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
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    yield {"env": env, "address": f"http://127.0.0.1:{dashboard}", "root": root}
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_api_refuses_clients_without_the_token(cluster):
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_TOKEN_PATH"] = str(cluster["root"] / "no-such-token")
    result = subprocess.run(
        [RAY, "job", "list", "--address", cluster["address"]], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0


def test_ray_job_submit_trains_and_registers(cluster):
    root = cluster["root"]
    table = write_qm9_table(root / "qm9-slice", targets=["homo"], limit=160)
    command = [
        RAY,
        "job",
        "submit",
        "--address",
        cluster["address"],
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "jobs/train_qm9.py",
        "--data",
        str(table),
        "--model",
        "demo",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--num-workers",
        "2",
        "--name",
        "submitted",
        "--storage-path",
        str(root / "runs"),
        "--data-cache",
        str(root / "cache"),
        "--mlflow-uri",
        f"sqlite:///{root / 'mlflow.db'}",
    ]
    result = subprocess.run(command, env=cluster["env"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SCANNet training job finished" in result.stdout
    assert "models:/scannet-qm9-slice-homo/1" in result.stdout
    assert (root / "runs" / "submitted" / "scannet" / "best_model.pt").exists()
