"""Where a result came from: file checksums and the code version (library-level, no platform needed).

The code version is defined once, here: :func:`code_version` (``scannet <version> (<revision>)``), recorded in
screening results and model cards; :func:`code_revision` is its git part, recorded with every platform run.

Code that runs outside a git checkout (``ray job submit --working-dir .`` uploads the files without ``.git``)
takes its revision from ``$SCANNET_CODE_REVISION``, which the submitting side sets from its checkout
(docs/training.md, On a Ray cluster), else names itself by content: ``source-sha256:<16 hex>`` over the
package's Python files (:func:`source_hash`; the same files give the same hash wherever they run)."""

from __future__ import annotations

import hashlib
import os
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


#: The revision of the code a job runs, set by the side that submitted it (its checkout's ``git describe``).
REVISION_VARIABLE = "SCANNET_CODE_REVISION"


def source_hash(folder: str | Path) -> str:
    """``source-sha256:<16 hex>``: the SHA-256 of every ``*.py`` file under ``folder`` (relative path and bytes,
    in path order)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"source-sha256:{digest.hexdigest()[:16]}"


def code_revision() -> str:
    """The revision of the scannet code that runs: the git revision of the checkout holding the imported package
    (``-dirty`` if modified), else ``$SCANNET_CODE_REVISION`` (set by the submitting side), else the package's
    :func:`source_hash`."""
    import scannet

    package = Path(scannet.__file__).resolve().parent
    return git_revision(package) or os.environ.get(REVISION_VARIABLE) or source_hash(package)


def code_version() -> str:
    """``scannet <version> (<revision>)`` (:func:`code_revision`): the code that made a result."""
    import scannet

    return f"scannet {scannet.__version__} ({code_revision()})"
