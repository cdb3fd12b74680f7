"""Where a result came from: file checksums and the code version (library-level, no platform needed).

The code version is defined once, here: :func:`code_version` (``scannet <version> (<git revision>)``), recorded in
screening results and model cards; :func:`code_revision` is its git part, recorded with every platform run."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (64 hex digits), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_fingerprint(path: str | Path) -> str:
    """A file by its bytes: the first 16 hex digits of its SHA-256 (the cache key of everything derived from it)."""
    return sha256_file(path)[:16]


def git_revision(folder: str | Path = ".") -> str | None:
    """The commit of the working tree at ``folder`` (with ``-dirty`` if modified), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha or None


def code_revision() -> str | None:
    """The git revision of the scannet code that runs (the checkout holding the imported package, ``-dirty`` if
    modified), or None for an installed copy outside git."""
    import scannet

    return git_revision(Path(scannet.__file__).resolve().parent)


def code_version() -> str:
    """``scannet <version> (<git revision>)``, or ``scannet <version>`` outside git: the code that made a result."""
    import scannet

    revision = code_revision()
    return f"scannet {scannet.__version__}" + (f" ({revision})" if revision else "")
