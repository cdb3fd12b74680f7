"""What every platform driver (train, tune, screen) runs under: a local Ray bound to loopback with a 0600
token, libraries kept quiet, SIGTERM unwinding like Ctrl-C, and an MLflow run ended with the block's true status
(:func:`tracked_run`)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scannet.checkpoint import resolve_checkpoint

LOOPBACK = "127.0.0.1"


#: Ray's switch for a single-machine cluster (meant for Windows and macOS): the node IP becomes 127.0.0.1,
#: so the GCS, raylet, workers, agents and the three Prometheus metrics endpoints listen on loopback only.
RAY_LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_token_path() -> Path:
    """The token file Ray reads: ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def secure_ray_token() -> str | None:
    """Create (or fix) the token file of a local Ray with mode 0600; returns the line to print, None when token
    authentication is switched off (``RAY_AUTH_MODE``) or the token comes from ``$RAY_AUTH_TOKEN``.

    Ray 2.60 writes the token of a local ``ray.init()`` with the umask's mode (0644: readable by every user).
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if (mode and mode != "token") or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = ray_token_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
        os.chmod(path, 0o600)
        return f"Ray auth token: created {path} with mode 0600"
    before = stat.S_IMODE(path.stat().st_mode)
    if before & 0o077:
        os.chmod(path, 0o600)
        return f"Ray auth token: {path} had mode {before:04o}, readable by others; set to 0600"
    return f"Ray auth token: {path} (mode {before:04o})"


@contextmanager
def loopback_node() -> Iterator[None]:
    """While a local Ray starts: its node IP is 127.0.0.1 (Ray turns ``_node_ip_address="127.0.0.1"`` into the
    machine's IP, so the switch Ray reads is set instead; restored once the processes have started)."""
    import ray._private.ray_constants as ray_constants

    saved_env, saved_flag = os.environ.get(RAY_LOCAL_ONLY_VARIABLE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_LOCAL_ONLY_VARIABLE] = "0"  # for the processes ray.init starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: the driver's copy
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(RAY_LOCAL_ONLY_VARIABLE, None)
        else:
            os.environ[RAY_LOCAL_ONLY_VARIABLE] = saved_env


# ------------------------------------------------------------------------- leftovers of a killed local Ray
#
# A local Ray's processes (GCS, raylet, dashboard, log monitor, the dashboard and runtime-env agents) are the
# driver's descendants. ray.init stops them when the driver exits; after a SIGKILL of the driver some (the
# dashboard and the agents) were seen alive 25 s and more later. Every local start records what it started in
# $SCANNET_HOME/ray/local-<pid>-<start>.json; the next local start stops the processes a dead driver recorded,
# identified by pid and start time (a recycled pid is left alone), and never any other process.

LOCAL_RAY_DIR = "ray"


def _local_ray_dir(folder: Path | None) -> Path:
    from scannet.home import scannet_home

    return Path(folder) if folder is not None else scannet_home() / LOCAL_RAY_DIR


def local_ray_records(folder: Path | None = None) -> list[Path]:
    """The records of local Rays started from this ``$SCANNET_HOME`` (``folder``: their folder)."""
    directory = _local_ray_dir(folder)
    return sorted(directory.glob("local-*.json")) if directory.is_dir() else []


def record_local_ray(
    processes: dict[int, int | None],
    driver: str | None = None,
    session_dir: str | None = None,
    folder: Path | None = None,
) -> Path:
    """Record the processes (pid -> start time) a local Ray start made, with the driver's identity
    (:func:`~scannet.io.process.process_identity`, this process by default) and Ray's session folder."""
    from scannet.io.atomic import write_text_atomic
    from scannet.io.process import process_identity

    driver = driver or process_identity()
    directory = _local_ray_dir(folder)
    directory.mkdir(parents=True, exist_ok=True)
    _, pid, start = driver.rsplit(":", 2)
    path = directory / f"local-{pid}-{start}.json"
    record = {
        "driver": driver,
        "session_dir": session_dir,
        "processes": {str(p): t for p, t in sorted(processes.items()) if t is not None},
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(path, json.dumps(record, indent=1))
    return path


def stop_local_leftovers(folder: Path | None = None, grace_s: float = 3.0) -> list[str]:
    """Stop what a local Ray of a dead driver left running: for each record whose driver is gone (on this host),
    SIGTERM the recorded processes that still run (same pid and start time), SIGKILL those alive after
    ``grace_s``; the record is removed. Records of live drivers, of other hosts or unreadable ones are kept.
    Returns one line per record that had processes left."""
    from scannet.io.process import identity_alive, is_running, terminate_running

    lines = []
    for path in local_ray_records(folder):
        try:
            record = json.loads(path.read_text())
            driver = record["driver"]
            processes = {int(p): int(t) for p, t in record.get("processes", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if identity_alive(driver) is not False:
            continue
        left = {p: t for p, t in processes.items() if is_running(p, t)}
        if left:
            stubborn = terminate_running(left, grace_s)
            n = len(left)
            lines.append(
                f"local Ray: stopped {n} process{'es' if n != 1 else ''} left running by the driver {driver}, "
                f"which is gone (pids {', '.join(map(str, sorted(left)))}"
                + (f"; {len(stubborn)} killed after {grace_s:g} s" if stubborn else "")
                + (f"; session {record['session_dir']}" if record.get("session_dir") else "")
                + ")"
            )
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    return lines


def _record_this_local_ray() -> None:
    """Record the local Ray this driver just started: its descendants now whose command line names Ray (the GCS,
    raylet, dashboard, log monitor and agents) and the session folder."""
    from scannet.io.process import cmdline, descendants, process_table

    try:
        import ray

        session_dir = ray._private.worker._global_node.get_session_dir_path()
    except Exception:  # noqa: BLE001 - the session folder is informative only
        session_dir = None
    try:
        table = process_table()
        ours = [pid for pid in descendants(os.getpid(), table) if "ray" in cmdline(pid).lower()]
        record_local_ray({pid: table[pid].start_time for pid in ours}, None, session_dir)
    except OSError as exc:
        print(f"local Ray: could not record its processes ({exc}); a killed driver's leftovers are not cleaned")


def ensure_ray(verbose: bool = False) -> None:
    """Connect to the cluster of ``$RAY_ADDRESS`` (``ray job submit`` sets it), else start a local Ray bound to
    loopback, with its token file at mode 0600. Unless ``verbose``, the workers' logs stay in Ray's log files
    (the driver prints one line per epoch itself) and Ray's own messages below WARNING are not shown."""
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
        return
    for leftover in stop_local_leftovers():
        print(leftover)
    line = secure_ray_token()
    if line:
        print(line)
    with loopback_node():
        ray.init(dashboard_host=LOOPBACK, **quiet)
    _record_this_local_ray()
    fixed = secure_ray_token()  # in case Ray wrote the token itself
    if fixed and "set to 0600" in fixed:
        print(fixed)
    print(f"local Ray: node {ray.util.get_node_ip_address()}, dashboard and job API on {LOOPBACK} only")


def checkpoint_resolver(tracking_uri: str):
    """Checkpoint files, and MLflow model URIs of this job's tracking store."""
    return lambda reference: resolve_checkpoint(reference, tracking_uri)


def quiet_libraries(verbose: bool) -> None:
    """Unless ``verbose``: MLflow's and Alembic's INFO lines, artifact progress bars and the deprecation
    warnings of Ray and MLflow internals are not shown (the run's own lines and the summary are)."""
    if verbose:
        return
    for name in ("mlflow", "alembic", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # an HTTP store's client prints a "View run ... at" line per ended run (20 in a study); summaries print the URL
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow loads the logged model in a subprocess to infer its requirements; it warns there about type hints
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:mlflow.pyfunc.utils.data_validation")
    warnings.filterwarnings("ignore", message="Add type hints to the `predict` method", category=UserWarning)
    for module in ("ray", "mlflow", "sqlalchemy", "torch"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


class DriverTerminated(SystemExit):
    """SIGTERM reached the driver (``ray job stop``, ``kill``): unwinds like Ctrl-C, exit status 143."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises :class:`DriverTerminated` in the main thread, so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise DriverTerminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunEnd:
    """The status a :func:`tracked_run` block ends its MLflow run with when it returns (an interrupted study sets
    KILLED)."""

    status = "FINISHED"


@contextmanager
def tracked_run(tracking_uri: str | None, run_id: str | None, say_status: bool = False) -> Iterator[RunEnd]:
    """The driver's block under :func:`sigterm_unwinds`, its MLflow run ``run_id`` ended with the block's true
    outcome: ``end.status`` (FINISHED) when it returns, KILLED on Ctrl-C or SIGTERM, FAILED when it raises.
    ``run_id`` None: nothing is tracked. ``say_status``: print a status other than FINISHED."""
    end = RunEnd()
    status = "FAILED"
    try:
        with sigterm_unwinds():
            yield end
        status = end.status
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if run_id:
            from scannet_platform.tracking import runs

            runs.end_run(tracking_uri, run_id, status)
            if say_status and status != "FINISHED":
                print(f"MLflow run {run_id}: {status}")
