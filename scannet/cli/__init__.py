"""The ``scannet`` command: ``scannet train``, ``scannet predict``, ``scannet explain``, ``scannet info``,
``scannet data``, and the commands the platform plugs in (entry point group ``scannet.commands``: ``scannet tune``,
``scannet screen``)."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from importlib.metadata import entry_points

from scannet import explain_cli
from scannet.predict_cli import add_predict_arguments
from scannet.train.run_cli import add_run_arguments


class _Status:
    code = 0


#: Mistakes of the user (a config value, a missing file, an unreadable checkpoint): one line, exit code 2.
def _user_error_types() -> tuple[type[Exception], ...]:
    from scannet.checkpoint import CheckpointError
    from scannet.data.graphs_table import FeaturizerMismatchError
    from scannet.data.splits import SplitMismatchError
    from scannet.typed_config import ConfigError

    return ConfigError, FileNotFoundError, CheckpointError, SplitMismatchError, FeaturizerMismatchError


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


def _ray_backend():
    """The platform's Ray training backend (entry point ``scannet.backends: ray``), or None if not installed."""
    for entry in entry_points(group="scannet.backends"):
        if entry.name == "ray":
            return entry.load()
    return None


def _platform_commands() -> list:
    """Modules of the platform's commands (entry point group ``scannet.commands``), each with ``HELP``,
    ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> exit code``; none without the platform."""
    return [
        (entry.name, entry.load()) for entry in sorted(entry_points(group="scannet.commands"), key=lambda e: e.name)
    ]


def _train(args: argparse.Namespace) -> int:
    if args.ray:
        backend = _ray_backend()
        if backend is None:
            raise SystemExit("scannet train --ray: the Ray platform is not installed (pip install scannet[platform])")
        return backend.train(args)
    from scannet.train.run import run_local
    from scannet.train.run_cli import execute, run_overrides
    from scannet.train.run_config import build_run_config

    config = build_run_config(args.preset, args.config, **run_overrides(args))
    return execute(config, args.print_config, run_local, "training run")


def _predict(args: argparse.Namespace) -> int:
    """Exit 0: all predicted; 1: some files or structures failed (the rest written); 2: user error."""
    from scannet.predict_cli import run_predict

    return run_predict(args)


def _info(args: argparse.Namespace) -> int:
    from scannet.predict_cli import run_info

    return run_info(args)


def _data_qm9(args: argparse.Namespace) -> int:
    import time

    from scannet.data.qm9 import write_qm9_table
    from scannet.data.structures_table import num_structures

    start = time.perf_counter()
    path = write_qm9_table(args.out, targets=args.targets or None)
    seconds = time.perf_counter() - start
    print(f"wrote {num_structures(path)} QM9 structures in {seconds:.1f} s to {path}")
    return 0


def _parse_units(items: list[str] | None) -> dict[str, str]:
    units = {}
    for item in items or []:
        name, sep, unit = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"scannet data import: --units expects name=unit, got {item!r}")
        units[name] = unit
    return units


def _data_import(args: argparse.Namespace) -> int:
    """Exit 0: every input imported; 1: some records or files quarantined (the rest written); 2: nothing written."""
    from scannet.data.importers import import_structures

    summary = import_structures(
        args.inputs,
        args.out,
        targets=args.targets or [],
        units=_parse_units(args.units),
        batch_size=args.batch_size,
        progress=not args.no_progress,
        require_targets=args.require_targets,
        max_atoms=args.max_atoms,
    )
    print("\n".join(summary.lines()))
    for message in summary.messages:
        print(f"scannet data import: quarantined {message}", file=sys.stderr)
    if summary.n_quarantined > len(summary.messages):
        print(f"scannet data import: ... and {summary.n_quarantined - len(summary.messages)} more", file=sys.stderr)
    if summary.n_written == 0:
        print(f"scannet: error: data import wrote no structure: {summary.why_empty()}", file=sys.stderr)
        return 2
    if summary.n_quarantined:
        print(
            f"scannet data import: {summary.n_quarantined} records quarantined ({summary.n_files_failed} of "
            f"{len(summary.per_source)} files unreadable), {summary.n_written} written; "
            f"id, source and reason of each in {summary.quarantine_path}",
            file=sys.stderr,
        )
        return 1
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    import scannet

    parser = argparse.ArgumentParser(prog="scannet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scannet {scannet.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train SCANN/SCANN+ (in this process, or on Ray with --ray)", description="Train a model."
    )
    add_run_arguments(train)
    train.add_argument("--ray", action="store_true", help="run on Ray Train (DDP; needs scannet[platform])")
    backend = _ray_backend()
    if backend is not None:
        backend.add_job_arguments(train)
    train.set_defaults(func=_train)

    predict = commands.add_parser(
        "predict",
        help="predict structure files and write GA scores for OVITO",
        description="Predict every structure in the files; write a predictions table and GA files to --out. "
        "Exit codes: 0 all predicted, 1 some files or structures failed (the rest written), "
        "2 user error (model missing or unreadable, no input readable, nothing predicted).",
    )
    add_predict_arguments(predict)
    predict.set_defaults(func=_predict)

    explain = commands.add_parser("explain", help=explain_cli.HELP, description=explain_cli.DESCRIPTION)
    explain_cli.add_arguments(explain)
    explain.set_defaults(func=explain_cli.run)

    for name, module in _platform_commands():
        command = commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(command)
        command.set_defaults(func=module.run)

    info = commands.add_parser("info", help="describe a model checkpoint (targets, units, elements, training data)")
    info.add_argument(
        "model", nargs="?", help="a checkpoint (.pt) or a shipped model's name (default: the default shipped model)"
    )
    info.set_defaults(func=_info)

    data = commands.add_parser("data", help="build structures tables (Parquet) from QM9 or structure files")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    qm9 = data_commands.add_parser("qm9", help="the QM9 structures table (130,831 molecules) from qm9pack")
    qm9.add_argument("--out", required=True, help="output folder (structures.parquet is written there)")
    qm9.add_argument("--targets", nargs="+", help="QM9 targets to keep (default: all)")
    qm9.set_defaults(func=_data_qm9)

    from scannet.data.importers import DEFAULT_MAX_ATOMS

    imp = data_commands.add_parser(
        "import",
        help="convert xyz/extxyz, ASE db, traj, CIF files or folders into a structures table",
        description="Convert structure files and folders into DIR/structures.parquet; records that cannot be "
        "imported go to DIR/quarantine.parquet (id, source, reason) and are listed on stderr. "
        "Exit codes: 0 all inputs imported, 1 some inputs quarantined or skipped (unreadable or unsupported "
        "files, broken or truncated frames, invalid structures; the rest written), 2 nothing written "
        "(no structure file found, none readable) or a user error.",
    )
    imp.add_argument("inputs", nargs="+", help="files or folders")
    imp.add_argument("--out", required=True, help="output folder (structures.parquet, quarantine.parquet)")
    imp.add_argument("--targets", nargs="+", help="target names read from Atoms.info, db key-value pairs or energies")
    imp.add_argument("--units", nargs="+", metavar="NAME=UNIT", help="units of the targets, e.g. energy=eV")
    imp.add_argument("--require-targets", action="store_true", help="quarantine structures that miss a target")
    imp.add_argument("--batch-size", type=int, default=1024, help="structures per write")
    imp.add_argument(
        "--max-atoms",
        type=_positive_int,
        default=DEFAULT_MAX_ATOMS,
        help=f"most atoms per structure (default {DEFAULT_MAX_ATOMS}); a larger one is quarantined, "
        "an xyz frame before its atom lines are read",
    )
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(func=_data_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors() as status:
        status.code = args.func(args)
    return status.code


def command_main(module, argv: list[str] | None = None, prog: str | None = None, description: str | None = None) -> int:
    """One platform command (a ``scannet.commands`` module) as a program of its own (``jobs/*.py``);
    ``description`` replaces the module's in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description or module.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    with user_errors() as status:
        status.code = module.run(args)
    return status.code


if __name__ == "__main__":
    raise SystemExit(main())
