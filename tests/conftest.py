"""Shared fixtures, built in code (no downloads).

Naming: ``molecules`` are non-periodic ASE structures with QM9 elements (H, C, N, O, F); ``crystals``
are periodic; ``synthetic_graphs`` are hand-made neighbour graphs that need no featurizer.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from scannet.featurizer.neighbors import Graph


@pytest.fixture(autouse=True, scope="session")
def scannet_home(tmp_path_factory):
    """Tests never write into the user's ~/scannet: $SCANNET_HOME is a temporary folder for the session."""
    import os

    previous = os.environ.get("SCANNET_HOME")
    os.environ["SCANNET_HOME"] = str(tmp_path_factory.mktemp("scannet-home"))
    yield
    if previous is None:
        os.environ.pop("SCANNET_HOME", None)
    else:
        os.environ["SCANNET_HOME"] = previous


def make_molecules() -> list[Atoms]:
    names = ["CH3CHO", "C6H6", "CH3CH2OH", "H2O", "CH4", "HCN", "CH3COOH", "C4H4O", "CF4"]
    structures = [molecule(name) for name in names]
    rng = np.random.default_rng(7)
    for atoms in structures:  # break the exact symmetries of the ASE geometries, deterministically
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
    structures.append(Atoms("C", positions=[[0.0, 0.0, 0.0]], info={"name": "lone-carbon"}))
    for atoms, name in zip(structures, names):
        atoms.info["name"] = name
    return structures


@pytest.fixture(scope="session")
def molecules() -> list[Atoms]:
    return make_molecules()


def synthetic_graph(n_atoms: int, rng: np.random.Generator, degree: int = 5) -> Graph:
    """A random graph with QM9 elements; every atom has ``degree`` neighbours (none for one atom)."""
    numbers = rng.choice([1, 6, 7, 8, 9], n_atoms)
    if n_atoms == 1:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return Graph(numbers, empty_i, empty_i, empty_f, empty_f, empty_f)
    center = np.repeat(np.arange(n_atoms), degree)
    neighbor = (center + rng.integers(1, n_atoms, len(center))) % n_atoms

    def uniform(lo, hi):
        return rng.uniform(lo, hi, len(center)).astype(np.float32)

    return Graph(numbers, center, neighbor, uniform(0.9, 4.0), uniform(0.4, 3.0), uniform(0.2, 1.0))


@pytest.fixture()
def synthetic_graphs() -> list[Graph]:
    rng = np.random.default_rng(0)
    return [synthetic_graph(n, rng) for n in (5, 1, 12, 29, 2, 9)]
