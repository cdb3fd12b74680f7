"""Command line of the Ray training jobs (``jobs/train_qm9.py``, ``jobs/train.py``) and of ``scannet train --ray``.

The run flags are the library's (``scannet.train.run_cli``); this adds scaling, retention and tracking.
"""

from __future__ import annotations

import argparse
import sys

from scannet.cli import user_errors
from scannet.train.run_cli import add_run_arguments, execute, run_overrides
from scannet_platform.train.config import JOB_KEYS, build_config


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The Ray Train flags (scaling, retention, tracking)."""
    ray = parser.add_argument_group("Ray Train (scaling, checkpoints, MLflow)")
    ray.add_argument("--num-workers", type=int, help="DDP workers (default 2)")
    ray.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    ray.add_argument("--cpus-per-worker", type=int, help="CPUs (and torch threads) per worker (default 1)")
    ray.add_argument("--keep-checkpoints", type=int, help="most recent epoch checkpoints kept (default 2)")
    ray.add_argument("--max-failures", type=int, help="worker-group restarts from the last checkpoint (default 1)")
    ray.add_argument(
        "--mlflow-uri", dest="mlflow_tracking_uri", help="default $MLFLOW_TRACKING_URI or $SCANNET_HOME/mlflow.db"
    )
    ray.add_argument("--experiment", help="MLflow experiment (default scannet)")
    ray.add_argument("--registered-model", help="MLflow registered model name (default scannet-<data>-<targets>)")
    ray.add_argument("--verbose", action="store_true", default=None, help="show Ray's and MLflow's own log lines")


def train(args: argparse.Namespace, data: str | None = None) -> int:
    """Build the job config from parsed flags and run it on Ray (``--print-config``: show it only)."""
    overrides = run_overrides(args)
    overrides.update({key: getattr(args, key, None) for key in JOB_KEYS})
    if data is not None and overrides.get("data") is None:
        overrides["data"] = data

    def run(job):
        from scannet_platform.train.driver import run_training

        return run_training(job)

    return execute(build_config(args.preset, args.config, **overrides), args.print_config, run, "training job")


def main(argv: list[str] | None = None, data: str | None = None, description: str = "") -> int:
    parser = argparse.ArgumentParser(description=description)
    add_run_arguments(parser)
    add_job_arguments(parser)
    args = parser.parse_args(argv)
    with user_errors() as status:
        status.code = train(args, data)
    return status.code


if __name__ == "__main__":
    sys.exit(main())
