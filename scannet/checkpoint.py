"""Self-describing model checkpoints: one file holding everything needed to predict.

Contents: format name and version, the scannet version, the model config (targets, element
vocabulary, sizes), the featurizer settings, the weights (including the target mean/std used for
z-scoring) and free-form metadata (units, data provenance, metrics). Files are read with
``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import scannet
from scannet.featurizer.config import FeaturizerConfig
from scannet.model.config import SCANNConfig
from scannet.model.scann import SCANN

FORMAT = "scannet-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable SCANNet checkpoint, with the path and the reason."""


def save_model(
    path: str | Path,
    model: SCANN,
    featurizer_config: FeaturizerConfig,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` with its featurizer settings to ``path`` (parent folders are created).

    Refuses a featurizer whose edges reach beyond the model's distance basis.
    """
    featurizer_config.check_distance_basis(model.config.gaussian_distance_max, f"save_model({path})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scannet_version": scannet.__version__,
        "model_config": model.config.to_dict(),
        "featurizer_config": featurizer_config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SCANN, FeaturizerConfig, dict]:
    """Read a checkpoint written by :func:`save_model`; returns (model in eval mode, featurizer config, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a SCANNet model checkpoint")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {payload['format_version']} is newer than this scannet "
            f"({scannet.__version__}) reads ({FORMAT_VERSION}); upgrade scannet"
        )
    model = SCANN(SCANNConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, FeaturizerConfig.from_dict(payload["featurizer_config"]), payload["metadata"]
