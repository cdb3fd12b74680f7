"""Helpers of the screening tests: tiny models (fast on CPU) and small candidate libraries, built in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from scannet.checkpoint import save_model
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, SCANNConfig

UNITS = {"homo": "eV", "gap": "eV", "alpha": "Bohr^3"}


def tiny_model(
    path: Path, targets: tuple[str, ...] = ("homo", "gap"), seed: int = 0, metadata: dict | None = None
) -> Path:
    """A small untrained SCANN+ checkpoint (random weights from ``seed``) with QM9 elements and units, and
    ``metadata`` added to its metadata (e.g. a recorded ``test_mae``)."""
    torch.manual_seed(seed)
    config = SCANNConfig(
        targets=targets, embedding_dim=8, local_dim=16, global_dim=16, num_heads=2, num_blocks=1, dense_out=16
    )
    recorded = {"units": {t: UNITS.get(t, "") for t in targets}, **(metadata or {})}
    return save_model(path, SCANN(config), FeaturizerConfig.molecules(), recorded)


def two_tiny_models(folder: Path) -> dict[str, Path]:
    """Models "a" and "b": the same small architecture with other random weights (seeds 0 and 1)."""
    return {"a": tiny_model(folder / "a.pt", seed=0), "b": tiny_model(folder / "b.pt", seed=1)}


def candidates(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` molecules (rotated, jittered copies of a few ASE molecules) with ids ``c0000``, ``c0001``, ..."""
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    names = ["CH3CHO", "C6H6", "CH3CH2OH", "H2O", "CH4", "HCN", "CH3COOH", "C4H4O", "CF4", "NH3"]
    rng = np.random.default_rng(seed)
    structures = []
    for k in range(n):
        atoms = molecule(names[k % len(names)])
        rotation = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        atoms.positions = atoms.positions @ rotation.T + rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info["id"] = f"c{k:04d}"
        structures.append(atoms)
    return structures
