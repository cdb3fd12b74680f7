"""Voronoi featurizer: ASE ``Atoms`` -> :class:`Graph` of SCANN neighbours (spec §2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from scannet.featurizer.config import FeaturizerConfig
from scannet.featurizer.facets import Facets
from scannet.featurizer.neighbors import Graph, select_neighbors
from scannet.structures import StructureError, is_periodic, structure_name, validate_structure

__all__ = ["FeaturizerConfig", "Facets", "Graph", "compute_facets", "featurize", "featurize_many"]


def compute_facets(atoms: Atoms, config: FeaturizerConfig) -> Facets:
    """All Voronoi facets of the structure, through the periodic or the free-molecule back-end."""
    from scannet.featurizer.voronoi_crystal import boxed_molecule, crystal_facets
    from scannet.featurizer.voronoi_molecule import molecule_facets

    if is_periodic(atoms):
        return crystal_facets(atoms.positions, np.asarray(atoms.cell), atoms.pbc, config.voronoi_cutoff)
    if config.molecule_mode == "box10":
        positions, cell = boxed_molecule(atoms.positions, atoms.get_masses())
        return crystal_facets(positions, cell, np.ones(3, bool), config.voronoi_cutoff)
    return molecule_facets(atoms.positions)


def featurize(atoms: Atoms, config: FeaturizerConfig | None = None, name: str | None = None) -> Graph:
    """Validate one structure and compute its SCANN neighbour graph.

    Raises:
        StructureError: naming the structure and the reason, for unusable input.
    """
    config = config or FeaturizerConfig()
    name = name or structure_name(atoms)
    validate_structure(atoms, name)
    try:
        facets = compute_facets(atoms, config)
    except StructureError:
        raise
    except Exception as exc:  # a geometry the Voronoi back-end cannot handle: name it
        raise StructureError(name, f"Voronoi construction failed: {exc}") from exc
    return select_neighbors(facets, atoms.numbers, config)


def featurize_many(
    structures: Sequence[Atoms], config: FeaturizerConfig | None = None, progress: bool = False
) -> tuple[list[Graph | None], list[StructureError]]:
    """Featurize every structure; a bad one yields ``None`` and its error, the rest go on.

    Returns the graphs in input order (``None`` where featurization failed) and the errors.
    """
    config = config or FeaturizerConfig()
    graphs: list[Graph | None] = []
    errors: list[StructureError] = []
    for i, atoms in enumerate(tqdm(structures, desc="featurizing", unit="structure", disable=not progress)):
        try:
            graphs.append(featurize(atoms, config, structure_name(atoms, i)))
        except StructureError as exc:
            graphs.append(None)
            errors.append(exc)
    return graphs, errors
