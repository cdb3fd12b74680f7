"""Are GA scores faithful? The deletion test, which the reference never ran.

For each structure, the k atoms an attribution ranks highest are removed from the global-attention pool
(:meth:`SCANN.readout` with a ``pool_mask``: the remaining weights are renormalised, every atom's local
structure is left as it was) and the change of the prediction |ŷ_masked − ŷ| is recorded. Three rankings
of the atoms are compared:

- ``GA``: the k highest GA scores α;
- ``random``: k atoms drawn at random, for ``n_random`` seeds (mean and spread of the per-seed means);
- ``gradient × input``: the k largest |Σ_d z_kd ∂ŷ/∂z_kd|, with z [A, D] the atoms' inputs to the pool
  (one ranking per target).

Faithful scores change the prediction more when their top atoms are removed than random atoms do.
A structure with at most k atoms is left out of the rows for k (removing them all leaves nothing to pool).

Alphabet: A atoms in the batch, B structures, D global dim, T targets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from ase import Atoms

from scannet import batch as keys
from scannet.batch import batch_to, collate_graphs
from scannet.featurizer import Graph
from scannet.model.scann import SCANN
from scannet.units import report_unit

if TYPE_CHECKING:
    from scannet.predictor import Predictor

METHODS = ("GA", "gradient × input")


@dataclass(frozen=True)
class DeletionConfig:
    """Settings of :func:`deletion_test`."""

    ks: tuple[int, ...] = (1, 2, 3)  # numbers of atoms removed from the pool
    n_random: int = 5  # seeds of the random baseline
    seed: int = 0  # seeds the random atoms
    batch_size: int = 64  # structures per model call

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be numbers of atoms >= 1, got {self.ks}")
        if self.n_random < 1:
            raise ValueError(f"n_random must be >= 1, got {self.n_random}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class DeletionRow:
    """Mean |Δprediction| of one target when k atoms are removed from the pool, in the model's units."""

    target: str
    k: int
    n_structures: int  # structures with more than k atoms (the others are left out of this row)
    ga: float  # the k highest GA scores removed
    random_mean: float  # k random atoms removed: mean over the seeds of the per-seed mean |Δ|
    random_std: float  # standard deviation of the per-seed means (0 with one seed)
    grad_input: float  # the k largest |gradient × input| removed


def top_k_mask(scores: np.ndarray, n_atoms: np.ndarray, k: int) -> np.ndarray:
    """A pool mask [A] that removes, in each structure with more than ``k`` atoms, the ``k`` atoms with the
    highest ``scores`` [A] (ties: the lower index first); structures with at most ``k`` atoms keep every atom."""
    mask = np.ones(len(scores), dtype=bool)
    start = 0
    for n in n_atoms.tolist():
        if n > k:
            mask[start + np.argsort(-scores[start : start + n], kind="stable")[:k]] = False
        start += n
    return mask


def gradient_times_input(model: SCANN, z: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Attributions [T, A]: Σ_d z_kd ∂ŷ_t/∂z_kd for every atom k and target t, z [A, D] the pool's inputs."""
    z = z.detach().requires_grad_(True)  # [A, D]
    with torch.enable_grad():
        prediction = model.readout(z, graph_index, num_graphs).prediction  # [B, T]
        rows = []
        for t in range(prediction.shape[1]):  # a structure's prediction depends on its own atoms only: sum over B
            (grad,) = torch.autograd.grad(prediction[:, t].sum(), z, retain_graph=True)  # [A, D]
            rows.append((grad * z).sum(-1).detach())  # [A]
    return torch.stack(rows)  # [T, A]


@dataclass
class EncodedBatch:
    """A batch encoded once (z) with its full prediction, to be re-pooled without chosen atoms."""

    model: SCANN
    z: torch.Tensor  # [A, D] the atoms' inputs to the pool
    graph_index: torch.Tensor  # [A]
    n_atoms: np.ndarray  # [B]
    prediction: torch.Tensor  # [B, T] with every atom pooled
    ga_scores: np.ndarray  # [A]

    @classmethod
    @torch.no_grad()
    def of(cls, model: SCANN, batch: dict[str, torch.Tensor]) -> EncodedBatch:
        z = model.encode(batch)  # [A, D]
        n_atoms = batch[keys.N_ATOMS].cpu().numpy()  # [B]
        full = model.readout(z, batch[keys.GRAPH_INDEX], len(n_atoms))
        return cls(model, z, batch[keys.GRAPH_INDEX], n_atoms, full.prediction, full.ga_scores.cpu().numpy())

    @torch.no_grad()
    def change(self, scores: np.ndarray, k: int) -> np.ndarray:
        """|Δprediction| [B, T] when the top-k atoms of ``scores`` [A] are removed from the pool."""
        mask = torch.from_numpy(top_k_mask(scores, self.n_atoms, k)).to(self.z.device)  # [A]
        masked = self.model.readout(self.z, self.graph_index, len(self.n_atoms), mask).prediction  # [B, T]
        return (masked - self.prediction).abs().cpu().numpy()


def deletion_test(model: SCANN, graphs: Sequence[Graph], config: DeletionConfig | None = None) -> list[DeletionRow]:
    """The deletion test on featurized structures: one row per target and k (in the model's units)."""
    config = config or DeletionConfig()
    model.eval()
    device = next(model.parameters()).device
    n_targets, n_k = len(model.config.targets), len(config.ks)
    rng = np.random.default_rng(config.seed)
    random_scores = [[rng.random(g.n_atoms) for g in graphs] for _ in range(config.n_random)]  # a random order each
    sums = {name: np.zeros((n_k, n_targets)) for name in METHODS}
    random_sums = np.zeros((config.n_random, n_k, n_targets))
    counts = np.zeros(n_k, dtype=np.int64)

    for start in range(0, len(graphs), config.batch_size):
        chunk = range(start, min(start + config.batch_size, len(graphs)))
        encoded = EncodedBatch.of(model, batch_to(collate_graphs([graphs[i] for i in chunk]), device))
        attributions = gradient_times_input(model, encoded.z, encoded.graph_index, len(chunk))  # [T, A]
        attributions = attributions.abs().cpu().numpy()
        for j, k in enumerate(config.ks):
            kept = encoded.n_atoms > k  # [B]
            counts[j] += int(kept.sum())
            sums["GA"][j] += encoded.change(encoded.ga_scores, k)[kept].sum(0)
            for t in range(n_targets):
                sums["gradient × input"][j, t] += encoded.change(attributions[t], k)[kept, t].sum()
            for s in range(config.n_random):
                scores = np.concatenate([random_scores[s][i] for i in chunk])  # [A]
                random_sums[s, j] += encoded.change(scores, k)[kept].sum(0)

    rows = []
    for j, k in enumerate(config.ks):
        n = int(counts[j])
        for t, target in enumerate(model.config.targets):
            per_seed = random_sums[:, j, t] / n if n else np.full(config.n_random, math.nan)
            rows.append(
                DeletionRow(
                    target=target,
                    k=k,
                    n_structures=n,
                    ga=sums["GA"][j, t] / n if n else math.nan,
                    random_mean=float(per_seed.mean()),
                    random_std=float(per_seed.std(ddof=1)) if config.n_random > 1 else 0.0,
                    grad_input=sums["gradient × input"][j, t] / n if n else math.nan,
                )
            )
    return rows


def _report(value: float, scale: float, unit: str) -> str:
    return "n/a" if math.isnan(value) else f"{value * scale:.4g}" + (f" {unit}" if unit else "")


def format_deletion_table(rows: Sequence[DeletionRow], units: dict[str, str | None], n_random: int) -> list[str]:
    """The rows as a Markdown table in report units (meV for eV targets), GA ÷ random last."""
    header = (
        "| target | k | structures | top-k GA | random k (mean ± sd, "
        f"{n_random} seeds) | top-k gradient × input | GA ÷ random |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        scale, unit = report_unit(units.get(row.target) or "")
        ratio = f"{row.ga / row.random_mean:.2f}" if row.random_mean > 0 else "n/a"
        lines.append(
            f"| {row.target} | {row.k} | {row.n_structures} | {_report(row.ga, scale, unit)} | "
            f"{_report(row.random_mean, scale, unit)} ± {_report(row.random_std, scale, unit)} | "
            f"{_report(row.grad_input, scale, unit)} | {ratio} |"
        )
    return lines


# ------------------------------------------------------------------------------------ the recorded sample

def recorded_test_sample(run_dir: str | Path, n_structures: int, seed: int = 0, min_atoms: int = 1) -> list[Atoms]:
    """A seeded sample of ``n_structures`` (all when fewer) of the test part of the split a training run
    recorded (``split_ids.parquet`` in ``run_dir``), read from the data its ``run_config.json`` names.

    Only structures with at least ``min_atoms`` atoms are drawn; the sample is in id order, so it does not
    depend on the table's order. Raises FileNotFoundError naming the missing file.
    """
    from scannet.data import schema as S
    from scannet.data.structures_table import table_to_structures
    from scannet.train.run import resolve_dataset
    from scannet.train.run_config import RunConfig
    from scannet.train.run_folder import RunFolder
    from scannet.train.worker import split_part_ids
    from scannet.typed_config import build

    folder = RunFolder(run_dir)
    for path in (folder.run_config, folder.split_ids):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: no {path.name}; give the folder of a training run (scannet train)")
    config = build(RunConfig, json.loads(folder.run_config.read_text()))
    dataset = resolve_dataset(config.data, config.cache_dir)
    table = pq.read_table(
        dataset.structures, filters=pc.is_in(pc.field(S.ID), split_part_ids(folder.split_ids, "test"))
    )
    table = table.filter(pc.greater_equal(pc.list_value_length(table.column(S.NUMBERS)), min_atoms))
    table = table.take(pc.sort_indices(table, [(S.ID, "ascending")]))
    chosen = np.random.default_rng(seed).choice(table.num_rows, min(n_structures, table.num_rows), replace=False)
    return table_to_structures(table.take(np.sort(chosen)))


def featurize_sample(predictor: Predictor, structures: Sequence[Atoms]) -> tuple[list[Graph], list[str]]:
    """The graphs of the structures the predictor can featurize, and ``<id>: <reason>`` for each it cannot."""
    names = [str(atoms.info.get("id", atoms.get_chemical_formula())) for atoms in structures]
    graphs, left_out = [], []
    for name, (graph, error) in zip(names, predictor.featurize_each(structures, names)):
        if graph is None:
            left_out.append(f"{name}: {error}")
        else:
            graphs.append(graph)
    return graphs, left_out
