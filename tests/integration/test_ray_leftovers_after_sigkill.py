"""End to end with a real local Ray: a driver that started it is killed with SIGKILL; the next local start stops
whatever of that Ray was still running (recorded by pid and start time), and only that (issue 21)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scannet.io.process import is_running, signal_running

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

KILLED_DRIVER = "from scannet_platform.runtime import ensure_ray; import os; ensure_ray(); os.kill(os.getpid(), 9)"
NEXT_DRIVER = "from scannet_platform.runtime import ensure_ray; import ray; ensure_ray(); ray.shutdown()"


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_next_local_start_stops_what_a_killed_driver_left(tmp_path):
    env = dict(os.environ, SCANNET_HOME=str(tmp_path), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
    env.pop("RAY_ADDRESS", None)
    recorded: dict[int, int] = {}
    try:
        killed = _run(KILLED_DRIVER, env)
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        (record,) = (tmp_path / "ray").glob("local-*.json")
        recorded = {int(p): t for p, t in json.loads(record.read_text())["processes"].items()}
        assert recorded, "the local start recorded no Ray process"

        following = _run(NEXT_DRIVER, env)
        assert following.returncode == 0, following.stdout + following.stderr
        left = [p for p, t in recorded.items() if is_running(p, t)]
        assert not left, f"still running: {left}"
        assert not record.exists()
        if "local Ray: stopped" in following.stdout:  # when Ray itself had not stopped everything yet
            assert "which is gone" in following.stdout
    finally:
        signal_running(recorded, signal.SIGKILL)  # only the processes that launch recorded
        for path in Path(tmp_path / "ray").glob("local-*.json") if (tmp_path / "ray").is_dir() else []:
            signal_running({int(p): t for p, t in json.loads(path.read_text())["processes"].items()}, signal.SIGKILL)
