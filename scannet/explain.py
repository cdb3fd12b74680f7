"""Global-attention (GA) explanations: per-atom scores exported for OVITO / ASE.

The GA score α_k of atom k says how much its local structure contributes to the pooled structure
vector; the scores of one structure sum to 1, so compare atoms within a structure (or ratios).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from scannet.predictor import Prediction

GA_ARRAY = "ga_score"


def with_ga_scores(atoms: Atoms, prediction: Prediction) -> Atoms:
    """A copy of ``atoms`` with the GA scores as the per-atom array ``ga_score`` and predictions in info."""
    if prediction.ga_scores is None or len(prediction.ga_scores) != len(atoms):
        raise ValueError(f"structure {prediction.name!r}: no GA scores matching its {len(atoms)} atoms")
    annotated = atoms.copy()
    annotated.calc = None
    annotated.arrays[GA_ARRAY] = np.asarray(prediction.ga_scores, dtype=float)
    for target, value in (prediction.values or {}).items():
        annotated.info[f"predicted_{target}"] = value
    return annotated


def write_ga_xyz(path: str | Path, atoms: Atoms, prediction: Prediction) -> Path:
    """Write an extended-XYZ file whose ``ga_score`` column OVITO maps to a particle property."""
    path = Path(path)
    write(path, with_ga_scores(atoms, prediction), format="extxyz")
    return path
