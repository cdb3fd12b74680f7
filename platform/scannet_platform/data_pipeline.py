"""Ray Data pipelines: featurize a structures table into a graph table (the featurize step of training).

Import as ``scannet_platform.data_pipeline`` (the ``platform/`` folder is installed under that name). Nothing
here calls ``ray.init``; the caller (a job script, a test fixture) does.

Featurize (structures Parquet -> ``map_batches`` over a task pool -> graph Parquet + quarantine)::

    featurizer = FeaturizerConfig.molecules()
    ds = featurize_dataset("structures.parquet", featurizer)            # lazy
    summary = write_graph_table(ds, graph_cache_dir(root, featurizer), featurizer, read_units(path))

``featurize_dataset`` runs :func:`scannet.data.graphs_table.featurize_records` (the same function as the plain
path, so both give identical graphs) with ``map_batches(..., compute=TaskPoolStrategy(size=#CPUs))`` on
pyarrow batches; ``compute="actors"`` uses an ``ActorPoolStrategy`` instead (slower on 2 CPUs). Every output
row carries an ``error`` column: null for a good graph, the reason for a structure that could not be
featurized. :func:`write_graph_table` splits the stream: each task writes its good rows as a part of the
graph table (schema with the featurizer hash), the driver writes the bad rows to ``quarantine.parquet`` and
returns the counts.

Training reads the graph table with the library's :class:`scannet.data.loader.GraphTableDataset` (the worker
loop's one ingest path); :func:`ray_featurizer` is the featurize step of the training and tuning drivers.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from tqdm.auto import tqdm

from scannet.data import schema as S
from scannet.data.graphs_table import (
    DEFAULT_ROW_GROUP_SIZE,
    GRAPH_TABLE_ENTRIES,
    GRAPHS_SUBDIR,
    QUARANTINE_FILE,
    SUMMARY_FILE,
    FeaturizeSummary,
    featurize_records,
    graph_table_schema,
    split_errors,
    target_columns,
    write_featurized,
)
from scannet.data.structures_table import Piece, structure_pieces
from scannet.featurizer.config import FeaturizerConfig
from scannet_platform.runtime import ensure_ray

if TYPE_CHECKING:
    import ray.data


Compute = Literal["actors", "tasks"]


def _num_cpus() -> int:
    import ray

    if ray.is_initialized():
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return os.cpu_count() or 1


# -------------------------------------------------------------------------------------------- featurize


class FeaturizeBatch:
    """The ``map_batches`` callable: a pyarrow batch of structures -> graph rows plus an ``error`` column."""

    def __init__(self, featurizer: dict[str, Any], units: dict[str, str] | None) -> None:
        self.featurizer = FeaturizerConfig.from_dict(featurizer)
        self.units = units

    def __call__(self, batch: pa.Table) -> pa.Table:
        return featurize_records(batch, self.featurizer, self.units)


def _featurize_task(batch: pa.Table, featurizer: dict[str, Any], units: dict[str, str] | None) -> pa.Table:
    return featurize_records(batch, FeaturizerConfig.from_dict(featurizer), units)


def read_structures_dataset(path: str | Path, **read_args: Any) -> ray.data.Dataset:
    """A structures table (one Parquet file or a folder of them) as a Ray dataset (``read_parquet``)."""
    import ray.data

    return ray.data.read_parquet(str(path), **read_args)


def _featurize_pieces(pieces: pa.Table, featurizer: dict[str, Any], units: dict[str, str] | None) -> pa.Table:
    config = FeaturizerConfig.from_dict(featurizer)
    return pa.concat_tables([featurize_records(Piece(**p).read(), config, units) for p in pieces.to_pylist()])


class FeaturizePieces(FeaturizeBatch):
    """The actor form of :func:`_featurize_pieces`."""

    def __call__(self, pieces: pa.Table) -> pa.Table:
        return pa.concat_tables(
            [featurize_records(Piece(**p).read(), self.featurizer, self.units) for p in pieces.to_pylist()]
        )


def featurize_dataset(
    ds_or_path: ray.data.Dataset | str | Path,
    featurizer: FeaturizerConfig | None = None,
    units: Mapping[str, str] | None = None,
    batch_size: int = 4096,
    compute: Compute = "tasks",
    num_workers: int | None = None,
) -> ray.data.Dataset:
    """Featurize a structures dataset lazily with ``map_batches``: graph rows plus an ``error`` column.

    From a structures-table path, the file is cut into pieces of ``batch_size`` rows inside its row groups
    (:func:`scannet.data.structures_table.structure_pieces`) and each ``map_batches`` call reads its piece and
    featurizes it. This keeps every CPU busy: ``read_parquet`` gives one block per file or row group, and with a
    streaming ``repartition`` after it Ray Data's resource budget let only about one featurize task run at a time
    on 2 CPUs, far slower than this layout (figures: benchmarks/README.md). A dataset (e.g. your own
    ``read_parquet``) is mapped as it is, in blocks cut to ``batch_size`` rows.

    Args:
        ds_or_path: the path of a structures table file, or a Ray dataset of structures-table rows.
        featurizer: the settings (default ``FeaturizerConfig()``).
        units: ``{target: unit}``; default from the file's metadata (a path) or every target column with
            an empty unit (a dataset).
        batch_size: structures per ``map_batches`` call (and per part file of :func:`write_graph_table`); larger
            is faster on QM9 (fewer tasks to schedule, larger files; figures: benchmarks/README.md).
        compute: ``"tasks"`` (``TaskPoolStrategy``, default) or ``"actors"`` (``ActorPoolStrategy`` of a fixed
            size). The featurizer has no state worth keeping, so tasks lose nothing; with all CPUs taken by
            actors the read tasks of a ``read_parquet`` dataset got no CPU and the pipeline stalled
            (measured on 2 CPUs, Ray 2.60), hence one CPU fewer for actors by default.
        num_workers: concurrent tasks / actors; default all CPUs of the Ray cluster (actors: all but one).
    """
    import ray.data

    featurizer = featurizer or FeaturizerConfig()
    if compute not in ("actors", "tasks"):
        raise ValueError(f"compute must be 'actors' or 'tasks', got {compute!r}")
    size = num_workers or (_num_cpus() if compute == "tasks" else max(1, _num_cpus() - 1))
    pool = ray.data.TaskPoolStrategy(size=size) if compute == "tasks" else ray.data.ActorPoolStrategy(size=size)
    if isinstance(ds_or_path, str | Path):
        from scannet.data.structures_table import read_units

        units = read_units(ds_or_path) if units is None else units
        pieces = structure_pieces(ds_or_path, batch_size)
        ds = ray.data.from_items([p.to_dict() for p in pieces], override_num_blocks=len(pieces))
        fn = FeaturizePieces if compute == "actors" else _featurize_pieces
        batch_size = 1
    else:
        # one block goes to one task: cut the stream into blocks of ``batch_size`` rows (streaming)
        ds = ds_or_path.repartition(target_num_rows_per_block=batch_size)
        fn = FeaturizeBatch if compute == "actors" else _featurize_task
    args = {"featurizer": featurizer.to_dict(), "units": dict(units) if units is not None else None}
    kwargs = {"fn_constructor_kwargs": args} if compute == "actors" else {"fn_kwargs": args}
    ds = ds.map_batches(fn, batch_size=batch_size, batch_format="pyarrow", compute=pool, num_cpus=1, **kwargs)
    # Ray Data reserves a share of the CPUs per operator; on a small node that held the featurize tasks
    # near one at a time (figures: benchmarks/README.md). This dataset only.
    ds.context.op_resource_reservation_enabled = False
    return ds


def _write_part(
    batch: pa.Table, folder: str, featurizer: dict[str, Any], units: dict[str, str] | None, row_group_size: int
) -> pa.Table:
    """Write the good rows of featurized records as one graph-table part; return the counts and bad rows."""
    import hashlib

    import pyarrow.parquet as pq

    good, bad = split_errors(batch)
    if units is None:
        units = {name: "" for name in target_columns(good.schema)}
    if good.num_rows:
        schema = graph_table_schema(FeaturizerConfig.from_dict(featurizer), units)
        # named after its content: a retried task rewrites the same file
        name = hashlib.sha1("\n".join(good[S.ID].to_pylist()).encode()).hexdigest()[:20]
        table = good.select(schema.names).cast(schema)
        pq.write_table(table, Path(folder) / f"part-{name}.parquet", row_group_size=row_group_size)
    return pa.table({"n_input": [batch.num_rows], "n_graphs": [good.num_rows], "bad": [bad.to_pylist()]})


def write_graph_table(
    ds: ray.data.Dataset,
    out_dir: str | Path,
    featurizer: FeaturizerConfig,
    units: Mapping[str, str] | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    overwrite: bool = False,
    parallel: bool = True,
    progress: bool = False,
    total: int | None = None,
) -> FeaturizeSummary:
    """Run a :func:`featurize_dataset` pipeline and write its graph table folder; returns the counts.

    Good rows go to ``out_dir/graphs/*.parquet`` with the graph schema (featurizer hash in the metadata),
    bad rows to ``out_dir/quarantine.parquet`` with their reason; ``out_dir`` is normally
    ``graph_cache_dir(root, featurizer)``. The folder is staged and put in place only when the run is
    complete (:class:`scannet.io.atomic.AtomicWrite`, as the plain writer); a failed, interrupted or
    killed run leaves an existing table as it was. The dataset is streamed once, in bounded memory.

    ``progress`` shows a bar of the structures done (out of ``total`` when given) as the parts come back.

    With ``parallel`` (default) every featurize task writes its own part file (one per ``batch_size`` rows,
    named after its ids) and sends the driver only counts and bad rows: on 2 CPUs the driver otherwise
    competes with the workers for a core. Without it, the driver gathers the rows and writes one file with
    row groups of ``row_group_size``.
    """
    out_dir = Path(out_dir)
    if not parallel:
        records = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=4))
        if units is None:  # the target columns of the first batch, without units (ds.schema() would run a job)
            first = next(records, None)
            units = {name: "" for name in target_columns(first.schema)} if first is not None else {}
            records = itertools.chain([first] if first is not None else [], records)
        return write_featurized(records, out_dir, featurizer, units, row_group_size, overwrite)

    import ray.data

    from scannet.data.structures_table import Quarantine
    from scannet.io.atomic import AtomicWrite

    start = time.perf_counter()
    summary = FeaturizeSummary(str(out_dir), featurizer.to_dict(), featurizer.content_hash())
    # the parts, the quarantine and the summary are staged and put in place together
    with AtomicWrite(out_dir, GRAPH_TABLE_ENTRIES, overwrite=overwrite) as staged:
        (staged.path / GRAPHS_SUBDIR).mkdir()
        args = {
            "folder": str(staged.path / GRAPHS_SUBDIR),
            "featurizer": featurizer.to_dict(),
            "units": dict(units) if units is not None else None,
            "row_group_size": row_group_size,
        }
        pool = ray.data.TaskPoolStrategy(size=_num_cpus())
        results = ds.map_batches(_write_part, fn_kwargs=args, batch_size=None, batch_format="pyarrow", compute=pool)
        results.context.op_resource_reservation_enabled = False
        bar = tqdm(total=total, desc="featurizing", unit="structure", disable=not progress, mininterval=1.0)
        with Quarantine(staged.path / QUARANTINE_FILE) as quarantine, bar:
            for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    bar.update(row["n_input"])
                    summary.n_input += row["n_input"]
                    summary.n_graphs += row["n_graphs"]
                    for bad in row["bad"]:
                        quarantine.add(bad[S.ID], bad[S.SOURCE], bad["reason"])
                        summary.n_quarantined += 1
        summary.seconds = time.perf_counter() - start
        (staged.path / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def ray_featurizer(verbose: bool = False):
    """The featurize step of :func:`scannet.train.run.prepare_run`, with Ray Data; returns the quarantined count."""

    def featurize(structures: Path, out_dir: Path, featurizer: FeaturizerConfig) -> int:
        from scannet.data.structures_table import num_structures
        from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

        ensure_ray(verbose)
        if not verbose:  # Ray Data configures its loggers when imported: quiet them afterwards
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        print(f"featurizing {structures} with Ray Data into {out_dir} ...", flush=True)
        started = time.perf_counter()
        dataset = featurize_dataset(structures, featurizer)
        summary = write_graph_table(dataset, out_dir, featurizer, progress=True, total=num_structures(structures))
        seconds = time.perf_counter() - started
        print(f"featurized {summary.n_graphs} structures in {seconds:.1f} s, {summary.n_quarantined} quarantined")
        return summary.n_quarantined

    return featurize
