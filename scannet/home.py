"""Where SCANNet keeps what outlives a process: the data cache, training runs and the embedded MLflow store.

One home folder, ``$SCANNET_HOME`` or ``~/scannet``, outside any working directory (``ray job submit``
copies the working directory into a temporary folder that disappears with the Ray session):

    <home>/data/        structures and graph tables, keyed by content and featurizer settings
    <home>/runs/<name>/ one folder per training run (checkpoints, split, config, summary)
    <home>/mlflow.db    the embedded MLflow store when no tracking server is given
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "SCANNET_HOME"


def scannet_home() -> Path:
    """``$SCANNET_HOME`` if set, else ``~/scannet`` (absolute, not created)."""
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / "scannet").expanduser().resolve()


def default_data_cache() -> Path:
    return scannet_home() / "data"


def default_runs_dir() -> Path:
    return scannet_home() / "runs"


def default_mlflow_uri() -> str:
    return f"sqlite:///{scannet_home() / 'mlflow.db'}"


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow tracking URI: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else the embedded store in the home."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_mlflow_uri()
