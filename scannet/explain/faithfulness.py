"""Are GA scores faithful? The deletion test, which the reference never ran, with its controls.

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
Each method is also measured per unit of pool weight: |Δŷ| / Σα over the removed atoms, whether the removed
atoms matter more than their share of the pool says.

The controls (:func:`controlled_deletion_test`): removing the atoms with the largest pool weights moves the
prediction more than removing random atoms by construction, so GA ÷ random is set beside the same ratio of an
untrained model of the same architecture (:func:`untrained_control`), and GA beside |gradient × input|; each
ratio is a mean with a 95 % Student-t confidence interval over seeds, each seed drawing its own test sample,
random atoms and untrained initialisation.

Alphabet: A atoms in the batch, B structures, D global dim, T targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from scipy import stats

from scannet import batch as keys
from scannet.batch import batch_to, collate_graphs
from scannet.featurizer import Graph
from scannet.model.scann import SCANN
from scannet.units import report_unit

if TYPE_CHECKING:
    from scannet.predictor import Predictor

METHODS = ("GA", "gradient × input")
CONFIDENCE = 0.95  # level of the intervals over seeds


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
    """Mean |Δprediction| of one target when k atoms are removed from the pool, in the model's units; the
    ``*_per_weight`` figures are the mean over structures of |Δprediction| / Σα, α the GA weights of the atoms
    removed (model units per unit of pool weight)."""

    target: str
    k: int
    n_structures: int  # structures with more than k atoms (the others are left out of this row)
    ga: float  # the k highest GA scores removed
    random_mean: float  # k random atoms removed: mean over the seeds of the per-seed mean |Δ|
    random_std: float  # standard deviation of the per-seed means (0 with one seed)
    grad_input: float  # the k largest |gradient × input| removed
    ga_per_weight: float
    random_per_weight: float  # mean over the random seeds
    grad_input_per_weight: float


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


def deletion_effects(change: np.ndarray, removed_weight: np.ndarray) -> np.ndarray:
    """Sums over structures [2, T] of |Δprediction| (row 0) and of |Δprediction| / Σα (row 1), from the changes
    ``change`` [B, T] and the summed GA weights of each structure's removed atoms ``removed_weight`` [B]."""
    return np.stack([change.sum(0), (change / removed_weight[:, None]).sum(0)])


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
    ga_scores: np.ndarray  # [A] the pool weights α, summing to 1 per structure

    @classmethod
    @torch.no_grad()
    def of(cls, model: SCANN, batch: dict[str, torch.Tensor]) -> EncodedBatch:
        z = model.encode(batch)  # [A, D]
        n_atoms = batch[keys.N_ATOMS].cpu().numpy()  # [B]
        full = model.readout(z, batch[keys.GRAPH_INDEX], len(n_atoms))
        return cls(model, z, batch[keys.GRAPH_INDEX], n_atoms, full.prediction, full.ga_scores.cpu().numpy())

    @torch.no_grad()
    def effects(self, scores: np.ndarray, k: int, kept: np.ndarray) -> np.ndarray:
        """:func:`deletion_effects` [2, T] over the ``kept`` structures [B] when the top-k atoms of ``scores`` [A]
        are removed from the pool."""
        mask = top_k_mask(scores, self.n_atoms, k)  # [A]
        pool_mask = torch.from_numpy(mask).to(self.z.device)
        masked = self.model.readout(self.z, self.graph_index, len(self.n_atoms), pool_mask).prediction  # [B, T]
        change = (masked - self.prediction).abs().cpu().numpy()  # [B, T]
        structure = np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)  # [A]
        removed = np.bincount(structure, weights=self.ga_scores * ~mask, minlength=len(self.n_atoms))  # [B]
        return deletion_effects(change[kept], removed[kept])


def deletion_test(model: SCANN, graphs: Sequence[Graph], config: DeletionConfig | None = None) -> list[DeletionRow]:
    """The deletion test on featurized structures: one row per target and k (in the model's units)."""
    config = config or DeletionConfig()
    model.eval()
    device = next(model.parameters()).device
    n_targets, n_k = len(model.config.targets), len(config.ks)
    rng = np.random.default_rng(config.seed)
    random_scores = [[rng.random(g.n_atoms) for g in graphs] for _ in range(config.n_random)]  # a random order each
    sums = {name: np.zeros((2, n_k, n_targets)) for name in METHODS}  # [effect, k, T], effects as deletion_effects
    random_sums = np.zeros((config.n_random, 2, n_k, n_targets))
    counts = np.zeros(n_k, dtype=np.int64)

    for start in range(0, len(graphs), config.batch_size):
        chunk = range(start, min(start + config.batch_size, len(graphs)))
        encoded = EncodedBatch.of(model, batch_to(collate_graphs([graphs[i] for i in chunk]), device))
        attributions = gradient_times_input(model, encoded.z, encoded.graph_index, len(chunk))  # [T, A]
        attributions = attributions.abs().cpu().numpy()
        for j, k in enumerate(config.ks):
            kept = encoded.n_atoms > k  # [B]
            counts[j] += int(kept.sum())
            sums["GA"][:, j] += encoded.effects(encoded.ga_scores, k, kept)
            for t in range(n_targets):
                sums["gradient × input"][:, j, t] += encoded.effects(attributions[t], k, kept)[:, t]
            for s in range(config.n_random):
                scores = np.concatenate([random_scores[s][i] for i in chunk])  # [A]
                random_sums[s, :, j] += encoded.effects(scores, k, kept)

    rows = []
    for j, k in enumerate(config.ks):
        n = int(counts[j])
        means = {name: total[:, j] / n if n else np.full((2, n_targets), math.nan) for name, total in sums.items()}
        per_seed = random_sums[:, :, j] / n if n else np.full((config.n_random, 2, n_targets), math.nan)
        for t, target in enumerate(model.config.targets):
            rows.append(
                DeletionRow(
                    target=target,
                    k=k,
                    n_structures=n,
                    ga=float(means["GA"][0, t]),
                    random_mean=float(per_seed[:, 0, t].mean()),
                    random_std=float(per_seed[:, 0, t].std(ddof=1)) if config.n_random > 1 else 0.0,
                    grad_input=float(means["gradient × input"][0, t]),
                    ga_per_weight=float(means["GA"][1, t]),
                    random_per_weight=float(per_seed[:, 1, t].mean()),
                    grad_input_per_weight=float(means["gradient × input"][1, t]),
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


# ------------------------------------------------------------------------------------ the controlled study


def untrained_control(model: SCANN, seed: int) -> SCANN:
    """A fresh, untrained SCANN of ``model``'s architecture (its config), initialised under
    ``torch.manual_seed(seed)`` (the global RNG is left as it was), with ``model``'s target statistics, dtype
    and device, in eval mode: what GA ÷ random gives when the pool weights are not learned."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        untrained = SCANN(model.config)
    untrained.set_target_statistics(model.target_mean, model.target_std)
    return untrained.to(dtype=model.target_mean.dtype, device=model.target_mean.device).eval()


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


@dataclass(frozen=True)
class Interval:
    """The mean of per-seed values and its Student-t confidence interval [low, high] at ``CONFIDENCE``
    (NaN bounds with fewer than two values, or when a value is not finite)."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        v = np.asarray(values, dtype=float)
        mean = float(v.mean())
        if len(v) < 2 or not np.isfinite(v).all():
            return cls(mean, math.nan, math.nan)
        half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        return cls(mean, mean - half, mean + half)

    @property
    def known(self) -> bool:
        """Whether the interval has bounds (at least two finite values)."""
        return not math.isnan(self.low)

    def format(self, scale: float = 1.0, unit: str = "", spec: str = ".2f") -> str:
        """``mean [low, high]`` (``mean [n/a]`` without bounds), values × ``scale``, ``unit`` after the bracket."""
        if math.isnan(self.mean):
            return "n/a"
        bounds = f"[{self.low * scale:{spec}}, {self.high * scale:{spec}}]" if self.known else "[n/a]"
        return f"{self.mean * scale:{spec}} {bounds}" + (f" {unit}" if unit else "")


@dataclass(frozen=True)
class ControlledRow:
    """One target and k of the controlled deletion test: each figure a mean [CI] over the seeds. Ratios are
    taken per seed; absolute figures are the trained model's, in model units (per unit of pool weight for the
    ``*_per_weight`` ones)."""

    target: str
    k: int
    n_structures: tuple[int, ...]  # per seed: sampled test structures with more than k atoms
    random: Interval  # mean |Δ| with k random atoms removed
    ga_vs_random: Interval
    untrained_ga_vs_random: Interval  # the same ratio for the untrained control
    grad_input_vs_random: Interval
    ga_vs_grad_input: Interval
    ga_per_weight: Interval
    random_per_weight: Interval
    grad_input_per_weight: Interval
    ga_vs_random_per_weight: Interval
    untrained_ga_vs_random_per_weight: Interval

    @classmethod
    def of(cls, trained: Sequence[DeletionRow], untrained: Sequence[DeletionRow]) -> ControlledRow:
        """From the rows of one target and k, one per seed in the same order, of the trained model and of its
        untrained control. Raises ValueError when the rows do not pair up."""
        keys_ = {(row.target, row.k) for row in [*trained, *untrained]}
        if not trained or len(trained) != len(untrained) or len(keys_) != 1:
            raise ValueError(f"need one trained and one untrained row per seed of one target and k, got {keys_}")

        def over(figure: Callable[[DeletionRow, DeletionRow], float]) -> Interval:
            return Interval.of([figure(t, u) for t, u in zip(trained, untrained)])

        return cls(
            target=trained[0].target,
            k=trained[0].k,
            n_structures=tuple(row.n_structures for row in trained),
            random=over(lambda t, u: t.random_mean),
            ga_vs_random=over(lambda t, u: _ratio(t.ga, t.random_mean)),
            untrained_ga_vs_random=over(lambda t, u: _ratio(u.ga, u.random_mean)),
            grad_input_vs_random=over(lambda t, u: _ratio(t.grad_input, t.random_mean)),
            ga_vs_grad_input=over(lambda t, u: _ratio(t.ga, t.grad_input)),
            ga_per_weight=over(lambda t, u: t.ga_per_weight),
            random_per_weight=over(lambda t, u: t.random_per_weight),
            grad_input_per_weight=over(lambda t, u: t.grad_input_per_weight),
            ga_vs_random_per_weight=over(lambda t, u: _ratio(t.ga_per_weight, t.random_per_weight)),
            untrained_ga_vs_random_per_weight=over(lambda t, u: _ratio(u.ga_per_weight, u.random_per_weight)),
        )


def controlled_deletion_test(
    model: SCANN, samples: Mapping[int, Sequence[Graph]], config: DeletionConfig | None = None
) -> list[ControlledRow]:
    """The deletion test of ``model`` and of its untrained control on each seed's sample (``samples``: seed →
    graphs), the seed also drawing the random atoms and the control's initialisation; one row per target and k
    (``config.seed`` is replaced by each sample's seed)."""
    if not samples:
        raise ValueError("controlled_deletion_test needs at least one seed's sample")
    config = config or DeletionConfig()
    trained, untrained = [], []  # [seed][row]
    for seed, graphs in samples.items():
        seeded = replace(config, seed=seed)
        trained.append(deletion_test(model, graphs, seeded))
        untrained.append(deletion_test(untrained_control(model, seed), graphs, seeded))
    return [
        ControlledRow.of([rows[i] for rows in trained], [rows[i] for rows in untrained]) for i in range(len(trained[0]))
    ]


def _counts(n_structures: tuple[int, ...]) -> str:
    low, high = min(n_structures), max(n_structures)
    return str(low) if low == high else f"{low}-{high}"


def format_controlled_tables(rows: Sequence[ControlledRow], units: dict[str, str | None], n_seeds: int) -> list[str]:
    """Two Markdown tables, each figure mean [95 % CI over ``n_seeds`` seeds]: the deletion ratios with the
    untrained control and the gradient baseline, then the effect per unit of pool weight (report units, meV
    for eV targets)."""
    per = f"mean [{CONFIDENCE:.0%} CI] over {n_seeds} seed" + ("s" if n_seeds != 1 else "")
    ratios, per_weight = [], []
    for row in rows:
        scale, unit = report_unit(units.get(row.target) or "")
        ratios.append(
            [row.target, row.k, _counts(row.n_structures), row.random.format(scale, unit, ".4g"),
             row.ga_vs_random.format(), row.untrained_ga_vs_random.format(), row.grad_input_vs_random.format(),
             row.ga_vs_grad_input.format()]
        )
        per_weight.append(
            [row.target, row.k, row.ga_per_weight.format(scale, unit, ".4g"),
             row.random_per_weight.format(scale, unit, ".4g"), row.grad_input_per_weight.format(scale, unit, ".4g"),
             row.ga_vs_random_per_weight.format(), row.untrained_ga_vs_random_per_weight.format()]
        )
    return [
        f"Deletion ratios ({per}; structures: per seed):",
        "",
        *_markdown_table(
            ["target", "k", "structures", "random k: mean abs Δ", "GA ÷ random", "untrained GA ÷ random",
             "grad×input ÷ random", "GA ÷ grad×input"],
            ratios,
        ),
        "",
        f"Effect per unit of pool weight, mean abs Δ / Σα of the removed atoms ({per}):",
        "",
        *_markdown_table(
            ["target", "k", "GA", "random", "grad×input", "GA ÷ random", "untrained GA ÷ random"], per_weight
        ),
    ]


def _markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def _compare(a: Interval, b: Interval) -> str | None:
    """``above`` or ``below`` when a's interval lies wholly above or below b's, ``overlap`` otherwise; None when
    either has no interval."""
    if not (a.known and b.known):
        return None
    return "above" if a.low > b.high else "below" if a.high < b.low else "overlap"


@dataclass(frozen=True)
class _Check:
    """One question of the verdict: how ``a`` compares with ``b`` in each row, the sentence for each answer and
    the figures shown."""

    compare: Callable[[ControlledRow], str | None]
    sentences: dict[str, str]  # answer of _compare → sentence
    label: str
    figure: Callable[[ControlledRow], str]


_ONE = Interval(1.0, 1.0, 1.0)
_CHECKS = (
    _Check(
        lambda r: _compare(r.ga_vs_random, r.untrained_ga_vs_random),
        {
            "above": "trained GA ÷ random is above its untrained control",
            "below": "trained GA ÷ random is NOT above its untrained control (it is below)",
            "overlap": "trained GA ÷ random is NOT above its untrained control (the intervals overlap)",
        },
        "GA ÷ random, trained vs untrained",
        lambda r: f"{r.ga_vs_random.format()} vs {r.untrained_ga_vs_random.format()}",
    ),
    _Check(
        lambda r: _compare(r.ga_vs_random_per_weight, r.untrained_ga_vs_random_per_weight),
        {
            "above": "per unit of pool weight, trained GA ÷ random is above its untrained control",
            "below": "per unit of pool weight, trained GA ÷ random is NOT above its untrained control (it is below)",
            "overlap": "per unit of pool weight, trained GA ÷ random is NOT above its untrained control "
            "(the intervals overlap)",
        },
        "GA ÷ random per unit of pool weight, trained vs untrained",
        lambda r: f"{r.ga_vs_random_per_weight.format()} vs {r.untrained_ga_vs_random_per_weight.format()}",
    ),
    _Check(
        lambda r: _compare(r.ga_vs_grad_input, _ONE),
        {
            "above": "GA is better than |gradient × input|",
            "below": "GA is WORSE than |gradient × input|",
            "overlap": "GA is not better than |gradient × input| (indistinguishable)",
        },
        "GA ÷ grad×input",
        lambda r: r.ga_vs_grad_input.format(),
    ),
)


def controlled_verdict(rows: Sequence[ControlledRow]) -> list[str]:
    """Plain sentences per target: whether the trained GA ÷ random interval lies above the untrained control's
    (per atom removed and per unit of pool weight), and whether GA ÷ |gradient × input| lies above 1, grouping
    the k with the same answer."""
    lines = []
    for target in dict.fromkeys(row.target for row in rows):
        mine = [row for row in rows if row.target == target]
        for check in _CHECKS:
            answers = {row.k: check.compare(row) for row in mine}
            for answer in dict.fromkeys(answers.values()):
                group = [row for row in mine if answers[row.k] == answer]
                said = check.sentences.get(
                    answer, f"undecided (no interval with one seed) whether {check.sentences['above']}"
                )
                ks = ", ".join(str(row.k) for row in group)
                figures = "; ".join(f"k = {row.k}: {check.figure(row)}" for row in group)
                lines.append(f"{target}: {said} at k = {ks} ({check.label}, {figures})")
    return lines


# ------------------------------------------------------------------------------------ the recorded sample


def recorded_test_sample(run_dir: str | Path, n_structures: int, seed: int = 0, min_atoms: int = 1) -> list[Atoms]:
    """A seeded sample of ``n_structures`` (all when fewer) of the test part of the split a training run
    recorded, in id order, of structures with at least ``min_atoms`` atoms (:meth:`RunFolder.sample_split
    <scannet.train.run_folder.RunFolder.sample_split>`)."""
    from scannet.train.run_folder import RunFolder

    return RunFolder(run_dir).sample_split("test", n_structures, seed, min_atoms)


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


def seeded_samples(
    predictor: Predictor, run_dir: str | Path, n_structures: int, seeds: Sequence[int], min_atoms: int = 1
) -> tuple[dict[int, list[Graph]], list[str]]:
    """For each seed, the graphs of the :func:`recorded_test_sample` it draws, and ``seed <s>: <id>: <reason>``
    for each structure that could not be featurized."""
    samples, left_out = {}, []
    for seed in seeds:
        structures = recorded_test_sample(run_dir, n_structures, seed, min_atoms)
        samples[seed], failed = featurize_sample(predictor, structures)
        left_out += [f"seed {seed}: {line}" for line in failed]
    return samples, left_out
