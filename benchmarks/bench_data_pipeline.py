"""Data pipeline on QM9: Ray Data featurization, training ingest, and ingest memory as the data grows.

    python benchmarks/bench_data_pipeline.py              # all 130,831 molecules
    python benchmarks/bench_data_pipeline.py --n 20000 --n-reference 200 [--repeats 3]

Every timing in (a) and (b) is repeated ``--repeats`` times (see ``_timing.py``: median and best rates,
ratios of medians); the first featurization run includes Ray's worker start-up.

(a) Featurize the QM9 structures table (``write_qm9_table``) with Ray Data on a local 2-CPU Ray
    (``read_parquet`` -> ``map_batches`` over a task pool -> graph table + quarantine): wall seconds and
    molecules/s against the 60 s goal; in the same run pymatgen's VoronoiNN reference path
    (``compare_box10.reference_facet_sets``) on the first ``--n-reference`` molecules, and the ratio.
(b) Training ingest from the graph table: batches/s and molecules/s through ``collate_arrow`` with the plain
    streaming loader (``GraphTableDataset``, shuffled) and through Ray ``iter_torch_batches`` with the same
    collate, against 10x the model's CPU training throughput (560 molecules/s).
(c) Peak RSS of a fresh process running one ingest epoch over the first 10,000 molecules and over all of
    them (``VmHWM``), to show that streaming keeps memory bounded.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from _timing import Timing, add_repeats_option, machine_load, measure, ratio

from scannet.featurizer import FeaturizerConfig

GOAL_SECONDS = 60.0
MODEL_RATE = 560.0  # molecules/s, SCANN+ CPU training on this machine type
INGEST_GOAL = 10 * MODEL_RATE
TARGETS = ["homo", "lumo", "gap"]


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): ``VmHWM``, which exec resets (``ru_maxrss`` keeps the
    parent's peak across fork + exec on Linux), else ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def featurize_with_ray(structures: Path, out_dir: Path, featurizer: FeaturizerConfig, batch_size: int, compute: str):
    from scannet.data.structures_table import read_units
    from scannet_platform.data_pipeline import featurize_dataset, write_graph_table

    start = time.perf_counter()
    units = read_units(structures)
    ds = featurize_dataset(structures, featurizer, units, batch_size=batch_size, compute=compute)
    summary = write_graph_table(ds, out_dir, featurizer, units, overwrite=True)
    return summary, time.perf_counter() - start


def reference_timing(n: int, repeats: int) -> Timing:
    from compare_box10 import reference_facet_sets  # pymatgen's VoronoiNN as the reference code calls it

    from scannet.data.qm9 import load_qm9

    molecules = load_qm9(limit=n, targets=[])
    reference_facet_sets(molecules[0])  # imports outside the timed loop

    def all_molecules() -> None:
        for atoms in molecules:
            reference_facet_sets(atoms)

    return measure(all_molecules, repeats, f"  pymatgen VoronoiNN reference path, first {n} (1 process)", molecules=n)


def plain_ingest(graphs: Path, batch_size: int, max_atoms: int | None = None) -> tuple[int, int, float]:
    from scannet.data.loader import GraphTableDataset

    dataset = GraphTableDataset(graphs, TARGETS, batch_size=batch_size, max_atoms=max_atoms, shuffle=True)
    start = time.perf_counter()
    batches = molecules = 0
    for batch in dataset:
        batches += 1
        molecules += int(batch["n_atoms"].shape[0])
    return batches, molecules, time.perf_counter() - start


def ray_ingest(graphs: Path, batch_size: int, max_atoms: int | None = None) -> tuple[int, int, float]:
    from _ray_data_ingest import iter_graph_batches, read_graph_dataset

    ds = read_graph_dataset(graphs)
    start = time.perf_counter()
    batches = molecules = 0
    for batch in iter_graph_batches(
        ds, TARGETS, batch_size=batch_size, max_atoms=max_atoms, local_shuffle_buffer_size=4096, seed=0
    ):
        batches += 1
        molecules += int(batch["n_atoms"].shape[0])
    return batches, molecules, time.perf_counter() - start


def report_ingest(label: str, ingest, repeats: int) -> None:
    """Run ``ingest()`` (-> batches, molecules, seconds) ``repeats`` times and print its figures."""
    timing = Timing(f"  {label}")
    for _ in range(repeats):
        batches, molecules, seconds = ingest()
        timing.add(seconds, molecules=molecules, batches=batches)
    print(timing.summary())
    print(f"    {ratio(timing, INGEST_GOAL)} the {INGEST_GOAL:.0f} molecules/s goal", flush=True)


def subset_table(graphs: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` rows of a graph table (over its part files), written as a graph table of their own."""
    from scannet.data.graphs_table import graph_table_files

    out.mkdir(parents=True, exist_ok=True)
    writer, left = None, rows
    for path in graph_table_files(graphs):
        file = pq.ParquetFile(path)
        for g in range(file.num_row_groups):
            if left <= 0:
                break
            table = file.read_row_group(g).slice(0, left)
            writer = writer or pq.ParquetWriter(out / "part-00000.parquet", file.schema_arrow)
            writer.write_table(table)
            left -= table.num_rows
    if writer is not None:
        writer.close()
    return out


def rss_child(graphs: str) -> None:
    """(c) in a fresh process: peak RSS after imports and after one shuffled ingest epoch."""
    import scannet.data.loader  # noqa: F401  (imports outside the measurement)

    before = peak_rss_mib()
    batches, molecules, seconds = plain_ingest(Path(graphs), 128)
    print(json.dumps({"before": before, "after": peak_rss_mib(), "molecules": molecules, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=0, help="QM9 molecules (0: all 130,831)")
    parser.add_argument("--n-reference", type=int, default=2000, help="molecules run through pymatgen")
    parser.add_argument("--batch-size", type=int, default=128, help="structures per training batch")
    parser.add_argument("--map-batch-size", type=int, default=4096, help="structures per map_batches call")
    parser.add_argument("--compute", choices=["tasks", "actors"], default="tasks")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the tables here (default: a temp dir)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    add_repeats_option(parser)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    with machine_load():
        run(args)


def run(args: argparse.Namespace) -> None:
    import ray

    from scannet.data.graphs_table import graph_cache_dir
    from scannet.data.qm9 import write_qm9_table

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-data-"))
    featurizer = FeaturizerConfig.molecules()

    start = time.perf_counter()
    structures = write_qm9_table(work / "qm9", targets=TARGETS, limit=args.n or None)
    n = pq.ParquetFile(structures).metadata.num_rows
    print(f"structures table: {n} molecules in {time.perf_counter() - start:.1f} s ({structures})")

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"ray.init: {time.perf_counter() - start:.1f} s (not counted below)")

    # (a) featurization ------------------------------------------------------------------------------
    graphs = graph_cache_dir(work / "cache", featurizer)
    featurization = Timing(f"(a) Ray Data featurization ({args.compute}, 2 CPUs)")
    for _ in range(args.repeats):  # each run overwrites the table
        summary, seconds = featurize_with_ray(structures, graphs, featurizer, args.map_batch_size, args.compute)
        featurization.add(seconds, molecules=summary.n_input)
    print(featurization.summary())
    print(f"  {summary.n_input} molecules: {summary.n_graphs} graphs, {summary.n_quarantined} quarantined")
    fastest, median = min(featurization.seconds), featurization.median_seconds
    if n == 130_831:
        verdict = "met" if median <= GOAL_SECONDS else "NOT met"
        print(
            f"  goal <= {GOAL_SECONDS:.0f} s for all of QM9: {verdict} by the median ({median:.1f} s, min {fastest:.1f})"
        )
    else:
        projected = 130_831 / featurization.median_rate()
        print(f"  projected for 130,831 from the median: {projected:.0f} s (goal {GOAL_SECONDS:.0f} s)")
    if args.n_reference:
        reference = reference_timing(args.n_reference, args.repeats)
        print(reference.summary())
        print(f"  ratio Ray pipeline / pymatgen: {ratio(featurization, reference)}", flush=True)

    # (b) ingest ------------------------------------------------------------------------------------
    print(
        f"(b) training ingest from the graph table, batches of {args.batch_size} (goal {INGEST_GOAL:.0f} molecules/s)"
    )
    r = args.repeats
    report_ingest("plain GraphTableDataset + collate_arrow", lambda: plain_ingest(graphs, args.batch_size), r)
    report_ingest("plain, atom budget 2,300", lambda: plain_ingest(graphs, args.batch_size, max_atoms=2300), r)
    report_ingest("Ray iter_torch_batches(collate_fn=GraphCollate)", lambda: ray_ingest(graphs, args.batch_size), r)
    report_ingest("Ray iter_batches + atom budget 2,300", lambda: ray_ingest(graphs, 1024, max_atoms=2300), r)
    ray.shutdown()

    # (c) memory -------------------------------------------------------------------------------------
    print("(c) peak RSS of a fresh process, one shuffled ingest epoch (plain loader)")
    sizes = sorted({min(10_000, n), n})
    for rows in sizes:
        table = graphs if rows == n else subset_table(graphs, rows, work / f"subset-{rows}")
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(table)], capture_output=True, text=True, check=True
        )
        rss = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  {rss['molecules']:>7} molecules: peak RSS {rss['after']:.0f} MiB "
            f"(+{rss['after'] - rss['before']:.0f} MiB over the {rss['before']:.0f} MiB after imports)"
        )
    print(f"tables kept in {work}")


if __name__ == "__main__":
    main()
