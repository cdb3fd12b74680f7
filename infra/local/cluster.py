"""A multi-node Ray cluster and an MLflow tracking server on one machine, for trying the jobs as they run on a
real cluster (and for the fault-tolerance tests).

    python infra/local/cluster.py start              # head + 2 worker nodes + MLflow server, then prints the env
    eval "$(python infra/local/cluster.py env)"      # RAY_ADDRESS, MLFLOW_TRACKING_URI, token variables
    ray job submit --working-dir . -- python jobs/train_qm9.py --preset demo --storage-path "$SCANNET_CLUSTER_STORAGE/runs"
    python infra/local/cluster.py status
    python infra/local/cluster.py kill worker-1      # a node crash: SIGKILL to the node's processes
    python infra/local/cluster.py restart worker-1   # a new node in its place (same name, CPUs, resources)
    python infra/local/cluster.py restart mlflow     # the tracking server down and up again (same port, store)
    python infra/local/cluster.py stop               # stops exactly what `start` started

What ``start`` makes, all under one state folder (``--state-dir``, default ``$SCANNET_HOME/local-cluster``):

- ``auth_token`` (mode 0600): the cluster's Ray token; every node runs with ``RAY_AUTH_MODE=token``;
- a head node and ``--workers`` worker nodes, each a separate ``ray start --block`` in its own session (its
  own process group), with its own ``--temp-dir``, ``--num-cpus`` and a custom resource named after the node
  (``{"node:worker-1": 1}`` style: ``head``, ``worker-1``, ...); every node's IP is 127.0.0.1 and the
  dashboard (the job API) listens on 127.0.0.1 only;
- ``mlflow server`` on 127.0.0.1 with a SQLite backend store (``mlflow.db``) and a served artifact root
  (``mlartifacts/``), in its own session;
- ``shared/``: the storage every node reaches (``SCANNET_HOME`` of every node: runs, data cache);
- ``state.json``: what was started (pid, process group, start time, command, temp dir, ports, log file).

``stop`` signals only the recorded process groups, the processes whose command line names a recorded temp dir,
and all their descendants (job drivers run in sessions of their own), SIGTERM first, SIGKILL after ``--grace``
seconds; a pid is only signalled while its start time matches the recorded one. It never runs ``ray stop``
(which stops every Ray instance on the machine).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from scannet.io.atomic import write_text_atomic
from scannet.io.process import (
    cmdline,
    is_running,
    proc_stat,
    process_tree,
    signal_running,
    terminate_running,
    wait_ended,
)

LOOPBACK = "127.0.0.1"
#: Ray's single-machine switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``): every Ray process of a node then takes
#: 127.0.0.1 as the node IP, and the GCS, raylet, agents, workers and metrics endpoints listen on 127.0.0.1 only
#: (Ray binds them to all interfaces for any other node IP, 127.0.0.2 included: measured on 2.60).
LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: ``ray start`` of a worker node under that switch. ``ray start`` refuses worker nodes while it is on, and
#: turns the address 127.0.0.1 into the machine's IP while it is off; so this process alone has it off and
#: keeps 127.0.0.1 as given (its node IP is then the one it reaches the head from: 127.0.0.1). The processes
#: it starts (raylet, agents, workers) inherit the switch from the environment.
WORKER_START = (
    "import sys\n"
    "import ray._private.ray_constants as constants\n"
    "import ray._private.services as services\n"
    "constants.ENABLE_RAY_CLUSTER = True\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv[0] = 'ray'\n"
    "sys.exit(main())\n"
)
STATE_FILE = "state.json"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """The console script next to this Python (``ray``, ``mlflow``), else the one on PATH."""
    local = BIN / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def default_state_dir() -> Path:
    home = os.environ.get("SCANNET_HOME") or Path.home() / "scannet"
    return Path(home).expanduser().resolve() / "local-cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------- processes
# (pids, start times, command lines and process trees come from scannet.io.process)


def terminate(processes: dict[int, int], groups: dict[int, int], grace: float) -> dict[int, int]:
    """SIGTERM ``processes`` and the process ``groups`` (leader pid -> start time); after ``grace`` s SIGKILL
    what is left. Returns the processes still alive at the end (empty when all went)."""
    killed = terminate_running(processes, grace, groups)
    return wait_ended(killed, 10) if killed else {}


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state that one of ``pids`` holds (from /proc)."""
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            columns = line.split()
            if columns[3] == "0A" and columns[9] in inodes:  # 0A: LISTEN
                host, port = columns[1].split(":")
                raw = bytes.fromhex(host)
                if table == "tcp":
                    ip = ipaddress.ip_address(raw[::-1])
                else:  # four little-endian 32-bit words
                    ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                mapped = getattr(ip, "ipv4_mapped", None)
                found.append((str(mapped or ip), int(port, 16), inodes[columns[9]]))
    return found


def spawn(command: list[str], env: dict[str, str], log: Path) -> dict:
    """Start ``command`` in a session of its own (its process group = its pid), output to ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    stat = proc_stat(process.pid)
    return {
        "pid": process.pid,
        "pgid": process.pid,
        "start_time": stat.start_time if stat else 0,
        "command": command,
        "log": str(log),
    }


# ------------------------------------------------------------------------------------------- the state


def read_state(state_dir: Path) -> dict | None:
    path = state_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_state(state_dir: Path, state: dict) -> None:
    write_text_atomic(state_dir / STATE_FILE, json.dumps(state, indent=1))


def recorded_processes(state: dict) -> list[dict]:
    return [*state.get("nodes", []), *([state["mlflow"]] if state.get("mlflow") else [])]


def client_env(state: dict) -> dict[str, str]:
    """The variables a client (``ray job submit``, ``ray status``, MLflow) needs to use this cluster."""
    env = {
        "RAY_ADDRESS": state["dashboard"],
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": state["token"],
        "SCANNET_CLUSTER_STORAGE": state["storage"],
    }
    if state.get("mlflow"):
        env["MLFLOW_TRACKING_URI"] = state["mlflow"]["uri"]
    return env


# ------------------------------------------------------------------------------------------------ start


def ray_node_command(
    name: str, temp_dir: str, cpus: int, object_store_mb: int, head: bool, gcs_port: int, dashboard_port: int
) -> tuple[list[str], dict[str, int]]:
    """``ray start --block`` for one node, every port chosen here (two nodes on one machine must not share
    Ray's default agent ports) and every address 127.0.0.1."""
    ports = {
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
        "metrics-export-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
    }
    ray = [tool("ray")] if head else [sys.executable, "-c", WORKER_START]
    command = [*ray, "start", "--block", "--disable-usage-stats", "--temp-dir", temp_dir]
    command += ["--node-ip-address", LOOPBACK, "--num-cpus", str(cpus), "--num-gpus", "0"]
    command += ["--resources", json.dumps({name: 1}), "--object-store-memory", str(object_store_mb * 1024 * 1024)]
    for flag, port in ports.items():
        command += [f"--{flag}", str(port)]
    if head:
        ports |= {"port": gcs_port, "dashboard-port": dashboard_port, "ray-client-server-port": free_port()}
        command += ["--head", "--port", str(gcs_port), "--ray-client-server-port", str(ports["ray-client-server-port"])]
        command += ["--dashboard-host", LOOPBACK, "--dashboard-port", str(dashboard_port)]
    else:
        command += ["--address", f"{LOOPBACK}:{gcs_port}"]
    return command, ports


def http_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def alive_nodes(state: dict, env: dict[str, str]) -> int:
    """How many nodes the cluster sees alive (the state API through the dashboard, with the token)."""
    token = Path(state["token"]).read_text().strip()
    request = urllib.request.Request(
        f"{state['dashboard']}/api/v0/nodes?limit=100", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return 0
    nodes = body.get("data", {}).get("result", {}).get("result", [])
    return sum(1 for n in nodes if n.get("state") == "ALIVE")


def wait_until(check, what: str, timeout: float, watched: list[dict]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for entry in watched:
            if not is_running(entry["pid"], entry["start_time"]):
                tail = Path(entry["log"]).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{entry.get('name', entry['command'][0])} exited before {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(1)


def start_mlflow(state_dir: Path, port: int) -> dict:
    """``mlflow server`` on 127.0.0.1:``port``: SQLite backend store ``mlflow.db``, served artifacts in
    ``mlartifacts/`` (clients upload and download through the server: ``mlflow-artifacts:/`` URIs)."""
    artifacts = state_dir / "mlartifacts"
    artifacts.mkdir(exist_ok=True)
    command = [tool("mlflow"), "server", "--host", LOOPBACK, "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(artifacts)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_TRACKING"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # the GenAI job workers: not needed for tracking
    entry = spawn(command, env, state_dir / "logs" / "mlflow.log")
    return entry | {"name": "mlflow", "uri": f"http://{LOOPBACK}:{port}", "port": port}


def node_env(state: dict) -> dict[str, str]:
    """The environment of every node (and so of the jobs' drivers and workers)."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": state["token"],
        "SCANNET_HOME": state["storage"],
        **LOCAL_ONLY,
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    if state.get("mlflow"):
        env["MLFLOW_TRACKING_URI"] = state["mlflow"]["uri"]  # the jobs' default tracking server
    return env


def start_node(state: dict, env: dict[str, str], name: str, cpus: int, object_store_mb: int) -> dict:
    head = name == "head"
    # Ray's unix sockets live under the temp dir: keep the path short (< ~107 characters)
    temp_dir = tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp")
    gcs_port, dashboard_port = int(state["gcs"].rsplit(":", 1)[1]), int(state["dashboard"].rsplit(":", 1)[1])
    command, ports = ray_node_command(name, temp_dir, cpus, object_store_mb, head, gcs_port, dashboard_port)
    entry = spawn(command, env, Path(state["state_dir"]) / "logs" / f"{name}.log")
    entry |= {"name": name, "temp_dir": temp_dir, "num_cpus": cpus, "resources": {name: 1}, "ports": ports}
    entry["object_store_mb"] = object_store_mb
    state["nodes"].append(entry)
    write_state(Path(state["state_dir"]), state)
    return entry


def start(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    existing = read_state(state_dir)
    if existing and any(is_running(p["pid"], p["start_time"]) for p in recorded_processes(existing)):
        print(f"a cluster of {state_dir} is running already (`status`, or `stop` first)", file=sys.stderr)
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    (state_dir / "logs").mkdir(exist_ok=True)
    storage = state_dir / "shared"
    storage.mkdir(exist_ok=True)

    token = state_dir / "auth_token"
    token.unlink(missing_ok=True)
    descriptor = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))

    gcs_port, dashboard_port = free_port(), free_port()
    state: dict = {
        "state_dir": str(state_dir),
        "token": str(token),
        "storage": str(storage),
        "gcs": f"{LOOPBACK}:{gcs_port}",
        "dashboard": f"http://{LOOPBACK}:{dashboard_port}",
        "nodes": [],
        "mlflow": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        if not args.no_mlflow:
            state["mlflow"] = start_mlflow(state_dir, free_port())
            write_state(state_dir, state)
        env = node_env(state)

        names = ["head"] + [f"worker-{i}" for i in range(1, args.workers + 1)]
        for count, name in enumerate(names, 1):
            # One node at a time: a raylet must register with the GCS within 30 s (hard-coded in Ray 2.60),
            # which several nodes starting at once on a loaded machine miss. A node that misses it is retried.
            for attempt in range(1, 3):
                cpus = args.head_cpus if name == "head" else args.worker_cpus
                entry = start_node(state, env, name, cpus, args.object_store_mb)
                print(f"starting {name} (pid {entry['pid']}) ...", flush=True)
                try:
                    wait_until(lambda n=count: alive_nodes(state, env) >= n, f"{name} joins", args.timeout, [entry])
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
                    print(f"{name} did not start (see {entry['log']}); once more", flush=True)
                    stop_state({"nodes": [entry]}, grace=5)
                    state["nodes"].remove(entry)
                    write_state(state_dir, state)
        if state["mlflow"]:
            wait_until(
                lambda: http_ok(f"{state['mlflow']['uri']}/health"), "MLflow answers", args.timeout, [state["mlflow"]]
            )
    except BaseException as exc:
        print(f"start failed ({exc}); stopping what was started", file=sys.stderr)
        stop_state(state, grace=15)
        raise
    print(describe(state, verbose=True))
    return 0


# ------------------------------------------------------------------------------------------- stop, status


def cluster_processes(state: dict) -> dict[int, int]:
    """pid -> start time of every live process of the recorded cluster (nodes, MLflow, and what they started)."""
    entries = recorded_processes(state)
    groups = {e["pgid"]: e["start_time"] for e in entries}
    markers = [e["temp_dir"] for e in state.get("nodes", []) if e.get("temp_dir")]
    return process_tree(groups, markers)


def exposed_sockets(state: dict) -> list[tuple[str, int, str]]:
    """The listening sockets of the cluster's processes that are not on a loopback address."""
    sockets = listening_sockets(set(cluster_processes(state)))
    return [(ip, port, cmdline(pid)[:60]) for ip, port, pid in sockets if not ipaddress.ip_address(ip).is_loopback]


def stop_state(state: dict, grace: float) -> dict[int, str]:
    """Stop every recorded process (and what it started); returns the survivors (pid -> command line)."""
    entries = recorded_processes(state)
    groups = {e["pgid"]: e["start_time"] for e in entries}
    markers = [e["temp_dir"] for e in state.get("nodes", []) if e.get("temp_dir")]
    processes = process_tree(groups, markers)
    left = terminate(processes, groups, grace)
    for marker in markers:
        shutil.rmtree(marker, ignore_errors=True)
    return {pid: cmdline(pid) for pid in left}


def stop(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}")
        return 0
    survivors = stop_state(state, args.grace)
    if survivors:
        print(f"still running after SIGKILL: {survivors}", file=sys.stderr)
        return 1
    names = ", ".join(e["name"] for e in recorded_processes(state))
    (args.state_dir / STATE_FILE).rename(args.state_dir / "state.stopped.json")
    print(f"stopped {names} (the state folder {args.state_dir} is kept: shared/, mlflow.db, mlartifacts/, logs/)")
    return 0


def describe(state: dict, verbose: bool = False) -> str:
    lines = []
    for entry in recorded_processes(state):
        running = "running" if is_running(entry["pid"], entry["start_time"]) else "NOT RUNNING"
        extra = f"{entry['num_cpus']} CPU, resources {entry['resources']}" if "num_cpus" in entry else entry["uri"]
        lines.append(f"  {entry['name']:<9} pid {entry['pid']:<7} {running:<11} {extra}")
    env = client_env(state)
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    text = f"cluster in {state['state_dir']}:\n" + "\n".join(lines)
    if verbose:
        text += (
            f"\nGCS {state['gcs']}, dashboard and job API {state['dashboard']} (token {state['token']}, mode 0600)"
            f"\nshared storage for every node: {state['storage']}\nclient environment:\n{exports}"
        )
    return text


def status(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}")
        return 1
    print(describe(state, verbose=True))
    env = {**os.environ, **client_env(state)}
    print(f"nodes alive (state API): {alive_nodes(state, env)}")
    exposed = exposed_sockets(state)
    print(f"listening sockets off loopback: {exposed or 'none'}")
    return 0 if all(is_running(e["pid"], e["start_time"]) for e in recorded_processes(state)) else 1


def entry_named(state: dict, name: str) -> dict:
    for entry in recorded_processes(state):
        if entry["name"] == name:
            return entry
    raise SystemExit(f"no {name!r} in this cluster: one of {[e['name'] for e in recorded_processes(state)]}")


def kill_entry(state: dict, name: str, grace: float = 0.0) -> list[int]:
    """Stop one recorded node or the MLflow server with everything it started: SIGKILL at once (``grace`` 0:
    a crash, as when a machine is lost) or SIGTERM first. Returns the pids it signalled."""
    entry = entry_named(state, name)
    markers = [entry["temp_dir"]] if entry.get("temp_dir") else []
    processes = process_tree({entry["pgid"]: entry["start_time"]}, markers)
    if grace <= 0:
        signal_running(processes, signal.SIGKILL)
        left = terminate(processes, {entry["pgid"]: entry["start_time"]}, 10)
    else:
        left = terminate(processes, {entry["pgid"]: entry["start_time"]}, grace)
    if left:
        raise RuntimeError(f"{name}: still running: {left}")
    return sorted(processes)


def kill(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}", file=sys.stderr)
        return 1
    pids = kill_entry(state, args.name, grace=args.grace)
    how = "SIGKILL" if args.grace <= 0 else f"SIGTERM (SIGKILL after {args.grace:.0f} s)"
    print(f"{args.name}: {how} to {len(pids)} processes {pids}")
    return 0


def restart_mlflow(state: dict, timeout: float = 300) -> dict:
    """Stop the MLflow server (if it runs) and start it again on the same port, store and artifacts."""
    old = state["mlflow"]
    if is_running(old["pid"], old["start_time"]):
        kill_entry(state, "mlflow", grace=10)
    state_dir = Path(state["state_dir"])
    deadline = time.monotonic() + timeout
    while True:  # the port is free again once the old server's listening socket is closed
        try:
            with socket.socket() as s:
                # as the server binds: connections of the old server left in TIME_WAIT (60 s) do not hold the port
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((LOOPBACK, old["port"]))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    state["mlflow"] = start_mlflow(state_dir, old["port"])
    write_state(state_dir, state)
    wait_until(lambda: http_ok(f"{state['mlflow']['uri']}/health"), "MLflow answers", timeout, [state["mlflow"]])
    return state["mlflow"]


def restart_node(state: dict, name: str, timeout: float = 240) -> dict:
    """Stop a worker node (if it runs) and start a new one of the same name, CPUs and resources."""
    old = entry_named(state, name)
    if name == "head" or old not in state["nodes"]:
        raise SystemExit(f"{name}: only worker nodes restart (a new head is a new cluster)")
    if is_running(old["pid"], old["start_time"]):
        kill_entry(state, name, grace=10)
    shutil.rmtree(old["temp_dir"], ignore_errors=True)
    state["nodes"].remove(old)
    entry = start_node(state, node_env(state), name, old["num_cpus"], old.get("object_store_mb", 256))
    running = sum(is_running(e["pid"], e["start_time"]) for e in state["nodes"])
    env = {**os.environ, **client_env(state)}
    wait_until(lambda: alive_nodes(state, env) >= running, f"{name} joins", timeout, [entry])
    return entry


def restart(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}", file=sys.stderr)
        return 1
    if args.name == "mlflow":
        if not state.get("mlflow"):
            print(f"no MLflow server recorded in {args.state_dir}", file=sys.stderr)
            return 1
        entry = restart_mlflow(state)
        print(f"mlflow: restarted (pid {entry['pid']}) at {entry['uri']}")
    else:
        entry = restart_node(state, args.name)
        print(f"{args.name}: restarted (pid {entry['pid']}), {entry['num_cpus']} CPU")
    return 0


def print_env(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}", file=sys.stderr)
        return 1
    for key, value in client_env(state).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=None, help="default $SCANNET_HOME/local-cluster")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("start", help="start the head, the worker nodes and the MLflow server")
    up.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    up.add_argument("--head-cpus", type=int, default=1, help="CPUs of the head node (default 1)")
    up.add_argument("--worker-cpus", type=int, default=1, help="CPUs of each worker node (default 1)")
    up.add_argument("--object-store-mb", type=int, default=256, help="object store per node (default 256 MiB)")
    up.add_argument("--no-mlflow", action="store_true", help="no MLflow server")
    up.add_argument("--timeout", type=float, default=240, help="seconds to wait for each step (default 240)")
    down = commands.add_parser("stop", help="stop what `start` started (and only that)")
    down.add_argument("--grace", type=float, default=30, help="seconds between SIGTERM and SIGKILL (default 30)")
    commands.add_parser("status", help="what runs, and the client environment")
    commands.add_parser("env", help="print the client environment as export lines")
    crash = commands.add_parser("kill", help="kill one node (or mlflow) and what it started: a simulated crash")
    crash.add_argument("name", help="head, worker-1, worker-2, ... or mlflow")
    crash.add_argument("--grace", type=float, default=0, help="SIGTERM first, SIGKILL after this (default 0: SIGKILL)")
    again = commands.add_parser("restart", help="restart a worker node or the MLflow server (same port and store)")
    again.add_argument("name", help="worker-1, worker-2, ... or mlflow")
    args = parser.parse_args(argv)
    args.state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    handlers = {"start": start, "stop": stop, "status": status, "env": print_env, "kill": kill, "restart": restart}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
