"""MLflow settings, one dataclass for the training job, the study and the screen (their configs extend it),
one resolver of the tracking URI and one group of flags.

    mlflow_tracking_uri: sqlite:///mlflow.db   # default $MLFLOW_TRACKING_URI, else $SCANNET_HOME/mlflow.db
    experiment: scannet                        # each config has its own default
    registered_model: my-model                 # training and tuning: the model registered at the end
    verbose: true                              # show Ray's and MLflow's own log lines
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from scannet.home import tracking_uri as default_tracking_uri

TRACKING_URI_HELP = "MLflow tracking URI (default $MLFLOW_TRACKING_URI or $SCANNET_HOME/mlflow.db)"


@dataclass(frozen=True)
class TrackingConfig:
    """Where and how a job is tracked in MLflow; a config adds these keys by extending it (flat keys)."""

    mlflow_tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else $SCANNET_HOME/mlflow.db
    experiment: str = "scannet"
    registered_model: str | None = None  # the registered model's name (a config that registers none refuses it)
    verbose: bool = False  # show Ray's worker logs and Ray's / MLflow's INFO messages

    @property
    def tracking_uri(self) -> str:
        """The tracking URI to use: the configured one or the default, a local store's path made absolute."""
        from scannet_platform.tracking.runs import normalized_uri

        return normalized_uri(default_tracking_uri(self.mlflow_tracking_uri))


def add_tracking_arguments(
    parser: argparse.ArgumentParser, config: type[TrackingConfig], registered_model_help: str | None = None
):
    """The MLflow flags (``dest``: the :class:`TrackingConfig` field; None: not given) in a group of their own,
    which is returned; ``--registered-model`` only with ``registered_model_help``. Defaults shown are
    ``config``'s."""
    experiment = next(f.default for f in fields(config) if f.name == "experiment")
    group = parser.add_argument_group("tracking (MLflow)")
    group.add_argument("--mlflow-uri", dest="mlflow_tracking_uri", metavar="URI", help=TRACKING_URI_HELP)
    group.add_argument("--experiment", help=f"MLflow experiment (default {experiment})")
    if registered_model_help is not None:
        group.add_argument("--registered-model", help=registered_model_help)
    group.add_argument("--verbose", action="store_true", default=None, help="show Ray's and MLflow's own log lines")
    return group
