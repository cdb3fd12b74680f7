"""Process identity and liveness: the one place that asks the kernel whether a process still exists.

Two questions, two answers:

- :func:`pid_exists`: does ``pid`` exist at all (``os.kill(pid, 0)``; a zombie and a process of another user
  count). Owners of staging folders (:mod:`scannet.io.atomic`) are checked this way: a name ends in a pid.
- :func:`is_running`: does the *recorded* process still run: same pid and, when given, the same start time
  (so a recycled pid does not count), and not a zombie waiting for its reaper. From ``/proc`` (Linux).

A process is named across launches by :func:`process_identity` (``host:pid:start``) and checked with
:func:`identity_alive`. :func:`process_table`, :func:`descendants` and :func:`process_tree` walk ``/proc`` to
find the processes a launch started (its process groups, command lines and all their descendants).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple


class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` that tell processes apart."""

    state: str  # R, S, D, Z, ...
    ppid: int
    pgid: int  # process group
    start_time: int  # clock ticks after boot


def proc_stat(pid: int) -> ProcStat | None:
    """(state, ppid, process group, start time) of ``pid`` from ``/proc``; None once it is gone (or off Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the command may hold spaces and ")"
        return ProcStat(fields[0], int(fields[1]), int(fields[2]), int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), None when unknown."""
    stat = proc_stat(pid)
    return None if stat is None else stat.start_time


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (arguments joined by spaces), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts until reaped, a process of another user counts)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to someone else
        return True
    return True


def is_running(pid: int, start_time: int | None = None) -> bool:
    """The recorded process still runs: ``pid`` exists with the same start time (when given; a recycled pid does
    not count) and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z" and (start_time is None or stat.start_time == start_time)


def signal_running(processes: Mapping[int, int | None], sig: int) -> None:
    """Send ``sig`` to each recorded process (pid -> start time, None for any) that still runs (:func:`is_running`):
    a pid that was recycled by another process is left alone."""
    for pid, start_time in processes.items():
        if is_running(pid, start_time):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def wait_ended(processes: Mapping[int, int | None], seconds: float) -> dict[int, int | None]:
    """Wait up to ``seconds`` for the recorded processes to end; returns those still running."""
    deadline = time.monotonic() + seconds
    while True:
        left = {p: t for p, t in processes.items() if is_running(p, t)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def terminate_running(
    processes: Mapping[int, int | None], grace_s: float, groups: Mapping[int, int | None] | None = None
) -> dict[int, int | None]:
    """SIGTERM the recorded processes that still run (and the process ``groups``, leader pid -> start time, whose
    leader is still the recorded one), wait up to ``grace_s`` for them to end, then SIGKILL the same; returns the
    processes that were still running after the grace (those sent SIGKILL)."""

    def signal_all(sig: int, targets: Mapping[int, int | None]) -> None:
        for leader, start_time in (groups or {}).items():
            if is_running(leader, start_time):  # else the group's members are in ``processes``
                try:
                    os.killpg(leader, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        signal_running(targets, sig)

    signal_all(signal.SIGTERM, processes)
    left = wait_ended(processes, grace_s)
    if left:
        signal_all(signal.SIGKILL, left)
    return left


# ------------------------------------------------------------------------------------------ identities


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start`` of ``pid`` (this process by default); the start time tells a reused pid apart
    (``?`` where it cannot be read)."""
    pid = os.getpid() if pid is None else pid
    start = process_start(pid)
    return f"{socket.gethostname()}:{pid}:{'?' if start is None else start}"


def identity_alive(identity: str | None) -> bool | None:
    """True / False for a :func:`process_identity` of this host, None when it cannot be checked (another host,
    no identity). An unknown start time (``?``) on either side counts as the same process."""
    if not identity or identity.count(":") < 2:
        return None
    host, pid_text, start = identity.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if not pid_exists(pid):
        return False
    now = process_start(pid)
    return start == "?" or now is None or str(now) == start


# ---------------------------------------------------------------------------------------- process trees


def process_table() -> dict[int, ProcStat]:
    """pid -> :class:`ProcStat` of every process visible in ``/proc``."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            table[int(entry)] = stat
    return table


def _with_descendants(roots: Iterable[int], table: Mapping[int, ProcStat]) -> set[int]:
    ours = set(roots)
    while children := {pid for pid, stat in table.items() if stat.ppid in ours} - ours:
        ours |= children
    return ours


def descendants(pid: int, table: Mapping[int, ProcStat] | None = None) -> list[int]:
    """Every descendant of ``pid`` (children, their children, ...), ``pid`` itself excluded."""
    table = process_table() if table is None else table
    return sorted(_with_descendants([pid], table) - {pid})


def process_tree(groups: Mapping[int, int | None], markers: Iterable[str] = ()) -> dict[int, int]:
    """pid -> start time of the processes a launch started: the members of ``groups`` (process group leader pid ->
    its recorded start time, None for any), each leader itself while it is still the recorded process, every
    process whose command line names one of ``markers`` (e.g. temp dirs), and all their descendants."""
    table = process_table()
    markers = [m for m in markers if m]
    ours = {pid for pid, stat in table.items() if stat.pgid in groups}
    ours |= {pid for pid, stat in table.items() if pid in groups and groups[pid] in (None, stat.start_time)}
    if markers:
        ours |= {pid for pid in table if any(m in cmdline(pid) for m in markers)}
    return {pid: table[pid].start_time for pid in _with_descendants(ours, table) if pid in table}
