"""A local Ray whose driver was killed (SIGKILL) leaves its dashboard and agents running: the next local start
stops exactly the processes the dead driver recorded (pid and start time), and nothing else (issue 21).

The "leftovers" are ``sleep`` processes this test starts and records under a driver identity that is dead; an
unrecorded one, one recorded with another start time (a recycled pid) and one of a live driver must survive.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from scannet.io.process import is_running, process_identity, process_start
from scannet_platform.runtime import local_ray_records, record_local_ray, stop_local_leftovers


def _sleep() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


@pytest.fixture()
def sleeps():
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = _sleep()
        started.append(process)
        return process

    yield start
    for process in started:  # only the processes this test started, by pid
        if process.poll() is None:
            process.kill()
        process.wait()


def _dead_driver(sleeps) -> str:
    driver = sleeps()
    identity = process_identity(driver.pid)
    driver.kill()
    driver.wait()
    return identity


def test_the_leftovers_of_a_dead_driver_are_stopped_and_nothing_else(tmp_path, sleeps):
    leftovers = [sleeps(), sleeps()]
    unrecorded, recycled = sleeps(), sleeps()
    dead = _dead_driver(sleeps)
    processes = {p.pid: process_start(p.pid) for p in leftovers} | {recycled.pid: process_start(recycled.pid) + 1}
    record = record_local_ray(processes, driver=dead, session_dir="/tmp/ray/session_x", folder=tmp_path)
    assert json.loads(record.read_text())["driver"] == dead
    alive_driver = sleeps()
    kept = record_local_ray({alive_driver.pid: process_start(alive_driver.pid)}, folder=tmp_path)

    lines = stop_local_leftovers(folder=tmp_path, grace_s=5.0)

    assert len(lines) == 1 and "stopped 2 processes" in lines[0] and dead in lines[0], lines
    for process in leftovers:
        process.wait(timeout=10)  # ended by the cleanup (SIGTERM)
    assert all(is_running(p.pid) for p in (unrecorded, recycled, alive_driver))
    assert not record.exists() and kept.exists()  # this test process is the live driver of the second record
    assert local_ray_records(tmp_path) == [kept]


def test_a_record_whose_processes_are_gone_is_removed_silently(tmp_path, sleeps):
    gone = sleeps()
    start = process_start(gone.pid)
    gone.kill()
    gone.wait()
    record = record_local_ray({gone.pid: start}, driver=_dead_driver(sleeps), folder=tmp_path)
    assert stop_local_leftovers(folder=tmp_path) == [] and not record.exists()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path, sleeps):
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
    stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        stubborn.stdout.readline()  # SIGTERM is ignored from here on
        record_local_ray({stubborn.pid: process_start(stubborn.pid)}, driver=_dead_driver(sleeps), folder=tmp_path)
        started = time.monotonic()
        (line,) = stop_local_leftovers(folder=tmp_path, grace_s=1.0)
        assert stubborn.wait(timeout=10) == -9 and time.monotonic() - started < 8
        assert "stopped 1 process" in line
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()


def test_a_local_start_stops_the_leftovers_first_and_records_what_it_started(tmp_path, sleeps, monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    from scannet_platform import runtime

    monkeypatch.setenv("SCANNET_HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    leftover = sleeps()
    record_local_ray({leftover.pid: process_start(leftover.pid)}, driver=_dead_driver(sleeps))
    order = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: order.append(("init", leftover.poll() is not None)))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")

    runtime.ensure_ray()

    assert order == [("init", True)]  # the leftover was stopped before Ray started
    assert "local Ray: stopped 1 process" in capsys.readouterr().out
    (record,) = local_ray_records()
    assert json.loads(record.read_text())["driver"] == process_identity()
