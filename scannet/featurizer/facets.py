"""The raw output of a Voronoi construction: every facet of every atom's cell, before filtering.

Both Voronoi back-ends (``voronoi_molecule`` for non-periodic structures, ``voronoi_crystal`` for
periodic ones) return a :class:`Facets`; ``neighbors.select_neighbors`` applies the SCANN filter to it.

Shapes: F = number of facets over all atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Facets:
    """Voronoi facets of all cells of one structure (unfiltered, one row per facet).

    A facet is the face shared by the cell of ``center`` and the cell of one image of ``neighbor``.
    In a crystal the same original atom can be a neighbour several times through different images.
    """

    center: np.ndarray  # [F] int64 | index of the atom whose cell the facet bounds
    neighbor: np.ndarray  # [F] int64 | index (in the structure) of the atom across the facet
    solid_angle: np.ndarray  # [F] float64 | solid angle of the facet seen from the centre, sr
    distance: np.ndarray  # [F] float64 | |r_center - r_neighbor(image)|, Å
    image: np.ndarray  # [F, 3] int64 | lattice image of the neighbour (all zero for molecules)

    def __post_init__(self) -> None:
        n = len(self.center)
        for name in ("neighbor", "solid_angle", "distance"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Facets.{name} has {len(getattr(self, name))} rows, expected {n}")
        if self.image.shape != (n, 3):
            raise ValueError(f"Facets.image has shape {self.image.shape}, expected ({n}, 3)")

    def __len__(self) -> int:
        return len(self.center)

    @staticmethod
    def empty() -> Facets:
        return Facets(
            center=np.zeros(0, np.int64),
            neighbor=np.zeros(0, np.int64),
            solid_angle=np.zeros(0),
            distance=np.zeros(0),
            image=np.zeros((0, 3), np.int64),
        )
