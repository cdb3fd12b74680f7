"""`scannet --help` and every `scannet <command> --help`: printed without importing torch, Ray or any other heavy
library (the guarantee behind help in well under 2 s: benchmarks/bench_cli_startup.py), each command's help ends
with example commands, and every example is a command the parser accepts."""

from __future__ import annotations

import contextlib
import io
import shlex
import subprocess
import sys

import pytest

from scannet.cli import build_parser, commands

COMMANDS = [name for name, _ in commands()]
#: Libraries that take seconds to import on a loaded machine; no help output needs them.
HEAVY = ("torch", "ray", "mlflow", "numpy", "scipy", "pyarrow", "pandas", "ase", "rdkit", "matplotlib")


def test_every_command_of_the_issue_is_listed():
    assert {"train", "predict", "explain", "info", "data", "screen", "tune"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [[], *([name] for name in COMMANDS)], ids=lambda argv: " ".join(argv) or "scannet")
def test_help_imports_no_heavy_library(argv):
    script = f"""
import sys
from scannet.cli import main
try:
    main({argv!r} + ["--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "", f"scannet {' '.join(argv)} --help imported {result.stdout.strip()}"


def help_text(name: str, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    return out.getvalue()


def example_lines(text: str) -> list[str]:
    """The lines after ``examples:``, stripped."""
    return [line.strip() for line in text.split("\nexamples:\n", 1)[1].splitlines() if line.strip()]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_ends_with_example_commands(name, monkeypatch):
    text = help_text(name, monkeypatch)
    assert "\nexamples:\n" in text, f"scannet {name} --help has no examples"
    assert text.rstrip().splitlines()[-1].lstrip().startswith("scannet "), text[-300:]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_example_is_a_command_the_parser_accepts(name, monkeypatch):
    for line in example_lines(help_text(name, monkeypatch)):
        argv = shlex.split(line, comments=True)
        assert argv[0] == "scannet", line
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"example {line!r}: {err.getvalue().strip()}")


@pytest.mark.parametrize("name, module", commands())
def test_the_description_is_wrapped_and_the_examples_kept_as_written(name, module, monkeypatch):
    text = help_text(name, monkeypatch)
    above_examples = text.split("\nexamples:\n", 1)[0]
    assert max(len(line) for line in above_examples.splitlines()) <= 100
    written = module.EXAMPLES.replace("%(prog)s", f"scannet {name}").split("examples:\n", 1)[1]
    assert example_lines(text) == [line.strip() for line in written.splitlines() if line.strip()]
