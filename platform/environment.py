"""Provenance of a run: versions of the stack and the code, recorded with every platform run.

This folder is installed as ``scannet_platform`` (it has no ``__init__.py`` on purpose: a package
named ``platform`` would shadow the standard library's ``platform`` module, which Ray and torch use).
"""

from __future__ import annotations

import importlib.metadata
import platform as stdlib_platform
import subprocess
from pathlib import Path

TRACKED_PACKAGES = ("scannet", "torch", "numpy", "scipy", "ase", "pyarrow", "ray", "mlflow")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on ("not installed" where absent)."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(folder: str | Path = ".") -> str | None:
    """The commit of the working tree at ``folder`` (with ``-dirty`` if modified), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha or None


def run_environment(folder: str | Path = ".") -> dict[str, object]:
    """Everything worth recording about where a run happened."""
    return {
        "python": stdlib_platform.python_version(),
        "system": f"{stdlib_platform.system()} {stdlib_platform.machine()}",
        "packages": package_versions(),
        "git_revision": git_revision(folder),
    }
