"""Provenance of a run: versions of the stack and the code, recorded with every platform run.

This folder is installed as ``scannet_platform`` (it has no ``__init__.py`` on purpose: a package
named ``platform`` would shadow the standard library's ``platform`` module, which Ray and torch use).
"""

from __future__ import annotations

import importlib.metadata
import platform as stdlib_platform

from scannet.io.provenance import code_revision

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


def run_environment() -> dict[str, object]:
    """Everything worth recording about where a run happened (``git_revision``: the scannet code's, see
    :func:`scannet.io.provenance.code_revision`)."""
    return {
        "python": stdlib_platform.python_version(),
        "system": f"{stdlib_platform.system()} {stdlib_platform.machine()}",
        "packages": package_versions(),
        "git_revision": code_revision(),
    }
