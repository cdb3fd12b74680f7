"""The Ray training job: ``scannet train --ray`` (this module is the ``scannet.backends: ray`` entry point) and
``jobs/train_qm9.py``, ``jobs/train.py`` (a command module: HELP, DESCRIPTION, add_arguments, run).

The run flags are the library's (:mod:`scannet.cli.train`); this adds scaling, retention and tracking.
"""

from __future__ import annotations

import argparse
import sys

from scannet.cli import command_main
from scannet.cli.args import config_overrides
from scannet.cli.train import DESCRIPTION, add_run_arguments, execute
from scannet_platform.tracking.config import add_tracking_arguments
from scannet_platform.train.config import TrainJobConfig, build_config

HELP = "train SCANN/SCANN+ on Ray Train (DDP), tracked in MLflow"
__all__ = ["DESCRIPTION", "HELP", "add_arguments", "add_job_arguments", "main", "run", "train"]


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The Ray Train flags (scaling, retention, tracking)."""
    ray = parser.add_argument_group("Ray Train (scaling, checkpoints)")
    ray.add_argument("--num-workers", type=int, help="DDP workers (default 2)")
    ray.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    ray.add_argument("--cpus-per-worker", type=int, help="CPUs (and torch threads) per worker (default 1)")
    ray.add_argument("--keep-checkpoints", type=int, help="most recent epoch checkpoints kept (default 2)")
    ray.add_argument("--max-failures", type=int, help="worker-group restarts from the last checkpoint (default 1)")
    add_tracking_arguments(
        parser, TrainJobConfig, registered_model_help="MLflow registered model name (default scannet-<data>-<targets>)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    add_job_arguments(parser)


def train(args: argparse.Namespace) -> int:
    """Build the job config from parsed flags and run it on Ray (``--print-config``: show it only)."""

    def run_job(job):
        from scannet_platform.train.driver import run_training

        return run_training(job)

    config = build_config(args.preset, args.config, **config_overrides(args, TrainJobConfig))
    return execute(config, args.print_config, run_job, "training job")


run = train


def main(argv: list[str] | None = None, data: str | None = None, description: str = "") -> int:
    """``jobs/train*.py``: ``data`` is the default of ``--data``; ``description`` the script's text for --help."""
    defaults = {"data": data} if data is not None else {}
    return command_main(sys.modules[__name__], argv, description=description or DESCRIPTION, **defaults)


if __name__ == "__main__":
    sys.exit(main())
