"""The free-molecule Voronoi back-end against the ray definition, pymatgen and its own invariances.

Ground truth is a Monte Carlo estimate of the ray definition (docs/molecule-voronoi.md):
Ω_ij is the measure of the directions u whose ray from r_i leaves the cell of i through the bisector
plane of (i, j), i.e. j = argmin over k with u·(r_k - r_i) > 0 of |r_k - r_i|² / (2 u·(r_k - r_i)).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.build import molecule

from scannet.featurizer.facets import Facets
from scannet.featurizer.voronoi_molecule import molecule_facets

N_DIRECTIONS = 150_000
MC_SIGMAS = 5.0  # agreement required, in standard deviations of the Monte Carlo estimate


# ------------------------------------------------------------------------------------------------ helpers


def as_dict(facets: Facets) -> dict[tuple[int, int], float]:
    keys = list(zip(facets.center.tolist(), facets.neighbor.tolist()))
    assert len(set(keys)) == len(keys), "a facet appears twice"
    return dict(zip(keys, facets.solid_angle.tolist()))


def monte_carlo(positions: np.ndarray, center: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Estimated Ω of the facet towards every atom (0 for the centre) and the escaping solid angle."""
    directions = rng.normal(size=(N_DIRECTIONS, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)  # [M, 3]
    offset = positions - positions[center]  # [n, 3]
    projection = directions @ offset.T  # [M, n]
    with np.errstate(divide="ignore", invalid="ignore"):  # the centre itself: 0 / 0, never taken
        exit_distance = np.where(projection > 0, (offset**2).sum(axis=1) / (2 * projection), np.inf)  # [M, n]
    exit_atom = np.argmin(exit_distance, axis=1)  # [M]
    escapes = np.isinf(exit_distance[np.arange(N_DIRECTIONS), exit_atom])  # [M]
    counts = np.bincount(exit_atom[~escapes], minlength=len(positions))  # [n]
    return 4 * np.pi * counts / N_DIRECTIONS, 4 * np.pi * escapes.mean()


def mc_tolerance(solid_angle: np.ndarray | float) -> np.ndarray:
    fraction = np.clip(np.asarray(solid_angle) / (4 * np.pi), 1 / N_DIRECTIONS, 1.0)
    return MC_SIGMAS * 4 * np.pi * np.sqrt(fraction * (1 - fraction) / N_DIRECTIONS) + 1e-9


def random_transform(positions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotated, translated and permuted positions, and the permutation (new index -> old index)."""
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    permutation = rng.permutation(len(positions))
    return (positions @ rotation.T + rng.normal(scale=10.0, size=3))[permutation], permutation


def perturbed(name: str, scale: float, seed: int) -> np.ndarray:
    positions = molecule(name).positions
    return positions + np.random.default_rng(seed).normal(scale=scale, size=positions.shape)


def cube(edge: float = 1.4) -> np.ndarray:
    return np.array(list(itertools.product((0.0, edge), repeat=3)))


def grid(shape: tuple[int, int, int], spacing: float = 1.3) -> np.ndarray:
    return np.array(list(itertools.product(*(range(s) for s in shape))), dtype=float) * spacing


def random_cluster(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3.0, 3.0, size=(n, 3))


MONTE_CARLO_CASES = {
    "ethanol": molecule("CH3CH2OH").positions,
    "benzene-perturbed": perturbed("C6H6", 0.05, seed=1),
    "random-cluster": random_cluster(16, seed=2),
    "grid-3x3x2 (cospherical, coplanar hull)": grid((3, 3, 2)),
    "pyrrole (planar)": molecule("C4H4NH").positions,
    "chain (linear)": np.outer([0.0, 1.1, 2.5, 3.4], [0.3, -0.5, 0.8]),
}

DEGENERATE_CASES = {
    "cube": cube(),
    "methane": molecule("CH4").positions,
    "grid-3x3x3": grid((3, 3, 3)),
    "C60": molecule("C60").positions,
    "octahedron+centre": np.vstack([np.zeros(3), 1.6 * np.eye(3), -1.6 * np.eye(3)]),
    "benzene": molecule("C6H6").positions,
}


# ------------------------------------------------------------------------------------------ ground truth


@pytest.mark.parametrize("name", list(MONTE_CARLO_CASES))
def test_solid_angles_match_monte_carlo_of_the_ray_definition(name: str) -> None:
    positions = MONTE_CARLO_CASES[name]
    facets = molecule_facets(positions)
    rng = np.random.default_rng(0)
    n_unbounded = 0
    for center in range(len(positions)):
        estimate, escaping = monte_carlo(positions, center, rng)
        computed = np.zeros(len(positions))
        rows = facets.center == center
        computed[facets.neighbor[rows]] = facets.solid_angle[rows]
        assert np.all(np.abs(computed - estimate) <= mc_tolerance(computed)), (
            f"centre {center}: computed {np.round(computed, 3)}, Monte Carlo {np.round(estimate, 3)}"
        )
        # Sum rule: the facets and the escaping directions cover the sphere.
        assert abs(computed.sum() + escaping - 4 * np.pi) <= mc_tolerance(escaping)
        n_unbounded += escaping > 0
    assert n_unbounded > 0  # outer atoms (unbounded facets) were checked too


def test_sum_rule_is_exact_for_a_bounded_cell() -> None:
    positions = np.vstack([np.zeros(3), random_cluster(30, seed=3)])
    positions[0] = positions[1:].mean(axis=0)  # well inside the cluster
    facets = molecule_facets(positions)
    sums = np.bincount(facets.center, facets.solid_angle, minlength=len(positions))
    assert sums[0] == pytest.approx(4 * np.pi, abs=1e-9)
    assert np.all(sums <= 4 * np.pi + 1e-9)


def test_interior_atoms_match_pymatgen_voronoinn() -> None:
    local_env = pytest.importorskip("pymatgen.analysis.local_env")
    from pymatgen.core import Lattice, Structure
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    box, cutoff = 60.0, 15.0  # every atom within the cutoff, every periodic image beyond it
    n_compared = 0
    for positions in (molecule("CH3CH2OH").positions, molecule("C3H8").positions, random_cluster(30, seed=4)):
        assert pdist(positions).max() < cutoff < box - pdist(positions).max()
        structure = Structure(
            Lattice.cubic(box),
            ["C"] * len(positions),
            positions - positions.mean(axis=0) + box / 2,
            coords_are_cartesian=True,
        )
        voronoi = local_env.VoronoiNN(
            cutoff=cutoff, weight="solid_angle", allow_pathological=True, compute_adj_neighbors=False
        )
        ours = as_dict(molecule_facets(positions))
        interior = sorted(set(range(len(positions))) - set(ConvexHull(positions).vertices.tolist()))
        assert interior
        for center in interior:
            reference = {
                int(info["site"].index): info["solid_angle"]
                for info in voronoi.get_voronoi_polyhedra(structure, center).values()
            }
            mine = {j: omega for (i, j), omega in ours.items() if i == center and omega > 1e-12}
            assert set(mine) == set(reference)
            for j, omega in reference.items():
                assert mine[j] == pytest.approx(omega, rel=1e-6)
                n_compared += 1
    assert n_compared > 50


# -------------------------------------------------------------------------------------------- invariance


INVARIANCE_CASES = {
    "ethanol": molecule("CH3CH2OH").positions,
    "random-cluster": random_cluster(25, seed=5),
    **DEGENERATE_CASES,
}


@pytest.mark.parametrize("name", list(INVARIANCE_CASES))
def test_invariant_to_rotation_translation_and_permutation(name: str) -> None:
    positions = INVARIANCE_CASES[name]
    reference = as_dict(molecule_facets(positions))
    generic = name in ("ethanol", "random-cluster")
    # In ~1 of 10 orientations of the 3x3x3 grid qhull keeps flat simplices of coplanar hull atoms with
    # a Voronoi vertex at ±infinity (their lifted plane is vertical up to rounding): 20 turns catch some.
    rng = np.random.default_rng(4)
    for _ in range(20):
        moved, permutation = random_transform(positions, rng)
        facets = as_dict(molecule_facets(moved))
        facets = {(int(permutation[i]), int(permutation[j])): omega for (i, j), omega in facets.items()}
        if generic:
            assert set(facets) == set(reference)
        else:  # zero-area facets of degenerate geometries may come and go with the triangulation
            assert {k for k, v in facets.items() if v > 1e-9} == {k for k, v in reference.items() if v > 1e-9}
        for key in set(facets) | set(reference):
            assert facets.get(key, 0.0) == pytest.approx(reference.get(key, 0.0), abs=1e-9), key


# ---------------------------------------------------------------------------------- degenerate geometries


@pytest.mark.parametrize("name", list(DEGENERATE_CASES))
def test_degenerate_geometries_give_finite_consistent_facets(name: str) -> None:
    positions = DEGENERATE_CASES[name]
    facets = molecule_facets(positions)
    assert np.all(np.isfinite(facets.solid_angle)) and np.all(facets.solid_angle >= 0)
    sums = np.bincount(facets.center, facets.solid_angle, minlength=len(positions))
    assert np.all(sums <= 4 * np.pi + 1e-9) and np.all(sums > 0)
    # Every facet appears from both sides, at the right distance, with no periodic image.
    assert set(zip(facets.center.tolist(), facets.neighbor.tolist())) == set(
        zip(facets.neighbor.tolist(), facets.center.tolist())
    )
    np.testing.assert_allclose(
        facets.distance, np.linalg.norm(positions[facets.center] - positions[facets.neighbor], axis=1)
    )
    assert not facets.image.any()


def test_cube_facets_are_the_analytic_ones() -> None:
    # Seen from a corner, the facet towards each cube-edge neighbour is a quarter plane whose corner is
    # the cube's centre; the three share 4π minus the escaping octant, 7π/6 each. Face and body
    # diagonals meet the corner's cell only at the centre (Ω = 0).
    positions = cube()
    for (i, j), omega in as_dict(molecule_facets(positions)).items():
        is_edge = np.isclose(np.linalg.norm(positions[i] - positions[j]), 1.4)
        assert omega == pytest.approx(7 * np.pi / 6 if is_edge else 0.0, abs=1e-12), (i, j)


# ------------------------------------------------------------------------------------ planar and linear


def test_planar_facets_follow_the_in_plane_angle() -> None:
    # Equilateral triangle: each Voronoi edge is a ray from the centroid, seen under 120° in the plane.
    triangle = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.75, 1.5 * np.sqrt(3) / 2, 0.0]])
    rotated, _ = random_transform(triangle, np.random.default_rng(9))
    facets = molecule_facets(rotated)
    assert len(facets) == 6
    np.testing.assert_allclose(facets.solid_angle, 2 * (2 * np.pi / 3), atol=1e-12)
    # Square: the edge facets are seen under 135°, the diagonal facets are points.
    square = as_dict(molecule_facets(np.array([[0.0, 0, 0], [1.2, 0, 0], [1.2, 1.2, 0], [0, 1.2, 0]])))
    for (i, j), omega in square.items():
        assert omega == pytest.approx(0.0 if abs(i - j) == 2 else 2 * (3 * np.pi / 4), abs=1e-12)


@pytest.mark.parametrize("noise", [1e-5, 1e-8])
def test_near_planar_molecule_is_close_to_the_planar_limit(noise: float) -> None:
    planar = as_dict(molecule_facets(molecule("C6H6").positions))
    positions = molecule("C6H6").positions
    positions[:, 2] += np.random.default_rng(10).normal(scale=noise, size=len(positions))
    near = as_dict(molecule_facets(positions))
    assert all(np.isfinite(v) for v in near.values())
    for key in set(planar) | set(near):
        assert near.get(key, 0.0) == pytest.approx(planar.get(key, 0.0), abs=100 * noise + 1e-9), key


def test_one_atom_has_no_facets() -> None:
    facets = molecule_facets(np.zeros((1, 3)))
    assert len(facets) == 0 and facets.image.shape == (0, 3)


def test_two_atoms_share_a_whole_plane() -> None:
    facets = molecule_facets(np.array([[0.1, 0.2, 0.3], [1.0, -0.4, 0.9]]))
    assert sorted(zip(facets.center.tolist(), facets.neighbor.tolist())) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(facets.solid_angle, 2 * np.pi)
    np.testing.assert_allclose(facets.distance, np.linalg.norm([0.9, -0.6, 0.6]))


def test_collinear_chain_links_only_consecutive_atoms() -> None:
    along = np.array([2.5, 0.0, 3.4, 1.1])  # not in order along the line
    positions = np.outer(along, [0.3, -0.5, 0.8]) + np.array([1.0, 2.0, 3.0])
    solid = as_dict(molecule_facets(positions))
    assert set(solid) == {(1, 3), (3, 1), (3, 0), (0, 3), (0, 2), (2, 0)}
    assert all(v == pytest.approx(2 * np.pi) for v in solid.values())
