"""Structure keys: one string per structure that two records of the same molecule share, whatever their names,
atom order, orientation or input form (SMILES or 3D coordinates), so that duplicates are found by structure.

:func:`structure_key` gives, in order of preference:

- ``"inchikey"``: the InChIKey, computed without stereochemistry (InChI option ``/SNon``), of the molecule of the
  input SMILES, or of the bonds perceived from the 3D coordinates (:mod:`scannet.explain.drawing`'s perception,
  ``rdDetermineBonds.DetermineBonds`` with charge 0). Stereoisomers share a key: a SMILES often leaves its
  stereochemistry out, and a structure always has one. With it comes the canonical SMILES (RDKit, hydrogens
  implicit; stereochemistry as the SMILES gives it, or from the 3D coordinates).
- ``"geometry"``: when no bond orders can be perceived (charged or unusual structures, periodic ones), a hash of
  the geometry (:func:`geometry_hash`) that two records share only when their coordinates are the same up to
  rotation, translation and atom order (to 0.01 Å); there is no SMILES then.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms

KEY_INCHIKEY = "inchikey"
KEY_GEOMETRY = "geometry"
#: Interatomic distances enter the geometry hash rounded to this many decimals (Å).
GEOMETRY_DECIMALS = 2
_INCHI_WITHOUT_STEREO = "/SNon"


@dataclass(frozen=True)
class StructureKey:
    key: str  # an InChIKey, or the hex digest of the geometry hash
    kind: str  # KEY_INCHIKEY or KEY_GEOMETRY
    smiles: str | None  # the canonical SMILES when bonds are known, else None


def structure_key(atoms: Atoms, smiles: str | None = None) -> StructureKey:
    """The key of ``atoms`` (its bonds from ``smiles`` when given, else perceived from the coordinates)."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        try:
            molecule = _molecule(atoms, smiles)
            if molecule is not None:
                inchikey = Chem.MolToInchiKey(molecule, options=_INCHI_WITHOUT_STEREO)
                if inchikey:
                    canonical = Chem.MolToSmiles(Chem.RemoveHs(molecule, sanitize=False))  # sanitized already
                    return StructureKey(inchikey, KEY_INCHIKEY, canonical)
        except (ValueError, RuntimeError):  # RDKit's errors (sanitization, InChI): the geometry still has a key
            pass
    return StructureKey(geometry_hash(atoms), KEY_GEOMETRY, None)


def _molecule(atoms: Atoms, smiles: str | None):
    """The sanitized RDKit molecule of ``smiles``, or of the bonds perceived from ``atoms`` (stereochemistry from the
    coordinates); None for a periodic structure or when no bond orders fit."""
    from rdkit import Chem

    if smiles is not None:
        return Chem.MolFromSmiles(smiles)
    if atoms.pbc.any() or len(atoms) == 0:
        return None
    from scannet.explain.drawing import _perceive_bonds

    molecule, note = _perceive_bonds(atoms)
    if note is not None:  # connectivity only: no bond orders, no trustworthy InChI
        return None
    Chem.SanitizeMol(molecule)
    Chem.AssignStereochemistryFrom3D(molecule)
    return molecule


def geometry_hash(atoms: Atoms, decimals: int = GEOMETRY_DECIMALS) -> str:
    """A 128-bit hex digest of ``atoms``' geometry, invariant to rotation, translation and atom order: every atom pair
    as (smaller atomic number, larger atomic number, distance rounded to ``decimals`` Å), sorted, with the sorted
    atomic numbers; a periodic structure uses minimum-image distances and adds its cell lengths and angles."""
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    first, second = np.triu_indices(len(atoms), k=1)
    periodic = bool(atoms.pbc.any())
    if periodic:
        distances = atoms.get_all_distances(mic=True)[first, second]
    else:
        positions = np.asarray(atoms.positions, dtype=np.float64)
        distances = np.linalg.norm(positions[first] - positions[second], axis=1)
    scale = 10.0**decimals
    pairs = np.column_stack(
        [
            np.minimum(numbers[first], numbers[second]),
            np.maximum(numbers[first], numbers[second]),
            np.rint(distances * scale).astype(np.int64),
        ]
    )  # [n_pairs, 3]
    pairs = pairs[np.lexsort(pairs.T[::-1])]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.sort(numbers).tobytes())
    digest.update(np.ascontiguousarray(pairs).tobytes())
    if periodic:
        digest.update(np.asarray(atoms.pbc, dtype=np.int64).tobytes())
        digest.update(np.rint(atoms.cell.cellpar() * scale).astype(np.int64).tobytes())
    return digest.hexdigest()
