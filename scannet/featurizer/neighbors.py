"""The SCANN neighbour filter (docs/model-spec.md §2.1): from all Voronoi facets to the kept edges of the graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scannet.featurizer.config import FeaturizerConfig
from scannet.featurizer.facets import Facets


@dataclass(frozen=True)
class Graph:
    """The featurized form of one structure: atoms and their kept Voronoi neighbours.

    Edges are directed centre <- neighbour and sorted by (centre, neighbour, distance), so the same
    structure always gives the same arrays. E = number of kept edges, n = number of atoms.
    """

    numbers: np.ndarray  # [n] int64 | atomic numbers
    edge_center: np.ndarray  # [E] int64 | atom i whose local structure the edge belongs to
    edge_neighbor: np.ndarray  # [E] int64 | atom j (the original atom of the periodic image)
    distance: np.ndarray  # [E] float32 | d_ij, Å
    solid_angle: np.ndarray  # [E] float32 | Ω_ij, sr (the SCANN+ weight)
    solid_angle_norm: np.ndarray  # [E] float32 | Ω_ij / max_j' Ω_ij' (the SCANN weight), in (0, 1]

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def n_edges(self) -> int:
        return len(self.edge_center)


def select_neighbors(facets: Facets, numbers: np.ndarray, config: FeaturizerConfig) -> Graph:
    """Apply the three SCANN conditions to every facet and return the graph.

    The largest facet of each cell is taken over ALL its facets, before filtering (as the reference).
    Atoms can be left without any neighbour: that is legal and common (e.g. a hydroxyl H).
    """
    n_atoms = len(numbers)
    max_solid_angle = np.zeros(n_atoms)  # [n]
    np.maximum.at(max_solid_angle, facets.center, facets.solid_angle)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = facets.solid_angle / max_solid_angle[facets.center]  # [F]
    keep = (
        (facets.solid_angle >= config.solid_angle_threshold)
        & (relative >= config.relative_threshold)
        & (facets.distance <= config.distance_threshold)
    )
    center, neighbor = facets.center[keep], facets.neighbor[keep]
    distance, solid_angle, relative = facets.distance[keep], facets.solid_angle[keep], relative[keep]
    order = np.lexsort((distance, neighbor, center))
    return Graph(
        numbers=np.asarray(numbers, dtype=np.int64),
        edge_center=center[order].astype(np.int64),
        edge_neighbor=neighbor[order].astype(np.int64),
        distance=distance[order].astype(np.float32),
        solid_angle=solid_angle[order].astype(np.float32),
        solid_angle_norm=relative[order].astype(np.float32),
    )
