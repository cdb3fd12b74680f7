"""The ``scannet`` command: ``scannet train``, ``predict``, ``explain``, ``info``, ``data``, and the commands the
platform plugs in (``scannet tune``, ``scannet screen``).

Every subcommand is a module with one protocol:

- ``HELP``: one line for ``scannet --help``;
- ``DESCRIPTION``: the text of ``scannet <command> --help`` (None: none);
- ``EXAMPLES``: ``examples:`` then real command lines (``%(prog)s``: the command), shown as written below the
  flags; the help ends with one (``tests/unit/test_cli_help.py``);
- ``add_arguments(parser)``: its flags and arguments (shared flags come from :mod:`scannet.cli.args`);
- ``run(args) -> int``: the exit code (0 done, 1 partly done, 2 user error).

The module is imported to build ``scannet --help``: its top level imports no heavy library (torch, NumPy, Ray,
...); ``run`` imports what it needs.

The library's commands are the modules named in :data:`BUILTIN`; the platform's are the entry point group
``scannet.commands`` (``pyproject.toml``). A user mistake (:func:`user_errors`) is one line on stderr and exit
code 2. :func:`command_main` runs one command as a program of its own (``jobs/*.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from contextlib import contextmanager
from importlib.metadata import entry_points
from types import ModuleType

#: The library's commands: ``scannet <name>`` is the module ``scannet.cli.<name>``.
BUILTIN = ("train", "predict", "explain", "info", "data")
PROTOCOL = ("HELP", "DESCRIPTION", "add_arguments", "run")


class _Status:
    code = 0


#: Mistakes of the user (a config value, a missing file, an unreadable checkpoint): one line, exit code 2.
def _user_error_types() -> tuple[type[Exception], ...]:
    from scannet.checkpoint import CheckpointError
    from scannet.data.graphs_table import FeaturizerMismatchError
    from scannet.data.splits import SplitMismatchError
    from scannet.io.paths import OutputPathError
    from scannet.typed_config import ConfigError

    return ConfigError, FileNotFoundError, CheckpointError, SplitMismatchError, FeaturizerMismatchError, OutputPathError


@contextmanager
def user_errors():
    """Report a user mistake as one line on stderr and set ``status.code = 2`` instead of a traceback."""
    status = _Status()
    types = _user_error_types()
    try:
        yield status
    except types as exc:
        print(f"scannet: error: {exc}", file=sys.stderr)
        status.code = 2


def commands() -> list[tuple[str, ModuleType]]:
    """``(name, module)`` of every command: the library's, then the platform's (sorted by name)."""
    found = [(name, importlib.import_module(f"scannet.cli.{name}")) for name in BUILTIN]
    platform = sorted(entry_points(group="scannet.commands"), key=lambda e: e.name)
    return found + [(entry.name, entry.load()) for entry in platform if entry.name not in BUILTIN]


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a one-line text (a command's ``DESCRIPTION``) to the terminal's width and prints a text of several
    lines (``EXAMPLES``, a job script's docstring) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


def add_command(commands_: argparse._SubParsersAction, name: str, module: ModuleType) -> argparse.ArgumentParser:
    """The subparser of one command module."""
    parser = commands_.add_parser(
        name,
        help=module.HELP,
        description=module.DESCRIPTION,
        epilog=getattr(module, "EXAMPLES", None),
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # a prefix never stands for a flag: `train --model` is not `--model-preset`
    )
    module.add_arguments(parser)
    parser.set_defaults(func=module.run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    import scannet

    parser = argparse.ArgumentParser(prog="scannet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"scannet {scannet.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module in commands():
        add_command(subparsers, name, module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors() as status:
        status.code = args.func(args)
    return status.code


def command_main(
    module: ModuleType,
    argv: list[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
    **defaults,
) -> int:
    """One command module as a program of its own (``jobs/*.py``); ``description`` replaces the module's in
    ``--help``; ``defaults``: values of flags not given (``data="qm9"``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or module.DESCRIPTION,
        epilog=getattr(module, "EXAMPLES", None),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    module.add_arguments(parser)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    with user_errors() as status:
        status.code = module.run(args)
    return status.code
