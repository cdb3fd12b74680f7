"""SMILES to 3D structures with RDKit (an optional extra: ``pip install scannet[smiles]``).

Embedding: hydrogens added, ETKDGv3 with a fixed random seed (the same SMILES gives the same geometry on every
run and worker), then an MMFF94 optimisation (UFF when MMFF has no parameters for the molecule).

**These are force-field geometries.** The models were trained on DFT-relaxed geometries (QM9: B3LYP/6-31G(2df,p));
predictions on force-field geometries carry an additional error that the model's test MAE does not include.
Every screened row records its geometry in the ``geometry`` column and the summary says so.
"""

from __future__ import annotations

from ase import Atoms

#: ``geometry`` of a structure embedded here; structures read from files are ``"input"``.
FORCE_FIELD_GEOMETRY = "rdkit-etkdg-mmff94"
INPUT_GEOMETRY = "input"
FORCE_FIELD_NOTE = (
    "SMILES were embedded in 3D with RDKit (ETKDGv3 + MMFF94): force-field geometries differ from the DFT "
    "geometries the model was trained on, so these predictions carry an extra error not included in the "
    "model's test MAE"
)


class EmbeddingError(ValueError):
    """A SMILES string that cannot be parsed or embedded, with the reason."""


def rdkit_available() -> bool:
    try:
        import rdkit  # noqa: F401
    except ImportError:
        return False
    return True


def require_rdkit() -> None:
    from scannet.typed_config import ConfigError

    if not rdkit_available():
        raise ConfigError(
            "SMILES inputs need RDKit to embed the molecules in 3D: pip install rdkit (or scannet[smiles])"
        )


def embed_smiles(smiles: str, seed: int = 0) -> Atoms:
    """The 3D structure (with hydrogens) of ``smiles``; :class:`EmbeddingError` when it cannot be made."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # the reason is reported per record instead
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise EmbeddingError(f"RDKit cannot parse the SMILES {smiles!r}")
    molecule = Chem.AddHs(molecule)
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = seed
    if AllChem.EmbedMolecule(molecule, parameters) != 0:
        parameters.useRandomCoords = True
        if AllChem.EmbedMolecule(molecule, parameters) != 0:
            raise EmbeddingError(f"RDKit could not embed {smiles!r} in 3D (ETKDGv3, random coordinates too)")
    try:
        if AllChem.MMFFHasAllMoleculeParams(molecule):
            AllChem.MMFFOptimizeMolecule(molecule, maxIters=500)
        else:
            AllChem.UFFOptimizeMolecule(molecule, maxIters=500)
    except Exception as exc:
        raise EmbeddingError(f"force-field optimisation of {smiles!r} failed: {exc}") from exc
    numbers = [atom.GetAtomicNum() for atom in molecule.GetAtoms()]
    positions = molecule.GetConformer().GetPositions()
    return Atoms(numbers=numbers, positions=positions)
