"""Headless Chromium (Debian's ``chromium`` package, installed by ``.ci/run``) for tests of pages we write.

:func:`open_page` loads a local page twice: once to keep a screenshot (a test artefact, under
:func:`artifact_dir`) and once to read the DOM after the page's scripts ran; both runs log the browser
console on stderr, and every console line is returned (our pages log nothing unless something is wrong).
Each run has a profile folder of its own and is stopped as a process group when it overruns.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 90
_CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\]\s*(.*)")


def chromium() -> str:
    """The browser's path; the test is skipped when it is missing, except under CI, where it must be there."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def artifact_dir() -> Path:
    """Where screenshots are kept: ``$SCANNET_TEST_ARTIFACTS``, else ``test-artifacts/`` in the checkout."""
    folder = Path(os.environ.get("SCANNET_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Page:
    dom: str  # the document after its scripts ran
    console: list[str]  # the browser console's messages, in order
    screenshot: Path


def _run(arguments: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",  # tests run as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            *arguments,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the browser we started and its helpers, nothing else
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def open_page(
    path: Path | str,
    screenshot_name: str,
    fragment: str = "",
    size: tuple[int, int] = (1400, 1000),
    settle_ms: int | None = None,
) -> Page:
    """Load ``path`` (a file, or an ``http://`` URL given as text; ``#fragment`` appended), keep a screenshot named
    ``screenshot_name``, return the DOM and console. ``settle_ms``: virtual time the page's scripts get before the
    screenshot and the DOM are taken (a single-page app that fetches its data, such as MLflow's UI)."""
    url = (path if isinstance(path, str) else path.resolve().as_uri()) + fragment
    screenshot = artifact_dir() / screenshot_name
    settle = [f"--virtual-time-budget={settle_ms}"] if settle_ms else []
    shot = _run([*settle, f"--window-size={size[0]},{size[1]}", f"--screenshot={screenshot}", url])
    dump = _run([*settle, "--dump-dom", url])
    assert shot.returncode == 0 and dump.returncode == 0, (shot.stderr[-2000:], dump.stderr[-2000:])
    console = [m.group(1) for line in (shot.stderr + dump.stderr).splitlines() if (m := _CONSOLE.search(line))]
    return Page(dom=dump.stdout, console=console, screenshot=screenshot)
