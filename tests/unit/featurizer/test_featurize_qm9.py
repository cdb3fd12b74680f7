"""The featurizer on real QM9 molecules: never fails, reproduces the reference's box treatment, and
atoms left without neighbours are legal input for the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from scannet.data.qm9 import load_qm9
from scannet.featurizer import FeaturizerConfig, featurize, featurize_many
from scannet.model import SCANN, SCANNConfig
from scannet.predictor import Predictor


@pytest.fixture(scope="module")
def first_2000():
    return load_qm9(limit=2000, targets=[])


def isolated_atoms(graphs) -> tuple[int, int]:
    counts = [g.n_atoms - len(np.unique(g.edge_center)) for g in graphs]
    return sum(counts), sum(c > 0 for c in counts)


def test_exact_mode_featurizes_every_molecule(first_2000):
    graphs, errors = featurize_many(first_2000)
    assert errors == []
    assert all(g.n_edges > 0 for g in graphs)
    edges = np.concatenate([g.solid_angle for g in graphs])
    relative = np.concatenate([g.solid_angle_norm for g in graphs])
    distance = np.concatenate([g.distance for g in graphs])
    assert edges.min() >= 0.4 and relative.min() >= 0.2 and distance.max() <= 4.0
    assert relative.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_box10_mode_reproduces_the_reference_isolated_atom_count(first_2000):
    """The reference (pymatgen in a >= 10 Å box) leaves 128 atoms in 83 of these molecules without neighbours."""
    graphs, errors = featurize_many(first_2000, FeaturizerConfig(molecule_mode="box10"))
    assert errors == []
    assert isolated_atoms(graphs) == (128, 83)


def test_featurization_is_deterministic(first_2000):
    for atoms in first_2000[:50]:
        a, b = featurize(atoms), featurize(atoms.copy())
        for field in ("edge_center", "edge_neighbor", "distance", "solid_angle", "solid_angle_norm"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_settings_change_the_graph():
    ethanol = molecule("CH3CH2OH")
    loose = featurize(
        ethanol, FeaturizerConfig(solid_angle_threshold=0.0, relative_threshold=0.0, distance_threshold=10)
    )
    default = featurize(ethanol)
    strict = featurize(ethanol, FeaturizerConfig(distance_threshold=1.2))
    assert loose.n_edges > default.n_edges > strict.n_edges > 0
    assert FeaturizerConfig().content_hash() != FeaturizerConfig(distance_threshold=1.2).content_hash()


@pytest.mark.parametrize("g_update", [True, False], ids=["scann+", "scann"])
def test_atoms_without_neighbours_give_finite_outputs(g_update):
    """In the reference's box treatment the hydroxyl H of methanol has no neighbour: legal input."""
    methanol = molecule("CH3OH")
    config = FeaturizerConfig(molecule_mode="box10")
    graph = featurize(methanol, config)
    assert graph.n_atoms - len(np.unique(graph.edge_center)) >= 1
    torch.manual_seed(0)
    result = Predictor(SCANN(SCANNConfig(g_update=g_update)), config).predict_one(methanol)
    assert np.isfinite(result.values["homo"])
    assert np.all(np.isfinite(result.ga_scores)) and result.ga_scores.sum() == pytest.approx(1.0, abs=1e-6)
