"""Reproducible dataset splits and slices, recorded as files (docs/model-spec.md §4.5).

A split is a seeded permutation ``np.random.RandomState(seed).permutation(n)`` cut into train / val / test
(the reference's ``split_data``). Its indices point into an *ordered* list of structures: the table order
(default) or, as the reference does for QM9, the table sorted stably by atom count
(:func:`structure_order`). :func:`slice_indices` picks a seeded random subset for demos.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scannet.data import SplitOrder

_SPLIT_FORMAT = "scannet.split/1"


class SplitMismatchError(ValueError):
    """A saved split does not fit the data it is applied to (or its file is corrupt)."""


def _index_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.array(values, dtype=np.int64).reshape(-1)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Split:
    """Disjoint train / val / test index arrays (int64, read-only) into a dataset of ``n`` structures."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    n: int
    seed: int

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            object.__setattr__(self, name, _index_array(getattr(self, name)))
        joined = self.indices
        if len(joined) and (joined.min() < 0 or joined.max() >= self.n):
            raise ValueError(f"split indices must lie in [0, {self.n})")
        if len(np.unique(joined)) != len(joined):
            raise ValueError("train, val and test indices must be disjoint and unique")

    @property
    def indices(self) -> np.ndarray:
        """train, val and test indices, concatenated in that order."""
        return np.concatenate([self.train, self.val, self.test])

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    @property
    def sha256(self) -> str:
        """SHA-256 of the concatenated indices as little-endian int64."""
        return hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (self.n, self.seed, self.sizes, self.sha256) == (other.n, other.seed, other.sizes, other.sha256)

    def save(self, path: str | Path) -> None:
        """Write the split as JSON: format, n, seed, sizes, sha256 and the three index lists."""
        record = {"format": _SPLIT_FORMAT, "n": self.n, "seed": self.seed, "sizes": self.sizes, "sha256": self.sha256}
        record.update({name: getattr(self, name).tolist() for name in ("train", "val", "test")})
        Path(path).write_text(json.dumps(record, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path, n: int | None = None) -> Split:
        """Read a split saved by :meth:`save`; ``n`` (the size of the data it will index) is checked when given.

        Raises :class:`SplitMismatchError` when ``n`` differs from the recorded one or the file is inconsistent.
        """
        record = json.loads(Path(path).read_text())
        if record.get("format") != _SPLIT_FORMAT:
            raise SplitMismatchError(f"{path}: not a split file (format {record.get('format')!r})")
        if n is not None and n != record["n"]:
            raise SplitMismatchError(
                f"{path}: the split was made for {record['n']} structures but the data has {n}; "
                "load the same data or make a new split"
            )
        split = cls(record["train"], record["val"], record["test"], n=record["n"], seed=record["seed"])
        if split.sizes != record["sizes"] or split.sha256 != record["sha256"]:
            raise SplitMismatchError(f"{path}: the index lists do not match the recorded sizes/sha256 (corrupt file)")
        return split


def make_split(n: int, n_train: int, n_val: int, seed: int = 0) -> Split:
    """Cut ``np.random.RandomState(seed).permutation(n)`` into train (first ``n_train``), val (next ``n_val``)
    and test (the rest)."""
    if n_train < 0 or n_val < 0 or n_train + n_val > n:
        raise ValueError(f"need 0 <= n_train, n_val and n_train + n_val <= n; got {n_train}, {n_val}, n={n}")
    perm = np.random.RandomState(seed).permutation(n)
    return Split(perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :], n=n, seed=seed)


def make_split_fractions(n: int, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> Split:
    """A split with ``round(n * val_fraction)`` val and ``round(n * test_fraction)`` test structures; train is
    the rest."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need fractions >= 0 summing to < 1; got val {val_fraction}, test {test_fraction}")
    n_val = round(n * val_fraction)
    n_test = round(n * test_fraction)
    return make_split(n, n - n_val - n_test, n_val, seed)


def standard_split(n: int, full_size: int, n_train: int, n_val: int, seed: int = 0) -> Split:
    """A dataset's standard split (``n_train`` / ``n_val`` / rest of ``full_size``) when ``n == full_size``;
    for any other ``n`` (a slice for demos) a split with the same proportions."""
    if n == full_size:
        return make_split(n, n_train, n_val, seed)
    n_test = full_size - n_train - n_val
    return make_split_fractions(n, n_val / full_size, n_test / full_size, seed)


def structure_order(n_atoms: np.ndarray, order: SplitOrder) -> np.ndarray:
    """Positions of the structures in the order the split permutation applies to.

    ``"table"``: as stored. ``"atom_count"``: sorted by atom count, ties kept in table order (the
    reference's QM9 list, sorted with Python's stable sort before ``split_data``).
    """
    if order == "table":
        return np.arange(len(n_atoms))
    if order == "atom_count":
        return np.argsort(np.asarray(n_atoms), kind="stable")
    raise ValueError(f"split order must be 'table' or 'atom_count', got {order!r}")


def slice_indices(n_total: int, n_structures: int | None, seed: int) -> np.ndarray:
    """Positions of the structures used: all of them, or a seeded random slice kept in table order."""
    if n_structures is None or n_structures >= n_total:
        return np.arange(n_total)
    if n_structures <= 0:
        raise ValueError(f"n_structures must be > 0 (or None for all), got {n_structures}")
    return np.sort(np.random.RandomState(seed).permutation(n_total)[:n_structures])
