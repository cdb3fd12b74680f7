"""SMILES in: the records of ``.smi`` and ``.csv`` files, and their 3D structures embedded with RDKit.

Used by ``scannet explain`` and ``scannet screen`` alike, so a SMILES gives the same geometry in both.

Files: a ``.smi`` file holds ``SMILES [id]`` per line (``#`` starts a comment line); a ``.csv`` file a SMILES
column (``smiles``, ``SMILES`` or ``Smiles``, or the one named) and an optional id column (``id``, ``ID``,
``name``, ``Name``, or the one named). A record without an id is named ``<file stem>:<line>``.

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

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

from scannet.typed_config import ConfigError

SMILES_SUFFIXES = (".smi", ".csv")
SMILES_COLUMNS = ("smiles", "SMILES", "Smiles")
ID_COLUMNS = ("id", "ID", "name", "Name")

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


# ------------------------------------------------------------------------------------------------ SMILES files


@dataclass(frozen=True)
class SmilesRecord:
    """One record of a SMILES file: its id, the file, the line, and the SMILES or why there is none."""

    id: str
    source: str
    line: int
    smiles: str | None = None
    error: str | None = None


def parse_smiles_line(text: str, default_id: str) -> tuple[str, str]:
    """``(smiles, id)`` of a ``SMILES [id]`` line (the id may hold spaces); ``default_id`` when it has none."""
    parts = text.strip().split(maxsplit=1)
    return parts[0], (parts[1].strip() if len(parts) > 1 else default_id)


def read_smiles_file(
    path: str | Path, smiles_column: str | None = None, id_column: str | None = None
) -> Iterator[SmilesRecord]:
    """The records of a ``.smi`` or ``.csv`` file, in file order; an empty SMILES cell is a record with its
    error. :class:`ConfigError` when a CSV file has no SMILES column (or not the id column named)."""
    path = Path(path)
    source = str(path)
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".smi":
            for number, line in enumerate(handle, start=1):
                text = line.strip()
                if text and not text.startswith("#"):
                    smiles, identifier = parse_smiles_line(text, f"{path.stem}:{number}")
                    yield SmilesRecord(identifier, source, number, smiles=smiles)
            return
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = smiles_column or next((c for c in SMILES_COLUMNS if c in columns), None)
        if column is None or column not in columns:
            wanted = repr(smiles_column) if smiles_column else f"one of {list(SMILES_COLUMNS)}"
            raise ConfigError(f"{path}: no SMILES column {wanted} among its columns {columns} (--smiles-column)")
        id_name = id_column or next((c for c in ID_COLUMNS if c in columns), None)
        if id_column and id_column not in columns:
            raise ConfigError(f"{path}: no id column {id_column!r} among its columns {columns} (--id-column)")
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            identifier = ((row.get(id_name) or "").strip() if id_name else "") or f"{path.stem}:{number}"
            text = (row.get(column) or "").strip()
            if text:
                yield SmilesRecord(identifier, source, number, smiles=text)
            else:
                yield SmilesRecord(identifier, source, number, error=f"line {number}: empty SMILES")
