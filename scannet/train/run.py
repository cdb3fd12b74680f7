"""A training run from its config to its summary; the Ray-free runner (``scannet train``).

Steps, shared by this runner and the Ray Train driver (``scannet_platform.train.driver``):

[1] ``prepare_run``: the dataset (QM9 built once into the data cache, or the user's structures table), its
    elements and periodicity -> the model (preset paired with its featurizer settings, element vocabulary
    from the data) -> the graph table, cached under the structures table's content fingerprint and the
    featurizer hash -> the seeded split, saved (indices and ids) -> the target statistics -> a
    :class:`~scannet.train.worker.WorkerConfig`. Every check runs here, before training starts and before
    anything is written into the run folder.
[2] the worker loop (:func:`~scannet.train.worker.run_worker`), here in this process (``LocalSession``).
[3] ``finish_run``: the best weights evaluated on the whole test split (the count is reported), the
    applicability domain (:mod:`scannet.domain`) and the summary written next to the checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from scannet.checkpoint import load_model, resolve_checkpoint, save_model
from scannet.data import schema as S
from scannet.data.graphs_table import QUARANTINE_FILE, featurize_table, graph_cache_dir, graph_table_files
from scannet.data.loader import make_table_loader
from scannet.data.qm9 import QM9_SIZE, QM9_STANDARD_TRAIN, QM9_STANDARD_VAL, write_qm9_table
from scannet.data.splits import Split, make_split_fractions, slice_indices, standard_split, structure_order
from scannet.data.structures_table import STRUCTURES_FILE, StructuresWriter, read_units
from scannet.domain import build_run_domain, domain_path
from scannet.featurizer import FeaturizerConfig
from scannet.io.provenance import content_fingerprint
from scannet.model import SCANN, SCANNConfig, count_parameters
from scannet.model.config import preset
from scannet.train import metrics as M
from scannet.train.launches import LaunchRecord, LaunchTimeLimit
from scannet.train.run_config import RunConfig
from scannet.train.run_folder import RunFolder, checked_run_dir
from scannet.train.trainer import predict_batches, target_statistics
from scannet.train.worker import (
    TRAIN_STATE,
    LocalSession,
    WorkerConfig,
    run_worker,
    split_part_ids,
    split_stream,
    write_split_ids,
)
from scannet.typed_config import ConfigError, build, to_plain
from scannet.units import report_unit

#: Keys a re-run with the same name may change (anything else would silently change the run).
RESUMABLE_KEYS = frozenset(
    {
        "train.epochs",
        "train.patience",
        "hooks",
        "threads",
        "device",
        "allow_missing_test",
        "precision",
        "compile",
        "static_shapes",
        "loader_workers",
        "launch_hours",
    }
)

#: featurize(structures table, output folder, settings) -> number of quarantined structures.
Featurize = Callable[[Path, Path, FeaturizerConfig], int]
#: resolve(reference) -> a checkpoint file (the platform adds models:/ URIs).
ResolveCheckpoint = Callable[[str], Path]


# ---------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class DatasetInfo:
    """What a run needs to know about its data, instead of ``data == "qm9"`` checks scattered around."""

    name: str  # "qm9" or the table's folder name
    structures: Path
    units: dict[str, str]  # {target: stored unit}
    standard_split: tuple[int, int, int] | None = None  # (full size, n_train, n_val) when the data has one

    def report(self, target: str) -> tuple[float, str]:
        """(scale, unit) to show an error of ``target`` in (meV for energies stored in eV)."""
        return report_unit(self.units.get(target, ""))

    def split(self, n: int, seed: int, val_fraction: float, test_fraction: float) -> Split:
        if self.standard_split is not None:
            return standard_split(n, *self.standard_split, seed=seed)
        return make_split_fractions(n, val_fraction, test_fraction, seed=seed)


def resolve_dataset(data: str, cache: Path) -> DatasetInfo:
    """``"qm9"`` (its table built once into ``cache/qm9``) or the path of a structures table."""
    if data == "qm9":
        path = cache / "qm9" / STRUCTURES_FILE
        if not path.exists():
            print(f"building the QM9 structures table in {path.parent} ...")
            write_qm9_table(path.parent)
        standard = (QM9_SIZE, QM9_STANDARD_TRAIN, QM9_STANDARD_VAL)
        return DatasetInfo("qm9", path, read_units(path), standard)
    path = Path(data).expanduser().resolve()
    if path.is_dir():
        path = path / STRUCTURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"data {data}: no such structures table (make one with `scannet data import`)")
    name = path.parent.name if path.stem == "structures" else path.stem
    return DatasetInfo(name, path, read_units(path))


@dataclass(frozen=True)
class DataFacts:
    ids: pa.Array  # [N] string
    n_atoms: np.ndarray  # [N]
    elements: tuple[int, ...]  # sorted atomic numbers present
    periodic: bool  # any structure periodic


def data_facts(structures: Path) -> DataFacts:
    table = pq.read_table(structures, columns=[S.ID, S.NUMBERS, S.PBC])
    numbers = table.column(S.NUMBERS).combine_chunks()
    elements = tuple(int(z) for z in np.unique(pc.list_flatten(numbers).to_numpy(zero_copy_only=False)))
    pbc = pc.list_flatten(table.column(S.PBC).combine_chunks())
    periodic = bool(len(pbc) and pc.any(pc.fill_null(pbc, False)).as_py())
    n_atoms = pc.list_value_length(numbers).to_numpy(zero_copy_only=False)
    return DataFacts(table.column(S.ID).combine_chunks(), n_atoms, elements, periodic)


def slice_dataset(
    dataset: DatasetInfo, facts: DataFacts, n_structures: int, seed: int, cache: Path
) -> tuple[DatasetInfo, DataFacts]:
    """A seeded slice as a structures table of its own (cached), so only the slice is featurized and read."""
    chosen = slice_indices(len(facts.ids), n_structures, seed)
    if len(chosen) == len(facts.ids):
        return dataset, facts
    folder = cache / "slices" / f"{dataset.name}-{content_fingerprint(dataset.structures)}-n{len(chosen)}-seed{seed}"
    path = folder / STRUCTURES_FILE
    if not path.exists():
        table = pq.read_table(dataset.structures).take(pa.array(chosen))
        with StructuresWriter(path, dataset.units) as writer:
            writer.write_table(table)
    return replace(dataset, structures=path), data_facts(path)


def _symbols(numbers) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in numbers]


# ----------------------------------------------------------------------------------------------- model


def new_model_config(config: RunConfig, facts: DataFacts) -> SCANNConfig:
    """The preset plus overrides, with an element vocabulary that covers the data."""
    name = config.resolved_model_preset(facts.periodic)
    base = preset(name, targets=tuple(config.targets))
    values = dict(config.model_overrides)
    if "elements" not in values and not set(facts.elements) <= set(base.elements):
        values["elements"] = facts.elements  # the preset does not cover the data: the data's elements
        values["max_atomic_number"] = max(base.max_atomic_number, max(facts.elements))
    try:
        model = build(SCANNConfig, values, "model_overrides", base)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None
    missing = sorted(set(facts.elements) - set(model.elements))
    if missing:
        raise ConfigError(f"model_overrides.elements does not cover the data's elements {_symbols(missing)}")
    return model


def fine_tune_source(config: RunConfig, facts: DataFacts, resolve: ResolveCheckpoint) -> SCANN:
    """The model to fine-tune from, checked against the run's targets and the data's elements."""
    source, _, _ = load_model(resolve(config.init_from))
    if tuple(source.config.targets) != tuple(config.targets):
        raise ConfigError(
            f"init_from {config.init_from}: the model predicts {list(source.config.targets)}, the run asks for "
            f"{list(config.targets)}"
        )
    missing = sorted(set(facts.elements) - set(source.config.elements))
    if missing:
        raise ConfigError(
            f"init_from {config.init_from}: the data holds elements {_symbols(missing)} that the model's "
            f"vocabulary {_symbols(source.config.elements)} lacks; train a new model instead"
        )
    return source


# ------------------------------------------------------------------------------------------------ graphs


def plain_featurize(structures: Path, out_dir: Path, featurizer: FeaturizerConfig) -> int:
    """Featurize in this process (the Ray-free path); returns the number of quarantined structures."""
    print(f"featurizing {structures} into {out_dir} ...")
    return featurize_table(structures, out_dir, featurizer, progress=True).n_quarantined


def graph_table_for(
    dataset: DatasetInfo, facts: DataFacts, featurizer: FeaturizerConfig, cache: Path, featurize: Featurize
) -> tuple[Path, pa.Array, int]:
    """The graph table of exactly this structures table and these settings (featurized when missing).

    Keyed by the structures file's content fingerprint and the featurizer hash, so a different table at the
    same path (or a rewritten one) never reuses stale graphs; its ids are checked against the structures.
    """
    folder = graph_cache_dir(cache / "graphs" / f"{dataset.name}-{content_fingerprint(dataset.structures)}", featurizer)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        featurize(dataset.structures, folder, featurizer)
    graph_ids = pa.concat_arrays(
        [pq.read_table(f, columns=[S.ID]).column(S.ID).combine_chunks() for f in graph_table_files(folder)]
    )
    quarantine = folder / QUARANTINE_FILE
    bad_ids = (
        pq.read_table(quarantine, columns=[S.ID]).column(S.ID).combine_chunks()
        if quarantine.exists()
        else pa.array([], pa.string())
    )
    seen = pa.concat_arrays([graph_ids.cast(pa.string()), bad_ids.cast(pa.string())])
    if len(seen) != len(facts.ids) or not pc.all(pc.is_in(facts.ids, value_set=seen)).as_py():
        raise RuntimeError(f"{folder}: the graph table does not hold the structures of {dataset.structures}; delete it")
    return folder, graph_ids, len(bad_ids)


# -------------------------------------------------------------------------------------------------- split


def make_run_split(
    config: RunConfig, dataset: DatasetInfo, facts: DataFacts, run_dir: Path
) -> tuple[Split, list[str], list[str]]:
    """The seeded split of the (ordered) structures: (split, ids in split order, their parts)."""
    n = len(facts.ids)  # the (already sliced) structures
    order = structure_order(facts.n_atoms, config.split_order)  # the positions the permutation applies to
    permuted = dataset.split(n, config.split_seed, config.val_fraction, config.test_fraction)
    split = Split(order[permuted.train], order[permuted.val], order[permuted.test], n=n, seed=config.split_seed)
    split_file = RunFolder(run_dir).split
    if split_file.exists() and Split.load(split_file, n=n) != split:
        raise ConfigError(f"{split_file}: the run {config.name!r} was made with another split; use a new name")
    ids = facts.ids.take(pa.array(split.indices)).to_pylist()
    parts = [part for part in ("train", "val", "test") for _ in range(split.sizes[part])]
    return split, ids, parts


# -------------------------------------------------------------------------------------------------- run


@dataclass
class PreparedRun:
    config: RunConfig
    run_dir: Path
    dataset: DatasetInfo
    graphs: Path
    quarantined: int
    split_file: Path
    split_ids: Path
    split_sizes: dict[str, int]  # structures in each part of the split
    featurized_sizes: dict[str, int]  # of which featurized (the rest is quarantined)
    worker: WorkerConfig

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)


def check_resume(config: RunConfig, run_dir: Path, extra_resumable: frozenset[str] = frozenset()) -> None:
    """Refuse to resume a run whose recorded config differs in anything but the resumable keys."""
    changes = config_changes(RunFolder(run_dir).run_config, config, RESUMABLE_KEYS | extra_resumable)
    if changes:
        raise ConfigError(
            f"run {config.name!r} exists in {run_dir} with another config ({changes}); resume it unchanged "
            "(only epochs, patience and execution settings may change) or choose a new name"
        )


def config_changes(recorded_file: Path, config: Any, allowed: frozenset[str]) -> str | None:
    """``key: recorded -> current`` for the settings of ``config`` (dotted keys) that differ from those recorded
    in ``recorded_file`` (JSON), except the ``allowed`` keys and what lies below them; None when nothing differs
    or nothing was recorded. A key the recorded file lacks (written before the setting existed) differs only when
    ``config`` sets it to other than its default: a new setting's default keeps the old behaviour."""
    if not recorded_file.exists():
        return None
    recorded = _flat(json.loads(recorded_file.read_text()))
    current = _flat(json.loads(json.dumps(to_plain(config))))
    defaults = _flat(json.loads(json.dumps(to_plain(_field_defaults(type(config))))))
    differ = sorted(
        k
        for k in set(recorded) | set(current)
        if recorded.get(k, defaults.get(k)) != current.get(k)
        and not any(k == a or k.startswith(a + ".") for a in allowed)
    )
    return ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in differ[:8]) or None


def _field_defaults(cls: type) -> dict[str, Any]:
    """The defaults of a config dataclass's fields (a nested config: its default instance), without validating
    the whole (a default StudyConfig, e.g., is refused for its empty search space)."""
    return {
        f.name: f.default if f.default is not MISSING else f.default_factory()
        for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    }


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key != "model_overrides":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def prepare_run(
    config: RunConfig,
    featurize: Featurize = plain_featurize,
    resolve: ResolveCheckpoint = resolve_checkpoint,
    extra_resumable: frozenset[str] = frozenset(),
) -> PreparedRun:
    """Steps [1]: everything checked, then the run folder written (config, split)."""
    run_dir = checked_run_dir(config.runs_dir, config.name)  # no symbolic link where the run writes
    check_resume(config, run_dir, extra_resumable)
    dataset = resolve_dataset(config.data, config.cache_dir)
    missing = [t for t in config.targets if t not in dataset.units]
    if missing:
        raise ConfigError(f"targets {missing} are not columns of {dataset.structures}; it has {sorted(dataset.units)}")
    facts = data_facts(dataset.structures)
    if config.n_structures is not None:
        dataset, facts = slice_dataset(dataset, facts, config.n_structures, config.split_seed, config.cache_dir)
    source = fine_tune_source(config, facts, resolve) if config.init_from else None
    model = source.config if source is not None else new_model_config(config, facts)
    featurizer = config.resolved_featurizer(facts.periodic)
    featurizer.check_distance_basis(
        model.gaussian_distance_max, f"model {config.resolved_model_preset(facts.periodic)}"
    )

    split, ids, parts = make_run_split(config, dataset, facts, run_dir)
    graphs, graph_ids, quarantined = graph_table_for(dataset, facts, featurizer, config.cache_dir, featurize)
    kept = pc.is_in(pa.array(ids, pa.string()), value_set=graph_ids).to_numpy(zero_copy_only=False)
    part_of = np.array(parts)
    featurized = {part: int(kept[part_of == part].sum()) for part in ("train", "val", "test")}
    if featurized["test"] < split.sizes["test"] and not config.allow_missing_test:
        raise RuntimeError(
            f"{split.sizes['test'] - featurized['test']} of {split.sizes['test']} test structures could not be "
            f"featurized (reasons in {graphs / QUARANTINE_FILE}); the test MAE would leave them out. Set "
            "allow_missing_test to evaluate the rest"
        )
    if featurized["train"] == 0 or featurized["val"] == 0:
        raise RuntimeError(f"no featurized structures to train or validate on ({featurized}); see {graphs}")

    run_dir.mkdir(parents=True, exist_ok=True)  # every check passed: write the run folder
    folder = RunFolder(run_dir)
    folder.run_config.write_text(json.dumps(to_plain(config), indent=1))
    split_file = folder.split
    split.save(split_file)
    split_ids = write_split_ids(folder.split_ids, ids, parts)
    if source is None:
        mean, std = target_statistics(split_targets(graphs, split_ids, config.targets, "train"))
    else:  # the heads of the source output z-scores of ITS statistics: a small set's would move every prediction
        mean, std = source.target_mean.numpy(), source.target_std.numpy()
    init_weights = None
    if source is not None:
        init_weights = folder.init_weights
        torch.save(source.state_dict(), init_weights)
    worker = WorkerConfig(
        graph_table=str(graphs),
        split_ids=str(split_ids),
        model=model,
        train=config.train,
        featurizer=featurizer,
        target_mean=tuple(mean.tolist()),
        target_std=tuple(std.tolist()),
        init_weights=str(init_weights) if init_weights else None,
        precision=config.precision,
        compile=config.compile,
        static_shapes=config.static_shapes,
        loader_workers=config.loader_workers,
        threads=config.threads,
        model_metadata={
            "dataset": dataset.name,
            "units": {t: dataset.units[t] for t in config.targets},
            "run": config.name,
            "split_sha256": split.sha256,
        },
        run_dir=str(run_dir),
        hooks=config.hooks,
    )
    return PreparedRun(
        config, run_dir, dataset, graphs, quarantined, split_file, split_ids, split.sizes, featurized, worker
    )


def split_targets(graphs: Path, split_ids: Path, targets: tuple[str, ...], part: str) -> np.ndarray:
    """Targets [N, T] of one split part, read column-wise from the graph table."""
    wanted = split_part_ids(split_ids, part)
    table = pa.concat_tables([pq.read_table(f, columns=[S.ID, *targets]) for f in graph_table_files(graphs)])
    table = table.filter(pc.is_in(table.column(S.ID), value_set=wanted))
    return np.stack([table.column(t).to_numpy() for t in targets], axis=1)


# ------------------------------------------------------------------------------------------------ finish


@dataclass
class RunSummary:
    """What a finished run reports (console, summary.json, MLflow)."""

    name: str
    run_dir: str
    checkpoint: str
    split_file: str
    split_sizes: dict[str, int]
    featurized_sizes: dict[str, int]
    quarantined: int
    parameters: int
    epochs_run: int
    best_epoch: int  # 0-based index into the history
    resumed_from_epoch: int  # epochs finished before this launch (0: from scratch)
    test_evaluated: int
    test_mae: dict[str, float]  # report units
    report_units: dict[str, str]
    seconds: float
    mlflow_run_id: str | None = None
    model_uri: str | None = None
    mlflow_runs_url: str | None = None  # the experiment's runs table in the MLflow UI
    init_from: str | None = None  # fine-tuning: the model whose weights the run started from

    @property
    def launch_text(self) -> str:
        if self.resumed_from_epoch:
            return f"resumed after epoch {self.resumed_from_epoch}"
        return f"started from the weights of {self.init_from}" if self.init_from else "started from scratch"

    def lines(self) -> list[str]:
        """The summary printed at the end; epochs are numbered from 1, as in the per-epoch lines."""
        maes = ", ".join(f"{t} {v:.4g} {self.report_units[t]}" for t, v in self.test_mae.items())
        sizes = " / ".join(f"{self.featurized_sizes[p]:,}" for p in ("train", "val", "test"))
        lines = [
            f"run        : {self.name} in {self.run_dir}",
            f"data       : {sizes} train / val / test structures ({self.quarantined} quarantined)",
            f"model      : {self.parameters:,} parameters, {self.epochs_run} epochs (best: epoch {self.best_epoch + 1}; "
            f"this launch {self.launch_text})",
            f"test MAE   : {maes} ({self.test_evaluated:,} of {self.split_sizes['test']:,} test structures)",
            f"checkpoint : {self.checkpoint}",
            f"split      : {self.split_file}",
        ]
        if self.mlflow_run_id:
            lines += [f"MLflow run : {self.mlflow_run_id}", f"model      : {self.model_uri}"]
        if self.mlflow_runs_url:
            lines.append(f"MLflow UI  : {self.mlflow_runs_url}")
        return [*lines, f"time       : {self.seconds:.1f} s"]


@dataclass
class Evaluation:
    summary: RunSummary
    history: list[dict[str, Any]]
    predictions: np.ndarray  # [N_test, T] dataset units
    targets: np.ndarray  # [N_test, T]


def finish_run(prepared: PreparedRun, latest: Path, start: float) -> Evaluation:
    """Steps [3]: the best weights of the latest checkpoint, saved and evaluated on the whole test split; their
    applicability domain beside them (``best_model.domain.npz``)."""
    state = torch.load(latest / TRAIN_STATE, map_location="cpu", weights_only=True)
    model = SCANN(prepared.worker.model)
    model.load_state_dict(state["best_model"] if state["best_model"] is not None else state["model"])
    test = split_stream(prepared.worker, "test", 0, 1, shuffle=False, batch_size=256)
    predictions, targets = predict_batches(model, make_table_loader(test))
    mae = np.abs(predictions - targets).mean(axis=0) if len(targets) else np.full(len(prepared.config.targets), np.nan)
    report = {t: prepared.dataset.report(t) for t in prepared.config.targets}
    test_mae = {t: float(mae[k] * report[t][0]) for k, t in enumerate(prepared.config.targets)}
    metadata = {
        **prepared.worker.model_metadata,
        "test_mae": test_mae,  # report units, over the whole test split
        "test_mae_units": {t: report[t][1] for t in prepared.config.targets},
        "test_structures": len(targets),
    }
    checkpoint = save_model(prepared.folder.best_model, model, prepared.worker.featurizer, metadata)
    build_run_domain(prepared.run_dir, checkpoint).save(domain_path(checkpoint))
    launch = json.loads(prepared.folder.launch.read_text())
    summary = RunSummary(
        name=prepared.config.name,
        run_dir=str(prepared.run_dir),
        checkpoint=str(checkpoint),
        split_file=str(prepared.split_file),
        split_sizes=prepared.split_sizes,
        featurized_sizes=prepared.featurized_sizes,
        quarantined=prepared.quarantined,
        parameters=count_parameters(model),
        epochs_run=len(state["history"]),
        best_epoch=int(state["best_epoch"]),
        resumed_from_epoch=int(launch[M.START_EPOCH]),
        init_from=prepared.config.init_from,
        test_evaluated=len(targets),
        test_mae=test_mae,
        report_units={t: report[t][1] for t in prepared.config.targets},
        seconds=time.perf_counter() - start,
    )
    prepared.folder.summary.write_text(json.dumps(asdict(summary), indent=1))
    prepared.folder.history.write_text(json.dumps(state["history"], indent=1))
    return Evaluation(summary, state["history"], predictions, targets)


def epoch_line(metrics: dict[str, Any], dataset: DatasetInfo, targets: tuple[str, ...]) -> str:
    """One readable line per epoch: validation MAE per target in report units, loss, lr, time, rate."""
    maes = []
    for t in targets:
        scale, unit = dataset.report(t)
        maes.append(f"{t} {metrics[M.mae_key('val', t)] * scale:.4g} {unit}")
    return (
        f"epoch {metrics[M.EPOCH] + 1:>4}/{metrics[M.EPOCHS]}  loss {metrics[M.TRAIN_LOSS]:.4f}  "
        f"val MAE {', '.join(maes)}  lr {metrics[M.LR]:.2e}  {metrics[M.SECONDS]:.1f} s  "
        f"{metrics[M.TRAIN_PER_S]:,.0f} structures/s"
    )


@dataclass
class LaunchStopped:
    """A launch that ended at its time limit (``launch_hours``): the run goes on when its name is re-run."""

    name: str
    run_dir: str
    epochs_done: int
    epochs: int
    limit_hours: float
    seconds: float
    finished = False

    def lines(self) -> list[str]:
        return [
            f"run        : {self.name} in {self.run_dir}",
            f"stopped    : after epoch {self.epochs_done} of {self.epochs}: another epoch would end after this "
            f"launch's {self.limit_hours:g} h (the test split is not read until the run finishes)",
            "resume     : run the same command again",
            f"time       : {self.seconds:.1f} s",
        ]


def run_local(config: RunConfig) -> RunSummary | LaunchStopped:
    """Prepare, train in this process with the shared worker loop, evaluate; resumable by name. Each launch is
    recorded in the run folder's ``launches.jsonl``; with ``launch_hours`` it may end early (:class:`LaunchStopped`)."""
    start = time.perf_counter()
    prepared = prepare_run(config)
    print(f"run {config.name}: {prepared.run_dir}")

    def show(metrics: dict[str, Any]) -> None:
        print(epoch_line(metrics, prepared.dataset, config.targets), flush=True)

    session = LocalSession(prepared.folder.checkpoints, config.device, on_report=show, limit_hours=config.launch_hours)
    session.started = start  # the limit counts from the launch, preparation included
    record = LaunchRecord(first_epoch=_epochs_done(session.latest), limit_hours=config.launch_hours)
    ended_by = "error"
    try:
        run_worker(prepared.worker, session)
        summary = finish_run(prepared, session.latest, start).summary
        ended_by = "finished"
        return summary
    except LaunchTimeLimit as stop:
        ended_by = "time limit"
        seconds = time.perf_counter() - start
        return LaunchStopped(
            config.name, str(prepared.run_dir), stop.epochs_done, config.train.epochs, stop.limit_hours, seconds
        )
    except BaseException as exc:
        ended_by = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        record.end(time.perf_counter() - start, _epochs_done(session.latest), ended_by)
        record.append_to(prepared.folder.launches)


def _epochs_done(latest: Path) -> int:
    """Epochs finished in the latest checkpoint (0 without one)."""
    if not (latest / TRAIN_STATE).exists():
        return 0
    return int(torch.load(latest / TRAIN_STATE, map_location="cpu", weights_only=True)["epoch"])
