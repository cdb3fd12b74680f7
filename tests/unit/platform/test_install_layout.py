"""The project's `platform/` folder never shadows the standard library's `platform` module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROBE = (
    "import platform, sys, pathlib; "
    "assert pathlib.Path(sys.argv[1]) not in pathlib.Path(platform.__file__).parents, platform.__file__; "
    "print(platform.system()); "
    "import scannet_platform.environment as env; print(sorted(env.run_environment()))"
)


def test_platform_folder_has_no_init_file():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists(), "platform/__init__.py would shadow the stdlib"


@pytest.mark.parametrize("cwd", [ROOT, ROOT / "tests"])
def test_stdlib_platform_works_with_the_project_installed(cwd):
    """From the repository root the current directory is on sys.path, as under `python -c` and Ray."""
    result = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    system, keys = result.stdout.strip().splitlines()
    assert system  # e.g. "Linux": the real stdlib module answered
    assert "packages" in keys and "git_revision" in keys


def test_stdlib_platform_is_the_one_imported_in_this_process():
    import platform

    assert Path(platform.__file__).parent != ROOT / "platform"
    assert callable(platform.system) and platform.system()


@pytest.mark.slow
def test_wheel_installs_platform_as_scannet_platform(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("scannet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "scannet_platform/environment.py" in names
    assert "scannet_platform/train/driver.py" in names and "scannet_platform/screen/job.py" in names
    assert not any(name.startswith("platform/") for name in names)
    assert "scannet/model/scann.py" in names
