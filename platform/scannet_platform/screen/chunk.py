"""Stage M of a screen: featurized chunk -> predictions with every model, its two shards written atomically.

:class:`ChunkPredictor` is the ``map_batches`` callable of the model actor pool (models loaded once per actor)
and the model half of the in-process executor. It takes the featurized chunk of stage F
(:mod:`~scannet_platform.screen.featurize_stage`) and for chunk ``k`` writes

    <out>/quarantine/part-<k>.parquet     row, id, source, reason of each record that could not be screened
    <out>/predictions/part-<k>.parquet    one row per screened record (columns: :func:`output_schema`)

each with :class:`~scannet.io.atomic.AtomicWrite` (staged, then one rename), the quarantine first: a chunk
is finished when its predictions part exists, and then every row of the chunk is in exactly one of the two
parts. A chunk redone (a retried task, a killed run launched again) replaces both parts whole, so nothing is
ever lost or written twice.

Model batches are bounded by atoms (``atom_budget``, whole structures); a batch that fails (out of memory, or
any error) is split in halves and retried, down to single structures, so only the structure that fails alone
is quarantined, with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ase import Atoms

from scannet.data import schema as S
from scannet.data.graphs_table import atom_budget_slices
from scannet.domain import domain_path
from scannet.io.paths import OutputFolder
from scannet.precision import Precision
from scannet.predictor import check_vocabulary, describe_error
from scannet.structures import StructureError
from scannet_platform.screen.featurize_stage import (  # noqa: F401 (CANONICAL_SMILES, STRUCTURE_KEY, part_name: the screen's API)
    CANONICAL_SMILES,
    LEADING,
    LEADING_FIELDS,
    STRUCTURE_KEY,
    FeaturizedChunk,
    part_name,
    write_part,
)
from scannet_platform.screen.library import ROW
from scannet_platform.screen.models import ModelGroup

PREDICTIONS_DIR = "predictions"
QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class ScreenProvenance:
    """The columns every prediction row ends with: what made it."""

    models: str  # the model groups (and the precision when not fp32)
    featurizer_hash: str  # the models' featurizer content hashes
    code_version: str
    run_id: str  # the MLflow run (a random id without tracking)


PROVENANCE = tuple(f.name for f in fields(ScreenProvenance))
#: The applicability-domain columns (docs/screening.md) of a model group whose every member has a domain file:
#: ``heavy_atoms`` once, the others per group (suffixed ``_<targets>`` when the screen has several groups).
HEAVY_ATOMS, DOMAIN_CRITERIA = "heavy_atoms", ("unknown_elements", "domain_distance", "in_domain")
RESERVED = (*LEADING, *PROVENANCE)


@dataclass(frozen=True)
class ScreenSpec:
    """What every model actor needs: built once by the job from its config, sent to each actor."""

    out_dir: str
    groups: tuple[ModelGroup, ...]
    atom_budget: int  # most atoms per model batch
    device: str
    threads: int  # torch threads per actor
    compile: bool
    static_shapes: bool  # with compile: batches padded to bucket shapes
    precision: Precision
    provenance: ScreenProvenance

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field(ROW, pa.int64()),
        pa.field(S.ID, pa.string()),
        pa.field(S.SOURCE, pa.string()),
        pa.field("reason", pa.string()),
    ]
)
RESULT_SCHEMA = pa.schema(
    [
        pa.field("chunk", pa.int64()),
        pa.field("n_input", pa.int64()),
        pa.field("n_screened", pa.int64()),
        pa.field("n_quarantined", pa.int64()),
        pa.field("n_atoms", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("from_store", pa.int64()),
    ]
)


def has_domain(group: ModelGroup) -> bool:
    """Whether every member of ``group`` has an applicability domain beside its checkpoint."""
    return all(domain_path(member.path).is_file() for member in group.members)


def domain_columns(group: ModelGroup, groups: Sequence[ModelGroup]) -> dict[str, str]:
    """Criterion (:data:`DOMAIN_CRITERIA`) -> the column of ``group``; empty when the group has no domain."""
    if not has_domain(group):
        return {}
    suffix = f"_{'_'.join(group.targets)}" if len(groups) > 1 else ""
    return {name: name + suffix for name in DOMAIN_CRITERIA}


def ensemble_domain(rows: Sequence) -> tuple[str, float, int]:
    """(unknown elements, domain distance, in domain) of one record from its members' DomainRows: the union of
    the unknown elements, the largest distance relative to each member's threshold, in the domain only when
    every member says so."""
    from ase.data import atomic_numbers

    unknown = sorted({e for row in rows for e in row.unknown_elements}, key=lambda e: atomic_numbers.get(e, 0))
    return ",".join(unknown), max(row.relative_distance for row in rows), int(all(row.in_domain for row in rows))


def output_schema(groups: Sequence[ModelGroup]) -> pa.Schema:
    """The predictions' columns: identity (canonical SMILES and structure key included), ``<target>_<unit>`` (and
    ``_std`` for an ensemble), GA scores per model group, provenance; the units are in each prediction field's
    metadata."""
    fields = list(LEADING_FIELDS)
    for group in groups:
        for target in group.targets:
            unit = {"unit": group.units[target]} if group.units[target] else None
            fields.append(pa.field(group.columns[target], pa.float64(), metadata=unit))
            if group.ensemble:
                fields.append(pa.field(group.std_column(target), pa.float64(), metadata=unit))
        fields.append(pa.field(group.ga_column, pa.list_(pa.float32())))
    named = [domain_columns(group, groups) for group in groups]
    if any(named):
        fields.append(pa.field(HEAVY_ATOMS, pa.int32()))
    for names in named:
        kinds = (pa.string(), pa.float64(), pa.int8())
        fields += [pa.field(names[c], kind) for c, kind in zip(DOMAIN_CRITERIA, kinds) if c in names]
    fields += [pa.field(name, pa.string()) for name in PROVENANCE]
    return pa.schema(fields)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError) or "out of memory" in str(exc).lower()


def run_bisecting(run: Callable[[list], list], items: list, results: dict, errors: dict) -> int:
    """``run(items)`` -> one output per item; a failing batch is split in halves and retried, a single item
    that fails gets its reason in ``errors`` (by position of ``items``' keys). Returns the number of splits."""
    try:
        outputs = run(items)
    except Exception as exc:
        if is_out_of_memory(exc):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if len(items) == 1:
            what = "out of memory even alone" if is_out_of_memory(exc) else "the model failed"
            errors[items[0][0]] = f"{what}: {describe_error(exc)}"
            return 0
        half = len(items) // 2
        return 1 + run_bisecting(run, items[:half], results, errors) + run_bisecting(run, items[half:], results, errors)
    for (key, _), output in zip(items, outputs):
        results[key] = output
    return 0


@dataclass
class ChunkResult:
    chunk: int
    n_input: int = 0
    n_screened: int = 0
    n_quarantined: int = 0
    n_atoms: int = 0
    seconds: float = 0.0
    from_store: int = 0  # 1 when every graph of the chunk was read from the graph store (stage F skipped)


class ChunkPredictor:
    """Loads the models once; :meth:`predict` does one featurized chunk, ``__call__`` a batch of them (Ray)."""

    def __init__(self, spec: ScreenSpec) -> None:
        import scannet

        self.spec = spec
        torch.set_num_threads(spec.threads)
        self.out = Path(spec.out_dir)
        self.groups = list(spec.groups)
        self.predictors = [[scannet.load(m.path, spec.device, spec.precision) for m in g.members] for g in self.groups]
        if spec.compile:
            for members in self.predictors:
                for predictor in members:
                    predictor.compile(static_shapes=spec.static_shapes)
        vocabularies = {}
        for group, members in zip(self.groups, self.predictors):
            for member, predictor in zip(group.members, members):
                vocabularies.setdefault(tuple(predictor.model.config.elements), member.reference)
        self.vocabularies = vocabularies
        self.schema = output_schema(self.groups)
        self.provenance = asdict(spec.provenance)
        self.folder = OutputFolder(self.out)  # every path written below out is checked: no symbolic link
        self.folder.folder(PREDICTIONS_DIR)
        self.folder.folder(QUARANTINE_DIR)

    def __call__(self, featurized: pa.Table) -> pa.Table:
        results = [asdict(self.predict(FeaturizedChunk.from_row(row))) for row in featurized.to_pylist()]
        return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)

    # ------------------------------------------------------------------------------------------ one chunk

    def predict(self, featurized: FeaturizedChunk) -> ChunkResult:
        start = time.perf_counter()
        piece = featurized.piece
        identity = featurized.identity().to_pydict()
        bad = featurized.reasons()  # position in the chunk -> reason
        good = [k for k in range(piece.rows) if k not in bad]
        graphs = {key: dict(zip(good, featurized.graphs(key, good))) for key in featurized.tables}
        self._check_vocabularies(good, next(iter(graphs.values())), identity[S.ID], bad)
        good = [k for k in good if k not in bad]
        with torch.inference_mode():
            outputs = self._predict(good, graphs, bad)
        screened = [k for k in good if k not in bad]
        quarantine = pa.table(
            {
                ROW: pa.array([identity[ROW][k] for k in sorted(bad)], pa.int64()),
                S.ID: pa.array([identity[S.ID][k] for k in sorted(bad)], pa.string()),
                S.SOURCE: pa.array([identity[S.SOURCE][k] for k in sorted(bad)], pa.string()),
                "reason": pa.array([bad[k] for k in sorted(bad)], pa.string()),
            },
            schema=QUARANTINE_SCHEMA,
        )
        columns = {name: [identity[name][k] for k in screened] for name in LEADING}
        for g, group in enumerate(self.groups):
            shape = (len(screened), len(group.members), len(group.targets))
            values = np.array([outputs[g][k][0] for k in screened], dtype=np.float64).reshape(shape)
            for t, target in enumerate(group.targets):
                columns[group.columns[target]] = values[:, :, t].mean(axis=1)
                if group.ensemble:
                    columns[group.std_column(target)] = values[:, :, t].std(axis=1) * group.std_scale.get(target, 1.0)
            columns[group.ga_column] = [np.mean(outputs[g][k][1], axis=0).astype(np.float32) for k in screened]
            names = domain_columns(group, self.groups)
            if names:
                columns[HEAVY_ATOMS] = [outputs[g][k][2][0].heavy_atoms for k in screened]
                per_record = list(zip(*[ensemble_domain(outputs[g][k][2]) for k in screened])) or [[]] * 3
                columns.update(zip(names.values(), per_record))
        for name, value in self.provenance.items():
            columns[name] = [value] * len(screened)
        predictions = pa.table({f.name: pa.array(columns[f.name], f.type) for f in self.schema}, schema=self.schema)
        write_part(quarantine, self.folder.path(QUARANTINE_DIR, part_name(piece.chunk)))
        write_part(predictions, self.folder.path(PREDICTIONS_DIR, part_name(piece.chunk)))  # the commit of the chunk
        return ChunkResult(
            piece.chunk,
            n_input=piece.rows,
            n_screened=len(screened),
            n_quarantined=len(bad),
            n_atoms=int(sum(columns["n_atoms"])),
            seconds=time.perf_counter() - start,
            from_store=int(featurized.n_cached == len(featurized.tables)),
        )

    def _check_vocabularies(self, good: list[int], graphs: dict[int, object], ids: list, bad: dict[int, str]) -> None:
        """Every good record's elements must be in every model's vocabulary; the others go to ``bad``."""
        for k in good:
            atoms = Atoms(numbers=graphs[k].numbers)
            for elements, reference in self.vocabularies.items():
                try:
                    check_vocabulary(atoms, elements, ids[k])
                except StructureError as exc:
                    prefix = f"model {reference}: " if len(self.vocabularies) > 1 else ""
                    bad[k] = prefix + exc.reason
                    break

    def _predict(self, good: list[int], graphs: dict[str, dict[int, object]], bad: dict[int, str]) -> list[dict]:
        """Per group, per good record: ([members, targets] values, [members, atoms] GA scores, [members] domain
        rows); failures and non-finite outputs go to ``bad`` with the model named."""
        outputs: list[dict] = []
        for group, members in zip(self.groups, self.predictors):
            per_record: dict[int, tuple[list, list, list]] = {k: ([], [], []) for k in good}
            for member, predictor in zip(group.members, members):
                key = predictor.featurizer_config.content_hash()
                todo = [k for k in good if k not in bad]
                n_atoms = np.array([graphs[key][k].n_atoms for k in todo], dtype=np.int64)
                results: dict[int, tuple] = {}
                errors: dict[int, str] = {}
                if todo:
                    for start, end in atom_budget_slices(n_atoms, self.spec.atom_budget):
                        items = [(k, graphs[key][k]) for k in todo[start:end]]
                        run_bisecting(predictor._run_model, items, results, errors)
                prefix = f"model {member.reference}: " if len(self.predictors) > 1 or group.ensemble else ""
                for k, reason in errors.items():
                    bad[k] = prefix + reason
                for k, (values, ga, domain) in results.items():
                    vector = [values[t] for t in group.targets]
                    if not (np.all(np.isfinite(vector)) and np.all(np.isfinite(ga))):
                        bad[k] = f"{prefix}the model returned non-finite values {values}"
                        continue
                    per_record[k][0].append(vector)
                    per_record[k][1].append(ga)
                    per_record[k][2].append(domain)
            outputs.append(per_record)
        return outputs
