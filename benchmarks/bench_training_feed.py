"""Training feed: the ingest alone (graph table -> collated batch ready to move to the device) per loader process.

    python benchmarks/bench_training_feed.py [--graphs QM9_GRAPH_TABLE] [--cache benchmarks/out]
        [--workers 0 1 2] [--batch-size 128] [--repeats 3] [--profile] [--static-shapes]

What is timed: one full epoch of ``GraphTableDataset`` (shuffle on, global batches of ``--batch-size``
structures, target ``homo``) through ``make_table_loader(dataset, num_workers=k)``, i.e. exactly what the
training worker's DataLoader yields, from ``iter()`` (worker start-up included) to the last batch; the
consumer does nothing with the batches. One untimed warm-up epoch per worker count, then ``--repeats`` timed
epochs (``_timing.py``), each epoch with a new shuffle (``set_epoch``).

Reported: molecules/s for every worker count (0 = in the training process itself), the rate per loader
process (rate / k; for k = 0 the training process), the scaling efficiency rate(k) / (k x rate(1)), and a
PROJECTION: loader processes needed on a 16-core GPU node for 50,000 molecules/s, from the measured rate of
one loader process and the measured efficiency of the largest k (assumed to hold up to that many processes,
one core each; not measured). ``pin_memory`` on / off where CUDA exists (else skipped, with the reason).
``--static-shapes`` also times the padded batches (``scannet.static_shapes``) in process, and SCANN+ training
steps (``TrainLoop``, ``--threads``) on the first ``--steps`` batches, packed vs padded (CPU: the padding's cost).
``--profile`` prints the top of a cProfile of one in-process epoch.

The QM9 graph table: ``--graphs`` (default featurizer settings, a ``homo`` column), else the one
``bench_ingest_memory.py`` builds and caches under ``--cache`` (built here when missing, ~3 min on 2 cores).
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from _timing import Timing, add_repeats_option, machine_load, measure, ratio
from bench_ingest_memory import build_qm9

TARGET = "homo"
GOAL_RATE = 50_000.0  # molecules/s a GPU training SCANN+ on QM9 needs (issue 25)
GPU_NODE_CORES = 16


def qm9_graphs(args: argparse.Namespace) -> Path:
    from scannet.data.graphs_table import graph_cache_dir
    from scannet.featurizer import FeaturizerConfig

    if args.graphs is not None:
        return args.graphs
    cache = args.cache / "ingest_memory"
    build_qm9(cache)
    return graph_cache_dir(cache / "graphs" / "qm9", FeaturizerConfig.molecules())


def make_stream(graphs: Path, batch_size: int, static_shapes: bool = False):
    from scannet.data.loader import GraphTableDataset
    from scannet.featurizer import FeaturizerConfig

    return GraphTableDataset(
        graphs,
        targets=[TARGET],
        batch_size=batch_size,
        shuffle=True,
        featurizer=FeaturizerConfig.molecules(),
        static_shapes=static_shapes,
    )


@dataclass
class FeedTiming:
    """Wall-clock timings of whole epochs, with the CPU seconds of the training process and of the loader
    workers (children, reaped at the end of each epoch) of every repeat."""

    timing: Timing
    main_cpu_s: list[float] = field(default_factory=list)
    worker_cpu_s: list[float] = field(default_factory=list)

    def cpu_line(self) -> str:
        main, workers = statistics.median(self.main_cpu_s), statistics.median(self.worker_cpu_s)
        return f"    CPU seconds per epoch (medians): training process {main:.2f}, loader workers {workers:.2f} in all"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def epoch_timing(stream, workers: int, repeats: int, label: str, pin_memory: bool = False) -> FeedTiming:
    """One warm-up epoch, then ``repeats`` timed epochs of the loader, each with a new shuffle."""
    from scannet.data.loader import make_table_loader

    feed = FeedTiming(Timing(label))
    for epoch in range(repeats + 1):
        stream.set_epoch(epoch)
        wall, main, children = time.perf_counter(), time.process_time(), _children_cpu()
        for _ in make_table_loader(stream, num_workers=workers, pin_memory=pin_memory):
            pass
        if epoch:  # the first is the warm-up
            feed.timing.add(time.perf_counter() - wall, molecules=stream.num_rows, batches=stream.num_batches())
            feed.main_cpu_s.append(time.process_time() - main)
            feed.worker_cpu_s.append(_children_cpu() - children)
    return feed


def step_timing(graphs: Path, args: argparse.Namespace, static_shapes: bool) -> Timing:
    """SCANN+ training steps (forward, loss, backward, Adam; ``--threads`` torch threads) on the first
    ``--steps`` batches of the epoch, collated beforehand: the model's time alone, packed or padded."""
    import itertools

    import torch

    from scannet.model import SCANN, preset
    from scannet.train import TrainConfig
    from scannet.train.trainer import TrainLoop

    torch.set_num_threads(args.threads)
    stream = make_stream(graphs, args.batch_size, static_shapes)
    batches = list(itertools.islice(stream, args.steps))
    torch.manual_seed(0)
    loop = TrainLoop(SCANN(preset("qm9-scann+", targets=(TARGET,))), TrainConfig(), len(batches), "cpu")
    loop.train_epoch(batches[:2])  # warm-up
    label = f"SCANN+ training steps, {'padded' if static_shapes else 'packed'}"
    return measure(lambda: loop.train_epoch(batches), args.repeats, label, molecules=args.steps * args.batch_size)


def padded_shapes_line(graphs: Path, batch_size: int) -> str:
    """Distinct (atoms, edges, structures) shapes over one epoch, packed and padded, and the padding's share."""
    from scannet.static_shapes import pad_batch

    packed, padded, real, total = set(), set(), [0, 0], [0, 0]
    for batch in make_stream(graphs, batch_size):
        shapes = [
            tuple(len(b[key]) for key in ("numbers", "edge_center", "n_atoms")) for b in (batch, pad_batch(batch))
        ]
        packed.add(shapes[0])
        padded.add(shapes[1])
        real = [real[0] + shapes[0][0], real[1] + shapes[0][1]]
        total = [total[0] + shapes[1][0], total[1] + shapes[1][1]]
    return (
        f"shapes over one epoch: {len(packed)} packed, {len(padded)} padded; padding "
        f"{1 - real[0] / total[0]:.1%} of the atoms and {1 - real[1] / total[1]:.1%} of the edges"
    )


def profile_epoch(stream, top: int = 18) -> None:
    from scannet.data.loader import make_table_loader

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in make_table_loader(stream):
        pass
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def scaling_lines(feeds: dict[int, FeedTiming]) -> list[str]:
    """Rate in all and per process, and the scaling efficiency rate(k) / (k x rate(1)), of every worker count."""
    lines = ["per loader process (molecules/s, medians of the wall-clock rates):"]
    one = feeds.get(1)
    for k, feed in feeds.items():
        rate = feed.timing.median_rate()
        line = f"  {k} workers: {rate:,.0f}/s in all, {rate / max(k, 1):,.0f}/s per process"
        if one is not None and k >= 1:
            line += f", scaling efficiency {rate / (k * one.timing.median_rate()):.2f}"
        lines.append(line)
    return lines


def projection_lines(feeds: dict[int, FeedTiming], molecules: int) -> list[str]:
    """PROJECTIONS (not measured) of the loader processes a 16-core GPU node needs for the goal rate."""
    one, two = feeds[1], feeds[2]
    per_process = one.timing.median_rate()
    efficiency = min(1.0, two.timing.median_rate() / (2 * per_process))
    naive = math.ceil(GOAL_RATE / (per_process * efficiency))
    # CPU model: every worker reads and buffers the whole table (R s per epoch) and collates 1/k of it (S / k)
    c1, c2 = statistics.median(one.worker_cpu_s), statistics.median(two.worker_cpu_s)
    redundant, shared = max(c2 - c1, 0.0), max(2 * c1 - c2, 1e-9)
    rates = {k: molecules / (redundant + shared / k) for k in range(1, GPU_NODE_CORES)}
    needed = next((k for k, rate in rates.items() if rate >= GOAL_RATE), None)
    ceiling = molecules / statistics.median(one.main_cpu_s)
    cores = f"the {GPU_NODE_CORES - 1} cores left beside the training process"
    return [
        "PROJECTIONS (not measured; a 16-core GPU node, one loader process per core):",
        f"  from the rate per process x the 2-worker scaling efficiency: {GOAL_RATE:,.0f} molecules/s needs "
        f"{naive} loader processes ({per_process:,.0f}/s x {efficiency:.2f} each)",
        f"  from the workers' CPU seconds per epoch (1 worker {c1:.2f} s, 2 workers {c2:.2f} s in all): each worker "
        f"spends {redundant:.2f} s reading and buffering the whole table and the collating ({shared:.2f} s) is "
        f"shared; {GOAL_RATE:,.0f}/s needs "
        + (f"{needed} processes ({rates[needed]:,.0f}/s)" if needed else f"more than {cores} can give")
        + f", {GPU_NODE_CORES - 1} give {rates[GPU_NODE_CORES - 1]:,.0f}/s",
        f"  the training process receiving the batches: {ceiling:,.0f} molecules/s per core (its CPU per epoch)",
    ]


def run(args: argparse.Namespace) -> None:
    import torch

    graphs = qm9_graphs(args)
    stream = make_stream(graphs, args.batch_size)
    print(f"graph table {graphs}: {stream.num_rows:,} molecules, {stream.num_batches()} batches of {args.batch_size}")
    if args.profile:
        profile_epoch(stream)
    feeds: dict[int, FeedTiming] = {}
    with machine_load():
        for k in args.workers:
            feeds[k] = epoch_timing(stream, k, args.repeats, f"{k} loader workers")
            print(feeds[k].timing.summary(), feeds[k].cpu_line(), sep="\n", flush=True)
        if torch.cuda.is_available():
            largest = feeds[max(args.workers)].timing
            pinned = epoch_timing(stream, max(args.workers), args.repeats, "pin_memory=True", pin_memory=True)
            print(pinned.timing.summary(), f"    vs pin_memory=False: {ratio(pinned.timing, largest)}", sep="\n")
        else:
            print("pin_memory: skipped, CUDA is not available on this machine (pinning needs a CUDA device)")
        if args.static_shapes:
            print(padded_shapes_line(graphs, args.batch_size))
            padded = epoch_timing(make_stream(graphs, args.batch_size, True), 0, args.repeats, "static shapes")
            packed = feeds[args.workers[0]].timing
            print(padded.timing.summary(), f"    vs packed ({packed.label}): {ratio(padded.timing, packed)}", sep="\n")
            steps = {padded: step_timing(graphs, args, padded) for padded in (False, True)}
            print(steps[False].summary(), steps[True].summary(), sep="\n")
            print(f"    padded / packed training rate: {ratio(steps[True], steps[False])}")
    print("", *scaling_lines(feeds), sep="\n")
    if 1 in feeds and 2 in feeds:
        print(*projection_lines(feeds, stream.num_rows), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / "out", help="tables are cached here")
    parser.add_argument("--graphs", type=Path, default=None, help="an existing QM9 graph table folder to use")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time")
    parser.add_argument("--batch-size", type=int, default=128, help="structures per batch")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one in-process epoch first")
    parser.add_argument(
        "--static-shapes", action="store_true", help="also time padded batches: ingest, and SCANN+ training steps"
    )
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per repeat (--static-shapes)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training steps")
    add_repeats_option(parser)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
