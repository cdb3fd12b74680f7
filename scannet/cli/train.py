"""The command-line flags of a training run, shared by ``scannet train`` and the Ray jobs (``jobs/*.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from scannet.model.config import PRESETS as MODEL_PRESETS
from scannet.precision import PRECISIONS
from scannet.train.run_config import RUN_PRESETS
from scannet.typed_config import to_plain

EXAMPLES = """examples:
  %(prog)s --preset demo                                  QM9 slice, 3 epochs (minutes on a CPU)
  %(prog)s --preset paper --targets homo lumo gap         the published recipe, one head per target
  %(prog)s --preset reference                             the published setup exactly (box10, its split)
  %(prog)s --data data/pt --target energy                 your table (scannet data import)
  %(prog)s --data data/c60 --targets homo --init-from runs/scannet-qm9/best_model.pt
  %(prog)s --config job.yaml --print-config               show the resolved config, run nothing
re-running with the same --name resumes from its latest checkpoint."""

_TRAIN_FLAGS = ("epochs", "batch_size", "lr", "patience")
_FEATURIZER_FLAGS = ("distance_threshold", "molecule_mode")
_RUN_FLAGS = (
    "name",
    "data",
    "targets",
    "n_structures",
    "model_preset",
    "split_seed",
    "split_order",
    "init_from",
    "allow_missing_test",
    "precision",
    "compile",
    "threads",
    "device",
    "storage_path",
    "data_cache",
)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of :class:`~scannet.train.run_config.RunConfig`; unset flags leave the preset / YAML values."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=sorted(RUN_PRESETS), help="demo | paper | reference (see README)")
    run.add_argument("--config", metavar="YAML", help="RunConfig keys (train:, featurizer: nested)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    run.add_argument("--name", help="run name (default scannet-qm9); the same name resumes")
    run.add_argument("--data", help="'qm9' (default) or a structures table / its folder")
    run.add_argument("--targets", "--target", nargs="+", help="target columns, one head each (default homo)")
    run.add_argument("--n-structures", type=int, help="a seeded random slice of this size (default all)")
    run.add_argument("--model", dest="model_preset", choices=sorted(MODEL_PRESETS), help="default by data")
    run.add_argument("--split-seed", type=int, help="seed of the slice and the split (default 0)")
    run.add_argument("--split-order", choices=["table", "atom_count"], help="order the split applies to")
    run.add_argument("--init-from", help="fine-tune from a checkpoint (or a models:/ URI with the platform)")
    run.add_argument("--allow-missing-test", action="store_true", default=None, help="evaluate partial test sets")
    recipe = parser.add_argument_group("recipe (train:)")
    recipe.add_argument("--epochs", type=int, help="maximum epochs (paper: 1000)")
    recipe.add_argument("--batch-size", type=int, help="GLOBAL batch, split over workers (default 128)")
    recipe.add_argument("--lr", type=float, help="peak learning rate (default 5e-4)")
    recipe.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 200)")
    featurizer = parser.add_argument_group("featurizer (default: the model preset's settings)")
    featurizer.add_argument("--distance-threshold", type=float, help="d_t in Å (4 molecules, 6 crystals)")
    featurizer.add_argument("--molecule-mode", choices=["exact", "box10"], help="exact (default) or box10")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--precision", choices=PRECISIONS)
    execution.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    execution.add_argument("--threads", type=int, help="torch CPU threads")
    execution.add_argument("--device", help="cpu (default) or cuda (Ray-free runner)")
    execution.add_argument("--storage-path", help="runs folder (default $SCANNET_HOME/runs)")
    execution.add_argument("--data-cache", help="data cache (default $SCANNET_HOME/data)")


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as config overrides (nested for train: and featurizer:)."""
    overrides: dict[str, Any] = {key: getattr(args, key, None) for key in _RUN_FLAGS}
    train = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k, None) is not None}
    featurizer = {k: getattr(args, k) for k in _FEATURIZER_FLAGS if getattr(args, k, None) is not None}
    if train:
        overrides["train"] = train
    if featurizer:
        overrides["featurizer"] = featurizer
    return overrides


def execute(config: Any, print_only: bool, run: Callable[[Any], Any], what: str) -> int:
    """Print the resolved ``config`` (``--print-config``) or run it and print its summary."""
    if print_only:
        json.dump(to_plain(config), sys.stdout, indent=1)
        print()
        return 0
    summary = run(config)
    print("\n".join(["", f"SCANNet {what} finished", *summary.lines()]))
    return 0
