"""``scannet tune`` and ``jobs/tune_qm9.py``: a hyperparameter study from a ``tune_spaces/*.yaml`` file."""

from __future__ import annotations

import argparse
import json
import sys

from scannet.cli import command_main
from scannet.cli.args import add_print_config_argument, add_storage_arguments, config_overrides
from scannet.typed_config import to_plain
from scannet_platform.tracking.config import add_tracking_arguments

HELP = "hyperparameter study on Ray Tune (ASHA, Optuna) from a tune_spaces/*.yaml file"
DESCRIPTION = (
    "Run (or resume: same name) a hyperparameter study declared in a YAML file: trials train with the library's "
    "worker loop on Ray Tune, ASHA stops weak ones, MLflow holds a parent run and one child run per trial; the "
    "best trial is evaluated on the test split and registered, the top-k exported as an ensemble. "
    "Exit codes: 0 finished, 1 interrupted (re-run to resume), 2 user error."
)
EXAMPLES = """examples:
  %(prog)s --space tune_spaces/small_cpu.yaml --print-config    # the study, resolved; nothing runs
  %(prog)s --space tune_spaces/small_cpu.yaml"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of :class:`~scannet_platform.tune.config.StudyConfig` and of its ``run`` (``dest``: the field)."""
    from scannet_platform.tune.config import StudyConfig

    parser.add_argument(
        "--space",
        dest="space_file",  # the file; the study's field `space` is what it declares
        metavar="SPACE",
        required=True,
        help="the study's YAML file (e.g. tune_spaces/small_cpu.yaml)",
    )
    parser.add_argument("--name", help="study name (default: the file's); re-running a name resumes it")
    parser.add_argument("--num-samples", type=int, help="trials")
    parser.add_argument("--max-concurrent-trials", type=int, help="at most this many trials at a time")
    parser.add_argument("--time-budget-s", type=float, help="no new trials after this many seconds")
    run = parser.add_argument_group("the trials' run (run:)")
    run.add_argument("--data", help="run.data: qm9 or a structures table")
    run.add_argument("--n-structures", type=int, help="run.n_structures: a seeded slice of the data")
    add_storage_arguments(run)
    add_tracking_arguments(parser, StudyConfig, registered_model_help="MLflow registered model of the best trial")
    add_print_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from scannet.train.run_config import RunConfig
    from scannet_platform.tune.config import StudyConfig, load_study

    study_keys = {f.name for f in fields(StudyConfig)}  # --name is the study's; the trials' run is named after it
    run_values = config_overrides(args, RunConfig, exclude=study_keys)
    study = load_study(args.space_file, run=run_values, **config_overrides(args, StudyConfig))
    if args.print_config:
        print(json.dumps(to_plain(study), indent=1))
        return 0
    from scannet_platform.tune.driver import run_study

    summary = run_study(study)
    print("\n".join(summary.lines()))
    return 1 if summary.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    return command_main(sys.modules[__name__], argv, prog="tune_qm9.py")


if __name__ == "__main__":
    sys.exit(main())
