"""Provenance of a run: versions of the stack and the code, recorded with every platform run.

This folder is installed as ``scannet_platform`` (it has no ``__init__.py`` on purpose: a package
named ``platform`` would shadow the standard library's ``platform`` module, which Ray and torch use).
"""

from __future__ import annotations

import importlib.metadata
import platform as stdlib_platform
from pathlib import Path

from scannet.io.provenance import git_revision

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


def run_environment(folder: str | Path = ".") -> dict[str, object]:
    """Everything worth recording about where a run happened."""
    return {
        "python": stdlib_platform.python_version(),
        "system": f"{stdlib_platform.system()} {stdlib_platform.machine()}",
        "packages": package_versions(),
        "git_revision": git_revision(folder),
    }
