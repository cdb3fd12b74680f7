"""Datasets: loaders that turn public data files into ASE ``Atoms`` with targets, and train/val/test splits.

This module holds only plain values, read by configs and command-line flags without NumPy.
"""

from typing import Literal

#: How the structures are ordered before a split's permutation is applied: as stored, or by atom count (stable).
SplitOrder = Literal["table", "atom_count"]

#: Most atoms per structure (``max_atoms``, ``--max-atoms``); a larger frame is quarantined unread.
DEFAULT_MAX_ATOMS = 100_000
