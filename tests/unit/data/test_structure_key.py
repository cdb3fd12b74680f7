"""Structure keys find the same molecule whatever its name, form (SMILES or 3D), atom order or orientation: the
InChIKey where bonds are known, a geometry hash invariant to rotation, translation and atom order otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from scannet.data.smiles import embed_smiles
from scannet.data.structure_key import KEY_GEOMETRY, KEY_INCHIKEY, geometry_hash, structure_key

ETHANOL_INCHIKEY = "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"


def moved(atoms: Atoms, seed: int) -> Atoms:
    """``atoms`` rotated, translated and with its atoms in another order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(atoms))
    copy = atoms[order]
    copy.positions = copy.positions @ Rotation.random(random_state=seed).as_matrix().T + rng.normal(size=3) * 5
    return copy


def ammonium() -> Atoms:
    """NH4 without its charge: no bond orders fit a neutral molecule, so only the geometry has a key."""
    corners = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]]) * 0.6
    return Atoms("NH4", positions=[[0, 0, 0], *corners])


def test_the_same_molecule_as_smiles_and_as_moved_coordinates_has_one_inchikey():
    from_smiles = structure_key(embed_smiles("OCC", seed=0), "OCC")
    from_coordinates = structure_key(moved(molecule("CH3CH2OH"), seed=1))
    assert from_smiles == from_coordinates
    assert (from_smiles.key, from_smiles.kind, from_smiles.smiles) == (ETHANOL_INCHIKEY, KEY_INCHIKEY, "CCO")


def test_isomers_have_different_keys():
    ethanol, ether = structure_key(molecule("CH3CH2OH")), structure_key(molecule("CH3OCH3"))
    assert ethanol.key != ether.key and ether.smiles == "COC"


def test_stereoisomers_share_the_key_and_keep_their_stereochemistry_in_the_smiles():
    left = structure_key(embed_smiles("C[C@H](O)F", seed=0), "C[C@H](O)F")
    right = structure_key(embed_smiles("C[C@@H](O)F", seed=0), "C[C@@H](O)F")
    assert left.key == right.key and left.smiles != right.smiles
    perceived = structure_key(embed_smiles("C[C@H](O)F", seed=0))
    assert perceived.smiles == left.smiles, "the stereochemistry of coordinates is read from them"


def test_without_bond_orders_the_key_is_the_geometry_hash():
    key = structure_key(ammonium())
    assert (key.kind, key.smiles, key.key) == (KEY_GEOMETRY, None, geometry_hash(ammonium()))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_geometry_hash_ignores_rotation_translation_and_atom_order(seed):
    for atoms in (ammonium(), molecule("CH3CH2OH"), molecule("C6H6")):
        assert geometry_hash(moved(atoms, seed)) == geometry_hash(atoms)


def test_the_geometry_hash_tells_isomers_and_other_geometries_apart():
    ethanol = molecule("CH3CH2OH")
    assert geometry_hash(ethanol) != geometry_hash(molecule("CH3OCH3")), "same formula, other bonds"
    stretched = ethanol.copy()
    stretched.positions[0] += [0.1, 0, 0]
    assert geometry_hash(stretched) != geometry_hash(ethanol)


def test_a_periodic_structure_has_a_geometry_key_that_survives_a_wrapped_translation():
    crystal = bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)
    shifted = crystal.copy()
    shifted.translate([1.3, 0.4, 2.2])
    shifted.wrap()
    assert structure_key(crystal).kind == KEY_GEOMETRY
    assert geometry_hash(shifted) == geometry_hash(crystal)
    assert geometry_hash(bulk("NaCl", "rocksalt", a=5.7) * (2, 1, 1)) != geometry_hash(crystal)
