"""Voronoi facets of periodic structures, reproducing pymatgen's ``VoronoiNN`` as the reference uses it.

The reference SCANN preprocessing (docs/model-spec.md §2.1–2.2) runs pymatgen's ``VoronoiNN(weight="solid_angle",
cutoff=7, allow_pathological=True, compute_adj_neighbors=False).get_voronoi_polyhedra(structure, i)``
for every site i of a ``Structure``; molecules are first boxed with ``Molecule.get_boxed_structure(a, b,
c, reorder=False)``. This module re-implements both in numpy/scipy, read from pymatgen's source, so that
pymatgen is never a runtime dependency (it is the reference of the tests only):

* ``get_voronoi_polyhedra``: all periodic images within ``cutoff`` of site i (pymatgen's
  ``find_points_in_spheres`` keeps distances up to ``cutoff + 1e-8``), centre first and the rest sorted
  by distance, go to one qhull Voronoi (``scipy.spatial.Voronoi``); every ridge of the centre is a facet,
  ridges with a vertex at infinity are skipped (``allow_pathological=True``). When qhull fails (fewer
  than 5 points), the cutoff is doubled, capped at the longest cell diagonal + 0.01 Å (+ 0.001).
* The cutoff is STATE, as in the reference: pymatgen grows ``self.cutoff`` in place and the reference
  uses one ``VoronoiNN`` for all sites of a structure, so a site starts from the cutoff the previous
  site ended with. When a site still fails (qhull, or a cell with no finite facet, pymatgen's
  "No Voronoi neighbors found"), the reference adds 5 Å and retries, up to 30 Å. This carry-over changes
  the facets of small box10 molecules (16 of the first 2,000 QM9 molecules) and the reference's count
  of atoms without neighbours (128 in 83 molecules; 144 in 91 with a fresh cutoff per site). It also
  makes the result depend on the atom order whenever some site needs a larger cutoff.
* pymatgen's ``solid_angle``: the facet polygon is fanned into triangles (v0, v_k, v_k+1) from its first
  qhull vertex and each triangle's solid angle is 2·atan(|a·(b×c)| / (abc + c a·b + b a·c + a b·c)),
  with pymatgen's quirks kept: an arctan <= 0 gets π added, a zero denominator gives ±π/2.
* Rounding: pymatgen stores fractional coordinates ``cart @ inv(cell)`` and hands qhull the points
  ``(frac + image) @ cell``; dot products and norms are computed as its per-vector ``np.dot``. The
  same arithmetic is done here, so that ill-conditioned cells (perfect crystals, near-planar molecules
  in a box, whose Voronoi vertices lie far away) come out as pymatgen's to the last bit.
* ``get_boxed_structure(a, b, c, reorder=False)``: the molecule translated so that its centre of MASS
  is at the centre of an orthorhombic box built like ``Lattice.from_parameters(a, b, c, 90, 90, 90)``
  (including its ~1e-16 off-diagonal terms from cos(90°)).

Everything per site is vectorised over the candidate images and over the facets; the only Python loop
is over the sites, each of which needs its own qhull call, as in pymatgen.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from ase.geometry import complete_cell
from scipy.spatial import Voronoi

from scannet.featurizer.facets import Facets

#: ``find_points_in_spheres`` (called by ``Structure.get_sites_in_sphere``) keeps points up to r + tol.
SPHERE_TOLERANCE = 1e-8
#: The reference's box for molecules: max(MIN_BOX, extent + BOX_MARGIN) Å along each axis.
MIN_BOX = 10.0
BOX_MARGIN = 0.1
#: The reference's own retry around pymatgen: on any error the cutoff grows by this step (Å) ...
REFERENCE_CUTOFF_STEP = 5.0
#: ... while it stays at or below this value (Å); it then gives up on the atom.
REFERENCE_MAX_CUTOFF = 30.0


def crystal_facets(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float = 7.0) -> Facets:
    """All Voronoi facets of every site of a periodic structure, as pymatgen's ``VoronoiNN`` finds them.

    Args:
        positions: [n, 3] Cartesian coordinates, Å (need not be wrapped into the cell).
        cell: [3, 3] lattice vectors as rows, Å; vectors along non-periodic axes may be zero.
        pbc: [3] bool, periodic axes; images are only taken along these.
        cutoff: initial radius (Å) of the sphere of images a site's Voronoi cell is built from; it
            grows where qhull needs more points and the grown value carries over to the next sites.

    Returns:
        The facets of all sites, per site sorted by (neighbour, image). A site whose cell has no finite
        facet at any cutoff tried contributes no row (the reference drops such an atom from its lists).

    Raises:
        RuntimeError: when qhull fails at every cutoff tried (e.g. all points on one line).
    """
    sites = _PeriodicSites.build(positions, cell, pbc)
    cells = []
    for site in range(len(sites.frac)):
        site_cell, cutoff = _site_cell(sites, site, cutoff)
        cells.append(site_cell)
    if not cells:
        return Facets.empty()
    return Facets(
        center=np.repeat(np.arange(len(cells), dtype=np.int64), [len(c.neighbor) for c in cells]),
        neighbor=np.concatenate([c.neighbor for c in cells]),
        solid_angle=np.concatenate([c.solid_angle for c in cells]),
        distance=np.concatenate([c.distance for c in cells]),
        image=np.concatenate([c.image for c in cells]),
    )


def boxed_molecule(positions: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's periodic box for a molecule: ``Molecule.get_boxed_structure(a, b, c, reorder=False)``.

    The box side along each axis is max(10, extent + 0.1) Å; the molecule keeps its orientation and
    atom order and its centre of mass is put at the centre of the box.

    Args:
        positions: [n, 3] Cartesian coordinates, Å.
        masses: [n] atomic masses (the centre of mass is mass-weighted, as in pymatgen).

    Returns:
        (positions [n, 3], cell [3, 3]) of the boxed molecule.
    """
    positions = np.asarray(positions, dtype=float)  # [n, 3]
    masses = np.asarray(masses, dtype=float)  # [n]
    extent = positions.max(axis=0) - positions.min(axis=0)  # [3]
    sides = np.maximum(MIN_BOX, extent + BOX_MARGIN)  # [3] a, b, c
    # summed atom by atom (cumsum), as pymatgen's loop does, so that the coordinates agree to the last bit
    center_of_mass = (masses[:, None] * positions).cumsum(axis=0)[-1] / masses.cumsum()[-1]  # [3]
    boxed = positions - center_of_mass + 0.5 * sides  # [n, 3]
    return boxed, _orthorhombic_lattice(*sides)


def _orthorhombic_lattice(a: float, b: float, c: float) -> np.ndarray:
    """``Lattice.from_parameters(a, b, c, 90, 90, 90)`` term by term (its cos(90°) is 6e-17, not 0)."""
    cos_alpha, cos_beta, cos_gamma = np.cos(np.radians([90.0, 90.0, 90.0]))
    sin_alpha, sin_beta, _ = np.sin(np.radians([90.0, 90.0, 90.0]))
    gamma_star = np.arccos(np.clip((cos_alpha * cos_beta - cos_gamma) / (sin_alpha * sin_beta), -1, 1))
    return np.array(
        [
            [a * sin_beta, 0.0, a * cos_beta],
            [-b * sin_alpha * np.cos(gamma_star), b * sin_alpha * np.sin(gamma_star), b * cos_alpha],
            [0.0, 0.0, float(c)],
        ]
    )  # [3, 3]


@dataclass(frozen=True)
class _PeriodicSites:
    """A periodic structure in the form pymatgen's ``Structure`` holds it."""

    frac: np.ndarray  # [n, 3] fractional coordinates, cart @ inv(cell), not wrapped
    cell: np.ndarray  # [3, 3] lattice vectors as rows, Å
    pbc: np.ndarray  # [3] bool
    plane_density: np.ndarray  # [3] |b_k|, the inverse spacing of the lattice planes of each axis, 1/Å
    max_cutoff: float  # pymatgen's ceiling on the grown cutoff: longest body diagonal + 0.01 Å

    @staticmethod
    def build(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> _PeriodicSites:
        cell = complete_cell(np.asarray(cell, dtype=float))  # [3, 3]
        inverse = np.linalg.inv(cell)  # [3, 3] columns are the reciprocal vectors b_k (without 2π)
        corners = np.array([[1, 1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, -1]], dtype=float) @ cell  # [4, 3]
        return _PeriodicSites(
            frac=np.asarray(positions, dtype=float) @ inverse,
            cell=cell,
            pbc=np.asarray(pbc, dtype=bool),
            plane_density=np.linalg.norm(inverse, axis=0),
            max_cutoff=float(np.linalg.norm(corners, axis=1).max()) + 0.01,
        )


class _SiteCell(NamedTuple):
    """The facets of one site's Voronoi cell, sorted by (neighbour, image); F = number of facets."""

    neighbor: np.ndarray  # [F] int64
    image: np.ndarray  # [F, 3] int64
    solid_angle: np.ndarray  # [F] float64, sr
    distance: np.ndarray  # [F] float64, Å


class _PolyhedronError(Exception):
    """``get_voronoi_polyhedra`` failed; ``cutoff`` is the (possibly grown) cutoff it stopped at."""

    def __init__(self, message: str, cutoff: float, qhull_failed: bool) -> None:
        super().__init__(message)
        self.cutoff = cutoff
        self.qhull_failed = qhull_failed


def _site_cell(sites: _PeriodicSites, site: int, cutoff: float) -> tuple[_SiteCell, float]:
    """One site's facets and the cutoff it ends with, with the reference's retry around pymatgen.

    On a failure the cutoff grows by 5 Å from where pymatgen left it, while it stays <= 30 Å. A site
    whose cell never gets a finite facet gets no facet; a site on which qhull always fails raises.
    """
    while True:
        try:
            return _voronoi_polyhedron(sites, site, cutoff)
        except _PolyhedronError as exc:
            cutoff = exc.cutoff + REFERENCE_CUTOFF_STEP
            if cutoff > REFERENCE_MAX_CUTOFF:
                if exc.qhull_failed:
                    raise RuntimeError(str(exc)) from None
                empty = np.zeros(0)
                return _SiteCell(np.zeros(0, np.int64), np.zeros((0, 3), np.int64), empty, empty), cutoff


def _voronoi_polyhedron(sites: _PeriodicSites, site: int, cutoff: float) -> tuple[_SiteCell, float]:
    """``VoronoiNN.get_voronoi_polyhedra``: one site's facets, doubling the cutoff while qhull fails.

    Returns the facets and the cutoff they were built with.

    Raises:
        _PolyhedronError: qhull still fails with the cutoff at its maximum, or the centre has no finite
            ridge.
    """
    while True:
        neighbor, image, points = _sphere_points(sites, site, cutoff)
        try:
            voronoi = Voronoi(points)
            break
        except RuntimeError:  # scipy's QhullError, e.g. fewer than 5 points in the sphere
            if cutoff >= sites.max_cutoff:
                message = f"Voronoi construction failed for site {site} up to the cutoff {cutoff:.3f} Å"
                raise _PolyhedronError(message, cutoff, qhull_failed=True) from None
            cutoff = min(cutoff * 2, sites.max_cutoff + 0.001)
    other, solid_angle = _center_ridges(voronoi)
    if len(other) == 0:
        message = f"site {site} has no finite Voronoi facet within {cutoff} Å"
        raise _PolyhedronError(message, cutoff, qhull_failed=False)
    order = np.lexsort((*image[other].T[::-1], neighbor[other]))  # by neighbour, then image
    other, solid_angle = other[order], solid_angle[order]
    distance = _norm(points[other] - points[0])  # [F]
    return _SiteCell(neighbor[other], image[other], solid_angle, distance), cutoff


def _sphere_points(sites: _PeriodicSites, site: int, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All images of all sites within ``cutoff`` of ``site`` (``get_sites_in_sphere``), centre first,
    the rest in order of distance.

    Returns:
        neighbor [P] (original site index), image [P, 3] (integer lattice image relative to the stored
        fractional coordinates) and points [P, 3] (Cartesian, ``(frac + image) @ cell``).
    """
    frac, pbc = sites.frac, sites.pbc
    delta = frac - frac[site]  # [n, 3]
    base = np.where(pbc, -np.round(delta), 0.0)  # [n, 3] image bringing each site nearest the centre
    # |delta_k + base_k| <= 1/2, so only offsets with |offset_k| <= cutoff * |b_k| + 1/2 can be in reach
    reach = np.where(pbc, np.floor(cutoff * sites.plane_density + 0.5 + 1e-6), 0).astype(np.int64)  # [3]
    offsets, zero_row = _image_grid(tuple(reach))  # [G, 3]
    image = (base[:, None, :] + offsets[None, :, :]).reshape(-1, 3)  # [n*G, 3]
    neighbor = np.repeat(np.arange(len(frac)), len(offsets))  # [n*G]
    points = (frac[neighbor] + image) @ sites.cell  # [n*G, 3]
    center_row = site * len(offsets) + zero_row
    distance = _norm(points - points[center_row])  # [n*G]
    inside = np.flatnonzero(distance <= cutoff + SPHERE_TOLERANCE)  # [P']
    inside = inside[inside != center_row]
    rows = np.concatenate([[center_row], inside[np.argsort(distance[inside], kind="stable")]])  # [P]
    return neighbor[rows], image[rows].astype(np.int64), points[rows]


@lru_cache(maxsize=64)
def _image_grid(reach: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """All integer offsets with |offset_k| <= reach_k ([G, 3] float, lexicographic) and the row of 0."""
    axes = [np.arange(-r, r + 1) for r in reach]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(float)
    offsets.flags.writeable = False
    return offsets, len(offsets) // 2


def _center_ridges(voronoi: Voronoi) -> tuple[np.ndarray, np.ndarray]:
    """The finite ridges of input point 0 (the centre): the point across each and its solid angle.

    Returns:
        other [F] (index of the input point across the ridge) and solid_angle [F] (sr).
    """
    ridge_points = voronoi.ridge_points  # [R, 2]
    rows = [r for r in np.flatnonzero((ridge_points == 0).any(axis=1)) if -1 not in voronoi.ridge_vertices[r]]
    other = ridge_points[rows].sum(axis=1).astype(np.int64)  # [F] (the other index of each pair is 0)
    solid_angle = _fan_solid_angles(voronoi.points[0], voronoi.vertices, [voronoi.ridge_vertices[r] for r in rows])
    return other, solid_angle


def _fan_solid_angles(center: np.ndarray, vertices: np.ndarray, polygons: list[list[int]]) -> np.ndarray:
    """pymatgen's ``solid_angle`` of each facet polygon seen from ``center``, [F].

    Polygon f with k vertices (qhull order) is fanned into the triangles (v0, v_t, v_t+1), t = 1..k-2.
    """
    counts = np.array([len(p) for p in polygons], dtype=np.int64)  # [F]
    flat = np.fromiter((v for p in polygons for v in p), dtype=np.int64, count=int(counts.sum()))  # [V]
    first = np.cumsum(counts) - counts  # [F] position of v0 of each polygon in ``flat``
    n_triangles = np.maximum(counts - 2, 0)  # [F]
    facet = np.repeat(np.arange(len(counts)), n_triangles)  # [T]
    t = np.arange(len(facet)) - np.repeat(np.cumsum(n_triangles) - n_triangles, n_triangles) + 1  # [T]
    a = vertices[flat[first[facet]]] - center  # [T, 3]
    b = vertices[flat[first[facet] + t]] - center  # [T, 3]
    c = vertices[flat[first[facet] + t + 1]] - center  # [T, 3]
    return np.bincount(facet, weights=_triangle_solid_angles(a, b, c), minlength=len(counts))


def _triangle_solid_angles(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Solid angles of the triangles with corners a, b, c ([T, 3] each, from the apex), [T].

    Van Oosterom–Strackee, with pymatgen's branches: an arctan <= 0 gets π added (so a flat triangle,
    numerator 0, counts 2π) and a zero denominator gives ±π/2.
    """
    ra, rb, rc = _norm(a), _norm(b), _norm(c)  # [T] each
    b_cross_c = np.stack(
        [
            b[:, 1] * c[:, 2] - b[:, 2] * c[:, 1],
            b[:, 2] * c[:, 0] - b[:, 0] * c[:, 2],
            b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0],
        ],
        axis=1,
    )  # [T, 3] as np.cross
    numerator = np.abs(_dot(a, b_cross_c))  # [T]
    denominator = ra * rb * rc + rc * _dot(a, b) + rb * _dot(a, c) + ra * _dot(b, c)  # [T]
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.arctan(numerator / denominator)  # [T]
    angle = np.where(denominator == 0, np.where(numerator > 0, 0.5 * np.pi, -0.5 * np.pi), angle)  # [T]
    return 2 * np.where(angle > 0, angle, angle + np.pi)


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise dot products of [m, 3] arrays, [m].

    A stack of (1×3)·(3×1) matmuls rounds exactly like pymatgen's per-vector ``np.dot`` (einsum does
    not), which matters for the ill-conditioned facets of near-planar molecules in box10 mode.
    """
    return (u[:, None, :] @ v[:, :, None])[:, 0, 0]


def _norm(vectors: np.ndarray) -> np.ndarray:
    """Row norms of [m, 3] vectors, [m], rounded as ``np.linalg.norm`` of one vector."""
    return np.sqrt(_dot(vectors, vectors))
