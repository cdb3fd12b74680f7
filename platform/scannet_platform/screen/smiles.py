"""SMILES to 3D structures with RDKit (an optional extra: ``pip install scannet[smiles]``).

Embedding: hydrogens added, ETKDGv3 with a fixed random seed (the same SMILES gives the same geometry on every
run and worker), then an MMFF94 optimisation (UFF when MMFF has no parameters for the molecule).

Bounds: the atoms (hydrogens included) are counted on the parsed molecule and a molecule over ``max_atoms`` is
refused before RDKit embeds it; each embedding attempt runs under :data:`EMBED_TIMEOUT_S` (``EmbedParameters
.timeout``) and at most :data:`EMBED_MAX_ITERATIONS` iterations. A molecule refused or given up on raises
:class:`EmbeddingError` with the reason (the screen quarantines it and goes on).

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


#: Seconds RDKit may spend embedding one molecule (per attempt; RDKit checks it between the stages of an attempt,
#: so the atom limit is what bounds a single stage).
EMBED_TIMEOUT_S = 10
#: Most embedding iterations per attempt (RDKit's own default is 10 per atom).
EMBED_MAX_ITERATIONS = 1000


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


def _embedding_parameters(seed: int):
    """ETKDGv3 with the seed, the time limit and the iteration limit (where this RDKit has them)."""
    from rdkit.Chem import AllChem

    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = seed
    parameters.maxIterations = EMBED_MAX_ITERATIONS
    if hasattr(parameters, "timeout"):
        parameters.timeout = EMBED_TIMEOUT_S
    if hasattr(parameters, "trackFailures"):
        parameters.trackFailures = True
    return parameters


def _timed_out(parameters) -> bool:
    """Whether the last embedding with ``parameters`` gave up on its time limit."""
    try:
        from rdkit.Chem.rdDistGeom import EmbedFailureCauses

        return parameters.GetFailureCounts()[int(EmbedFailureCauses.EXCEEDED_TIMEOUT)] > 0
    except (ImportError, AttributeError, IndexError):
        return False


def embed_smiles(smiles: str, seed: int = 0, max_atoms: int | None = None) -> Atoms:
    """The 3D structure (with hydrogens) of ``smiles``; :class:`EmbeddingError` when it cannot be made, when it
    has more than ``max_atoms`` atoms with hydrogens (counted before embedding) or when RDKit gives up on the
    time limit (:data:`EMBED_TIMEOUT_S`)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # the reason is reported per record instead
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise EmbeddingError(f"RDKit cannot parse the SMILES {smiles!r}")
    molecule = Chem.AddHs(molecule)
    n_atoms = molecule.GetNumAtoms()
    if max_atoms is not None and n_atoms > max_atoms:
        raise EmbeddingError(
            f"{n_atoms} atoms with hydrogens, over the limit of {max_atoms} atoms per structure (--max-atoms)"
        )
    parameters = _embedding_parameters(seed)
    gave_up = f"RDKit gave up embedding after {EMBED_TIMEOUT_S} s (the time limit per molecule; {n_atoms} atoms)"
    if AllChem.EmbedMolecule(molecule, parameters) != 0:
        if _timed_out(parameters):
            raise EmbeddingError(gave_up)
        parameters = _embedding_parameters(seed)
        parameters.useRandomCoords = True
        if AllChem.EmbedMolecule(molecule, parameters) != 0:
            if _timed_out(parameters):
                raise EmbeddingError(gave_up)
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
