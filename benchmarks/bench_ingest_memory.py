"""Training ingest at scale: peak RSS per rank on QM9 and on a 10x table, and ingest rate vs training rate.

    python benchmarks/bench_ingest_memory.py [--cache benchmarks/out] [--graphs QM9_GRAPH_TABLE]
        [--replicas 10] [--steps 200] [--threads 2] [--repeats 3] [--no-two-ranks | --two-rank-steps 0]
    python benchmarks/bench_ingest_memory.py --build-only   # build the cached tables, then stop

Goals (consolidation issue): peak RSS per rank on the 10x table <= 1.3x that on QM9; ingest never below 10x
the model's training rate.

Tables (built once, cached under ``--cache``; each build runs in a subprocess of its own):

- QM9: ``write_qm9_table`` (all 130,831 molecules, target ``homo``) then ``featurize_table`` (the plain
  featurizer, ~2-3 min on 2 cores), in ``graph_cache_dir(<cache>/ingest_memory/graphs/qm9, featurizer)``.
  ``--graphs`` takes an existing QM9 graph table folder instead (default featurizer settings, a ``homo``
  column); it is used as is.
- 10x: the QM9 graph rows written ``--replicas`` times in row groups (streamed: one source row group in memory
  at a time) through the library's ``write_featurized`` (same ``graphs/part-*.parquet`` layout, same schema
  metadata, so ``GraphTableDataset(featurizer=...)`` accepts it). Replica 0 is QM9 unchanged; replica k >= 1
  has ids ``<id>-x<k>`` and every edge distance multiplied by ``1 + N(0, --jitter)`` (clipped to > 0).
  The jitter is applied to the graph features, NOT to atomic coordinates re-featurized: neighbour lists and
  solid angles are those of the original molecule (edges are not re-thresholded). Re-featurizing 1.3 M
  jittered molecules would take ~25 min on this machine, and what the ingest reads, shuffles and collates is
  the same: rows of the same sizes, with float features that do not compress better than real ones.
- Splits (``write_split_ids``): QM9's standard split (110,000 / 10,000 / rest: 84 % train); every replica
  of a molecule is in that molecule's part.

Measurements, each in a FRESH subprocess (the parent never imports torch nor holds a table, see below):
the training stream exactly as the worker builds it (``scannet.train.worker.split_stream`` of the ``train``
part: global batches of 128, ``shuffle=True``, default shuffle buffer, this rank's rows, through
``make_table_loader``; the ``val`` stream is built and held too, as the worker does), a SCANN+ model
(``preset("qm9-scann+")``) and a ``TrainLoop`` (``--threads`` torch threads, default 2). One FULL epoch of
the stream is iterated (every batch collated); the first ``--steps`` batches are trained
(``TrainLoop.train_epoch``), the rest only collated. Reported per case, over ``--repeats`` subprocesses
(min / median / max, ``_timing.py``):

- peak RSS: ``VmHWM`` of /proc/self/status at the end of the epoch, and ``resource.getrusage(RUSAGE_SELF)
  .ru_maxrss`` beside it (on Linux ``ru_maxrss`` keeps the parent's peak across fork/vfork + exec, so the
  parent stays small and the two agree); also the RSS after the imports, after the streams' set-up and
  during training;
- ingest rate: structures/s of the stream alone (seconds spent fetching collated batches from the loader,
  over the whole epoch), and the train stream's set-up time (the split ids matched against the table's ids);
- training rate: structures/s of the trained steps after the first 10 (forward, loss, backward, Adam);
  ingest / training as a ratio of medians and as the worst case (slowest ingest run / fastest training run);
- rank 0 of a 2-rank group (``rank=0, world_size=2`` given to the stream, no process group): each rank reads
  the whole selection and collates its half of every global batch. By default ingest only
  (``--two-rank-steps 0``), compared with the training rate of rank 0 of 1.

On a loaded machine (load above the 2 cores) two torch threads train far slower than on an idle one
(OpenMP threads spin-waiting for each other, descheduled): the training rate is then low and the
ingest / training ratio flattering; the ratio to the documented idle-machine rate is printed beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _timing import Timing, add_repeats_option, machine_load, ratio

GOAL_RSS_RATIO = 1.3
GOAL_INGEST_RATIO = 10.0
DOCUMENTED_MODEL_RATE = 565.0  # SCANN+ training, 2 threads, idle 2-core machine (README, bench_model.py)
TARGET = "homo"
BATCH_SIZE = 128
WARMUP_STEPS = 10


# ------------------------------------------------------------------------------------------------- tables


def build_qm9(folder: Path) -> None:
    """The full QM9 structures table and its graph table (plain featurizer), then the split and statistics."""
    from scannet.data.graphs_table import featurize_table, graph_cache_dir
    from scannet.data.qm9 import write_qm9_table
    from scannet.featurizer import FeaturizerConfig

    featurizer = FeaturizerConfig.molecules()
    graphs = graph_cache_dir(folder / "graphs" / "qm9", featurizer)
    if not graphs.exists():
        structures = folder / "qm9" / "structures.parquet"
        if not structures.exists():
            start = time.perf_counter()
            write_qm9_table(structures.parent, targets=[TARGET])
            print(f"  QM9 structures table: {time.perf_counter() - start:.0f} s ({structures})", flush=True)
        start = time.perf_counter()
        summary = featurize_table(structures, graphs, featurizer)
        print(
            f"  featurized {summary.n_graphs} molecules ({summary.n_quarantined} quarantined) in "
            f"{time.perf_counter() - start:.0f} s ({graphs})",
            flush=True,
        )


def graph_ids(graphs: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scannet.data import schema as S
    from scannet.data.graphs_table import graph_table_files

    return pa.concat_arrays(
        [pq.read_table(f, columns=[S.ID]).column(S.ID).combine_chunks() for f in graph_table_files(graphs)]
    )


def build_split(graphs: Path, split_file: Path, stats_file: Path) -> None:
    """QM9's standard split over the graph table's rows, and the training split's target statistics."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from scannet.data.graphs_table import read_graph_table
    from scannet.data.qm9 import qm9_split
    from scannet.train.trainer import target_statistics
    from scannet.train.worker import write_split_ids

    ids = graph_ids(graphs)
    split = qm9_split(len(ids), seed=0)
    parts = np.empty(len(ids), dtype=object)
    for part in ("train", "val", "test"):
        parts[getattr(split, part)] = part
    write_split_ids(split_file, ids, pa.array(parts, pa.string()))
    table = read_graph_table(graphs, columns=["id", TARGET])
    train = pc.is_in(table.column("id"), value_set=ids.take(pa.array(split.train))).to_numpy(zero_copy_only=False)
    mean, std = target_statistics(table.column(TARGET).to_numpy()[train][:, None])
    stats_file.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist(), "sizes": split.sizes}))


def replicated_records(source: Path, replicas: int, jitter: float, seed: int):
    """The source graph table's rows ``replicas`` times, one row group at a time, as ``featurize_records``
    output (an all-null ``error`` column): replica 0 unchanged, replica k >= 1 with ids ``<id>-x<k>`` and
    distances x (1 + N(0, jitter)), clipped to > 0."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from scannet.data import schema as S
    from scannet.data.graphs_table import ERROR, graph_table_files

    rng = np.random.default_rng(seed)
    for k in range(replicas):
        for path in graph_table_files(source):
            with pq.ParquetFile(path) as file:
                for g in range(file.num_row_groups):
                    table = file.read_row_group(g).combine_chunks()
                    if k:
                        ids = pc.binary_join_element_wise(table.column(S.ID), pa.scalar(f"-x{k}"), "")
                        distance = table.column(S.DISTANCE).chunk(0)
                        values = pc.list_flatten(distance).to_numpy(zero_copy_only=False)
                        values = values * (1.0 + rng.normal(0.0, jitter, len(values)))
                        values = np.maximum(values, np.float32(1e-6)).astype(np.float32)
                        offsets = pc.subtract(distance.offsets, distance.offsets[0])
                        jittered = pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))
                        table = table.set_column(table.schema.get_field_index(S.ID), S.ID, ids)
                        table = table.set_column(table.schema.get_field_index(S.DISTANCE), S.DISTANCE, jittered)
                    yield table.append_column(pa.field(ERROR, pa.string()), pa.nulls(table.num_rows, pa.string()))


def build_replicated(source: Path, out: Path, replicas: int, jitter: float, seed: int) -> None:
    from scannet.data import schema as S
    from scannet.data.graphs_table import open_graph_table, write_featurized
    from scannet.featurizer import FeaturizerConfig

    featurizer = FeaturizerConfig.molecules()
    units = S.table_units(open_graph_table(source, featurizer)[0].schema_arrow)
    start = time.perf_counter()
    summary = write_featurized(replicated_records(source, replicas, jitter, seed), out, featurizer, units)
    print(f"  {replicas}x table: {summary.n_graphs} rows in {time.perf_counter() - start:.0f} s ({out})", flush=True)


def replicated_split(source_split: Path, out: Path, replicas: int) -> None:
    """Every replica of a molecule in that molecule's part."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from scannet.data import schema as S
    from scannet.train.worker import write_split_ids

    table = pq.read_table(source_split)
    ids = [table.column(S.ID)] + [
        pc.binary_join_element_wise(table.column(S.ID), pa.scalar(f"-x{k}"), "") for k in range(1, replicas)
    ]
    parts = [table.column("part")] * replicas
    write_split_ids(out, pa.chunked_array(ids).combine_chunks(), pa.chunked_array(parts).combine_chunks())


def build_child(spec: dict) -> None:
    """Subprocess: build whatever of the tables, splits and statistics is missing."""
    cache = Path(spec["cache"])
    qm9 = Path(spec["qm9"])
    if spec["build_qm9"]:
        build_qm9(cache)
    if not Path(spec["qm9_split"]).exists() or not Path(spec["stats"]).exists():
        build_split(qm9, Path(spec["qm9_split"]), Path(spec["stats"]))
    big = Path(spec["big"])
    if not big.exists():
        build_replicated(qm9, big, spec["replicas"], spec["jitter"], spec["seed"])
    if not Path(spec["big_split"]).exists():
        replicated_split(Path(spec["qm9_split"]), Path(spec["big_split"]), spec["replicas"])


# ------------------------------------------------------------------------------------------- measurement


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(key)


def measure_child(spec: dict) -> dict:
    """Subprocess: one full epoch of the worker's training stream, the first ``steps`` batches trained."""
    import resource

    import torch

    from scannet.data.loader import make_table_loader
    from scannet.featurizer import FeaturizerConfig
    from scannet.model import SCANN, preset
    from scannet.train import TrainConfig
    from scannet.train.trainer import TrainLoop
    from scannet.train.worker import WorkerConfig, split_stream

    torch.set_num_threads(spec["threads"])
    rss_imports = _status_mib("VmRSS")
    config = WorkerConfig(
        graph_table=spec["graphs"],
        split_ids=spec["split"],
        model=preset("qm9-scann+", targets=(TARGET,)),
        train=TrainConfig(batch_size=BATCH_SIZE),
        featurizer=FeaturizerConfig.molecules(),
        target_mean=tuple(spec["mean"]),
        target_std=tuple(spec["std"]),
        threads=spec["threads"],
    )
    start = time.perf_counter()
    stream = split_stream(config, "train", spec["rank"], spec["world_size"], shuffle=True)
    setup_s = time.perf_counter() - start
    validation = split_stream(config, "val", spec["rank"], spec["world_size"], shuffle=False)  # held, as the worker
    rss_stream = _status_mib("VmRSS")
    model = SCANN(config.model)
    model.set_target_statistics(torch.tensor(config.target_mean), torch.tensor(config.target_std))
    loop = TrainLoop(model, config.train, stream.num_batches(), "cpu")
    stream.set_epoch(0)
    batches = iter(make_table_loader(stream))

    clock = {"ingest_s": 0.0, "rows": 0, "batches": 0}
    step_s: list[float] = []
    step_rows: list[int] = []
    rss_steps: dict[int, float] = {}

    def fetch():
        begin = time.perf_counter()
        batch = next(batches, None)
        clock["ingest_s"] += time.perf_counter() - begin
        if batch is not None:
            clock["rows"] += int(batch["n_atoms"].shape[0])
            clock["batches"] += 1
        return batch

    def trained(steps: int):
        """The first ``steps`` batches, each step's seconds taken between handing a batch over and the next
        request (the TrainLoop's forward, loss, backward and Adam step)."""
        for k in range(steps):
            batch = fetch()
            if batch is None:
                return
            if k in (25, 50, 100, 200, 400, 800):
                rss_steps[k] = _status_mib("VmRSS")
            handed = time.perf_counter()
            step_rows.append(int(batch["n_atoms"].shape[0]))
            yield batch
            step_s.append(time.perf_counter() - handed)

    loop.train_epoch(trained(spec["steps"]))
    rss_trained = _status_mib("VmRSS")
    hwm_trained = _status_mib("VmHWM")
    while fetch() is not None:  # the rest of the epoch: collated, not trained
        pass
    steady = slice(WARMUP_STEPS, None) if len(step_s) > 2 * WARMUP_STEPS else slice(None)
    return {
        "rss_imports": rss_imports,
        "rss_stream": rss_stream,
        "rss_steps": rss_steps,
        "rss_trained": rss_trained,
        "hwm_trained": hwm_trained,
        "hwm": _status_mib("VmHWM"),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "setup_s": setup_s,
        "ingest_s": clock["ingest_s"],
        "rows": clock["rows"],
        "batches": clock["batches"],
        "selected_rows": stream.num_rows,
        "val_rows": validation.num_rows,
        "steps": len(step_s),
        "train_s": sum(step_s[steady]),  # 0.0 when nothing was trained
        "train_rows": sum(step_rows[steady]),
    }


# ------------------------------------------------------------------------------------------------ driver


def run_child(flag: str, spec: dict) -> dict | None:
    """This script in a fresh interpreter; the child's last stdout line is its JSON result."""
    result = subprocess.run(
        [sys.executable, __file__, flag, json.dumps(spec)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode:
        print(result.stdout, end="")
        raise RuntimeError(f"{flag} subprocess failed (exit {result.returncode})")
    lines = result.stdout.strip().splitlines()
    answer = json.loads(lines.pop()) if lines and lines[-1].startswith("{") else None
    for line in lines:
        print(line)
    return answer


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return (
        f"min {fmt.format(min(values))} / median {fmt.format(statistics.median(values))} / "
        f"max {fmt.format(max(values))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / "out", help="tables are cached here")
    parser.add_argument("--graphs", type=Path, default=None, help="an existing QM9 graph table folder to use")
    parser.add_argument("--replicas", type=int, default=10, help="size of the large table, in QM9s")
    parser.add_argument("--jitter", type=float, default=0.01, help="relative std of the distance jitter")
    parser.add_argument("--steps", type=int, default=200, help="trained steps per measurement (then ingest only)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the measured process")
    parser.add_argument("--no-two-ranks", action="store_true", help="skip rank 0 of a 2-rank group")
    parser.add_argument("--two-rank-steps", type=int, default=0, help="trained steps of rank 0 of 2 (0: ingest only)")
    parser.add_argument("--build-only", action="store_true", help="build the cached tables, then stop")
    parser.add_argument("--build-child", help=argparse.SUPPRESS)
    parser.add_argument("--measure-child", help=argparse.SUPPRESS)
    add_repeats_option(parser)
    args = parser.parse_args()
    if args.build_child:
        build_child(json.loads(args.build_child))
        return
    if args.measure_child:
        print(json.dumps(measure_child(json.loads(args.measure_child))))
        return
    with machine_load():
        run(args)


def run(args: argparse.Namespace) -> None:
    from scannet.featurizer import FeaturizerConfig  # light: no torch, no table

    hash_ = FeaturizerConfig.molecules().content_hash()
    cache = (args.cache / "ingest_memory").resolve()
    if args.graphs is not None:
        qm9 = args.graphs.resolve()
        tag = "given-" + hashlib.sha256(str(qm9).encode()).hexdigest()[:8]
    else:
        qm9, tag = cache / "graphs" / "qm9" / f"graphs-{hash_}", "qm9"
    name = f"{tag}-x{args.replicas}-jitter{args.jitter:g}-seed0"
    spec = {
        "cache": str(cache),
        "qm9": str(qm9),
        "build_qm9": args.graphs is None,
        "qm9_split": str(cache / "splits" / f"{tag}.parquet"),
        "stats": str(cache / "splits" / f"{tag}-stats.json"),
        "big": str(cache / "graphs" / name / f"graphs-{hash_}"),
        "big_split": str(cache / "splits" / f"{name}.parquet"),
        "replicas": args.replicas,
        "jitter": args.jitter,
        "seed": 0,
    }
    (cache / "splits").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run_child("--build-child", spec)
    stats = json.loads(Path(spec["stats"]).read_text())
    print(f"tables ready in {time.perf_counter() - start:.0f} s (cached under {cache}):")
    print(f"  QM9 : {qm9}\n  {args.replicas}x : {spec['big']}")
    print(
        f"  the {args.replicas}x table is QM9's graph rows {args.replicas} times, replicas 1.. with new ids and edge "
        f"distances x (1 + N(0, {args.jitter:g})): jitter applied to the graph features, not to coordinates "
        "re-featurized (re-featurizing 1.3 M molecules would take ~25 min here)"
    )
    print(f"  split (QM9 standard, each replica in its molecule's part): {stats['sizes']} per QM9 copy")
    if args.build_only:
        return

    tables = {"QM9": (str(qm9), spec["qm9_split"]), f"{args.replicas}x": (spec["big"], spec["big_split"])}
    worlds = {1: args.steps} if args.no_two_ranks else {1: args.steps, 2: args.two_rank_steps}
    cases = [(table, world) for world in worlds for table in tables]
    results: dict[tuple[str, int], list[dict]] = {case: [] for case in cases}
    print(
        f"\n{args.repeats} fresh subprocesses per case; each: the worker's training stream (global batch "
        f"{BATCH_SIZE}, shuffled), SCANN+, {args.threads} threads; {args.steps} trained steps on rank 0 of 1"
        + (f", {args.two_rank_steps} on rank 0 of 2" if 2 in worlds else "")
        + "; then the rest of the epoch collated only",
        flush=True,
    )
    for repeat in range(args.repeats):  # interleaved, so a change of machine load hits every case
        for table, world in cases:
            graphs, split = tables[table]
            child = {"graphs": graphs, "split": split, "rank": 0, "world_size": world, "steps": worlds[world]}
            child.update({"threads": args.threads, "mean": stats["mean"], "std": stats["std"]})
            r = run_child("--measure-child", child)
            results[(table, world)].append(r)
            trained = f", training {r['train_rows'] / r['train_s']:,.0f} structures/s" if r["train_s"] else ""
            print(
                f"  run {repeat} {table:>4s} rank 0/{world}: peak RSS {r['hwm']:,.0f} MiB (ru_maxrss "
                f"{r['ru_maxrss']:,.0f}), ingest {r['rows'] / r['ingest_s']:,.0f} structures/s over {r['rows']:,} "
                f"(set-up {r['setup_s']:.1f} s){trained}",
                flush=True,
            )
    report(results, tables, worlds)


def ingest_verdict(ingest: Timing, model: Timing) -> str:
    """Ratio of medians (noise-flagged) and the worst case: slowest ingest run over fastest training run."""
    worst = ingest.rate_range()[0] / model.rate_range()[1]
    met = "met" if worst >= GOAL_INGEST_RATIO else "NOT met"
    return (
        f"{ratio(ingest, model)} (medians), worst case {worst:.1f}x (slowest ingest / fastest training run); "
        f"goal >= {GOAL_INGEST_RATIO:.0f}x: {met}"
    )


def report(results, tables, worlds) -> None:
    small, big = list(tables)
    model: dict[str, Timing] = {}  # the training rate of rank 0 of 1, per table
    for world, steps in worlds.items():
        print(f"\n=== rank 0 of {world} ({BATCH_SIZE // world} rows of every global batch of {BATCH_SIZE}) ===")
        for table in tables:
            runs = results[(table, world)]
            r0 = runs[0]
            print(
                f"{table}: {r0['selected_rows']:,} training structures selected, {r0['rows']:,} collated by this "
                f"rank in {r0['batches']:,} batches, {r0['steps']} of them trained; {r0['val_rows']:,} in the "
                "validation stream (built, not read)"
            )
            print(f"  peak RSS (VmHWM)        : {spread([r['hwm'] for r in runs])} MiB")
            print(f"  peak RSS (ru_maxrss)    : {spread([r['ru_maxrss'] for r in runs])} MiB")
            print(f"  peak RSS before the rest of the epoch: {spread([r['hwm_trained'] for r in runs])} MiB (VmHWM)")
            during = ", ".join(
                f"step {k} {statistics.median(r['rss_steps'][k] for r in runs):,.0f}"
                for k in r0["rss_steps"]
                if all(k in r["rss_steps"] for r in runs)
            )
            print(
                f"  RSS (medians): after imports {statistics.median(r['rss_imports'] for r in runs):,.0f}, after "
                f"the streams' set-up {statistics.median(r['rss_stream'] for r in runs):,.0f}"
                + (f", during training {during}" if during else "")
                + f" MiB; train stream set-up {spread([r['setup_s'] for r in runs], '{:.1f}')} s"
            )
            ingest = Timing(f"  ingest {table}")
            for r in runs:
                ingest.add(r["ingest_s"], structures=r["rows"], batches=r["batches"])
            print(ingest.summary())
            if steps:
                trained = Timing(f"  training {table} (steps {WARMUP_STEPS + 1}..)")
                for r in runs:
                    trained.add(r["train_s"], structures=r["train_rows"])
                print(trained.summary())
                print(f"  ingest / training: {ingest_verdict(ingest, trained)}")
                model.setdefault(table, trained)
            if world > 1 and table in model:
                print(
                    f"  ingest of this rank / training of rank 0 of 1 (a rank training {BATCH_SIZE // world}-row "
                    f"batches is expected to train fewer structures/s than that; not measured): "
                    f"{ingest_verdict(ingest, model[table])}"
                )
            print(
                f"  ingest against the documented idle-machine training rate ({DOCUMENTED_MODEL_RATE:.0f} "
                f"structures/s): {ratio(ingest, DOCUMENTED_MODEL_RATE)}"
            )
        hwm = {t: [r["hwm"] for r in results[(t, world)]] for t in tables}
        median_ratio = statistics.median(hwm[big]) / statistics.median(hwm[small])
        low, high = min(hwm[big]) / max(hwm[small]), max(hwm[big]) / min(hwm[small])
        verdict = "met" if median_ratio <= GOAL_RSS_RATIO else "NOT met"
        growth = {t: statistics.median(r["hwm"] - r["rss_imports"] for r in results[(t, world)]) for t in tables}
        print(
            f"peak RSS {big} / {small}: {median_ratio:.3f}x (medians; {low:.3f}-{high:.3f}x between the runs' "
            f"extremes); goal <= {GOAL_RSS_RATIO}x: {verdict}. Peak above the RSS after imports: "
            f"{growth[small]:,.0f} vs {growth[big]:,.0f} MiB"
        )


if __name__ == "__main__":
    main()
