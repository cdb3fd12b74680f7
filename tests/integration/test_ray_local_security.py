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

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, os, time
from scannet_platform.train_driver import ensure_ray

def children(pids):
    found = set(pids)
    while True:
        more = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in found:
                try:
                    parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if parent in found:
                    more.add(int(entry))
        if not more:
            return found
        found |= more

def listening(pids):
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            pass
    found = []
    for table in ("tcp", "tcp6"):
        for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                found.append([table, cols[1], inodes[cols[9]]])
    return found

ensure_ray()
time.sleep(10)  # the agents and metrics endpoints start after ray.init returns
import ray
print("SOCKETS " + json.dumps(listening(children({os.getpid()}))), flush=True)
ray.shutdown()
"""


def address(table: str, hex_address: str) -> tuple[ipaddress._BaseAddress, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if table == "tcp":
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return ip, int(port, 16)


def is_loopback(ip) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def test_a_local_ray_listens_on_loopback_only_and_its_token_is_private(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420
    )
    assert result.returncode == 0, result.stderr[-3000:]
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert f"Ray auth token: created {token} with mode 0600" in result.stdout
    sockets = json.loads(result.stdout.split("SOCKETS ", 1)[1].splitlines()[0])
    addresses = [address(table, hex_address) for table, hex_address, _ in sockets]
    assert len(addresses) >= 8  # GCS, raylet, workers, agents, dashboard, three metrics endpoints
    exposed = [f"{ip}:{port}" for ip, port in addresses if not is_loopback(ip)]
    assert not exposed, f"listening beyond loopback: {exposed}"
