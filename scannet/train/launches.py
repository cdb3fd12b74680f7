"""Launches of a run: each one recorded in ``launches.jsonl``, and a launch ended on time at an epoch boundary.

A run may take several launches (re-running its name resumes it from the latest checkpoint). The Ray-free runner
appends one line per launch: when it started and ended, its wall time, the epochs it trained, how it ended
(``finished``, ``time limit`` or the error), the machine (CPU model and its bf16 instructions, cores, torch and its
threads, the load average at the end) and the code version. With ``launch_hours`` a launch ends after the last
epoch that fits: when the next epoch, as long as the last one, would end after the limit, the launch stops with
its checkpoint written and without touching the test split.
"""

from __future__ import annotations

import json
import os
import platform as stdlib_platform  # the stdlib module (this package's own `platform` folder is not on the path)
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from scannet.io.provenance import code_version


class LaunchTimeLimit(Exception):
    """This launch's time is up: ``epochs_done`` epochs of the run are finished and checkpointed."""

    def __init__(self, epochs_done: int, limit_hours: float) -> None:
        super().__init__(f"launch time limit of {limit_hours:g} h: stopped after epoch {epochs_done}")
        self.epochs_done, self.limit_hours = epochs_done, limit_hours


def cpu_description() -> str:
    """The CPU model and which bf16 instruction sets it has (AMX, AVX-512-BF16), from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    lines = info.splitlines()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    found = [name for name in ("amx_bf16", "amx_tile", "avx512_bf16") if name in flags]
    return f"{model or stdlib_platform.processor() or '?'}; bf16 instructions: {', '.join(found) or 'none'}"


def machine_facts() -> dict[str, Any]:
    return {
        "cpu": cpu_description(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "host": stdlib_platform.node(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class LaunchRecord:
    started: str = field(default_factory=_now)  # ISO 8601, UTC
    first_epoch: int = 0  # epochs finished before this launch
    ended: str | None = None
    seconds: float | None = None  # wall time of the launch: preparation, training, and the test when it finished
    last_epoch: int | None = None  # epochs finished when it ended
    ended_by: str | None = None  # "finished", "time limit", or the error
    limit_hours: float | None = None
    machine: dict[str, Any] = field(default_factory=machine_facts)
    code_version: str = field(default_factory=code_version)
    load_average: tuple[float, float, float] | None = None  # 1 / 5 / 15 min, at the end

    def end(self, seconds: float, last_epoch: int, ended_by: str) -> LaunchRecord:
        self.ended, self.seconds, self.last_epoch, self.ended_by = _now(), seconds, last_epoch, ended_by
        self.load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
        return self

    def append_to(self, path: Path) -> None:
        with open(path, "a") as out:
            out.write(json.dumps(asdict(self)) + "\n")


def read_launches(path: str | Path) -> list[dict[str, Any]]:
    """The launches recorded in a run folder's ``launches.jsonl`` (none when it has no such file)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
