"""Prediction and GA explanation for lists of structures, with per-structure errors.

Bad structures never stop a batch: each result carries either values and GA scores or the error
that names the structure and the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from scannet.batch import collate_graphs
from scannet.checkpoint import load_model
from scannet.featurizer import FeaturizerConfig, Graph, featurize
from scannet.model.scann import SCANN
from scannet.structures import StructureError, structure_name


@dataclass
class Prediction:
    """The result for one structure: ``values`` and ``ga_scores`` on success, ``error`` otherwise."""

    name: str
    values: dict[str, float] | None = None  # target -> prediction in the model's units
    ga_scores: np.ndarray | None = None  # [n_atoms] global-attention score per atom, sums to 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_vocabulary(atoms: Atoms, elements: Sequence[int], name: str) -> None:
    unknown = sorted(set(atoms.numbers.tolist()) - set(elements))
    if unknown:
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in unknown]
        raise StructureError(name, f"elements {symbols} are not in the model's vocabulary {list(elements)}")


class Predictor:
    """A trained model with its featurizer: ``predict(list_of_atoms)``."""

    def __init__(self, model: SCANN, featurizer_config: FeaturizerConfig, metadata: dict | None = None) -> None:
        featurizer_config.check_distance_basis(model.config.gaussian_distance_max, "Predictor")
        self.model = model.eval()
        self.featurizer_config = featurizer_config
        self.metadata = metadata or {}

    @property
    def targets(self) -> tuple[str, ...]:
        return self.model.config.targets

    def featurize(self, atoms: Atoms, name: str) -> Graph:
        """Check the vocabulary, validate and featurize one structure (raises StructureError)."""
        check_vocabulary(atoms, self.model.config.elements, name)
        return featurize(atoms, self.featurizer_config, name)

    @torch.no_grad()
    def predict(self, structures: Sequence[Atoms], batch_size: int = 128) -> list[Prediction]:
        """Predict every structure; failures are reported per structure, the rest still predicted."""
        results = [Prediction(structure_name(atoms, i)) for i, atoms in enumerate(structures)]
        graphs: list[tuple[int, Graph]] = []
        for i, atoms in enumerate(structures):
            try:
                graphs.append((i, self.featurize(atoms, results[i].name)))
            except StructureError as exc:
                results[i].error = exc.reason
        for chunk in _chunks(graphs, batch_size):
            self._predict_chunk(chunk, results)
        return results

    def _predict_chunk(self, chunk: list[tuple[int, Graph]], results: list[Prediction]) -> None:
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in collate_graphs([g for _, g in chunk]).items()}
        output = self.model(batch)
        prediction = output.prediction.cpu().numpy()  # [B, T]
        ga_per_structure = torch.split(output.ga_scores.cpu(), batch["n_atoms"].tolist())
        for row, ((i, _), ga) in enumerate(zip(chunk, ga_per_structure)):
            results[i].values = dict(zip(self.targets, prediction[row].tolist()))
            results[i].ga_scores = ga.numpy()

    def predict_one(self, atoms: Atoms) -> Prediction:
        """Predict one structure; raises :class:`StructureError` when it is unusable."""
        result = self.predict([atoms])[0]
        if result.error is not None:
            raise StructureError(result.name, result.error)
        return result


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load(path: str | Path, device: str = "cpu") -> Predictor:
    """Load a checkpoint written by :func:`scannet.checkpoint.save_model` as a :class:`Predictor`."""
    model, featurizer_config, metadata = load_model(path, map_location=device)
    return Predictor(model, featurizer_config, metadata)
