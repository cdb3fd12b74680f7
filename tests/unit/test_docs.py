"""The README stays a front door and the documentation's links and citations point at files in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_README_LINES = 220
#: Spelled in two parts so that this file does not cite it itself.
OUTSIDE_SPEC = "shared/" + "reference"
#: Folders that are not the repository's own content (VCS, caches, environments, build outputs).
SKIPPED_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "venv", "build", "dist", "node_modules"}

LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.DOTALL)


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-zA-Z][a-zA-Z+.-]*:", t) and not t.startswith("#")]


def repository_files():
    """Tracked and untracked files that git does not ignore (so no data or benchmark outputs); every file
    outside the skipped folders when git is not available."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        listed = None
    candidates = (ROOT / name for name in listed.decode().split("\0") if name) if listed else ROOT.rglob("*")
    for path in candidates:
        parts = path.relative_to(ROOT).parts
        if any(p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file():
            yield path


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move reference content to docs/"


def test_the_docs_index_exists():
    assert (ROOT / "docs" / "README.md").is_file()


def test_every_relative_link_resolves():
    broken = [
        f"{page.relative_to(ROOT)} -> {target}"
        for page in markdown_pages()
        for target in relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_nothing_cites_the_spec_files_outside_the_repository():
    needle = OUTSIDE_SPEC.encode()
    citing = [str(p.relative_to(ROOT)) for p in repository_files() if needle in p.read_bytes()]
    assert not citing, f"cite docs/model-spec.md or docs/molecule-voronoi.md instead of {OUTSIDE_SPEC}: {citing}"
