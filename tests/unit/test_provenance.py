"""The code revision recorded with every run and registered model (issue 23): a git checkout's revision, else the
one the submitting side passed (``ray job submit`` uploads no ``.git``), else a hash of the package's sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import scannet
from scannet.io import provenance
from scannet.io.provenance import REVISION_VARIABLE, code_revision, code_version, source_hash

PACKAGE = Path(scannet.__file__).resolve().parent


def test_the_source_hash_names_the_code_by_its_content(tmp_path):
    copy = tmp_path / "scannet"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "pretrained"))
    first = source_hash(copy)
    (copy / "notes.txt").write_text("not code")
    assert (
        source_hash(copy) == first and first.startswith("source-sha256:") and len(first) == len("source-sha256:") + 16
    )
    (copy / "io" / "provenance.py").write_text((copy / "io" / "provenance.py").read_text() + "\n# changed\n")
    assert source_hash(copy) != first


def test_outside_git_the_submitted_revision_then_the_source_hash_is_recorded(monkeypatch):
    monkeypatch.setattr(provenance, "git_revision", lambda folder: None)  # a job package: no .git
    monkeypatch.setenv(REVISION_VARIABLE, "0123abcd-dirty")
    assert code_revision() == "0123abcd-dirty"
    assert code_version() == f"scannet {scannet.__version__} (0123abcd-dirty)"
    monkeypatch.delenv(REVISION_VARIABLE)
    assert code_revision() == source_hash(PACKAGE)


def test_a_git_checkout_records_its_own_revision(monkeypatch):
    monkeypatch.setattr(provenance, "git_revision", lambda folder: "f" * 40)
    monkeypatch.setenv(REVISION_VARIABLE, "from the submitter")
    assert code_revision() == "f" * 40
