"""Voronoi facets of a free molecule (no box, no periodicity), exactly invariant by construction.

Definition (``docs/molecule-voronoi.md``): the cell of atom i is {x : |x - r_i| <= |x - r_j|
for all j}; the facet (i, j) is the part of the cell on the bisector plane of i and j, and its solid
angle Ω_ij is the measure of the unit directions u whose ray r_i + t u leaves the cell through it.
For bounded facets this is the solid angle pymatgen's ``VoronoiNN`` computes; unbounded facets of
outer atoms get the finite limit of an infinitely large box. Nothing but the atoms enters, so the
result is invariant to rotation, translation and atom order.

Construction (3D). One ``scipy.spatial.Delaunay`` call. Every Delaunay edge i-j is a facet. Each
Delaunay triangle (i, j, k) is dual to one Voronoi edge, which lies on the facets of its three edges:
the segment between the Voronoi vertices of the two tetrahedra that share the triangle, or, for a
triangle on the convex hull, a ray from the one tetrahedron's vertex along the hull's outward normal.
Seen from r_i, the facet (i, j) projects to a spherical polygon inside the hemisphere around
e = (r_j - r_i)/|r_j - r_i|. Its area is the sum over its edges A -> B, oriented counter-clockwise
about e, of the signed area of the spherical triangle (e, Â, B̂) (Van Oosterom-Strackee,
tan(Ω/2) = e·(a×b) / (1 + e·a + e·b + a·b)), so no vertex ordering and no point inside the facet is
needed. The orientation comes from the geometry: the Voronoi edge of triangle (i, j, k) runs along
n = (r_j - r_i) × (r_k - r_i) for the facet seen from i. A ray is a vertex at infinity (its unit
direction d lies on the great circle normal to e). An unbounded facet (one per hull edge i-j) has two
rays, the outward normals d_1, d_2 of the two hull faces on the edge, and is closed by the great-circle
arc between them; the spherical triangle (e, d_1, d_2) adds the angle between d_1 and d_2 (< π, the
hull being convex). Voronoi vertices are read from the lifted hull planes of qhull
(``Delaunay.equations``), so the tetrahedra qhull makes when it splits a cospherical group (methane,
cubes) share one vertex exactly and the edges between them add exactly zero; flat simplices of
coplanar hull atoms, whose vertex is at infinity, are dropped (see ``_delaunay``).

Special cases, chosen from the out-of-line and out-of-plane deviations of the centred coordinates
(largest distance of an atom from the best-fit line / plane, from the SVD) against
``FLATNESS_TOLERANCE`` × max(1 Å, radius of the molecule):
- one atom: no facets;
- collinear (all diatomics): facets are whole planes; each atom's nearest neighbour on either side
  gets Ω = 2π, the others none;
- coplanar (all triatomics, planar aromatics): cells are prisms and facets infinite strips, and a strip
  seen under the in-plane angle φ subtends Ω = 2φ, so a 2D Voronoi in the plane gives every facet;
- just off the plane: the 3D construction above, whose far Voronoi vertices (at ~L²/δ for a thickness
  δ) stay finite and give solid angles that tend to the planar ones. If qhull finds the atoms flatter
  than the tolerance did, the next flatter construction is used (3D -> planar -> collinear).
Degenerate facets (e.g. across a square's diagonal) come out with Ω ≈ 0; Ω is clipped at 0 so that
rounding never makes it negative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import Delaunay, QhullError

from scannet.featurizer.facets import Facets

#: Relative tolerance (× max(1 Å, molecule radius)) below which the atoms count as collinear/coplanar.
FLATNESS_TOLERANCE = 1e-6
#: Voronoi vertices farther than this (× max(1 Å, molecule radius)) count as at infinity (see ``_delaunay``).
FAR_VERTEX = 1e10

# Local indices of the face opposite vertex m of a tetrahedron.
_TETRAHEDRON_FACES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
# The two of (0, 1, 2) other than m: the edge opposite vertex m of a triangle, or the corners j ≠ i.
_OTHER_TWO = np.array([[1, 2], [0, 2], [0, 1]])
# Sign of the permutation (i, j, k) of a face's corners, for i = 0, 1, 2 and j = _OTHER_TWO[i]:
# (r_j - r_i) × (r_k - r_i) = parity × (r_b - r_a) × (r_c - r_a).
_ORDER_PARITY = np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]])


def molecule_facets(positions: np.ndarray) -> Facets:
    """Every facet of every atom's Voronoi cell of the free molecule at ``positions`` [n, 3] Å.

    Each facet (i, j) appears twice, as centre i and as centre j, with the solid angle seen from the
    centre; ``image`` is all zero and ``distance`` is |r_i - r_j|.
    """
    return molecules_facets([positions])


def molecules_facets(molecules: Sequence[np.ndarray]) -> Facets:
    """The facets of several free molecules (positions [n_b, 3] Å each) at once, as one :class:`Facets`.

    Atoms are numbered consecutively across the molecules (molecule b's atoms are ``offsets[b]`` to
    ``offsets[b + 1] - 1``, ``offsets`` the cumulative sizes) and no facet joins two molecules. Each
    molecule is classified and triangulated on its own; the solid angles of all the 3D ones are then
    computed in one vectorised pass: the same numbers as one molecule at a time, and faster for many small
    molecules, whose cost is mostly per-call overhead (figures: benchmarks/README.md).
    """
    positions = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in molecules]
    sizes = np.array([len(p) for p in positions], dtype=np.int64)  # [B]
    offsets = np.concatenate([[0], np.cumsum(sizes)])  # [B+1]
    if offsets[-1] == 0:
        return Facets.empty()
    centred = [p - p.mean(axis=0) if len(p) else p for p in positions]  # B x [n_b, 3]
    atom_offset = np.repeat(offsets[:-1], sizes)  # [N] first atom of each atom's molecule
    keys = _FacetKeys(atom_offset, max(1, int(sizes.max())))
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (centre, neighbour, Ω) per flat molecule
    triangulations: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (offset, Delaunay) per 3D one
    clearly_spatial = _clearly_spatial(centred, sizes)  # [B]
    for offset, points, spatial in zip(offsets[:-1].tolist(), centred, clearly_spatial.tolist()):
        if len(points) < 2:
            continue
        triangulation, flat = _triangulate_or_flat(points, spatial)
        if triangulation is not None:
            triangulations.append((offset, *triangulation))
        else:
            rows.append((flat[0] + offset, flat[1] + offset, flat[2]))
    if triangulations:
        rows.append(_spatial_facets(np.concatenate(centred), triangulations, keys))
    if not rows:
        return Facets.empty()
    center, neighbor, solid_angle = (np.concatenate(parts) for parts in zip(*rows))
    everything = np.concatenate(positions)  # [N, 3]
    distance = np.linalg.norm(everything[center] - everything[neighbor], axis=1)  # [F]
    return Facets(
        center=center.astype(np.int64),
        neighbor=neighbor.astype(np.int64),
        solid_angle=np.maximum(solid_angle, 0.0),
        distance=distance,
        image=np.zeros((len(center), 3), np.int64),
    )


class _FacetKeys:
    """Facet (i, j) of atoms numbered across molecules <-> one integer, i · width + (j's index in its molecule).

    ``width`` is the largest molecule, so keys stay below N · width (dense bins) rather than N².
    """

    def __init__(self, atom_offset: np.ndarray, width: int) -> None:
        self.atom_offset, self.width = atom_offset, width  # [N], int
        self.size = len(atom_offset) * width

    def encode(self, center: np.ndarray, neighbor: np.ndarray) -> np.ndarray:
        return center * self.width + (neighbor - self.atom_offset[neighbor])

    def decode(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        center = key // self.width
        return center, self.atom_offset[center] + key % self.width


def _clearly_spatial(centred: list[np.ndarray], sizes: np.ndarray) -> np.ndarray:
    """[B] bool: molecules that are 3D by a wide margin (10x ``FLATNESS_TOLERANCE``), from the normal of the
    best-fit plane of all molecules at once (eigenvectors of the 3x3 covariances). The others go through
    :func:`_principal_axes` one by one, so the flat/3D decision near the tolerance is the exact one."""
    result = np.zeros(len(sizes), dtype=bool)
    many = np.flatnonzero(sizes >= 3)  # [M] molecules with a plane to fit
    if len(many) < 2:  # one molecule alone: _principal_axes is cheaper
        return result
    points = np.concatenate([centred[b] for b in many])  # [N', 3]
    starts = np.concatenate([[0], np.cumsum(sizes[many])[:-1]])  # [M]
    covariance = np.add.reduceat(points[:, :, None] * points[:, None, :], starts)  # [M, 3, 3]
    normal = np.linalg.eigh(covariance)[1][:, :, 0]  # [M, 3] direction of least spread
    off_plane = np.abs((points * np.repeat(normal, sizes[many], axis=0)).sum(axis=1))  # [N']
    radius = np.sqrt(np.maximum.reduceat((points**2).sum(axis=1), starts))  # [M]
    result[many] = np.maximum.reduceat(off_plane, starts) > 10 * FLATNESS_TOLERANCE * np.maximum(1.0, radius)
    return result


def _triangulate_or_flat(centred: np.ndarray, clearly_spatial: bool) -> tuple[tuple | None, tuple | None]:
    """(Delaunay simplices, neighbours, vertices) for a 3D molecule, else (None, (centre, neighbour, Ω)) from
    the construction its flatness calls for; indices local to the molecule."""
    scale = max(1.0, float(np.sqrt((centred**2).sum(axis=1).max())))  # Å
    axes = None  # the principal axes: not needed for a clearly 3D molecule that qhull triangulates
    if not clearly_spatial:
        axes, off_line, off_plane = _principal_axes(centred)
    if clearly_spatial or off_plane > FLATNESS_TOLERANCE * scale:
        try:
            return _delaunay(centred, scale), None
        except QhullError:  # flat after all: planar construction
            pass
    if axes is None:
        axes, off_line, _ = _principal_axes(centred)
    if off_line > FLATNESS_TOLERANCE * scale:
        try:
            return None, _planar_facets(centred @ axes[:2].T, scale)
        except QhullError:  # collinear after all
            pass
    return None, _collinear_facets(centred @ axes[0])


def _principal_axes(centred: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Principal axes (rows, by decreasing spread) and the largest distance from the best-fit line/plane."""
    if len(centred) < 3:
        axis = centred[1] - centred[0]
        return np.array([axis / np.linalg.norm(axis)]), 0.0, 0.0
    _, _, axes = np.linalg.svd(centred, full_matrices=False)  # [3, 3]
    across = centred @ axes[1:].T  # [n, 2]
    off_line = float(np.sqrt((across**2).sum(axis=1).max()))
    off_plane = float(np.abs(across[:, 1]).max())
    return axes, off_line, off_plane


def _collinear_facets(coordinate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atoms on a line: consecutive atoms share a whole plane, Ω = 2π seen from either side."""
    order = np.argsort(coordinate, kind="stable")  # [n]
    left, right = order[:-1], order[1:]  # [n-1]
    center = np.concatenate([left, right])
    neighbor = np.concatenate([right, left])
    return center, neighbor, np.full(len(center), 2.0 * np.pi)


def _delaunay(points: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delaunay simplices [T, d+1], their neighbours [T, d+1] (-1: hull) and Voronoi vertices [T, d].

    A vertex is the circumcentre of its simplex, read from the simplex's lifted hull plane
    a·x + b·z + c = 0 (z = s|x|² + h). Simplices whose vertex lies beyond ``FAR_VERTEX`` × scale are
    dropped (their faces become hull faces): qhull keeps some flat simplices of coplanar hull atoms
    whose lifted plane is vertical up to rounding (b ~ 1e-15), with a vertex at ±infinity in a random
    direction, and a real sliver that far out changes solid angles by ~1e-10 sr only. Raises
    ``QhullError`` when qhull does, or when no simplex is left (the atoms are flat).
    """
    tri = Delaunay(points)
    dim = points.shape[1]
    normal, lifted = tri.equations[:, :dim], tri.equations[:, dim : dim + 1]  # [T, dim], [T, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -normal / (2.0 * lifted * tri.paraboloid_scale)  # [T, dim]
    kept = np.all(np.abs(vertex) <= FAR_VERTEX * scale, axis=1)  # [T]
    if not kept.any():
        raise QhullError("every Delaunay simplex is flat")
    simplices, neighbors = tri.simplices, tri.neighbors
    if not kept.all():
        renumber = np.append(np.where(kept, np.cumsum(kept) - 1, -1), -1)  # [T+1], last entry for -1
        simplices, neighbors, vertex = simplices[kept], renumber[neighbors[kept]], vertex[kept]
    return simplices, neighbors, vertex


def _interior_and_hull_faces(
    simplices: np.ndarray, neighbors: np.ndarray, local_faces: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (d-1)-face once: its vertices, the simplex it was taken from and the one across (-1: hull)."""
    simplex, opposite = np.nonzero((neighbors > np.arange(len(neighbors))[:, None]) | (neighbors < 0))  # [G]
    vertices = simplices[simplex[:, None], local_faces[opposite]]  # [G, d]
    return vertices, simplex, neighbors[simplex, opposite]


def _planar_facets(plane: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coplanar atoms, in-plane coordinates [n, 2]: Ω_ij = 2 × angle of the 2D Voronoi edge from r_i."""
    simplices, neighbors, vertex = _delaunay(plane, scale)  # [T, 3], [T, 3], [T, 2]
    edges, simplex, other = _interior_and_hull_faces(simplices, neighbors, _OTHER_TWO)  # [G, 2], [G], [G]
    center = np.concatenate([edges[:, 0], edges[:, 1]])  # [R]
    neighbor = np.concatenate([edges[:, 1], edges[:, 0]])  # [R]
    simplex, other = np.tile(simplex, 2), np.tile(other, 2)  # [R]
    origin = plane[center]  # [R, 2]
    along = plane[neighbor] - origin  # [R, 2]
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)  # [R, 2]

    def angle_from_bisector(point: np.ndarray) -> np.ndarray:  # [R, 2] -> [R], in (-π/2, π/2)
        offset = point - origin
        return np.arctan2((offset * across).sum(axis=1), (offset * along).sum(axis=1))

    near = angle_from_bisector(vertex[simplex])  # [R]
    far = angle_from_bisector(vertex[other])  # [R] (meaningless where other < 0)
    outward = np.sign(((origin - plane.mean(axis=0)) * across).sum(axis=1))  # [R]
    far = np.where(other < 0, outward * (np.pi / 2), far)  # [R] a hull edge's ray leaves outwards
    return center, neighbor, 2.0 * np.abs(far - near)


def _spatial_facets(
    points: np.ndarray, triangulations: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], keys: _FacetKeys
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D molecules (points [N, 3], each molecule centred): facet solid angles from the signed edge decomposition.

    ``triangulations`` holds (first atom, simplices, neighbours, Voronoi vertices) of each 3D molecule, indices
    local to it; they are joined into one triangulation of disjoint pieces. Each face (a, b, c) of the
    triangulation adds one Voronoi edge to the six facets i -> j of its ordered vertex pairs. Vectors are
    component-major, [3, ...], which keeps the many small vector operations cheap; the axes after the first
    are (corner i, other corner j, face).
    """
    simplex_offset = np.cumsum([0] + [len(t[1]) for t in triangulations[:-1]])
    simplices = np.concatenate([s + atom for atom, s, _, _ in triangulations])  # [T, 4]
    neighbors = np.concatenate(
        [np.where(nb >= 0, nb + t, -1) for t, (_, _, nb, _) in zip(simplex_offset, triangulations)]
    )  # [T, 4]
    vertex = np.concatenate([v for _, _, _, v in triangulations])  # [T, 3]
    faces, simplex, other = _interior_and_hull_faces(simplices, neighbors, _TETRAHEDRON_FACES)  # [G, 3], [G], [G]
    on_hull = other < 0  # [G]
    corner = points[faces].transpose(2, 1, 0)  # [3, 3, G] r_a, r_b, r_c
    face_normal = _cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])  # [3, G]
    near = vertex[simplex].T  # [3, G] Voronoi vertex of the simplex the face was taken from
    far = vertex[other].T  # [3, G] Voronoi vertex across the face (meaningless on the hull)
    outward = np.sign(_dot(corner[:, 0], face_normal))  # [G] +1: the normal points out of the (centred) hull
    ray = outward * face_normal / np.sqrt(_dot(face_normal, face_normal))  # [3, G] hull face's outward normal
    # Does the Voronoi edge near -> far (near -> ray on the hull) run along +face_normal?
    face_orientation = np.where(on_hull, outward, np.sign(_dot(far - near, face_normal)))  # [G]
    orientation = _ORDER_PARITY[:, :, None] * face_orientation  # [3, 2, G] +1: counter-clockwise about e_ij

    pole = _unit(corner[:, _OTHER_TWO] - corner[:, :, None])  # [3, 3, 2, G] e_ij
    start = _unit(near[:, None] - corner)  # [3, 3, G] from r_i to the near vertex
    end = np.where(on_hull, ray[:, None], _unit(far[:, None] - corner))  # [3, 3, G] ... to the far one / ray
    edge_area = orientation * _pole_triangle_area(pole, start[:, :, None], end[:, :, None])  # [3, 2, G]
    edge_key = keys.encode(faces.T[:, None], faces.T[_OTHER_TWO])  # [3, 2, G] facet i -> j

    arc_key, arc = _arcs_at_infinity(faces[on_hull], ray[:, on_hull], keys)  # [A], [A]
    facet_key, solid_angle = _sum_by_facet(
        np.concatenate([edge_key.ravel(), arc_key]), np.concatenate([edge_area.ravel(), arc]), keys.size
    )
    return (*keys.decode(facet_key), solid_angle)


def _arcs_at_infinity(
    hull_faces: np.ndarray, hull_normal: np.ndarray, keys: _FacetKeys
) -> tuple[np.ndarray, np.ndarray]:
    """The arc closing each unbounded facet, as (facet keys, areas), for both directions.

    The facet of a hull edge i-j has two rays, the outward normals d_1, d_2 of the two hull faces on the
    edge; it is closed by the great-circle arc from one to the other, and the spherical triangle
    (e_ij, d_1, d_2) has the area of the angle between them (< π, the hull being convex).
    """
    edge = hull_faces[:, _OTHER_TWO].reshape(-1, 2)  # [3H, 2]
    low, high = edge.min(axis=1), edge.max(axis=1)  # [3H]
    key = keys.encode(low, high)  # [3H]
    order = np.argsort(key, kind="stable")  # [3H]
    sorted_key = key[order]  # [3H]
    first = np.flatnonzero(np.concatenate(([True], sorted_key[1:] != sorted_key[:-1])))  # [E]
    first_face = order[first]  # [E] entries of the two faces on each edge (of the first and last
    last_face = order[np.concatenate((first[1:], [len(key)])) - 1]  # [E] ... should an edge have more)
    normal_1, normal_2 = hull_normal[:, first_face // 3], hull_normal[:, last_face // 3]  # [3, E]
    cross = _cross(normal_1, normal_2)  # [3, E]
    angle = np.arctan2(np.sqrt(_dot(cross, cross)), _dot(normal_1, normal_2))  # [E]
    low, high = low[first_face], high[first_face]  # [E]
    return np.concatenate((keys.encode(low, high), keys.encode(high, low))), np.concatenate((angle, angle))


def _sum_by_facet(key: np.ndarray, value: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct facet keys (all below ``size``) [F] and the sum of ``value`` [R] over the rows of each."""
    if size <= 8 * len(key) + 4096:  # dense bins: cheaper than sorting
        facet_key = np.flatnonzero(np.bincount(key, minlength=size))  # [F]
        return facet_key, np.bincount(key, weights=value, minlength=size)[facet_key]
    facet_key, facet_of_row = np.unique(key, return_inverse=True)  # [F], [R]
    return facet_key, np.bincount(facet_of_row, weights=value, minlength=len(facet_key))


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of component-major vectors [3, ...] -> [...]."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of component-major vectors [3, ...] -> [3, ...]."""
    return np.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.sqrt(_dot(vectors, vectors))


def _pole_triangle_area(pole: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed area of the spherical triangles (pole, a, b) of unit vectors [3, ...] (Van Oosterom-Strackee)."""
    triple = _dot(pole, _cross(a, b))
    denominator = 1.0 + _dot(pole, a) + _dot(pole, b) + _dot(a, b)
    return 2.0 * np.arctan2(triple, denominator)
