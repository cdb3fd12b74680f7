"""``scannet screen`` and ``jobs/screen.py``: stream a candidate library through trained models.

Exit codes (:func:`exit_code`): 0 everything that could be screened was screened (quarantined records and repeated
ids are counted in the summary and listed in the quarantine parts and duplicates.csv: bad input lines are not a
failed screen, so ``ray job submit`` reports the job as succeeded); 1 only with ``--strict``, when some records were
quarantined or some ids repeat; 2 user error (a model or input missing or unusable, a bad option) or nothing
screened; 130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM (``ray job stop``, ``kill``): one line says so, the
finished chunks are kept and the same command resumes.
"""

from __future__ import annotations

import argparse
import sys

from scannet.cli import command_main
from scannet.cli.args import (
    add_device_argument,
    add_max_atoms_argument,
    add_progress_argument,
    add_smiles_arguments,
    config_overrides,
)
from scannet.precision import PRECISIONS
from scannet_platform.tracking.config import add_tracking_arguments

HELP = "screen a library of structures or SMILES with trained models (Ray Data, resumable)"
DESCRIPTION = (
    "Stream a candidate library (structures tables, xyz/extxyz, ASE db, folders of CIF/xyz, SMILES .smi/.csv) "
    "through one or more models (checkpoints, MLflow model URIs, ensemble folders) into Parquet shards under "
    "--out: predictions/part-*.parquet (id, source, formula, n_atoms, SMILES, canonical SMILES, structure key, "
    "<target>_<unit>, _std for ensembles, GA scores, provenance) and quarantine/part-*.parquet (row, id, source, "
    "reason); top-k tables of the ranked columns (CSV, Markdown, HTML; values rounded to the model's test MAE), "
    "duplicates.csv (same id, same structure), plots/hist-*.png and summary.json beside them, and an MLflow run. "
    "Launching again into the same --out resumes: finished chunks are skipped, every record is written exactly "
    "once. Exit codes: 0 all that could be screened was screened (quarantined records and duplicate ids are "
    "counted in the summary and listed with their reasons); 1 with --strict when some records were quarantined or "
    "some ids repeat; 2 user error or nothing screened; 130 interrupted by Ctrl-C, 143 by SIGTERM (the finished "
    "chunks are kept: run the same command again to resume)."
)
EXAMPLES = """examples:
  scannet data qm9 --out data/qm9                           # any structures table is a library
  %(prog)s data/qm9/structures.parquet --filter "gap_eV between 4 6" --rank gap_eV:max --top-k 50 --out screens/qm9"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of :class:`~scannet_platform.screen.job.ScreenConfig` (``dest``: the field)."""
    from scannet_platform.screen.config import ScreenConfig

    parser.add_argument("inputs", nargs="+", help="structures tables (.parquet), structure files, folders, .smi/.csv")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        help="a checkpoint, a shipped model's name, models:/name/version, models:/name@alias, or an ensemble folder "
        "(ensemble.json); repeat for more targets; models of the same targets form an ensemble (mean and std); "
        "default: the shipped QM9 HOMO/LUMO/gap model (scannet/pretrained/)",
    )
    parser.add_argument("--out", required=True, help="output folder; launching again into it resumes")
    select = parser.add_argument_group("selection")
    select.add_argument("--top-k", type=int, help="rows per top-k table (default 100; 0: none)")
    select.add_argument(
        "--rank",
        action="append",
        metavar="COLUMN:max|min",
        help="a column to rank (a top-k table each; default direction max), e.g. 'gap_eV:max', 'gap_eV_std:min'; "
        "default: the first target, max",
    )
    select.add_argument(
        "--filter",
        dest="filters",
        action="append",
        metavar="RULE",
        help="COLUMN between LOW HIGH, or COLUMN OP VALUE with the output column names, e.g. 'gap_eV between 4 6', "
        "'homo_eV < -5.5', 'gap_eV_std <= 0.1', 'n_atoms <= 20' (all must hold; a bare target, 'gap', 'gap_std', "
        "names its column)",
    )
    library = parser.add_argument_group("library")
    library.add_argument("--chunk-size", type=int, help="records per chunk and shard (default 1024)")
    add_max_atoms_argument(library, ScreenConfig.max_atoms)
    add_smiles_arguments(library, strings=False)
    library.add_argument("--seed", type=int, help="RDKit embedding seed (default 0)")
    library.add_argument(
        "--graphs-cache",
        dest="graphs_dir",
        metavar="DIR",
        help="root of the graph store: each chunk's graphs are kept there and a later screen of the same library "
        "(same chunking, seed, max atoms) with models of the same featurizer reads them instead of featurizing "
        "(default: <scannet home>/data; $SCANNET_HOME or ~/scannet)",
    )
    library.add_argument(
        "--no-graphs-cache",
        dest="graphs_cache",
        action="store_false",
        default=None,
        help="featurize every chunk and keep no graphs",
    )
    compute = parser.add_argument_group("compute")
    compute.add_argument("--local", dest="executor", action="store_const", const="local", help="no Ray: this process")
    compute.add_argument("--executor", choices=("ray", "local"), help="ray (default) or local (the same as --local)")
    compute.add_argument(
        "--featurize-workers",
        type=int,
        help="Ray: featurize actors (default: on GPU model actors the CPUs they leave, 1 CPU each; on CPU model "
        "actors one per 4 model CPUs, sharing their cores); local: featurize processes feeding the models in this "
        "process (default 0: one chunk after the other)",
    )
    compute.add_argument("--batches-in-flight", type=int, help="featurized chunks queued per model actor (default 2)")
    compute.add_argument(
        "--actors",
        type=int,
        help="model actors (default CPUs / --cpus-per-actor, at least 1; GPUs / --gpus-per-actor on GPU)",
    )
    compute.add_argument("--cpus-per-actor", type=float, help="CPUs (and torch threads) per actor (default 1)")
    compute.add_argument("--gpus-per-actor", type=float, help="GPUs per actor, with --device cuda (e.g. 1 or 0.5)")
    add_device_argument(compute, "torch device of the models (default cpu)")
    compute.add_argument("--atom-budget", type=int, help="most atoms per model batch (default 4096)")
    compute.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the models in each actor: faster CPU inference after ~20 s of compiling; "
        "for large libraries (figures: benchmarks/README.md)",
    )
    compute.add_argument(
        "--static-shapes",
        action="store_true",
        default=None,
        help="with --compile: pad every model batch to one of a few bucket shapes, a compiled graph each (CUDA "
        "graphs on a GPU); same results (scannet.static_shapes)",
    )
    compute.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (default) or bf16: matrix products in bfloat16, faster on CPUs with AMX/AVX-512-BF16; "
        "predictions move by a few meV (figures: benchmarks/README.md)",
    )
    tracking = add_tracking_arguments(parser, ScreenConfig)
    tracking.add_argument("--no-mlflow", dest="mlflow", action="store_false", default=None, help="no MLflow run")
    add_progress_argument(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit code 1 when some records were quarantined or some ids repeat (default 0: they are counted and "
        "listed, the rest screened)",
    )


def exit_code(n_screened: int, n_quarantined: int, n_duplicate_ids: int, strict: bool) -> int:
    """2 when nothing was screened; 1 with ``strict`` when some records were quarantined or some ids repeat; else 0."""
    if n_screened == 0:
        return 2
    return 1 if strict and (n_quarantined or n_duplicate_ids) else 0


def run(args: argparse.Namespace) -> int:
    from scannet.data.structures_table import TableKindError
    from scannet.pretrained import DEFAULT_MODEL
    from scannet.typed_config import ConfigError
    from scannet_platform.runtime import DriverTerminated, sigterm_unwinds
    from scannet_platform.screen.job import ScreenConfig, build_screen_config, print_summary, run_screen

    values = config_overrides(args, ScreenConfig)
    if "models" not in values:
        values["models"] = (DEFAULT_MODEL,)
        print(f"model: the shipped {DEFAULT_MODEL} (give --model to use another)")
    try:
        with sigterm_unwinds():
            summary, scan = run_screen(build_screen_config(values))
    except TableKindError as exc:
        raise ConfigError(str(exc)) from exc
    except (KeyboardInterrupt, DriverTerminated) as exc:
        code = 143 if isinstance(exc, DriverTerminated) else 130
        what = "SIGTERM" if code == 143 else "Ctrl-C (SIGINT)"
        print(
            f"scannet screen: interrupted by {what}; the finished chunks are kept in {values['out']}: run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return code
    print_summary(summary, scan)
    if summary.n_screened == 0:
        print("scannet: error: no structure could be screened (reasons in the quarantine parts)", file=sys.stderr)
    return exit_code(summary.n_screened, summary.n_quarantined, summary.n_duplicate_ids, args.strict)


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """``jobs/screen.py``: this command as a program (``description``: the script's own text for --help)."""
    return command_main(sys.modules[__name__], argv, prog="python jobs/screen.py", description=description)


if __name__ == "__main__":
    sys.exit(main())
