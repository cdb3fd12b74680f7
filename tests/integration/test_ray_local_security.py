"""A local Ray started by the driver (``ensure_ray``) keeps to loopback and to a private token file.

Measured on Ray 2.60: a plain ``ray.init()`` listens on all interfaces with the GCS, raylet, workers and
agents, and serves three unauthenticated Prometheus endpoints on 0.0.0.0 (dashboard agent, dashboard head
44227, autoscaler monitor 44217) that reveal the session name, node IP and Ray version. ``ensure_ray``
binds them all to 127.0.0.1. Runs in a child process with its own HOME (the token file is its own).
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "local" / "cluster.py"  # its socket reader

SCRIPT = r"""
import importlib.util, json, os, sys, time
from scannet.io.process import descendants
from scannet_platform.runtime import ensure_ray

spec = importlib.util.spec_from_file_location("local_cluster", sys.argv[1])  # infra/local/cluster.py
cluster = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cluster)

ensure_ray()
time.sleep(10)  # the agents and metrics endpoints start after ray.init returns
import ray
print("SOCKETS " + json.dumps(cluster.listening_sockets({os.getpid(), *descendants(os.getpid())})), flush=True)
ray.shutdown()
"""


def test_a_local_ray_listens_on_loopback_only_and_its_token_is_private(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CLUSTER_SCRIPT)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert f"Ray auth token: created {token} with mode 0600" in result.stdout
    sockets = json.loads(result.stdout.split("SOCKETS ", 1)[1].splitlines()[0])
    assert len(sockets) >= 8  # GCS, raylet, workers, agents, dashboard, three metrics endpoints
    exposed = [f"{ip}:{port}" for ip, port, _ in sockets if not ipaddress.ip_address(ip).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"
