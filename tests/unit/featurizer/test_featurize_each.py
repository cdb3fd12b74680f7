"""Featurizing many structures at once (free molecules vectorised together) gives exactly what featurizing each
one alone gives: the same graphs, bit for bit, and the same error for each bad structure, whatever else shares
the call."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from scannet.data.qm9 import load_qm9
from scannet.featurizer import FeaturizerConfig, Graph, featurize, featurize_each
from scannet.structures import StructureError, validate_structure, validate_structures

FIELDS = ("numbers", "edge_center", "edge_neighbor", "distance", "solid_angle", "solid_angle_norm")


def assert_same_graph(a: Graph, b: Graph, name: str) -> None:
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{name}: {field} differs"


def mixed_library() -> list[Atoms]:
    """QM9 molecules with every special case among them: flat, linear, tiny, periodic and broken structures."""
    qm9 = load_qm9(limit=300, targets=[])
    nearly_flat = molecule("C6H6")
    nearly_flat.positions[0, 2] += 1e-5  # 3D by less than 10x the flatness tolerance: decided one by one
    overlapping = molecule("CH4")
    overlapping.positions[1] = overlapping.positions[0] + 0.05
    not_finite = molecule("H2O")
    not_finite.positions[2, 1] = np.nan
    huge = molecule("CH4")
    huge.positions[3] = 2e6
    special = [
        molecule("C6H6"),  # planar
        nearly_flat,
        molecule("CO2"),  # linear
        Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]),  # diatomic
        Atoms("He", positions=[[1.0, 2.0, 3.0]]),  # one atom: no facets
        Atoms(),  # no atoms: an error
        overlapping,
        not_finite,
        huge,
        bulk("Si", "diamond", a=5.43),  # periodic: featurized on its own
        molecule("C60"),
        Atoms(numbers=[0], positions=[[0.0, 0, 0]]),  # atomic number 0: an error
    ]
    library = list(qm9[:150])
    for k, atoms in enumerate(special):
        library.insert(7 * k + 3, atoms)
    return library + list(qm9[150:])


def one_by_one(structures, config, names):
    out = []
    for atoms, name in zip(structures, names):
        try:
            out.append(featurize(atoms, config, name))
        except StructureError as exc:
            out.append(exc)
    return out


@pytest.mark.parametrize("config", [FeaturizerConfig.molecules(), FeaturizerConfig.crystals()], ids=["4A", "6A"])
def test_joint_featurization_equals_one_at_a_time(config):
    library = mixed_library()
    names = [f"s{k}" for k in range(len(library))]
    together = featurize_each(library, config, names)
    alone = one_by_one(library, config, names)
    assert len(together) == len(library)
    n_errors = 0
    for name, a, b in zip(names, together, alone):
        if isinstance(b, StructureError):
            n_errors += 1
            assert isinstance(a, StructureError) and str(a) == str(b), name
        else:
            assert_same_graph(a, b, name)
    assert n_errors == 5  # empty, overlapping, NaN, beyond 1e6 Å, Z = 0
    assert sum(isinstance(g, Graph) and g.n_edges > 0 for g in together) == len(library) - n_errors - 1  # He alone


def test_a_molecule_gets_the_same_graph_in_any_company():
    qm9 = load_qm9(limit=64, targets=[])
    target = qm9[10]
    alone = featurize(target, name="t")
    for company in (qm9[:10] + qm9[11:], qm9[40:], [molecule("CO2"), molecule("C6H6")]):
        for position in (0, len(company) // 2, len(company)):
            batch = company[:position] + [target] + company[position:]
            assert_same_graph(featurize_each(batch)[position], alone, f"position {position}")


def test_validate_structures_flags_exactly_what_validate_structure_rejects():
    library = mixed_library()
    twin = molecule("CH4")  # the same coordinates as the next molecule: molecules never overlap each other
    library += [twin, twin.copy()]
    names = [f"s{k}" for k in range(len(library))]
    expected = []
    for atoms, name in zip(library, names):
        try:
            validate_structure(atoms, name)
            expected.append(None)
        except StructureError as exc:
            expected.append(str(exc))
    got = [None if e is None else str(e) for e in validate_structures(library, names)]
    assert got == expected
    assert sum(e is not None for e in got) == 5


def test_anything_raised_for_one_structure_is_its_error_and_the_rest_are_featurized(monkeypatch):
    import scannet.structures as structures_module

    library = mixed_library()[:40]
    names = [f"s{k}" for k in range(len(library))]
    expected = featurize_each(library, names=names)
    original = structures_module.validate_structure

    def fragile(atoms, name):
        if name == "s7":
            raise KeyError("cell")
        return original(atoms, name)

    def broken_vectorised_checks(molecules):
        raise MemoryError

    monkeypatch.setattr(structures_module, "validate_structure", fragile)
    monkeypatch.setattr(structures_module, "_flag_molecules", broken_vectorised_checks)  # all one by one
    got = featurize_each(library, names=names)
    assert str(got[7]) == "structure 's7': featurization failed: KeyError: 'cell'"
    for k, (a, b) in enumerate(zip(got, expected)):
        if k == 7:
            continue
        if isinstance(b, StructureError):
            assert str(a) == str(b)
        else:
            assert_same_graph(a, b, names[k])
