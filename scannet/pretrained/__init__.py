"""Models shipped with SCANNet: each a folder ``scannet/pretrained/<name>/`` holding ``model.pt`` (a checkpoint of
:func:`scannet.checkpoint.save_model`), ``card.json`` (the model card's facts: data, split, recipe, epochs, test
MAE per target with the number of test structures, the fixed test subset a test re-checks) and ``README.md`` (the
card for people, written from ``card.json`` by the release tool ``tools/ship_model.py``).

``scannet predict FILE``, ``scannet explain FILE``, ``scannet screen`` and ``scannet.load()`` use
:data:`DEFAULT_MODEL` when no model is given; any of them also takes a shipped model by name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PRETRAINED_DIR = Path(__file__).resolve().parent
MODEL_FILE, CARD_FILE, README_FILE = "model.pt", "card.json", "README.md"
#: The model used when none is given.
DEFAULT_MODEL = "qm9-homo-lumo-gap-cpu-budget"


def names(root: Path | None = None) -> list[str]:
    """The shipped models (folders holding a ``model.pt``) of ``root`` (default: the package's), sorted."""
    return sorted(path.parent.name for path in (root or PRETRAINED_DIR).glob(f"*/{MODEL_FILE}"))


def _folder(name: str, root: Path | None) -> Path:
    root = root or PRETRAINED_DIR
    if "/" in name or "\\" in name or name.startswith(".") or not (root / name / MODEL_FILE).is_file():
        raise KeyError(f"no shipped model {name!r}; shipped: {', '.join(names(root)) or 'none'}")
    return root / name


def model_path(name: str = DEFAULT_MODEL, root: Path | None = None) -> Path:
    """The checkpoint of the shipped model ``name`` (in ``root``, default the package's folder), its SHA-256 checked
    against the card's; KeyError naming the shipped ones if there is none.

    Raises:
        scannet.checkpoint.CheckpointError: one line, for a file whose SHA-256 is not the card's (or a card without
            one): nothing reads such a file.
    """
    return verified_model(_folder(name, root))


def verified_model(folder: Path) -> Path:
    """``folder/model.pt`` after checking its SHA-256 against ``model_sha256`` in ``folder/card.json``."""
    from scannet.checkpoint import CheckpointError

    model, card_file = folder / MODEL_FILE, folder / CARD_FILE
    try:
        expected = json.loads(card_file.read_text())["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{model}: no recorded SHA-256 on its card {card_file}; refusing to load it") from exc
    digest = hashlib.sha256()
    with model.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"{model}: SHA-256 {actual} differs from {expected} recorded on its card {card_file}; refusing to load it"
        )
    return model


def card(name: str = DEFAULT_MODEL, root: Path | None = None) -> dict[str, Any]:
    """The facts of the shipped model ``name`` (``card.json``)."""
    return json.loads((_folder(name, root) / CARD_FILE).read_text())
