"""``scannet data qm9`` and ``scannet data import``: structures tables (Parquet) from QM9 or structure files;
``scannet data featurize``: a structures table's graph table (the training cache's format)."""

from __future__ import annotations

import argparse
import sys

from scannet.cli import HelpFormatter
from scannet.cli.args import add_batch_size_argument, add_max_atoms_argument, add_progress_argument

HELP = "build structures tables (Parquet) from QM9 or structure files, and their graph tables"
DESCRIPTION = None  # --help: the two subcommands
DEFAULT_IMPORT_BATCH_SIZE = 1024
EXAMPLES = """examples:
  %(prog)s qm9 --out data/qm9
  %(prog)s import my_structures/ --targets energy --out data/mine
  %(prog)s featurize data/mine --model qm9-homo-lumo-gap-cpu --out data/graphs"""
FEATURIZE_EXAMPLES = """examples:
  %(prog)s data/qm9/structures.parquet --model qm9-homo-lumo-gap-cpu --out data/graphs
  %(prog)s data/mine --kind crystals --distance-threshold 6 --out data/graphs"""


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
    add_featurize_arguments(data_commands)


def add_featurize_arguments(data_commands) -> None:
    featurize = data_commands.add_parser(
        "featurize",
        help="featurize a structures table into a graph table (train and screen read it without featurizing)",
        description="Featurize a structures table (or its folder, or 'qm9') into OUT/graphs-<featurizer hash>/, the "
        "graph table format of the training cache: graphs/*.parquet, quarantine.parquet (structures that could "
        "not be featurized, with the reason) and summary.json. The settings are a model's featurizer (--model) "
        "or a kind's defaults, with the flags given laid over them.",
        epilog=FEATURIZE_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    featurize.add_argument("structures", help="a structures table (scannet data import / qm9), its folder, or 'qm9'")
    featurize.add_argument("--out", required=True, help="folder; the graph table goes to OUT/graphs-<hash>/")
    settings = featurize.add_mutually_exclusive_group()
    settings.add_argument("--model", help="take the featurizer settings of this checkpoint or shipped model name")
    settings.add_argument("--kind", choices=["molecules", "crystals"], help="default settings (default molecules)")
    featurize.add_argument("--distance-threshold", type=float, help="d_t in Å over the settings")
    featurize.add_argument("--molecule-mode", choices=["exact", "box10"], help="over the settings")
    featurize.add_argument("--overwrite", action="store_true", help="replace an existing graph table")
    add_batch_size_argument(featurize, "structures featurized per step (default 1024)")
    add_progress_argument(featurize)


def run(args: argparse.Namespace) -> int:
    return {"qm9": run_qm9, "import": run_import, "featurize": run_featurize}[args.data_command](args)


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


def featurizer_settings(args: argparse.Namespace):
    """The model's featurizer settings (``--model``) or the kind's defaults, with the given flags over them."""
    from dataclasses import replace

    from scannet.checkpoint import load_model, resolve_checkpoint
    from scannet.featurizer import FeaturizerConfig

    overrides = {
        key: value
        for key, value in (("distance_threshold", args.distance_threshold), ("molecule_mode", args.molecule_mode))
        if value is not None
    }
    if args.model is None:
        return FeaturizerConfig.for_kind(args.kind or "molecules", **overrides)
    model, featurizer, _ = load_model(resolve_checkpoint(args.model))
    featurizer = replace(featurizer, **overrides)
    featurizer.check_distance_basis(model.config.gaussian_distance_max, f"model {args.model}")
    return featurizer


def featurize_error(message: str) -> int:
    print(f"scannet: error: data featurize: {message}", file=sys.stderr)
    return 2


def run_featurize(args: argparse.Namespace) -> int:
    """Exit 0: every structure featurized; 1: some quarantined (the rest written); 2: none featurized."""
    from scannet.data.graphs_table import featurize_table, graph_cache_dir
    from scannet.home import default_data_cache
    from scannet.train.run import resolve_dataset

    try:  # a missing file or checkpoint: one line from the command line's user errors
        dataset = resolve_dataset(args.structures, default_data_cache())
    except ValueError as exc:  # not a structures table (another Parquet table, not Parquet at all)
        return featurize_error(str(exc))
    featurizer = featurizer_settings(args)
    out = graph_cache_dir(args.out, featurizer)
    if out.exists() and not args.overwrite:
        return featurize_error(f"{out} exists (made with these settings); --overwrite replaces it")
    summary = featurize_table(
        dataset.structures, out, featurizer, batch_size=args.batch_size or 1024, progress=args.progress, overwrite=True
    )
    print(
        f"featurized {summary.n_graphs} of {summary.n_input} structures ({summary.n_quarantined} quarantined) in "
        f"{summary.seconds:.1f} s into {out} (featurizer hash {featurizer.content_hash()})"
    )
    if summary.n_graphs == 0:
        return 2
    return 1 if summary.n_quarantined else 0
