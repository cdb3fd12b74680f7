"""Prediction and GA explanation for lists of structures, with per-structure errors.

Bad structures never stop a batch: each result carries either values and GA scores or the error
that names the structure and the reason. Anything raised for one structure (validation,
featurization, the model on a batch that holds it) is recorded as that structure's error; a batch
the model fails on is retried one structure at a time so the others are still predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from tqdm.auto import tqdm

from scannet.batch import collate_graphs
from scannet.checkpoint import load_model, resolve_checkpoint
from scannet.domain import ApplicabilityDomain, DomainRow, load_domain
from scannet.featurizer import FeaturizerConfig, Graph, featurize_each
from scannet.model.scann import SCANN
from scannet.precision import check_precision, precision_autocast
from scannet.static_shapes import compile_forward, pad_batch, real_output
from scannet.structures import StructureError, describe_error, structure_name


@dataclass
class Prediction:
    """The result for one structure: ``values`` and ``ga_scores`` on success, ``error`` otherwise."""

    name: str
    values: dict[str, float] | None = None  # target -> prediction in the model's units
    ga_scores: np.ndarray | None = None  # [n_atoms] global-attention score per atom, sums to 1
    error: str | None = None
    domain: DomainRow | None = None  # against the model's applicability domain, when it has one

    @property
    def ok(self) -> bool:
        return self.error is None


def _name_of(atoms: Atoms, index: int) -> str:
    try:
        return structure_name(atoms, index)
    except Exception:  # e.g. atomic numbers without a chemical symbol: still a name
        return f"structure#{index}"


def check_vocabulary(atoms: Atoms, elements: Sequence[int], name: str) -> None:
    unknown = sorted(set(atoms.numbers.tolist()) - set(elements))
    if unknown:
        from ase.data import chemical_symbols

        def symbol(z: int) -> str:
            return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)

        raise StructureError(
            name,
            f"elements {[symbol(z) for z in unknown]} are not in the model's vocabulary {[symbol(z) for z in elements]}",
        )


class Predictor:
    """A trained model with its featurizer: ``predict(list_of_atoms)``.

    ``precision`` "bf16" runs the model under ``torch.autocast`` in bfloat16 (outputs are still float32).
    With a ``domain`` (:mod:`scannet.domain`), every prediction carries its :class:`DomainRow`, from the pooled
    vectors of the same forward pass; a structure the model cannot take carries one without a distance.
    """

    def __init__(
        self,
        model: SCANN,
        featurizer_config: FeaturizerConfig,
        metadata: dict | None = None,
        precision: str = "fp32",
        domain: ApplicabilityDomain | None = None,
    ) -> None:
        featurizer_config.check_distance_basis(model.config.gaussian_distance_max, "Predictor")
        self.model = model.eval()
        self.featurizer_config = featurizer_config
        self.metadata = metadata or {}
        self.precision = check_precision(precision)
        self.domain = domain
        self._forward = self.model  # the model, or its compiled forward (:meth:`compile`)
        self._static_shapes = False  # batches padded to bucket shapes (:meth:`compile`)

    def autocast(self) -> torch.autocast:
        """The precision context every forward pass runs in."""
        return precision_autocast(self.device, self.precision)

    def compile(self, static_shapes: bool = False) -> Predictor:
        """Run the model through ``torch.compile``: by default ``dynamic=True``, one compiled graph for every batch
        shape; with ``static_shapes`` every batch is padded to a bucket shape (:mod:`scannet.static_shapes`) and
        each shape gets its own graph, replayed as a CUDA graph on a GPU (``mode="reduce-overhead"``).

        On QM9-sized CPU batches inference is faster after a compilation of about 20 s (figures:
        benchmarks/README.md), which pays off on large libraries only. It compiles now, on a small synthetic batch, so a
        machine that cannot compile (no C++ compiler) fails here with the reason and not on every batch; raises
        ConfigError. Returns ``self``.
        """
        from scannet.typed_config import ConfigError

        z = int(self.model.config.elements[0])
        n = 4  # a 4-atom structure, every atom a neighbour of every other one
        center, neighbor = (a.ravel() for a in np.nonzero(~np.eye(n, dtype=bool)))
        edges = np.ones(len(center), np.float32)
        probe = Graph(np.full(n, z), center, neighbor, 1.5 * edges, 1.0 * edges, 0.3 * edges)
        self._forward, self._static_shapes = compile_forward(self.model, static_shapes, self.device), static_shapes
        try:
            with torch.inference_mode():
                self._forward_graphs([probe, probe])
        except Exception as exc:
            self._forward, self._static_shapes = self.model, False
            raise ConfigError(f"compile: torch.compile failed on this machine: {describe_error(exc)}") from exc
        return self

    @property
    def targets(self) -> tuple[str, ...]:
        return self.model.config.targets

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def unit(self, target: str) -> str | None:
        """The unit of ``target`` from the checkpoint metadata (``metadata["units"]``), None if not recorded."""
        units = self.metadata.get("units")
        unit = units.get(target) if isinstance(units, dict) else None
        return str(unit) if unit not in (None, "") else None

    def featurize_each(
        self, structures: Sequence[Atoms], names: Sequence[str]
    ) -> list[tuple[Graph | None, str | None]]:
        """Per structure (graph, None), or (None, the reason) when it cannot be featurized: the vocabulary check,
        validation and featurization (free molecules vectorised together, :func:`scannet.featurizer.featurize_each`)."""
        outcomes: list[tuple[Graph | None, str | None]] = [(None, None)] * len(structures)
        checked = []
        for i, (atoms, name) in enumerate(zip(structures, names)):
            try:
                check_vocabulary(atoms, self.model.config.elements, name)
                checked.append(i)
            except StructureError as exc:
                outcomes[i] = (None, exc.reason)
            except Exception as exc:  # anything else raised for this structure is its error too
                outcomes[i] = (None, f"featurization failed: {describe_error(exc)}")
        try:
            results = featurize_each(
                [structures[i] for i in checked], self.featurizer_config, [names[i] for i in checked]
            )
        except Exception:  # an error outside any one structure's checks: one at a time isolates it
            results = [self._featurize_alone(structures[i], names[i]) for i in checked]
        for i, result in zip(checked, results):
            outcomes[i] = (None, result.reason) if isinstance(result, StructureError) else (result, None)
        return outcomes

    def _featurize_alone(self, atoms: Atoms, name: str) -> Graph | StructureError:
        try:
            return featurize_each([atoms], self.featurizer_config, [name])[0]
        except Exception as exc:
            return StructureError(name, f"featurization failed: {describe_error(exc)}")

    def featurize(self, atoms: Atoms, name: str) -> Graph:
        """Check the vocabulary, validate and featurize one structure (raises StructureError)."""
        graph, error = self.featurize_each([atoms], [name])[0]
        if error is not None:
            raise StructureError(name, error)
        return graph

    @torch.no_grad()
    def predict(self, structures: Sequence[Atoms], batch_size: int = 128, progress: bool = False) -> list[Prediction]:
        """Predict every structure, ``batch_size`` at a time; failures are reported per structure, the rest
        still predicted. ``progress`` shows a progress bar (tqdm, on stderr) over the structures."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = [Prediction(_name_of(atoms, i)) for i, atoms in enumerate(structures)]
        with tqdm(total=len(structures), desc="predicting", unit="structure", disable=not progress) as bar:
            for start in range(0, len(structures), batch_size):
                indices = range(start, min(start + batch_size, len(structures)))
                outcomes = self.featurize_each([structures[i] for i in indices], [results[i].name for i in indices])
                chunk: list[tuple[int, Graph]] = []
                for i, (graph, error) in zip(indices, outcomes):
                    if graph is None:
                        results[i].error = error
                        if self.domain is not None:
                            results[i].domain = self.domain.assess([structures[i].numbers])[0]
                    else:
                        chunk.append((i, graph))
                bar.update(len(indices))
                self._predict_chunk(chunk, results)
        return results

    @torch.no_grad()
    def predict_graphs(self, graphs: Sequence[Graph], names: Sequence[str], batch_size: int = 128) -> list[Prediction]:
        """Predict structures already featurized by :meth:`featurize` (named ``names``); failures per structure."""
        results = [Prediction(name) for name in names]
        indexed = list(enumerate(graphs))
        for start in range(0, len(indexed), batch_size):
            self._predict_chunk(indexed[start : start + batch_size], results)
        return results

    def _predict_chunk(self, chunk: list[tuple[int, Graph]], results: list[Prediction]) -> None:
        """Run the model on ``chunk``; if it fails, retry each structure alone so only the culprit fails."""
        if not chunk:
            return
        try:
            outputs = self._run_model(chunk)
        except Exception as exc:
            if len(chunk) == 1:
                results[chunk[0][0]].error = f"the model failed: {describe_error(exc)}"
                return
            for item in chunk:
                self._predict_chunk([item], results)
            return
        for (i, _), (values, ga, domain) in zip(chunk, outputs):
            results[i].domain = domain
            if not (np.all(np.isfinite(list(values.values()))) and np.all(np.isfinite(ga))):
                results[i].error = f"the model returned non-finite values {values}"
                continue
            results[i].values, results[i].ga_scores = values, ga

    def _forward_graphs(self, graphs: Sequence[Graph]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """One model call: predictions [B, T], GA scores per structure ([n_atoms] each), pooled vectors [B, D]."""
        device = self.device
        packed = collate_graphs(graphs)
        batch = {k: v.to(device) for k, v in (pad_batch(packed) if self._static_shapes else packed).items()}
        with self.autocast():
            output = real_output(self._forward(batch), batch)  # the real structures' rows of a padded batch
        ga_per_structure = torch.split(output.ga_scores.float().cpu(), packed["n_atoms"].tolist())
        pooled = output.pooled.float().cpu().numpy()
        return output.prediction.float().cpu().numpy(), [ga.numpy() for ga in ga_per_structure], pooled

    def _run_model(self, chunk: list[tuple[int, Graph]]) -> list[tuple[dict[str, float], np.ndarray, DomainRow | None]]:
        """Per structure of ``chunk``: its predictions, GA scores and domain row (None without a domain)."""
        graphs = [g for _, g in chunk]
        prediction, ga_scores, pooled = self._forward_graphs(graphs)
        domains = (
            self.domain.assess([g.numbers for g in graphs], pooled) if self.domain is not None else [None] * len(chunk)
        )
        return [
            (dict(zip(self.targets, prediction[row].tolist())), ga_scores[row], domains[row])
            for row in range(len(chunk))
        ]

    @torch.no_grad()
    def pooled(self, graphs: Sequence[Graph], batch_size: int = 256) -> np.ndarray:
        """The pooled structure vectors R [N, D] the target heads read, ``batch_size`` structures per call."""
        blocks = [self._forward_graphs(graphs[s : s + batch_size])[2] for s in range(0, len(graphs), batch_size)]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.model.config.global_dim), np.float32)

    def predict_one(self, atoms: Atoms) -> Prediction:
        """Predict one structure; raises :class:`StructureError` when it is unusable."""
        result = self.predict([atoms])[0]
        if result.error is not None:
            raise StructureError(result.name, result.error)
        return result


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists here; raises ConfigError (one line) otherwise."""
    from scannet.typed_config import ConfigError

    try:
        resolved = torch.device(device)
    except Exception as exc:
        raise ConfigError(f"device {str(device)!r}: {describe_error(exc)}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: CUDA is not available on this machine")
    return resolved


def load(path: str | Path | None = None, device: str | torch.device = "cpu", precision: str = "fp32") -> Predictor:
    """Load a checkpoint written by :func:`scannet.checkpoint.save_model` as a :class:`Predictor` on ``device``.

    ``path`` may also be the name of a shipped model (:mod:`scannet.pretrained`; ``None``: the default one) or an
    MLflow model URI (``models:/name/1``, ``models:/name@best``) when the platform is installed: the registered
    checkpoint is downloaded and its SHA-256 verified first. ``precision``: one of :data:`scannet.precision.PRECISIONS`.
    The applicability domain saved beside the checkpoint (:func:`scannet.domain.domain_path`), if any, is loaded
    too, after checking it was built for this checkpoint (CheckpointError otherwise).
    """
    from scannet.typed_config import ConfigError

    check_precision(precision)
    resolved = resolve_device(device)
    checkpoint = resolve_checkpoint(path)
    model, featurizer_config, metadata = load_model(checkpoint, map_location="cpu")
    try:
        model = model.to(resolved)
    except Exception as exc:
        raise ConfigError(f"device {str(device)!r}: {describe_error(exc)}") from exc
    return Predictor(model, featurizer_config, metadata, precision, load_domain(checkpoint))
