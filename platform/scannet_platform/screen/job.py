"""The screening job: a library streamed through trained models into ranked, resumable Parquet shards.

    run_screen(build_screen_config({"inputs": ["library.parquet"], "models": ["models:/qm9-gap@best"],
                                    "out": "screens/run1"}))

Steps (the driver):

1. resolve the models (:mod:`~scannet_platform.screen.models`) and plan the library's chunks
   (:mod:`~scannet_platform.screen.library`; inputs other than structures tables are staged once);
2. record what the output folder holds in ``<out>/screen.json`` (library, models, chunking): a later launch
   into the same folder must screen the same library with the same models, and skips every finished chunk;
3. screen the chunks that have no predictions part yet, in two stages: stage F featurizes a chunk
   (:mod:`~scannet_platform.screen.featurize_stage`, CPU only; or reads its graphs from the graph store) and
   stage M predicts it with every model and commits its parts (:mod:`~scannet_platform.screen.chunk`). With
   Ray: one Ray Data pipeline, ``map_batches`` of a featurize actor pool (CPUs) then of a model actor pool
   (models loaded once per actor, CPU or GPU actors, ``batches_in_flight`` chunks queued per actor; Ray
   restarts a killed actor and retries its chunk, which rewrites the same parts). In this process
   (``executor="local"``): stage F in ``featurize_workers`` processes (0: in this process) feeding stage M
   here, a bounded number of chunks in flight. A progress bar counts structures, with rate and ETA;
4. read the parts back, one at a time (:mod:`~scannet_platform.screen.select`): counts, filters, top-k per
   target, histograms, duplicate ids; check that every library row is in exactly one part;
5. write the top-k tables, ``duplicates.csv``, ``plots/`` and ``summary.json``, and log the MLflow run.

Memory: the driver holds the chunk descriptors (a few hundred bytes per chunk) and 8 bytes per row for the
duplicate check; each actor holds one chunk, and at most ``batches_in_flight`` featurized chunks wait per model
actor (local: ``featurize_workers + batches_in_flight``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from scannet.data import schema as S
from scannet.data.structures_table import Piece
from scannet.domain import domain_path
from scannet.featurizer import FeaturizerConfig
from scannet.home import default_data_cache
from scannet.io.atomic import AtomicWrite, write_text_atomic
from scannet.io.paths import OutputFolder
from scannet.io.provenance import code_version
from scannet.typed_config import ConfigError, to_plain
from scannet_platform.console import Progress, without_ray_data_actor_warning
from scannet_platform.screen.chunk import (
    PREDICTIONS_DIR,
    QUARANTINE_DIR,
    RESERVED,
    ChunkPredictor,
    ChunkResult,
    ScreenProvenance,
    ScreenSpec,
    part_name,
)
from scannet_platform.screen.config import DEFAULT_EXPERIMENT, ScreenConfig, build_screen_config  # noqa: F401 (the job's API)
from scannet_platform.screen.featurize_stage import (
    ChunkFeaturizer,
    FeaturizedChunk,
    FeaturizeSpec,
    featurize_piece,
    library_graphs_dir,
)
from scannet_platform.screen.library import Library, is_graph_table, library_fingerprint, plan_library
from scannet_platform.screen.models import ModelGroup, resolve_models
from scannet_platform.screen.select import Scan, numeric_columns, parse_filter, parse_rankings, scan_results

STATE_FILE = "screen.json"
#: Settings that decide what the shards hold: a later launch into the same folder must keep them.
STATE_KEYS = (
    "format", "library", "models", "precision", "chunk_size", "max_atoms", "smiles_column", "id_column", "seed"
)
#: The predictions' layout: 2 added the structure keys, canonical SMILES and applicability-domain columns. A folder
#: of another layout is refused (its parts could not be read back together with new ones).
PREDICTIONS_FORMAT = 2


@dataclass
class ScreenSummary:
    out: str
    run_id: str
    n_input: int
    n_chunks: int
    n_chunks_skipped: int  # finished by an earlier launch
    n_screened: int
    n_quarantined: int
    n_passing: int
    n_duplicate_ids: int
    n_duplicate_rows: int  # rows of a repeated id
    n_duplicate_structures: int  # structure keys (scannet.data.structure_key) on more than one screened row
    n_duplicate_structure_rows: int
    n_force_field: int
    screened_now: int  # structures (screened or quarantined) done by this launch
    seconds: float  # this launch, wall clock
    screen_seconds: float  # the chunk phase of this launch (actors' start-up included, Ray's start-up not)
    graphs_dir: str | None = None  # the library's graph store (None: --no-graphs-cache)
    graphs_bytes: int = 0  # what it holds on disk
    chunks_from_store: int = 0  # chunks of this launch whose graphs were read from the store, not featurized
    mlflow_run_id: str | None = None
    mlflow_runs_url: str | None = None  # the experiment's runs table in the MLflow UI

    @property
    def rate(self) -> float:
        return self.screened_now / self.screen_seconds if self.screen_seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- state


def _state(config: ScreenConfig, fingerprint: list[dict], groups: list[ModelGroup]) -> dict:
    return {
        "format": PREDICTIONS_FORMAT,
        "library": fingerprint,
        "models": [
            {"targets": list(g.targets), "members": [{"reference": m.reference, "sha256": m.sha256} for m in g.members]}
            for g in groups
        ],
        "precision": config.precision,
        "chunk_size": config.chunk_size,
        "max_atoms": config.max_atoms,
        "smiles_column": config.smiles_column,
        "id_column": config.id_column,
        "seed": config.seed,
    }


def existing_state(out: Path, wanted: dict) -> dict | None:
    """The folder's ``screen.json`` (None for a new folder); refuses a folder that holds a screen of another
    library or other models."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    differ = [key for key in STATE_KEYS if json.dumps(state.get(key)) != json.dumps(wanted[key])]
    if differ:
        raise ConfigError(
            f"{out} holds a screen made with other {', '.join(differ)} (see {path}); a launch into the same "
            "folder resumes that screen: use another --out for a new one"
        )
    return state


def create_state(out: Path, wanted: dict, run_id: str) -> dict:
    state = {**wanted, "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_text_atomic(OutputFolder(out).path(STATE_FILE), json.dumps(state, indent=1))
    return state


def check_layout(out: Path, rankings: list) -> None:
    """Before anything is written: no entry of the screen's layout under ``out`` (nor anything inside its
    sub-folders) is a symbolic link (:class:`~scannet.io.paths.OutputPathError`, exit code 2); every write checks
    its own path again (:class:`~scannet.io.paths.OutputFolder`)."""
    from scannet_platform.screen.library import STAGED_DIR
    from scannet_platform.screen.report import DUPLICATES_FILE, PLOTS_DIR, SUMMARY_FILE, top_file_stem

    folder = OutputFolder(out)
    files = [STATE_FILE, DUPLICATES_FILE, SUMMARY_FILE]
    files += [f"{top_file_stem(r)}{suffix}" for r in rankings for suffix in (".csv", ".md")]
    folder.check(*files)
    folder.check_tree(MODELS_DIR, PREDICTIONS_DIR, QUARANTINE_DIR, PLOTS_DIR, STAGED_DIR)


MODELS_DIR = "models"


def pin_checkpoints(groups: list[ModelGroup], out: Path) -> list[ModelGroup]:
    """Copy every checkpoint into ``<out>/models/<sha256>.pt`` (once), its applicability domain beside it, and point
    the members there: the actors, on any node that sees ``out``, load exactly the files the driver checked, and
    the folder keeps them."""
    import shutil
    from dataclasses import replace

    output = OutputFolder(out)
    output.folder(MODELS_DIR)
    for group in groups:
        pinned = []
        for member in group.members:
            target = output.path(MODELS_DIR, f"{member.sha256[:32]}.pt")
            if not target.is_file():
                with AtomicWrite(target, file=True) as write:
                    shutil.copyfile(member.path, write.path)
            domain = output.path(MODELS_DIR, domain_path(target).name)  # its applicability domain goes with it
            if domain_path(member.path).is_file() and not domain.is_file():
                with AtomicWrite(domain, file=True) as write:
                    shutil.copyfile(domain_path(member.path), write.path)
            pinned.append(replace(member, path=str(target.resolve())))
        group.members = pinned
    return groups


# ------------------------------------------------------------------------------------------ execution


def _progress(total: int, enabled: bool) -> Progress:
    return Progress(total=total, desc="screening", unit="structure", disable=not enabled, mininterval=1.0, smoothing=0.1)


def _count(bar: Progress, result: dict, totals: dict) -> None:
    for key in ("n_input", "n_screened", "n_quarantined", "from_store"):
        totals[key] += result[key]
    # the counts first: the refresh of update() shows them, so the last line is not drawn once without them
    bar.set_postfix(screened=totals["n_screened"], quarantined=totals["n_quarantined"], refresh=False)
    bar.update(result["n_input"])


@dataclass(frozen=True)
class Pools:
    """The Ray pools of a screen: model actors (each ``model_resources``) and featurize actors (each
    ``featurize_cpus``)."""

    model_actors: int
    model_resources: dict
    featurize_actors: int
    featurize_cpus: float
    fits: bool  # both pools fit the cluster's CPUs at once


#: Model threads one featurize process keeps busy on a CPU-only cluster: a featurize process does about four
#: times the structures/s of a model thread (QM9 SCANN+: ~2,400 against ~550, benchmarks/README.md).
MODEL_THREADS_PER_FEATURIZER = 4


def ray_pools(config: ScreenConfig, resources: dict, featurizing: bool = True) -> Pools:
    """Size the pools from the cluster's ``resources`` (``featurize_workers`` featurize actors when given):

    - GPU model actors: the featurize pool gets the CPUs they leave (1 CPU each, at least 1 actor), so the GPUs
      never wait for a CPU that a model actor holds;
    - CPU model actors: the two stages share the cores. The model actors take every CPU and the featurize
      actors (one per :data:`MODEL_THREADS_PER_FEATURIZER` model CPUs) reserve none: the system interleaves
      them on the same cores, and the screen approaches 1 / (1/F + 1/M). A whole CPU given to featurizing would
      idle most of the time (it featurizes ~4x faster than a model thread predicts);
    - every chunk's graphs in the store (not ``featurizing``): stage F only reads them, one actor of no CPU."""
    cpus = resources.get("CPU", 1)
    if config.gpus_per_actor > 0:
        size = config.actors or max(1, int(resources.get("GPU", 0) // config.gpus_per_actor))
        model = {"num_cpus": config.cpus_per_actor, "num_gpus": config.gpus_per_actor}
    else:
        size = config.actors or max(1, int(cpus // config.cpus_per_actor))
        model = {"num_cpus": config.cpus_per_actor}
    fits = size * config.cpus_per_actor <= cpus
    if not featurizing:
        return Pools(size, model, 1, 0.0, fits=fits)
    if config.gpus_per_actor == 0:
        model_cpus = size * config.cpus_per_actor
        featurize = config.featurize_workers or max(1, round(model_cpus / MODEL_THREADS_PER_FEATURIZER))
        return Pools(size, model, featurize, 0.0, fits=fits)
    featurize = config.featurize_workers or max(1, int(cpus - size * config.cpus_per_actor))
    return Pools(size, model, featurize, 1.0, fits=size * config.cpus_per_actor + featurize <= cpus)


def execute_ray(
    config: ScreenConfig, featurize: FeaturizeSpec, spec: ScreenSpec, todo: list[Piece], bar: Progress, totals: dict
) -> None:
    """Screen ``todo`` in one Ray Data pipeline: featurize actor pool -> model actor pool (streaming: results
    come back as chunks finish); Ray is started (or connected to) by the caller."""
    import logging
    from contextlib import nullcontext

    import ray
    import ray.data

    if not config.verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # its "Progress bars disabled" warning broke the screen's own progress line in two
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = config.verbose
    pools = ray_pools(config, ray.cluster_resources(), featurizing=not all_stored(featurize, todo))
    model_actors = min(pools.model_actors, len(todo))
    ds = ray.data.from_items([p.to_dict() for p in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(
        ChunkFeaturizer,
        fn_constructor_kwargs={"spec": featurize},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=min(pools.featurize_actors, len(todo))),
        num_cpus=pools.featurize_cpus,
    )
    ds = ds.map_batches(
        ChunkPredictor,
        fn_constructor_kwargs={"spec": spec},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            # a pool larger than the CPUs left to it starts with one actor instead of waiting for all of them
            min_size=model_actors if pools.fits else 1,
            max_size=model_actors,
            max_tasks_in_flight_per_actor=config.batches_in_flight,
        ),
        **pools.model_resources,
    )
    ds.context.op_resource_reservation_enabled = False  # on a small node it held the actors near one at a time
    with nullcontext() if config.verbose else without_ray_data_actor_warning():  # the actors start here
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for result in batch.to_pylist():
                _count(bar, result, totals)


def all_stored(spec: FeaturizeSpec, todo: list[Piece]) -> bool:
    """Whether the graph store holds a part of every featurizer for every chunk of ``todo`` (checked on reading)."""
    return spec.graphs_dir is not None and all(
        spec.part_path(featurizer, piece.chunk).is_file() for piece in todo for featurizer in spec.featurizers
    )


#: Tests only: seconds to sleep before each chunk of the in-process executor (a screen slow enough to interrupt).
CHUNK_DELAY_VARIABLE = "SCANNET_TEST_CHUNK_DELAY_S"


def execute_local(
    config: ScreenConfig, featurize: FeaturizeSpec, spec: ScreenSpec, todo: list[Piece], bar: Progress, totals: dict
) -> None:
    """Screen ``todo`` with the models in this process, chunk after chunk, fed by ``featurize_workers``
    featurize processes (0: featurized here, just before)."""
    import os

    delay = float(os.environ.get(CHUNK_DELAY_VARIABLE) or 0)
    predictor = ChunkPredictor(spec)
    for featurized in featurized_chunks(featurize, todo, config.featurize_workers or 0, config.batches_in_flight):
        time.sleep(delay)
        result: ChunkResult = predictor.predict(featurized)
        _count(bar, result.__dict__, totals)


def featurized_chunks(spec: FeaturizeSpec, todo: list[Piece], workers: int, in_flight: int):
    """The featurized chunks of ``todo``, in order: featurized here (``workers`` 0), or by a pool of ``workers``
    spawned processes with at most ``workers + in_flight`` chunks submitted and not yet taken."""
    import itertools
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    if workers == 0:
        for piece in todo:
            yield featurize_piece(spec, piece)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pieces = iter(todo)
        pending = deque(pool.submit(featurize_piece, spec, p) for p in itertools.islice(pieces, workers + in_flight))
        while pending:
            featurized: FeaturizedChunk = pending.popleft().result()
            following = next(pieces, None)
            if following is not None:
                pending.append(pool.submit(featurize_piece, spec, following))
            yield featurized
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------ the job


def model_featurizers(groups: list[ModelGroup]) -> list[FeaturizerConfig]:
    """The featurizer settings of the models, one per distinct content hash, in model order."""
    from scannet.checkpoint import load_model

    featurizers: dict[str, FeaturizerConfig] = {}
    for group in groups:
        for member in group.members:
            featurizer = load_model(member.path)[1]
            featurizers.setdefault(featurizer.content_hash(), featurizer)
    return list(featurizers.values())


def check_graph_inputs(inputs: Sequence[str], featurizers: list[FeaturizerConfig]) -> None:
    """Every graph table among ``inputs`` must be made with the models' one featurizer (ConfigError naming both
    hashes otherwise)."""
    from scannet.data.graphs_table import open_graph_table

    wanted = ",".join(f.content_hash() for f in featurizers)
    for item in inputs:
        if not is_graph_table(item):
            continue
        for file in open_graph_table(item):
            found = (file.schema_arrow.metadata or {}).get(S.META_FEATURIZER_HASH, b"").decode() or "missing"
            if len(featurizers) != 1 or found != wanted:
                raise ConfigError(
                    f"{item}: a graph table of featurizer {found}, but the models' featurizer is {wanted}: screen the "
                    "structures instead, or featurize them with the models' featurizer"
                )


def featurize_spec(config: ScreenConfig, featurizers: list[FeaturizerConfig], fingerprint: list[dict]) -> FeaturizeSpec:
    """What every featurize worker needs, from the config (the graph store of this library and chunking)."""
    graphs_dir = None
    if config.graphs_cache:
        chunking = {k: getattr(config, k) for k in ("chunk_size", "smiles_column", "id_column")}
        graphs_dir = str(library_graphs_dir(config.graphs_dir or default_data_cache(), fingerprint, chunking))
    return FeaturizeSpec(tuple(featurizers), config.max_atoms, config.seed, graphs_dir)


def screen_spec(
    config: ScreenConfig, out: Path, groups: list[ModelGroup], featurizers: list[FeaturizerConfig], run_id: str
) -> ScreenSpec:
    """What every model actor needs, from the config."""
    provenance = ScreenProvenance(
        models="; ".join(g.describe() for g in groups)
        + ("" if config.precision == "fp32" else f" [{config.precision}]"),
        featurizer_hash=",".join(f.content_hash() for f in featurizers),
        code_version=code_version(),
        run_id=run_id,
    )
    return ScreenSpec(
        out_dir=str(out.resolve()),
        groups=tuple(groups),
        atom_budget=config.atom_budget,
        device=config.device,
        threads=config.threads or max(1, int(config.cpus_per_actor)),
        compile=config.compile,
        static_shapes=config.static_shapes,
        precision=config.precision,
        provenance=provenance,
    )


def run_screen(config: ScreenConfig) -> tuple[ScreenSummary, Scan]:
    """Screen the library of ``config`` into ``config.out`` (resuming what is there); see the module docstring."""
    from scannet_platform.runtime import quiet_libraries, tracked_run

    started = time.perf_counter()
    quiet_libraries(config.verbose)
    out = Path(config.out)
    OutputFolder(out)  # a file: one line, exit 2, before anything is written
    tracking_uri = config.tracking_uri if config.mlflow else None
    groups = resolve_models(config.models, tracking_uri, reserved=RESERVED)
    names = numeric_columns(groups)
    filters = [parse_filter(text, names) for text in config.filters]
    rankings = parse_rankings(config.rank, groups) if config.top_k else []
    fingerprint = library_fingerprint(config.inputs)
    wanted = _state(config, fingerprint, groups)
    check_layout(out, rankings)  # no symbolic link under out
    state = existing_state(out, wanted)  # before anything is written into a folder that holds another screen
    OutputFolder(out, create=True)
    groups = pin_checkpoints(groups, out)
    featurizers = model_featurizers(groups)
    check_graph_inputs(config.inputs, featurizers)
    library = plan_library(
        config.inputs, out, config.chunk_size, config.max_atoms, config.smiles_column, config.id_column, config.progress
    )
    if library.total == 0:
        raise ConfigError(f"the library of {list(config.inputs)} holds no record")
    mlflow_run_id = _begin_tracking(config, out, tracking_uri, library, groups) if tracking_uri else None
    with tracked_run(tracking_uri, mlflow_run_id):
        if state is None:
            state = create_state(out, wanted, mlflow_run_id or uuid.uuid4().hex)
        featurize = featurize_spec(config, featurizers, fingerprint)
        spec = screen_spec(config, out, groups, featurizers, state["run_id"])
        todo = [p for p in library.pieces if not (out / PREDICTIONS_DIR / part_name(p.chunk)).exists()]
        done = len(library.pieces) - len(todo)
        print(
            f"library: {library.total:,} records in {len(library.pieces):,} chunks of up to {config.chunk_size}; "
            + (f"{done:,} chunks finished by an earlier launch, " if done else "")
            + f"{len(todo):,} to screen with {'; '.join(g.describe() for g in groups)}",
            flush=True,
        )
        totals = {"n_input": 0, "n_screened": 0, "n_quarantined": 0, "from_store": 0}
        if todo and config.executor == "ray":
            from scannet_platform.runtime import ensure_ray

            ensure_ray(config.verbose)  # before the clock: the rate is that of the chunks, not of Ray's start
        screen_start = time.perf_counter()
        if todo:
            with _progress(sum(p.rows for p in todo), config.progress) as bar:
                if config.executor == "ray":
                    execute_ray(config, featurize, spec, todo, bar, totals)
                else:
                    execute_local(config, featurize, spec, todo, bar, totals)
        screen_seconds = time.perf_counter() - screen_start
        scan = scan_results(out, groups, filters, rankings, config.top_k)
        if scan.n_screened + scan.n_quarantined != library.total:
            raise RuntimeError(
                f"{out}: {scan.n_screened:,} screened + {scan.n_quarantined:,} quarantined rows for a library of "
                f"{library.total:,}; some chunks did not finish (launch again to complete them)"
            )
        summary = ScreenSummary(
            out=str(out),
            run_id=state["run_id"],
            n_input=library.total,
            n_chunks=len(library.pieces),
            n_chunks_skipped=done,
            n_screened=scan.n_screened,
            n_quarantined=scan.n_quarantined,
            n_passing=scan.n_passing,
            n_duplicate_ids=scan.n_duplicate_ids,
            n_duplicate_rows=scan.n_duplicate_id_rows,
            n_duplicate_structures=scan.n_duplicate_structures,
            n_duplicate_structure_rows=scan.n_duplicate_structure_rows,
            n_force_field=scan.n_force_field,
            screened_now=totals["n_input"],
            seconds=0.0,
            screen_seconds=screen_seconds,
            graphs_dir=featurize.graphs_dir,
            graphs_bytes=folder_bytes(featurize.graphs_dir),
            chunks_from_store=totals["from_store"],
            mlflow_run_id=mlflow_run_id,
            mlflow_runs_url=_runs_url(tracking_uri, mlflow_run_id) if mlflow_run_id else None,
        )
        files = _write_reports(out, config, summary, scan, rankings, groups, filters, spec, library, started)
        if mlflow_run_id:
            _log_tracking(tracking_uri, mlflow_run_id, summary, scan, files)
        return summary, scan


def _write_reports(
    out, config, summary, scan, rankings, groups, filters, spec, library, started
) -> dict[str, list[Path]]:
    from scannet_platform.screen.report import (
        source_root,
        write_duplicates,
        write_histograms,
        write_summary,
        write_top_reports,
        write_top_tables,
    )

    root = source_root(config.inputs)
    files = {
        "top_k": write_top_tables(out, scan, rankings, groups, filters, root)
        + write_top_reports(out, scan, rankings, groups, filters, library.pieces, config.seed, config.max_atoms, root),
        "plots": write_histograms(out, scan, groups),
        "duplicates": [write_duplicates(out, scan)],
    }
    summary.seconds = time.perf_counter() - started
    record = {
        **summary.__dict__,
        "structures_per_s": summary.rate,
        "config": to_plain(config),
        "provenance": asdict(spec.provenance),
        "columns": {g.describe(): {t: g.columns[t] for t in g.targets} for g in groups},
        "quarantine_sample": scan.quarantine_sample,
        "n_out_of_domain": scan.n_out_of_domain,  # None: no model has an applicability domain
    }
    files["summary"] = [write_summary(out, record)]
    return files


def _begin_tracking(
    config: ScreenConfig, out: Path, tracking_uri: str, library: Library, groups: list[ModelGroup]
) -> str:
    from scannet_platform.environment import run_environment
    from scannet_platform.tracking import runs

    run_id = runs.begin_run(
        tracking_uri=tracking_uri,
        experiment=config.experiment,
        run_name=f"screen-{out.resolve().name}",
        run_dir=out,
        params={
            "library": {"inputs": ", ".join(config.inputs), "records": library.total, "chunks": len(library.pieces)},
            "models": {"_".join(g.targets): g.describe() for g in groups},
            "screen": {k: v for k, v in to_plain(config).items() if k not in ("inputs", "models")},
            "environment": run_environment(),
        },
    )
    print(f"MLflow run {run_id}: {tracking_uri}")
    runs.tag_models(tracking_uri, run_id, groups)
    return run_id


def _runs_url(tracking_uri: str, run_id: str) -> str:
    from scannet_platform.tracking.runs import runs_url

    return runs_url(tracking_uri, run_id)


def _log_tracking(tracking_uri: str, run_id: str, summary: ScreenSummary, scan: Scan, files: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    metrics = {
        "records": summary.n_input,
        "screened": summary.n_screened,
        "quarantined": summary.n_quarantined,
        "passing_filters": summary.n_passing,
        "duplicate_ids": summary.n_duplicate_ids,
        "duplicate_structures": summary.n_duplicate_structures,
        "force_field_geometries": summary.n_force_field,
        "screened_this_launch": summary.screened_now,
        "structures_per_s": summary.rate,
        "screen_seconds": summary.screen_seconds,
        "wall_seconds": summary.seconds,
    }
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.set_tag(run_id, "scannet.kind", "screening")
    client.set_tag(run_id, "scannet.screen_run_id", summary.run_id)
    for folder, paths in files.items():
        for path in paths:
            client.log_artifact(run_id, str(path), folder)


def folder_bytes(folder: str | None) -> int:
    """The bytes of the files under ``folder`` (0 when None or missing)."""
    if folder is None or not Path(folder).is_dir():
        return 0
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def megabytes(size: int) -> str:
    """A size on disk as people read it: MB, with two significant digits below 10 MB (not 0.0 MB)."""
    return f"{size / 1e6:,.0f} MB" if size >= 1e7 else f"{size / 1e6:.2g} MB"


def per_second(rate: float) -> str:
    """A rate as people read it: whole numbers from 10 up, two significant digits below (a small screen's 0.34
    structures/s, not 0)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"


def summary_lines(summary: ScreenSummary, scan: Scan) -> list[str]:
    """What the command prints at the end."""
    from scannet.data.smiles import FORCE_FIELD_NOTE

    lines = [
        f"screened {summary.n_screened:,} of {summary.n_input:,} structures, quarantined {summary.n_quarantined:,}"
        f" ({summary.screened_now:,} this launch in {summary.screen_seconds:.1f} s, {per_second(summary.rate)} structures/s;"
        f" {summary.n_chunks_skipped:,} of {summary.n_chunks:,} chunks finished earlier)",
        f"predictions: {Path(summary.out) / PREDICTIONS_DIR}/part-*.parquet; quarantine (id, source, reason): "
        f"{Path(summary.out) / 'quarantine'}/part-*.parquet",
        f"{summary.n_passing:,} structures pass the filters; top-k tables: {Path(summary.out)}/top-*.csv and .md",
    ]
    if summary.graphs_dir:
        lines.append(
            f"graphs: {megabytes(summary.graphs_bytes)} in {summary.graphs_dir}; {summary.chunks_from_store:,} chunks "
            "of this launch read from there instead of featurized (a later screen of this library with models of the "
            "same featurizer reads them; --no-graphs-cache: none kept)"
        )
    if summary.n_duplicate_ids:
        lines.append(
            f"duplicate ids: {summary.n_duplicate_ids:,} ids occur on {summary.n_duplicate_rows:,} rows (all kept, "
            f"none overwritten; told apart by the row column), listed in {Path(summary.out) / 'duplicates.csv'}"
        )
    if summary.n_duplicate_structures:
        lines.append(
            f"duplicate structures: {summary.n_duplicate_structures:,} molecules occur on "
            f"{summary.n_duplicate_structure_rows:,} screened rows (same InChIKey, or the same geometry where no bonds "
            f"were perceived; all kept), listed in {Path(summary.out) / 'duplicates.csv'}"
        )
    if scan.n_out_of_domain:
        lines.append(
            f"applicability domain: {scan.n_out_of_domain:,} of {summary.n_screened:,} screened structures lie "
            "outside it (in_domain = 0; keep the others with --filter 'in_domain == 1')"
        )
    if summary.n_force_field:
        lines.append(f"note: {summary.n_force_field:,} structures: {FORCE_FIELD_NOTE}")
    for record in scan.quarantine_sample:
        lines.append(f"  quarantined {record['id']} ({record['source']}): {record['reason']}")
    if summary.n_quarantined > len(scan.quarantine_sample):
        lines.append(f"  ... and {summary.n_quarantined - len(scan.quarantine_sample):,} more in the quarantine parts")
    if summary.mlflow_run_id:
        lines.append(f"MLflow run {summary.mlflow_run_id}")
    if summary.mlflow_runs_url:
        lines.append(f"MLflow UI: {summary.mlflow_runs_url}")
    return lines


def print_summary(summary: ScreenSummary, scan: Scan) -> None:
    print("\n".join(summary_lines(summary, scan)), flush=True)
