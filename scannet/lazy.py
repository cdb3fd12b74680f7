"""Package namespaces that import their heavy modules (torch) only when a name is first used.

``scannet.model`` and ``scannet.train`` re-export classes from modules that import torch; their configs and presets
(``scannet.model.config``, ``scannet.train.run_config``) do not. With :func:`lazy_exports` importing a config
module no longer imports torch, so ``scannet --help`` builds every command's flags without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to its module (relative to
    the package, e.g. ``{"SCANN": "scann"}``), imported on first access (PEP 562)."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def dir_() -> list[str]:
        return sorted(exports)

    return getattr_, dir_
