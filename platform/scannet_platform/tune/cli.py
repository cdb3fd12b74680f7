"""``scannet tune`` and ``jobs/tune_qm9.py``: a hyperparameter study from a ``tune_spaces/*.yaml`` file."""

from __future__ import annotations

import argparse
import json
import sys

from scannet.cli import command_main
from scannet.typed_config import to_plain

HELP = "hyperparameter study on Ray Tune (ASHA, Optuna) from a tune_spaces/*.yaml file"
DESCRIPTION = (
    "Run (or resume: same name) a hyperparameter study declared in a YAML file: trials train with the library's "
    "worker loop on Ray Tune, ASHA stops weak ones, MLflow holds a parent run and one child run per trial; the "
    "best trial is evaluated on the test split and registered, the top-k exported as an ensemble. "
    "Exit codes: 0 finished, 1 interrupted (re-run to resume), 2 user error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", required=True, help="the study's YAML file (e.g. tune_spaces/small_cpu.yaml)")
    parser.add_argument("--name", help="study name (default: the file's); re-running a name resumes it")
    parser.add_argument("--num-samples", type=int, help="trials")
    parser.add_argument("--max-concurrent-trials", type=int, help="at most this many trials at a time")
    parser.add_argument("--time-budget-s", type=float, help="no new trials after this many seconds")
    parser.add_argument("--data", help="run.data: qm9 or a structures table")
    parser.add_argument("--n-structures", type=int, help="run.n_structures: a seeded slice of the data")
    parser.add_argument("--storage-path", help="run.storage_path: runs folder (default $SCANNET_HOME/runs)")
    parser.add_argument("--data-cache", help="run.data_cache: data folder (default $SCANNET_HOME/data)")
    parser.add_argument(
        "--mlflow-uri", dest="mlflow_tracking_uri", help="default $MLFLOW_TRACKING_URI or $SCANNET_HOME/mlflow.db"
    )
    parser.add_argument("--experiment", help="MLflow experiment (default scannet-tune)")
    parser.add_argument("--registered-model", help="MLflow registered model of the best trial")
    parser.add_argument("--verbose", action="store_true", default=None, help="show Ray's and MLflow's own log lines")
    parser.add_argument("--print-config", action="store_true", help="print the resolved study and exit")


def run(args: argparse.Namespace) -> int:
    from scannet_platform.tune.config import load_study

    run_keys = ("data", "n_structures", "storage_path", "data_cache")
    study_keys = (
        "name",
        "num_samples",
        "max_concurrent_trials",
        "time_budget_s",
        "mlflow_tracking_uri",
        "experiment",
        "registered_model",
        "verbose",
    )
    study = load_study(
        args.space,
        run={k: getattr(args, k) for k in run_keys},
        **{k: getattr(args, k) for k in study_keys},
    )
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
