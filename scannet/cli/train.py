"""``scannet train``: a training run in this process, or on Ray with ``--ray`` (the platform's backend).

The run's flags (:func:`add_run_arguments`) are also those of the Ray jobs (``jobs/train*.py``), which add
scaling and tracking (``scannet_platform.train.cli``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from scannet.cli import HelpFormatter
from scannet.cli.args import (
    add_batch_size_argument,
    add_device_argument,
    add_print_config_argument,
    add_storage_arguments,
    config_overrides,
)
from scannet.model.config import PRESETS as MODEL_PRESETS
from scannet.precision import PRECISIONS
from scannet.train.presets import RUN_PRESETS
from scannet.typed_config import to_plain

HELP = "train SCANN/SCANN+ (in this process, or on Ray with --ray)"
DESCRIPTION = "Train a model."
EXAMPLES = """re-running with the same --name resumes from its latest checkpoint.

examples:
  %(prog)s --preset paper --targets homo lumo gap          # the published recipe, one head per target
  %(prog)s --preset reference                              # the published setup exactly (box10, its split)
  %(prog)s --data data/qm9 --targets gap --n-structures 5000   # a structures table (scannet data qm9 / import)
  %(prog)s --preset demo --print-config                    # the resolved config; nothing runs
  %(prog)s --preset demo                                   # QM9 slice, 3 epochs (minutes on a CPU)"""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of :class:`~scannet.train.run_config.RunConfig` (``dest``: its field, or its ``train:`` /
    ``featurizer:`` field); unset flags leave the preset / YAML values."""
    parser.formatter_class = HelpFormatter
    parser.epilog = EXAMPLES
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=sorted(RUN_PRESETS), help="demo | paper | reference (see README)")
    run.add_argument("--config", metavar="YAML", help="RunConfig keys (train:, featurizer: nested)")
    add_print_config_argument(run)
    run.add_argument("--name", help="run name (default scannet-qm9); the same name resumes")
    run.add_argument("--data", help="'qm9' (default) or a structures table / its folder")
    run.add_argument("--targets", "--target", nargs="+", help="target columns, one head each (default homo)")
    run.add_argument("--n-structures", type=int, help="a seeded random slice of this size (default all)")
    run.add_argument("--model-preset", choices=sorted(MODEL_PRESETS), help="model preset (default by data)")
    run.add_argument("--split-seed", type=int, help="seed of the slice and the split (default 0)")
    run.add_argument("--split-order", choices=["table", "atom_count"], help="order the split applies to")
    run.add_argument("--init-from", help="fine-tune from a checkpoint (or a models:/ URI with the platform)")
    run.add_argument("--allow-missing-test", action="store_true", default=None, help="evaluate partial test sets")
    recipe = parser.add_argument_group("recipe (train:)")
    recipe.add_argument("--epochs", type=int, help="maximum epochs (paper: 1000)")
    add_batch_size_argument(recipe, "GLOBAL batch, split over workers (default 128)")
    recipe.add_argument("--lr", type=float, help="peak learning rate (default 5e-4)")
    recipe.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 200)")
    featurizer = parser.add_argument_group("featurizer (default: the model preset's settings)")
    featurizer.add_argument("--distance-threshold", type=float, help="d_t in Å (4 molecules, 6 crystals)")
    featurizer.add_argument("--molecule-mode", choices=["exact", "box10"], help="exact (default) or box10")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--precision", choices=PRECISIONS)
    execution.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    execution.add_argument(
        "--static-shapes",
        action="store_true",
        default=None,
        help="pad batches to a few bucket shapes (with --compile on CUDA: CUDA graphs)",
    )
    execution.add_argument(
        "--loader-workers", type=int, help="processes collating training batches (default 0: in the trainer)"
    )
    execution.add_argument("--threads", type=int, help="torch CPU threads")
    execution.add_argument(
        "--launch-hours",
        type=float,
        help="end this launch after the last epoch that fits in these hours (checkpointed; re-run to resume)",
    )
    add_device_argument(execution, "cpu (default) or cuda (Ray-free runner)")
    add_storage_arguments(execution)


def execute(config: Any, print_only: bool, run: Callable[[Any], Any], what: str) -> int:
    """Print the resolved ``config`` (``--print-config``) or run it and print its summary."""
    if print_only:
        json.dump(to_plain(config), sys.stdout, indent=1)
        print()
        return 0
    summary = run(config)
    ended = "finished" if getattr(summary, "finished", True) else "stopped at its launch time limit"
    print("\n".join(["", f"SCANNet {what} {ended}", *summary.lines()]))
    return 0


def ray_backend():
    """The platform's Ray training backend (entry point ``scannet.backends: ray``), or None if not installed.

    The backend module has ``add_job_arguments(parser)`` (its flags, added to ``scannet train``) and
    ``train(args) -> exit code`` (``scannet train --ray``)."""
    for entry in entry_points(group="scannet.backends"):
        if entry.name == "ray":
            return entry.load()
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--ray", action="store_true", help="run on Ray Train (DDP; needs scannet[platform])")
    backend = ray_backend()
    if backend is not None:
        backend.add_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.ray:
        backend = ray_backend()
        if backend is None:
            raise SystemExit("scannet train --ray: the Ray platform is not installed (pip install scannet[platform])")
        return backend.train(args)
    from scannet.train.run import run_local
    from scannet.train.run_config import RunConfig, build_run_config

    config = build_run_config(args.preset, args.config, **config_overrides(args, RunConfig))
    return execute(config, args.print_config, run_local, "training run")
