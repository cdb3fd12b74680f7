"""Process identity and liveness (:mod:`scannet.io.process`): a live child is found and told apart from a reaped
one, a recycled pid (another start time) does not count, identities of other hosts cannot be checked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from scannet.io.process import (
    descendants,
    identity_alive,
    is_running,
    pid_exists,
    proc_stat,
    process_identity,
    process_start,
    process_tree,
    signal_running,
)


def test_a_child_is_running_until_reaped():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stat = proc_stat(child.pid)
        assert stat is not None and stat.ppid == os.getpid()
        assert is_running(child.pid) and is_running(child.pid, stat.start_time)
        assert not is_running(child.pid, stat.start_time + 1)  # a recycled pid: another start time
        assert child.pid in descendants(os.getpid())
        assert process_tree({os.getpid(): None})[child.pid] == stat.start_time
        assert identity_alive(process_identity(child.pid)) is True
    finally:
        child.kill()
        child.wait()
    assert proc_stat(child.pid) is None and not is_running(child.pid) and not pid_exists(child.pid)
    assert identity_alive(f"{socket.gethostname()}:{child.pid}:{stat.start_time}") is False


def test_identities():
    me = process_identity()
    assert me.rsplit(":", 2)[1:] == [str(os.getpid()), str(process_start(os.getpid()))]
    assert identity_alive(me) is True and pid_exists(os.getpid())
    assert identity_alive("another-host.invalid:1:1") is None and identity_alive(None) is None
    assert not pid_exists(0) and not pid_exists(-1)


def test_signal_running_spares_a_recycled_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start(child.pid)
        signal_running({child.pid: start + 1}, signal.SIGKILL)  # another process under the same pid: left alone
        assert child.poll() is None and is_running(child.pid, start)
        signal_running({child.pid: start}, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
