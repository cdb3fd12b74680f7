"""Structures (ASE ``Atoms``) and the checks every structure passes before it is featurized."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

#: Two atoms closer than this (Å) are treated as overlapping, an input error.
MIN_INTERATOMIC_DISTANCE = 0.1

#: Coordinates and cell entries beyond ±this (Å) are rejected as absurd: no real structure is a
#: kilometre wide, and neighbour searches overflow on values like 1e200.
MAX_ABS_COORDINATE = 1e6


class StructureError(ValueError):
    """A structure that cannot be featurized or predicted, with its name and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"structure {name!r}: {reason}")
        self.name = name
        self.reason = reason


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line; ``Type (raised without a message)`` when the message is empty."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (raised without a message)"


def structure_name(atoms: Atoms, index: int | None = None) -> str:
    """A human-readable name: ``atoms.info['name'|'id']`` when present, else the formula and index."""
    for key in ("name", "id"):
        if key in atoms.info:
            return str(atoms.info[key])
    formula = atoms.get_chemical_formula() if len(atoms) else "empty"
    return f"{formula}#{index}" if index is not None else formula


def is_periodic(atoms: Atoms) -> bool:
    return bool(np.any(atoms.pbc))


def validate_structure(atoms: Atoms, name: str) -> None:
    """Raise :class:`StructureError` naming ``name`` when the structure is not usable.

    Checks: at least one atom; finite coordinates and cell entries within ±``MAX_ABS_COORDINATE`` Å;
    a cell that is invertible along its periodic directions; no two atoms (or periodic images) closer
    than ``MIN_INTERATOMIC_DISTANCE``.
    """
    if len(atoms) == 0:
        raise StructureError(name, "the structure has no atoms")
    positions = np.asarray(atoms.positions, dtype=float)
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise StructureError(name, f"non-finite (NaN/inf) coordinates for atoms {bad[:10].tolist()}")
    if np.any(np.abs(positions) > MAX_ABS_COORDINATE):
        bad = np.flatnonzero(np.any(np.abs(positions) > MAX_ABS_COORDINATE, axis=1))
        raise StructureError(
            name,
            f"coordinates beyond ±{MAX_ABS_COORDINATE:g} Å for atoms {bad[:10].tolist()} "
            f"(largest |x| = {np.abs(positions).max():.3g} Å)",
        )
    if np.any(atoms.numbers <= 0):
        raise StructureError(name, "atomic numbers must be positive")
    if is_periodic(atoms):
        cell = np.asarray(atoms.cell, dtype=float)
        if not np.all(np.isfinite(cell)):
            raise StructureError(name, "the cell has non-finite entries")
        if np.any(np.abs(cell) > MAX_ABS_COORDINATE):
            raise StructureError(
                name, f"the cell has entries beyond ±{MAX_ABS_COORDINATE:g} Å (largest {np.abs(cell).max():.3g} Å)"
            )
        periodic_vectors = cell[np.asarray(atoms.pbc)]
        gram = periodic_vectors @ periodic_vectors.T
        volume_sq = np.linalg.det(gram) if len(gram) else 1.0
        lengths = np.prod(np.linalg.norm(periodic_vectors, axis=1) ** 2) if len(gram) else 1.0
        if lengths == 0 or volume_sq <= 1e-12 * lengths:
            raise StructureError(name, "the cell is not invertible (degenerate periodic lattice vectors)")
    _check_overlaps(atoms, name)


def validate_structures(structures: Sequence[Atoms], names: Sequence[str]) -> list[StructureError | None]:
    """:func:`validate_structure` of each structure: its error, or None when it is usable. Anything else
    raised for a structure becomes its error too, so one odd structure never stops the others.

    The checks of free molecules run vectorised over all of them at once (one KD-tree for the overlaps, the
    molecules laid side by side 1 Å apart); only the molecules those checks flag, and periodic structures,
    are validated one by one, which gives every error its usual message.
    """
    errors: list[StructureError | None] = [None] * len(structures)
    free = [k for k, atoms in enumerate(structures) if len(atoms) and not is_periodic(atoms)]
    flagged = np.ones(len(structures), dtype=bool)
    if len(free) > 1:  # one molecule alone: validate_structure below is cheaper
        try:
            flagged[free] = _flag_molecules([structures[k] for k in free])
        except Exception:  # input the vectorised checks cannot take: every molecule one by one
            pass
    for k in np.flatnonzero(flagged).tolist():
        try:
            validate_structure(structures[k], names[k])
        except StructureError as exc:
            errors[k] = exc
        except Exception as exc:
            errors[k] = StructureError(names[k], f"featurization failed: {describe_error(exc)}")
    return errors


def _flag_molecules(molecules: Sequence[Atoms]) -> np.ndarray:
    """[B] bool: the free molecules that may fail :func:`validate_structure` (the others surely pass)."""
    sizes = np.array([len(atoms) for atoms in molecules])  # [B]
    positions = np.concatenate([np.asarray(atoms.positions, dtype=float) for atoms in molecules])  # [N, 3]
    numbers = np.concatenate([atoms.numbers for atoms in molecules])  # [N]
    molecule = np.repeat(np.arange(len(molecules)), sizes)  # [N]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # [B]
    with np.errstate(invalid="ignore"):
        bad_atom = ~np.all(np.abs(positions) <= MAX_ABS_COORDINATE, axis=1) | (numbers <= 0)  # [N] NaN too
    bad = np.bincount(molecule, weights=bad_atom, minlength=len(molecules)) > 0  # [B]
    low = np.minimum.reduceat(np.where(bad_atom[:, None], 0.0, positions[:, 0:1]), starts)[:, 0]  # [B]
    high = np.maximum.reduceat(np.where(bad_atom[:, None], 0.0, positions[:, 0:1]), starts)[:, 0]  # [B]
    shift = np.cumsum(high - low + 1.0) - (high - low + 1.0) - low  # [B] molecule b starts at x = sum of widths
    laid_out = positions.copy()
    laid_out[:, 0] += shift[molecule]
    usable = ~bad[molecule]  # [N]
    pairs = cKDTree(laid_out[usable]).query_pairs(MIN_INTERATOMIC_DISTANCE, output_type="ndarray")  # [P, 2]
    bad[molecule[usable][pairs[:, 0]]] = True
    return bad


def _check_overlaps(atoms: Atoms, name: str) -> None:
    if is_periodic(atoms):
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", atoms, MIN_INTERATOMIC_DISTANCE, self_interaction=False)
        if len(i):
            k = int(np.argmin(d))
            raise StructureError(
                name,
                f"atoms {int(i[k])} and {int(j[k])} overlap (distance {d[k]:.3g} Å < {MIN_INTERATOMIC_DISTANCE} Å)",
            )
        return
    pairs = cKDTree(atoms.positions).query_pairs(MIN_INTERATOMIC_DISTANCE, output_type="ndarray")
    if len(pairs):
        i, j = (int(v) for v in pairs[0])
        d = float(np.linalg.norm(atoms.positions[i] - atoms.positions[j]))
        raise StructureError(name, f"atoms {i} and {j} overlap (distance {d:.3g} Å < {MIN_INTERATOMIC_DISTANCE} Å)")
