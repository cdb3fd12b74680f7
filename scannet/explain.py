"""Global-attention (GA) explanations: per-atom scores exported for OVITO / ASE.

The GA score α_k of atom k says how much its local structure contributes to the pooled structure
vector; the scores of one structure sum to 1, so compare atoms within a structure (or ratios).

File names derived from structure names (which come from the input and may be hostile) go through
:func:`safe_file_stem` and :func:`unique_file_stems`, and :func:`path_inside` refuses any path that
would resolve outside the output folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from scannet.predictor import Prediction

GA_ARRAY = "ga_score"
GA_SUFFIX = "_ga.xyz"
GA_MULTIFRAME_FILE = "ga_scores.extxyz"

#: The longest stem :func:`safe_file_stem` returns (file systems allow 255 bytes per name).
MAX_STEM_LENGTH = 100

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_stem(name: str) -> str:
    """A file-name stem for ``name``: ASCII letters, digits and ``._-`` kept, every other character
    replaced by ``_``; ``_`` prepended when it would start with a dot; ``structure`` when empty;
    at most ``MAX_STEM_LENGTH`` characters. Never a path: no separators, no ``.``/``..``."""
    stem = _UNSAFE.sub("_", str(name))[:MAX_STEM_LENGTH]
    if not stem:
        return "structure"
    return "_" + stem[: MAX_STEM_LENGTH - 1] if stem.startswith(".") else stem


def unique_file_stems(names: Iterable[str]) -> list[str]:
    """Safe stems for ``names``, made unique in order by suffixes ``-2``, ``-3``, ... (compared
    case-insensitively, for case-insensitive file systems): the same input always gives the same stems."""
    used: set[str] = set()
    stems = []
    for name in names:
        base = safe_file_stem(name)
        stem, k = base, 2
        while stem.casefold() in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(stem.casefold())
        stems.append(stem)
    return stems


def path_inside(folder: str | Path, file_name: str) -> Path:
    """``folder / file_name`` after checking, on resolved paths (symbolic links followed), that it lies
    directly inside ``folder``; raises ``ValueError`` otherwise."""
    folder = Path(folder).resolve()
    path = folder / file_name
    if path.resolve().parent != folder:
        raise ValueError(f"refusing to write {file_name!r}: it resolves to {path.resolve()}, outside {folder}")
    return path


def with_ga_scores(atoms: Atoms, prediction: Prediction, info: dict | None = None) -> Atoms:
    """A copy of ``atoms`` with the GA scores as the per-atom array ``ga_score``, the predictions as
    ``predicted_<target>`` and ``info`` in ``Atoms.info`` (line breaks in text values become spaces, which
    extended XYZ cannot hold)."""
    if prediction.ga_scores is None or len(prediction.ga_scores) != len(atoms):
        raise ValueError(f"structure {prediction.name!r}: no GA scores matching its {len(atoms)} atoms")
    annotated = atoms.copy()
    annotated.calc = None
    annotated.arrays[GA_ARRAY] = np.asarray(prediction.ga_scores, dtype=float)
    for target, value in (prediction.values or {}).items():
        annotated.info[f"predicted_{target}"] = value
    annotated.info.update(info or {})
    for key, value in annotated.info.items():
        if isinstance(value, str):
            annotated.info[key] = " ".join(value.splitlines())
    return annotated


def write_ga_xyz(path: str | Path, atoms: Atoms, prediction: Prediction, info: dict | None = None) -> Path:
    """Write an extended-XYZ file whose ``ga_score`` column OVITO maps to a particle property."""
    path = Path(path)
    write(path, with_ga_scores(atoms, prediction, info), format="extxyz")
    return path


def write_ga_multiframe(path: str | Path, frames: Sequence[Atoms]) -> Path:
    """Write annotated structures (from :func:`with_ga_scores`) as one multi-frame extended-XYZ file."""
    path = Path(path)
    write(path, list(frames), format="extxyz")
    return path
