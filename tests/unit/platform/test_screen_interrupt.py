"""An interrupted screen (Ctrl-C: exit 130; SIGTERM: exit 143) prints one line saying how to resume, no traceback,
and ends its MLflow run KILLED; launching the same command again completes it, every row exactly once (issue 21).
(SIGTERM unwinding and ending the MLflow run KILLED is :func:`tracked_run`'s, tested in test_run_status.py.)

The screens run as ``python -m scannet.cli screen --local`` (no Ray) in subprocesses this test starts and signals
by pid; ``SCANNET_TEST_CHUNK_DELAY_S`` slows each chunk so that a signal lands halfway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scannet.data.structures_table import write_structures
from tests.screening import candidates, tiny_model
from tests.unit.platform.test_screen_inputs import assert_exactly_once

pytest.importorskip("ray")

N_MOLECULES = 24
CHUNK = 4


def _launch(folder: Path, out: Path, delay: float) -> subprocess.Popen:
    env = dict(os.environ, SCANNET_HOME=str(folder / "home"), SCANNET_TEST_CHUNK_DELAY_S=str(delay))
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "scannet.cli", "screen", str(folder / "lib.parquet"), "--model"]
    command += [str(folder / "model.pt"), "--out", str(out), "--local", "--chunk-size", str(CHUNK), "--no-progress"]
    command += ["--mlflow-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _parts(out: Path) -> int:
    return len(list((out / "predictions").glob("part-*.parquet")))


def _interrupt_after(process: subprocess.Popen, out: Path, parts: int, signum: int) -> tuple[int, str, str]:
    deadline = time.time() + 90
    try:
        while _parts(out) < parts:
            assert process.poll() is None, f"the screen ended (exit {process.returncode}) early: {process.stderr.read()}"
            assert time.time() < deadline, "no part written in time"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, stderr


def _mlflow_status(folder: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("scannet-screening")
    (run,) = client.search_runs([experiment.experiment_id])
    return run.info.status


@pytest.mark.slow  # two screening subprocesses, 40-90 s
def test_an_interrupted_screen_says_how_to_resume_in_one_line_and_the_next_launch_completes_it(tmp_path):
    write_structures(tmp_path / "lib.parquet", candidates(N_MOLECULES), {})
    tiny_model(tmp_path / "model.pt")
    out = tmp_path / "out"

    returncode, stdout, stderr = _interrupt_after(_launch(tmp_path, out, 1.0), out, 1, signal.SIGINT)
    assert returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr, stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip() and " INFO mlflow." not in line]
    assert len(lines) == 1 and "interrupted by Ctrl-C" in lines[0] and "same command" in lines[0], stderr
    assert _mlflow_status(tmp_path) == "KILLED"
    assert _parts(out) < N_MOLECULES // CHUNK

    finished = _launch(tmp_path, out, 0.0)
    stdout, stderr = finished.communicate(timeout=120)
    assert finished.returncode == 0, stdout + stderr
    assert "chunks finished by an earlier launch" in stdout
    assert_exactly_once(out, N_MOLECULES)
    assert _mlflow_status(tmp_path) == "FINISHED"


@pytest.mark.parametrize("interruption, code, what", [(KeyboardInterrupt(), 130, "Ctrl-C"), (None, 143, "SIGTERM")])
def test_the_exit_code_tells_sigint_from_sigterm(interruption, code, what, tmp_path, monkeypatch, capsys):
    from scannet.cli import main
    from scannet_platform.runtime import DriverTerminated
    from scannet_platform.screen import job

    def interrupted(config):
        raise interruption or DriverTerminated(128 + signal.SIGTERM)

    monkeypatch.setattr(job, "run_screen", interrupted)
    assert main(["screen", "lib.parquet", "--model", "m.pt", "--out", str(tmp_path / "out"), "--local"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"interrupted by {what}" in err[0] and "run the same command again" in err[0], err
