"""``scannet data qm9`` and ``scannet data import``: structures tables (Parquet) from QM9 or structure files."""

from __future__ import annotations

import argparse
import sys

from scannet.cli.args import add_batch_size_argument, add_max_atoms_argument, add_progress_argument

HELP = "build structures tables (Parquet) from QM9 or structure files"
DESCRIPTION = None  # --help: the two subcommands
DEFAULT_IMPORT_BATCH_SIZE = 1024
EXAMPLES = """examples:
  %(prog)s qm9 --out data/qm9
  %(prog)s import my_structures/ --targets energy --out data/mine"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data_commands = parser.add_subparsers(dest="data_command", required=True)
    qm9 = data_commands.add_parser("qm9", help="the QM9 structures table (130,831 molecules) from qm9pack")
    qm9.add_argument("--out", required=True, help="output folder (structures.parquet is written there)")
    qm9.add_argument("--targets", nargs="+", help="QM9 targets to keep (default: all)")

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
    add_batch_size_argument(imp, f"structures per write (default {DEFAULT_IMPORT_BATCH_SIZE})")
    add_max_atoms_argument(imp)
    add_progress_argument(imp)


def run(args: argparse.Namespace) -> int:
    return {"qm9": run_qm9, "import": run_import}[args.data_command](args)


def run_qm9(args: argparse.Namespace) -> int:
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


def run_import(args: argparse.Namespace) -> int:
    """Exit 0: every input imported; 1: some records or files quarantined (the rest written); 2: nothing written."""
    from scannet.data.importers import import_structures

    summary = import_structures(
        args.inputs,
        args.out,
        targets=args.targets or [],
        units=_parse_units(args.units),
        batch_size=args.batch_size or DEFAULT_IMPORT_BATCH_SIZE,
        progress=args.progress,
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
