"""Models shipped with SCANNet: each a folder ``scannet/pretrained/<name>/`` holding ``model.pt`` (a checkpoint of
:func:`scannet.checkpoint.save_model`), ``card.json`` (the model card's facts: data, split, recipe, epochs, test
MAE per target with the number of test structures, the fixed test subset a test re-checks) and ``README.md`` (the
card for people, written from ``card.json`` by the release tool ``tools/ship_model.py``).

``scannet predict FILE``, ``scannet explain FILE``, ``scannet screen`` and ``scannet.load()`` use
:data:`DEFAULT_MODEL` when no model is given; any of them also takes a shipped model by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRETRAINED_DIR = Path(__file__).resolve().parent
MODEL_FILE, CARD_FILE, README_FILE = "model.pt", "card.json", "README.md"
#: The model used when none is given.
DEFAULT_MODEL = "qm9-homo-lumo-gap-cpu"


def names() -> list[str]:
    """The shipped models (folders holding a ``model.pt``), sorted."""
    return sorted(path.parent.name for path in PRETRAINED_DIR.glob(f"*/{MODEL_FILE}"))


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """The checkpoint of the shipped model ``name``; KeyError naming the shipped ones if there is none."""
    path = PRETRAINED_DIR / name / MODEL_FILE
    if "/" in name or name.startswith(".") or not path.is_file():
        raise KeyError(f"no shipped model {name!r}; shipped: {', '.join(names()) or 'none'}")
    return path


def card(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The facts of the shipped model ``name`` (``card.json``)."""
    return json.loads((model_path(name).parent / CARD_FILE).read_text())
