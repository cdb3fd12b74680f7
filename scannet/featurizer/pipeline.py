"""Featurize structures: ASE ``Atoms`` -> :class:`Graph` of SCANN neighbours (docs/model-spec.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from scannet.featurizer.config import FeaturizerConfig
from scannet.featurizer.facets import Facets
from scannet.featurizer.neighbors import Graph, select_neighbors
from scannet.structures import StructureError, is_periodic, structure_name, validate_structures

#: Structures per vectorised featurization call in :func:`featurize_many` (and its progress-bar step).
CHUNK = 256


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
    result = featurize_each([atoms], config, [name or structure_name(atoms)])[0]
    if isinstance(result, StructureError):
        raise result
    return result


def featurize_each(
    structures: Sequence[Atoms], config: FeaturizerConfig | None = None, names: Sequence[str] | None = None
) -> list[Graph | StructureError]:
    """Validate and featurize every structure: its :class:`Graph`, or the :class:`StructureError` naming it
    (``names``, default :func:`structure_name`) and the reason; a bad structure never stops the others.

    Free molecules in the exact mode are validated and featurized together (vectorised, faster on
    QM9 than one at a time, the same result; figures: benchmarks/README.md); crystals and boxed molecules one at a time.
    """
    config = config or FeaturizerConfig()
    names = list(names) if names is not None else [structure_name(a, i) for i, a in enumerate(structures)]
    results: list[Graph | StructureError | None] = list(validate_structures(structures, names))
    together = []
    for k, atoms in enumerate(structures):
        if results[k] is None:
            if is_periodic(atoms) or config.molecule_mode == "box10":
                results[k] = _featurize_valid(atoms, config, names[k])
            else:
                together.append(k)
    try:
        graphs = _molecule_graphs([structures[k] for k in together], config)
    except Exception:  # a molecule the joint construction cannot take: one at a time names it
        graphs = [_featurize_valid(structures[k], config, names[k]) for k in together]
    for k, graph in zip(together, graphs):
        results[k] = graph
    return results


def _featurize_valid(atoms: Atoms, config: FeaturizerConfig, name: str) -> Graph | StructureError:
    """The graph of one validated structure, or the error naming it when its Voronoi construction fails."""
    try:
        return select_neighbors(compute_facets(atoms, config), atoms.numbers, config)
    except StructureError as exc:
        return exc
    except Exception as exc:  # a geometry the Voronoi back-end cannot handle: name it
        return StructureError(name, f"Voronoi construction failed: {exc}")


def _molecule_graphs(molecules: Sequence[Atoms], config: FeaturizerConfig) -> list[Graph]:
    """The graphs of validated free molecules, through one joint construction and one neighbour filter."""
    from scannet.featurizer.voronoi_molecule import molecules_facets

    if not molecules:
        return []
    joint = select_neighbors(
        molecules_facets([atoms.positions for atoms in molecules]),
        np.concatenate([atoms.numbers for atoms in molecules]),
        config,
    )
    offsets = np.concatenate([[0], np.cumsum([len(atoms) for atoms in molecules])])  # [B+1] first atoms
    bounds = np.searchsorted(joint.edge_center, offsets)  # [B+1] edges are sorted by centre
    graphs = []
    for b in range(len(molecules)):
        first, edges = offsets[b], slice(bounds[b], bounds[b + 1])
        graphs.append(
            Graph(
                numbers=joint.numbers[first : offsets[b + 1]],
                edge_center=joint.edge_center[edges] - first,
                edge_neighbor=joint.edge_neighbor[edges] - first,
                distance=joint.distance[edges],
                solid_angle=joint.solid_angle[edges],
                solid_angle_norm=joint.solid_angle_norm[edges],
            )
        )
    return graphs


def featurize_many(
    structures: Sequence[Atoms], config: FeaturizerConfig | None = None, progress: bool = False
) -> tuple[list[Graph | None], list[StructureError]]:
    """Featurize every structure; a bad one yields ``None`` and its error, the rest go on.

    Returns the graphs in input order (``None`` where featurization failed) and the errors.
    """
    graphs: list[Graph | None] = []
    errors: list[StructureError] = []
    names = [structure_name(atoms, i) for i, atoms in enumerate(structures)]
    with tqdm(total=len(structures), desc="featurizing", unit="structure", disable=not progress) as bar:
        for start in range(0, len(structures), CHUNK):
            for result in featurize_each(structures[start : start + CHUNK], config, names[start : start + CHUNK]):
                failed = isinstance(result, StructureError)
                graphs.append(None if failed else result)
                if failed:
                    errors.append(result)
            bar.update(min(CHUNK, len(structures) - start))
    return graphs, errors
