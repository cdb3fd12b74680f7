"""The applicability domain of a trained model: is a structure like the ones it was trained on?

A prediction is only as good as the training data around it: a QM9 model has seen molecules of H, C, N, O, F
with at most 9 heavy atoms, and ranks ibuprofen (15 heavy atoms) like any other molecule. Three criteria, each
recorded per structure (:class:`DomainRow`):

- elements: every element of the structure occurs in the training split;
- heavy atoms (Z > 1): the count lies in the training split's range;
- distance: the Euclidean distance of the structure's pooled vector R (the global-attention readout the target
  heads read, :class:`~scannet.model.scann.SCANNOutput` ``pooled``), standardised by the training set's
  per-feature mean and std, to its nearest neighbour in a seeded sample of the training split, is at most a
  threshold: the 95th percentile of the same distance over the validation split (disjoint from training, so
  no self-matches), so about 95 % of in-distribution structures pass by construction. Standardised, so that no
  feature dominates by its scale; on the shipped model it separated drugs from QM9 as well as plain Euclidean and
  better than cosine distance (benchmarks/README.md, "Applicability domain").

A structure is in the domain when all three hold. The domain is built after training from the run folder
(:func:`build_run_domain`) and saved beside its checkpoint as ``<checkpoint stem>.domain.npz``
(:func:`domain_path`) with the checkpoint's SHA-256, so a domain is never read for another model.

Alphabet: N structures queried, R reference structures, D global dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from scannet.checkpoint import CheckpointError
from scannet.io.provenance import sha256_file

FORMAT = "scannet.domain/1"
DOMAIN_SUFFIX = ".domain.npz"
QUANTILE = 0.95  # of the validation distances: the threshold
REFERENCE_SIZE = 10_000  # training structures kept as the reference (float16: 2.5 MB at D = 128)
VALIDATION_SIZE = 10_000  # validation structures the threshold is set on (all when fewer)
STD_FLOOR = 1e-3  # a feature's std is at least this fraction of the mean std (near-constant features)
BLOCK = 1024  # queries per distance block: [BLOCK, R] float32 in memory


@dataclass(frozen=True)
class DomainRow:
    """One structure against the domain; ``nn_distance`` is None when the model did not run on it."""

    heavy_atoms: int  # atoms with Z > 1
    unknown_elements: tuple[str, ...]  # element symbols absent from the training split, sorted by Z
    nn_distance: float | None  # standardised Euclidean distance to the nearest training reference
    threshold: float  # the domain's distance threshold
    in_domain: bool  # known elements, heavy atoms in the training range and nn_distance <= threshold

    @property
    def relative_distance(self) -> float | None:
        """``nn_distance / threshold``: at most 1 inside the domain (the ``domain_distance`` column)."""
        return None if self.nn_distance is None else self.nn_distance / self.threshold


def nearest_distances(queries: np.ndarray, reference: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Euclidean distance [N] of every query [N, D] to its nearest row of ``reference`` [R, D] (float32,
    ``torch.cdist`` over blocks of ``block`` queries)."""
    if len(reference) == 0:
        raise ValueError("the reference set is empty")
    ref = torch.as_tensor(np.asarray(reference, np.float32))
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), block):
        chunk = torch.as_tensor(np.asarray(queries[start : start + block], np.float32))
        out[start : start + len(chunk)] = torch.cdist(chunk, ref).min(dim=1).values.numpy()
    return out


def heavy_atom_count(numbers: np.ndarray) -> int:
    return int(np.count_nonzero(np.asarray(numbers) > 1))


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)


@dataclass(frozen=True, eq=False)
class ApplicabilityDomain:
    """What the check needs: training elements and heavy-atom range, the standardised reference vectors and
    the threshold, for the checkpoint with SHA-256 ``checkpoint_sha256``."""

    elements: tuple[int, ...]  # atomic numbers in the training split
    heavy_atoms_range: tuple[int, int]  # min and max heavy atoms in the training split
    mean: np.ndarray  # [D] float32 per-feature mean of the reference pooled vectors
    scale: np.ndarray  # [D] float32 per-feature std (floored at STD_FLOOR x its mean)
    reference: np.ndarray  # [R, D] float16 standardised pooled vectors of a seeded training sample
    threshold: float  # QUANTILE of the validation nearest-neighbour distances
    checkpoint_sha256: str
    n_validation: int  # validation structures the threshold was set on

    def standardise(self, pooled: np.ndarray) -> np.ndarray:
        """[N, D] pooled vectors -> [N, D] float32 in the training set's standard units."""
        return (np.asarray(pooled, np.float32) - self.mean) / self.scale

    def distances(self, pooled: np.ndarray) -> np.ndarray:
        """[N] nearest-neighbour distances of pooled vectors [N, D] to the reference."""
        return nearest_distances(self.standardise(pooled), self.reference)

    def assess(self, numbers: Sequence[np.ndarray], pooled: np.ndarray | None = None) -> list[DomainRow]:
        """One row per structure, given its atomic numbers and (when the model ran) its pooled vector
        ``pooled`` [N, D]; without one, the distance is None and the structure is not in the domain."""
        distances = self.distances(pooled) if pooled is not None and len(pooled) else [None] * len(numbers)
        low, high = self.heavy_atoms_range
        known = set(self.elements)
        rows = []
        for z, distance in zip(numbers, distances):
            heavy = heavy_atom_count(z)
            unknown = tuple(_symbol(int(e)) for e in sorted(set(np.asarray(z).tolist()) - known))
            close = distance is not None and bool(distance <= self.threshold)
            distance = None if distance is None else float(distance)
            in_domain = close and not unknown and low <= heavy <= high
            rows.append(DomainRow(heavy, unknown, distance, self.threshold, in_domain))
        return rows

    def save(self, path: str | Path) -> Path:
        from scannet.io.atomic import AtomicWrite

        path = Path(path)
        with AtomicWrite(path, file=True) as staged, open(staged.path, "wb") as handle:
            np.savez_compressed(
                handle,
                format=np.array(FORMAT),
                elements=np.array(self.elements, np.int64),
                heavy_atoms_range=np.array(self.heavy_atoms_range, np.int64),
                mean=self.mean.astype(np.float32),
                scale=self.scale.astype(np.float32),
                reference=self.reference.astype(np.float16),
                threshold=np.array(self.threshold, np.float64),
                checkpoint_sha256=np.array(self.checkpoint_sha256),
                n_validation=np.array(self.n_validation, np.int64),
            )
        return path

    @classmethod
    def load(cls, path: str | Path, checkpoint: str | Path | None = None) -> ApplicabilityDomain:
        """Read a domain file; with ``checkpoint``, refuse (CheckpointError, one line) a domain of another model."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != FORMAT:
                    raise ValueError(f"format {str(data['format'])!r}, expected {FORMAT!r}")
                domain = cls(
                    elements=tuple(int(z) for z in data["elements"]),
                    heavy_atoms_range=(int(data["heavy_atoms_range"][0]), int(data["heavy_atoms_range"][1])),
                    mean=data["mean"],
                    scale=data["scale"],
                    reference=data["reference"],
                    threshold=float(data["threshold"]),
                    checkpoint_sha256=str(data["checkpoint_sha256"]),
                    n_validation=int(data["n_validation"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable applicability domain ({exc})") from exc
        if checkpoint is not None:
            actual = sha256_file(checkpoint)
            if actual != domain.checkpoint_sha256:
                raise CheckpointError(
                    f"{path}: built for the checkpoint with SHA-256 {domain.checkpoint_sha256}, not {checkpoint} "
                    f"({actual}); rebuild it (scannet.domain.build_run_domain) or delete it"
                )
        return domain


def domain_path(checkpoint: str | Path) -> Path:
    """Where the domain of ``checkpoint`` lives: ``<folder>/<stem>.domain.npz`` (``model.pt`` ->
    ``model.domain.npz``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + DOMAIN_SUFFIX)


def load_domain(checkpoint: str | Path) -> ApplicabilityDomain | None:
    """The domain saved beside ``checkpoint``, verified to belong to it; None when there is none."""
    path = domain_path(checkpoint)
    return ApplicabilityDomain.load(path, checkpoint) if path.is_file() else None


def build_domain(
    reference_pooled: np.ndarray,
    validation_pooled: np.ndarray,
    training_numbers: Sequence[np.ndarray],
    checkpoint_sha256: str,
) -> ApplicabilityDomain:
    """A domain from pooled vectors of training structures (``reference_pooled`` [R, D]) and of validation
    structures ([V, D]), and the atomic numbers of every training structure (elements, heavy-atom range)."""
    if len(reference_pooled) == 0 or len(validation_pooled) == 0 or len(training_numbers) == 0:
        raise ValueError("an applicability domain needs training and validation structures")
    reference_pooled = np.asarray(reference_pooled, np.float32)
    mean = reference_pooled.mean(axis=0)
    std = reference_pooled.std(axis=0)
    scale = np.maximum(std, STD_FLOOR * float(std.mean()) or 1.0).astype(np.float32)
    reference = ((reference_pooled - mean) / scale).astype(np.float16)
    heavy = np.array([heavy_atom_count(z) for z in training_numbers])
    partial = ApplicabilityDomain(
        elements=tuple(int(z) for z in np.unique(np.concatenate([np.asarray(z) for z in training_numbers]))),
        heavy_atoms_range=(int(heavy.min()), int(heavy.max())),
        mean=mean,
        scale=scale,
        reference=reference,
        threshold=float("nan"),
        checkpoint_sha256=checkpoint_sha256,
        n_validation=len(validation_pooled),
    )
    threshold = float(np.quantile(partial.distances(validation_pooled), QUANTILE))
    return replace(partial, threshold=threshold)


def run_samples(
    run_dir: str | Path,
    checkpoint: str | Path,
    reference_size: int = REFERENCE_SIZE,
    validation_size: int = VALIDATION_SIZE,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """What a domain of ``checkpoint`` trained in ``run_dir`` (its ``split_ids.parquet`` and ``run_config.json``)
    is built from: pooled vectors of ``reference_size`` seeded training structures [R, D] and of
    ``validation_size`` seeded validation structures [V, D], and the atomic numbers of every training structure.
    The structures are read from the data the run config names and featurized and pooled as
    :class:`~scannet.predictor.Predictor` does at prediction time. Raises FileNotFoundError naming a missing file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from scannet.checkpoint import load_model
    from scannet.data import schema as S
    from scannet.predictor import Predictor
    from scannet.train.run import resolve_dataset
    from scannet.train.run_folder import RunFolder
    from scannet.train.worker import split_part_ids

    folder = RunFolder(run_dir)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no such file; give a training run folder and its checkpoint")
    pooled = []
    predictor = Predictor(*load_model(checkpoint))  # not scannet.load: an old domain file beside it is replaced
    for part, size in (("train", reference_size), ("val", validation_size)):
        atoms = folder.sample_split(part, size, seed)  # FileNotFoundError naming a missing run file
        names = [str(a.info.get("id", k)) for k, a in enumerate(atoms)]
        graphs = [graph for graph, _ in predictor.featurize_each(atoms, names) if graph is not None]
        pooled.append(predictor.pooled(graphs, batch_size))
    config = folder.read_run_config()
    every_train = pq.read_table(
        resolve_dataset(config.data, config.cache_dir).structures,
        columns=[S.NUMBERS],
        filters=pc.is_in(pc.field(S.ID), split_part_ids(folder.split_ids, "train")),
    )
    numbers = [np.asarray(z) for z in every_train.column(S.NUMBERS).to_pylist()]
    return pooled[0], pooled[1], numbers


def build_run_domain(
    run_dir: str | Path,
    checkpoint: str | Path,
    reference_size: int = REFERENCE_SIZE,
    validation_size: int = VALIDATION_SIZE,
    seed: int = 0,
) -> ApplicabilityDomain:
    """The domain of ``checkpoint`` trained in ``run_dir``: elements and heavy atoms of the whole training split,
    reference vectors of ``reference_size`` seeded training structures, the threshold on ``validation_size``
    seeded validation structures (:func:`run_samples`)."""
    reference, validation, numbers = run_samples(run_dir, checkpoint, reference_size, validation_size, seed)
    return build_domain(reference, validation, numbers, sha256_file(checkpoint))
