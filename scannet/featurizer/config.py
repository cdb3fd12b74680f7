"""Featurizer settings: the Voronoi neighbour filter of SCANN (docs/model-spec.md §2.1) and the molecule treatment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

MoleculeMode = Literal["exact", "box10"]
#: The reference settings a model is made for (:meth:`FeaturizerConfig.for_kind`).
FeaturizerKind = Literal["molecules", "crystals"]


@dataclass(frozen=True)
class FeaturizerConfig:
    """How the neighbours of each atom are chosen.

    A Voronoi facet (i, j) is kept as the edge i <- j when all three hold (docs/model-spec.md §2.1):
    ``solid_angle >= solid_angle_threshold``, ``solid_angle / max_facet_solid_angle(i) >=
    relative_threshold`` and ``distance <= distance_threshold``.

    Args:
        distance_threshold: d_t in Å (4.0 for molecules, 6.0 for crystals in the reference).
        solid_angle_threshold: w_t in sr, absolute threshold on the facet solid angle (0.4).
        relative_threshold: threshold on the solid angle relative to the cell's largest facet (0.2).
        molecule_mode: ``"exact"`` (default) computes the Voronoi cells of the free molecule, with the
            unbounded facets of outer atoms handled analytically, which is exactly invariant to rotation,
            translation and permutation. ``"box10"`` reproduces the reference preprocessing: the molecule
            centred in a periodic box of max(10, extent + 0.1) Å and treated as a crystal.
        voronoi_cutoff: crystals only, the radius (Å) of the periodic images each site's Voronoi cell is
            built from, as in pymatgen's ``VoronoiNN(cutoff=7)``; it grows when qhull needs more points.
    """

    distance_threshold: float = 4.0
    solid_angle_threshold: float = 0.4
    relative_threshold: float = 0.2
    molecule_mode: MoleculeMode = "exact"
    voronoi_cutoff: float = 7.0

    def __post_init__(self) -> None:
        if self.distance_threshold <= 0:
            raise ValueError(f"distance_threshold must be > 0, got {self.distance_threshold}")
        if self.solid_angle_threshold < 0:
            raise ValueError(f"solid_angle_threshold must be >= 0, got {self.solid_angle_threshold}")
        if not 0 <= self.relative_threshold <= 1:
            raise ValueError(f"relative_threshold must be in [0, 1], got {self.relative_threshold}")
        if self.molecule_mode not in ("exact", "box10"):
            raise ValueError(f"molecule_mode must be 'exact' or 'box10', got {self.molecule_mode!r}")
        if self.voronoi_cutoff <= 0:
            raise ValueError(f"voronoi_cutoff must be > 0, got {self.voronoi_cutoff}")

    @classmethod
    def molecules(cls, **overrides: Any) -> FeaturizerConfig:
        """The reference settings for molecules (QM9, fullerenes): d_t = 4 Å, w_t = 0.4 sr."""
        return cls(**{"distance_threshold": 4.0, "solid_angle_threshold": 0.4, **overrides})

    @classmethod
    def crystals(cls, **overrides: Any) -> FeaturizerConfig:
        """The reference settings for crystals (MP2018, SmFe12): d_t = 6 Å, w_t = 0.4 sr."""
        return cls(**{"distance_threshold": 6.0, "solid_angle_threshold": 0.4, **overrides})

    @classmethod
    def for_kind(cls, kind: FeaturizerKind, **overrides: Any) -> FeaturizerConfig:
        """The reference settings of ``kind``: :meth:`molecules` or :meth:`crystals`."""
        if kind not in ("molecules", "crystals"):
            raise ValueError(f"featurizer kind must be 'molecules' or 'crystals', got {kind!r}")
        return cls.molecules(**overrides) if kind == "molecules" else cls.crystals(**overrides)

    @property
    def given(self) -> frozenset[str] | None:
        """The keys a partial override set (:meth:`partial`); None for settings given in full."""
        return self.__dict__.get("_given")

    def partial(self, given: Iterable[str]) -> FeaturizerConfig:
        """These settings as a partial override: only the ``given`` keys were asked for, the others are the
        dataclass defaults (the molecule settings) and give way to what the model and the data imply
        (:meth:`over`). Equality, hashing and :meth:`to_dict` ignore the mark."""
        given = frozenset(given)
        unknown = given - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown FeaturizerConfig keys {sorted(unknown)}")
        marked = replace(self)
        object.__setattr__(marked, "_given", given)
        return marked

    def over(self, implied: FeaturizerConfig) -> FeaturizerConfig:
        """The settings to use where ``implied`` is what the model preset and the data call for: ``implied``
        with the keys of a partial override, or these settings unchanged when they were given in full."""
        if self.given is None:
            return self
        return replace(implied, **{name: getattr(self, name) for name in sorted(self.given)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturizerConfig:
        from scannet.typed_config import build

        return build(cls, data)

    def content_hash(self) -> str:
        """A short stable hash of the settings, used to key caches of featurized data."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def check_distance_basis(self, gaussian_distance_max: float, where: str = "model") -> None:
        """Refuse edges longer than the model's distance basis reaches (``gaussian_distance_max >= d_t``).

        A model whose Gaussian centres stop at 4 Å sees every edge beyond ~4.5 Å as the same zero vector;
        the reference pairs d_t = 4 Å with 4 Å centres (molecules) and d_t = 6 Å with 6 Å (crystals).
        """
        if gaussian_distance_max < self.distance_threshold:
            raise ValueError(
                f"{where}: the distance basis ends at gaussian_distance_max={gaussian_distance_max} Å but the "
                f"featurizer keeps edges up to distance_threshold={self.distance_threshold} Å; use a model preset "
                f"for this range (e.g. mp2018-scann+ for crystals, 6 Å) or set gaussian_distance_max >= "
                f"{self.distance_threshold}"
            )
