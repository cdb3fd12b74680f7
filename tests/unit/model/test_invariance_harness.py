"""Every model variant passes the invariance / batching harness of `scannet.testing` on real molecules.

The harness itself is shown to catch a model that is not rotation or permutation invariant.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, SCANNConfig
from scannet.predictor import Predictor
from scannet.testing import check_permutation_invariance, check_rigid_motion_invariance, run_all_checks

VARIANTS = {
    "scann+": SCANNConfig(),
    "scann": SCANNConfig(g_update=False),
    "scann+-multitarget": SCANNConfig(targets=("homo", "lumo", "gap")),
    "scann-no-ga-norm": SCANNConfig(g_update=False, use_ga_norm=False),
}


def make_predictor(config: SCANNConfig, dtype=torch.float64) -> Predictor:
    torch.manual_seed(0)
    model = SCANN(config).to(dtype)
    n = len(config.targets)
    model.set_target_statistics(torch.linspace(-5, 5, n), torch.linspace(0.5, 2, n))
    return Predictor(model, FeaturizerConfig.molecules())


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_model_variant_passes_the_harness(variant, dtype, tol, molecules):
    run_all_checks(make_predictor(VARIANTS[variant], dtype), molecules, rtol=tol, atol=tol)


class BrokenFeaturization(Predictor):
    """A predictor whose graphs pass through ``broken(graph, atoms)`` after featurization."""

    def featurize_each(self, structures, names):
        return [
            (None, error) if graph is None else (self.broken(graph, atoms), None)
            for atoms, (graph, error) in zip(structures, super().featurize_each(structures, names))
        ]


class AxisProjectedDistances(BrokenFeaturization):
    """A deliberately broken featurization: distances along x only (not rotation invariant)."""

    @staticmethod
    def broken(graph, atoms):
        dx = np.abs(atoms.positions[graph.edge_center, 0] - atoms.positions[graph.edge_neighbor, 0])
        return dataclasses.replace(graph, distance=dx.astype(np.float32))


class OrderDependentWeights(BrokenFeaturization):
    """A deliberately broken featurization: neighbour weights depend on the atom index."""

    @staticmethod
    def broken(graph, atoms):
        weight = (graph.edge_neighbor + 1) / (len(atoms) + 1)
        return dataclasses.replace(graph, solid_angle=(graph.solid_angle * weight).astype(np.float32))


def test_harness_catches_a_rotation_dependent_model(molecules):
    base = make_predictor(SCANNConfig())
    broken = AxisProjectedDistances(base.model, base.featurizer_config)
    with pytest.raises(AssertionError, match="rotation"):
        check_rigid_motion_invariance(broken, molecules[:4], rtol=1e-8, atol=1e-8)


def test_harness_catches_an_order_dependent_model(molecules):
    base = make_predictor(SCANNConfig())
    broken = OrderDependentWeights(base.model, base.featurizer_config)
    with pytest.raises(AssertionError, match="permutation"):
        check_permutation_invariance(broken, molecules[:4], rtol=1e-8, atol=1e-8)


def test_crystal_model_passes_the_harness():
    from ase.build import bulk

    rng = np.random.default_rng(3)
    crystals = [bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.64), bulk("Si", "diamond", a=5.43) * (2, 1, 1)]
    for atoms in crystals:
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    config = SCANNConfig(elements=(11, 14, 17, 29), max_atomic_number=29, gaussian_distance_max=6.0)
    torch.manual_seed(0)
    predictor = Predictor(SCANN(config).double(), FeaturizerConfig.crystals())
    run_all_checks(predictor, crystals, rtol=1e-8, atol=1e-8)
