"""Self-describing model checkpoints: one file holding everything needed to predict.

Contents: format name and version, the scannet version, the model config (targets, element
vocabulary, sizes), the featurizer settings, the weights (including the target mean/std used for
z-scoring) and free-form metadata (units, data provenance, metrics). Files are read with
``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

import scannet
from scannet.featurizer.config import FeaturizerConfig
from scannet.io.atomic import AtomicWrite
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
    with AtomicWrite(path, file=True) as write:  # a crash never leaves a half-written checkpoint
        torch.save(payload, write.path)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SCANN, FeaturizerConfig, dict]:
    """Read a checkpoint written by :func:`save_model`; returns (model in eval mode, featurizer config, metadata).

    Raises:
        CheckpointError: one line, ``<path>: <reason>``, for a missing, unreadable or foreign file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: {_unreadable_reason(exc)}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a SCANNet model checkpoint (no format {FORMAT!r} marker)")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: a SCANNet checkpoint without a valid format version ({version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than this scannet "
            f"({scannet.__version__}) reads ({FORMAT_VERSION}); upgrade scannet"
        )
    try:
        model = SCANN(SCANNConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
        featurizer_config = FeaturizerConfig.from_dict(payload["featurizer_config"])
    except Exception as exc:
        raise CheckpointError(f"{path}: a damaged SCANNet checkpoint ({_first_line(exc)})") from exc
    model.eval()
    return model, featurizer_config, dict(payload.get("metadata") or {})


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), ``Type`` alone when it is empty."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: What torch's safe load says when a file holds something other than tensors and plain data: a global it does not
#: allow or blocks, an object it cannot build, a function it will not call, a TorchScript archive (code).
_OBJECT_REFUSALS = (
    "Unsupported global:",
    "is blocked",
    "Can only create new object",
    "Can only build",
    "Trying to call reduce",
    "TorchScript archive",
)

#: The one reason given for such a file (after its name); never torch's advice on how to load it anyway.
REFUSED_OBJECTS = "scannet refuses it because it holds objects other than tensors"


def _unreadable_reason(exc: BaseException) -> str:
    """One short line for a file ``torch.load(weights_only=True)`` refused (torch's advice text dropped)."""
    text = str(exc)
    if isinstance(exc, EOFError) or not text.strip() and isinstance(exc, pickle.UnpicklingError):
        return "not a readable checkpoint: the file is empty or ends early"
    if any(marker in text for marker in _OBJECT_REFUSALS):
        return REFUSED_OBJECTS
    if "WeightsUnpickler error:" in text:
        detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split())
        detail = detail.split(" Check the documentation", 1)[0]
        return f"not a PyTorch checkpoint file (unpickling failed: {_without_advice(detail)[:150]})"
    if "PytorchStreamReader" in text or "zip archive" in text:
        detail = text.split(".", 1)[0].replace("PytorchStreamReader failed reading zip archive: ", "")
        return f"not a readable checkpoint: the file is truncated or corrupted ({detail[:150]})"
    if "legacy .tar format" in text:
        return "not a readable checkpoint: an old PyTorch .tar file, which scannet does not read"
    return f"not a readable checkpoint ({_without_advice(_first_line(exc))})"


def _without_advice(text: str) -> str:
    """``text`` up to torch's advice on loading the file unsafely (``weights_only=False``), if it gives any."""
    for advice in ("Weights only load failed.", "In PyTorch 2.6", "Please use `torch.serialization", "Re-running"):
        text = text.split(advice, 1)[0]
    text = text.strip().rstrip(":").strip()
    return text if text and "weights_only" not in text else "the safe load refused it"


#: Model references resolved through the platform's MLflow registry (entry point ``scannet.resolvers: mlflow``).
MODEL_URI_PREFIXES = ("models:/", "runs:/")


def resolve_checkpoint(reference: str | Path | None = None, tracking_uri: str | None = None) -> Path:
    """A checkpoint file from a path, the name of a shipped model (:mod:`scannet.pretrained`; ``None``: the default
    one), or an MLflow model URI (``models:/name/1``, ``models:/name@best``, ``runs:/...``) downloaded and verified
    by the platform; ``tracking_uri`` defaults as in :func:`scannet.home.tracking_uri`."""
    from scannet import pretrained

    if reference is None:
        return pretrained.model_path()
    text = str(reference)
    if text.startswith(MODEL_URI_PREFIXES):
        from importlib.metadata import entry_points

        from scannet.home import tracking_uri as default_tracking_uri

        resolvers = [e for e in entry_points(group="scannet.resolvers") if e.name == "mlflow"]
        if not resolvers:
            raise CheckpointError(f"{text}: MLflow model URIs need the platform (pip install scannet[platform])")
        return Path(resolvers[0].load()(text, default_tracking_uri(tracking_uri)))
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if text in pretrained.names():
        return pretrained.model_path(text)
    raise CheckpointError(
        f"{path}: no such checkpoint file (nor a shipped model: {', '.join(pretrained.names()) or 'none'})"
    )
