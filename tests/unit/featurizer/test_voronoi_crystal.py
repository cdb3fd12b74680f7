"""The periodic Voronoi back-end against pymatgen's VoronoiNN, the reference's box10 molecules, and invariances.

pymatgen is the ground truth here (the SCANN reference calls it) and is imported only by these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from scannet.featurizer.facets import Facets
from scannet.featurizer.voronoi_crystal import boxed_molecule, crystal_facets

pymatgen_core = pytest.importorskip("pymatgen.core")
local_env = pytest.importorskip("pymatgen.analysis.local_env")

CUTOFF = 7.0
RTOL = 1e-6

FacetKey = tuple[int, int, tuple[int, int, int]]  # (centre, neighbour, image)


# ------------------------------------------------------------------------------------------------ helpers


def make_voronoi_nn(cutoff: float = CUTOFF):
    return local_env.VoronoiNN(
        weight="solid_angle", cutoff=cutoff, allow_pathological=True, compute_adj_neighbors=False
    )


def reference_polyhedra(structure, carry_cutoff: bool = True) -> list[dict]:
    """The reference's loop: ONE VoronoiNN for all sites (pymatgen grows its ``cutoff`` in place, so the
    growth carries over to later sites), and on any error the cutoff + 5 Å, retried up to 30 Å.
    ``carry_cutoff=False`` starts every site from a fresh VoronoiNN instead."""
    voronoi = make_voronoi_nn()
    polyhedra = []
    for site in range(len(structure)):
        if not carry_cutoff:
            voronoi = make_voronoi_nn()
        while True:
            try:
                polyhedra.append(voronoi.get_voronoi_polyhedra(structure, site))
                break
            except Exception:  # noqa: BLE001 (the reference catches everything)
                voronoi.cutoff += 5
                if voronoi.cutoff > 30:
                    polyhedra.append({})
                    break
    return polyhedra


def to_facet_dict(polyhedra: list[dict]) -> dict[FacetKey, float]:
    facets = {}
    for site, polyhedron in enumerate(polyhedra):
        for info in polyhedron.values():
            key = (site, int(info["site"].index), tuple(int(v) for v in info["site"].image))
            assert key not in facets
            facets[key] = float(info["solid_angle"])
    return facets


def pymatgen_facets(structure) -> dict[FacetKey, float]:
    return to_facet_dict(reference_polyhedra(structure))


def our_facets(facets: Facets) -> dict[FacetKey, float]:
    keys = [
        (int(c), int(n), tuple(int(v) for v in im)) for c, n, im in zip(facets.center, facets.neighbor, facets.image)
    ]
    assert len(set(keys)) == len(keys)
    return dict(zip(keys, facets.solid_angle.tolist()))


def assert_same_facets(ours: dict[FacetKey, float], reference: dict[FacetKey, float]) -> None:
    only_ours, only_reference = set(ours) - set(reference), set(reference) - set(ours)
    assert not only_ours and not only_reference, (
        f"only ours: {sorted(only_ours)[:5]}, only pymatgen: {sorted(only_reference)[:5]}"
    )
    keys = sorted(reference)
    np.testing.assert_allclose([ours[k] for k in keys], [reference[k] for k in keys], rtol=RTOL, atol=1e-12)


def to_pymatgen_structure(atoms: Atoms):
    return pymatgen_core.Structure(
        pymatgen_core.Lattice(atoms.cell[:]), atoms.get_chemical_symbols(), atoms.positions, coords_are_cartesian=True
    )


def reference_boxed_structure(atoms: Atoms):
    """``compute_voronoi_neighbor_wrapper`` of the reference for a molecule."""
    extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
    a, b, c = (max(10.0, float(e) + 0.1) for e in extent)
    mol = pymatgen_core.Molecule(atoms.get_chemical_symbols(), atoms.positions)
    return mol.get_boxed_structure(a, b, c, reorder=False)


def canonical(facets: Facets, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Rows (centre, neighbour, r_image - r_centre, solid angle, distance), sorted: free of image labels."""
    vectors = positions[facets.neighbor] + facets.image @ cell - positions[facets.center]  # [F, 3]
    rows = np.column_stack([facets.center, facets.neighbor, vectors, facets.solid_angle, facets.distance])
    order = np.lexsort((*np.round(vectors, 6).T[::-1], facets.neighbor, facets.center))
    return rows[order]


def sheared(atoms: Atoms, shear: float) -> Atoms:
    atoms = atoms.copy()
    cell = atoms.cell[:].copy()
    cell[1] += shear * cell[0]
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def rattled(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(0.0, stdev, atoms.positions.shape)
    return atoms


CRYSTALS = {
    "Cu-fcc": lambda: bulk("Cu", "fcc", a=3.61),
    "Fe-bcc": lambda: bulk("Fe", "bcc", a=2.87),
    "NaCl-rocksalt": lambda: bulk("NaCl", "rocksalt", a=5.64),
    "Si-diamond": lambda: bulk("Si", "diamond", a=5.43),
    "Mg-hcp": lambda: bulk("Mg", "hcp", a=3.21, c=5.21),
    "Cu-fcc-cubic": lambda: bulk("Cu", "fcc", a=3.61, cubic=True),
    "NaCl-2x1x1": lambda: bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1),
    "Si-cubic-rattled": lambda: rattled(bulk("Si", "diamond", a=5.43, cubic=True), 0.05, seed=1),
    "Cu-2x2x1-rattled": lambda: rattled(bulk("Cu", "fcc", a=3.61) * (2, 2, 1), 0.03, seed=2),
    "Fe-bcc-sheared": lambda: sheared(bulk("Fe", "bcc", a=2.87, cubic=True), 0.15),
    "NaCl-sheared-rattled": lambda: rattled(sheared(bulk("NaCl", "rocksalt", a=5.64, cubic=True), 0.2), 0.04, seed=3),
}


def _chain(n_carbons: int) -> Atoms:
    """A zig-zag carbon chain, about 1.27 Å per atom along x (9 Å for 8 atoms)."""
    return Atoms(f"C{n_carbons}", positions=[[1.27 * k, 0.9 * (k % 2), 0.1 * k] for k in range(n_carbons)])


#: QM9 #26, propynal (O=CC#C), Å.
PROPYNAL = [
    [-0.0677611954, -0.0423383835, 0.0028248878],
    [-0.0056294518, 1.1638287916, 0.0074386245],
    [1.2298527186, 1.9133999686, 0.0002878123],
    [2.2362532244, 2.5743097025, -0.0052927696],
    [-0.9167070054, 1.7946754562, 0.0178135153],
    [3.1342966196, 3.1437026746, -0.0103765604],
]

MOLECULES = {
    "ethanol": lambda: molecule("CH3CH2OH"),
    "benzene": lambda: molecule("C6H6"),
    "NH3": lambda: molecule("NH3"),  # N's cell has no finite facet at 7 Å: the reference retries at 12 Å
    "C60": lambda: molecule("C60"),  # 7 Å across: periodic images become facets
    "C8-chain": lambda: _chain(8),
}


# -------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_crystal_facets_match_pymatgen(name: str) -> None:
    atoms = CRYSTALS[name]()
    facets = crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc, CUTOFF)
    assert_same_facets(our_facets(facets), pymatgen_facets(to_pymatgen_structure(atoms)))


@pytest.mark.parametrize("name", sorted(MOLECULES))
def test_box10_molecule_facets_match_pymatgen(name: str) -> None:
    atoms = MOLECULES[name]()
    positions, cell = boxed_molecule(atoms.positions, atoms.get_masses())
    facets = crystal_facets(positions, cell, np.ones(3, bool), CUTOFF)
    assert_same_facets(our_facets(facets), pymatgen_facets(reference_boxed_structure(atoms)))
    extent = np.ptp(atoms.positions, axis=0).max()
    if extent > 6.0:  # images of the molecule itself are within the reference's d_t = 4 Å
        images = facets.image.any(axis=1)
        assert (images & (facets.distance <= 4.0) & (facets.solid_angle >= 0.4)).any()


def test_grown_cutoff_carries_over_to_later_sites() -> None:
    """Propynal (QM9 #26) in box10: an early site needs a larger cutoff and the later sites keep it, as in
    the reference; a fresh 7 Å cutoff per site would give other facets."""
    atoms = Atoms("OC3H2", positions=PROPYNAL)
    structure = reference_boxed_structure(atoms)
    positions, cell = boxed_molecule(atoms.positions, atoms.get_masses())
    ours = our_facets(crystal_facets(positions, cell, np.ones(3, bool), CUTOFF))
    assert_same_facets(ours, pymatgen_facets(structure))
    fresh_per_site = to_facet_dict(reference_polyhedra(structure, carry_cutoff=False))
    assert set(fresh_per_site) != set(ours)


def test_boxed_molecule_matches_get_boxed_structure() -> None:
    atoms = molecule("CH3CH2OH")
    reference = reference_boxed_structure(atoms)
    masses = [site.species.weight for site in reference]  # pymatgen's masses: then the centring is identical
    positions, cell = boxed_molecule(atoms.positions, masses)
    np.testing.assert_array_equal(cell, reference.lattice.matrix)
    np.testing.assert_allclose(positions, reference.cart_coords, atol=1e-12)
    long = _chain(10)
    _, cell = boxed_molecule(long.positions, long.get_masses())
    np.testing.assert_allclose(np.diag(cell), [np.ptp(long.positions[:, 0]) + 0.1, 10.0, 10.0])


def test_translation_invariance() -> None:
    atoms = CRYSTALS["NaCl-sheared-rattled"]()
    reference = canonical(crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc), atoms.positions, atoms.cell[:])
    shifted = atoms.copy()
    shifted.positions += np.array([1.3, -0.7, 2.9])
    shifted.wrap()
    facets = crystal_facets(shifted.positions, shifted.cell[:], shifted.pbc)
    np.testing.assert_allclose(canonical(facets, shifted.positions, shifted.cell[:]), reference, rtol=1e-9, atol=1e-9)


def test_permutation_invariance() -> None:
    """Holds when no site needs a grown cutoff (the carried cutoff makes the result depend on atom order)."""
    atoms = CRYSTALS["NaCl-sheared-rattled"]()
    facets = crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc)
    permutation = np.random.default_rng(4).permutation(len(atoms))
    permuted = atoms[permutation]
    permuted_facets = crystal_facets(permuted.positions, permuted.cell[:], permuted.pbc)
    back = Facets(
        center=permutation[permuted_facets.center],
        neighbor=permutation[permuted_facets.neighbor],
        solid_angle=permuted_facets.solid_angle,
        distance=permuted_facets.distance,
        image=permuted_facets.image,
    )
    np.testing.assert_allclose(
        canonical(back, atoms.positions, atoms.cell[:]), canonical(facets, atoms.positions, atoms.cell[:]), atol=1e-9
    )


def test_output_is_deterministic_and_well_formed() -> None:
    atoms = CRYSTALS["Si-cubic-rattled"]()
    first = crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc)
    second = crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc)
    for name in ("center", "neighbor", "solid_angle", "distance", "image"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert np.all(np.diff(first.center) >= 0)
    vectors = atoms.positions[first.neighbor] + first.image @ atoms.cell[:] - atoms.positions[first.center]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), first.distance, atol=1e-12)


def test_closed_cells_cover_the_sphere() -> None:
    """In a bulk crystal every cell is closed: its facets' solid angles sum to 4π."""
    atoms = CRYSTALS["Cu-2x2x1-rattled"]()
    facets = crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc)
    totals = np.bincount(facets.center, weights=facets.solid_angle)
    np.testing.assert_allclose(totals, 4 * np.pi, rtol=1e-9)


def test_images_only_along_periodic_axes() -> None:
    slab = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    slab.pbc = (True, True, False)
    facets = crystal_facets(slab.positions, slab.cell[:], slab.pbc)
    assert len(facets) > 0
    assert np.all(facets.image[:, 2] == 0)
    assert np.any(facets.image[:, :2] != 0)


def test_qhull_failure_grows_the_cutoff() -> None:
    """Two atoms in a 12 Å box: 2 points within 7 Å, qhull needs the doubled cutoff (as pymatgen)."""
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=np.eye(3) * 12.0, pbc=True)
    facets = crystal_facets(atoms.positions, atoms.cell[:], atoms.pbc, CUTOFF)
    assert set(facets.center.tolist()) == {0, 1}
    assert_same_facets(our_facets(facets), pymatgen_facets(to_pymatgen_structure(atoms)))


def test_collinear_points_raise() -> None:
    chain = Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]], cell=[3.0, 0, 0], pbc=(True, False, False))
    with pytest.raises(RuntimeError, match="Voronoi construction failed"):
        crystal_facets(chain.positions, chain.cell[:], chain.pbc)
