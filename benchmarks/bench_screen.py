"""End-to-end screening on this machine: read -> featurize -> predict -> Parquet shards with Ray Data, against
each of its two stages alone and the model alone, screening from stored graphs, and the peak memory of a small
and a large library.

    python benchmarks/bench_screen.py [--cache benchmarks/out] [--throughput 20000] [--repeats 3]
        [--memory 100000 300000] [--actors N] [--executor ray|local] [--featurize-workers N] [--chunk-size 1024]
        [--compile] [--precision bf16] [--untrained]

Goals (issue 12): >= 1,000 molecules/s end to end on 2 cores with the QM9 SCANN+ model, >= 0.8 of the
model-only inference rate measured in the same run; peak RSS for 1M candidates <= 1.3x that for 100k.
Issue 25 (two stages): with F the featurize stage alone on all cores and M the model stage alone on all cores
(structures/s), the best a screen sharing the cores can do is 1/(1/F + 1/M); goal E >= 0.8 of that, and a screen
from stored graphs (every chunk's graphs in the graph store) >= 0.8 of M.

The timed model is the shipped QM9 SCANN+ (``scannet/pretrained/``: ``qm9-scann+``, targets homo, lumo, gap;
``--untrained``: the same architecture with random weights); the memory screens use an untrained model of
``--memory-preset`` (memory does not depend on the weights). ``--compile`` screens with ``--compile``
(``torch.compile`` in each actor; its compilation counts in the chunk phase) and compiles the model-only pass
too (compilation outside its clock); ``--precision bf16`` screens with ``--precision bf16`` and times the
model-only pass under the same autocast. Candidates are generated from QM9
(``scannet data qm9`` structures table, cached): each library row is a QM9 molecule under a random rotation
and a Gaussian jitter of 0.01 Å per coordinate, streamed from a generator into the library's structures
table (written in batches, never held whole), ids ``<qm9 id>-<copy>``.

Measurements (each screen in a FRESH subprocess: its own local Ray, ``executor="ray"``, MLflow off, progress
off; the parent only polls /proc):

- end to end (E): structures/s of the chunk phase (actor start-up, model loading, every chunk up to the last part
  committed; Ray's own start-up is before the clock and the whole job's time is printed beside it), over
  ``--repeats`` screens of a ``--throughput`` library into a new folder and a new graph store each; the Ray
  start-up and the final read-back (counts, top-k, histograms) are reported beside it;
- the stages alone, same run, one child: F = ``featurize_piece`` over every chunk in a warm pool of one spawned
  process per CPU (graphs kept in memory, no store); M = ``ChunkPredictor.predict`` over those featurized chunks
  in one process with one torch thread per CPU (its parts written), after one warm-up chunk, and in a warm pool
  of one spawned process per CPU with one torch thread each (the chunks sent to them); M is the faster of the
  two (medians); ``--repeats`` each;
- from stored graphs: ``--repeats`` screens (same executor) of the library whose graphs the last end-to-end
  screen stored; their rate against M;
- model only, same run: ``--model-threads`` torch threads (default: all CPUs), the first 2,048 library
  molecules featurized beforehand, batches of the same atom budget, ``--repeats`` timed passes after a warm-up;
  also one thread (what each actor uses) and the featurizer alone (one process), to show where the time goes;
- memory: for each ``--memory`` size one screen (no graph store); peak RSS of the driver (VmHWM), the largest peak of an actor
  process (VmHWM) and the largest sum of VmRSS over the driver's process tree (driver, Ray's processes,
  actors; shared pages counted in each process that maps them), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _timing import add_repeats_option, load_line, machine_load

from scannet.io.process import cmdline, descendants
from scannet.precision import PRECISIONS

HERE = Path(__file__).resolve().parent
JITTER = 0.01  # Å
TARGETS = ("homo", "lumo", "gap")


# ----------------------------------------------------------------------------------------- preparation


def qm9_structures(cache: Path) -> Path:
    for candidate in (
        cache / "ingest_memory" / "qm9" / "structures.parquet",
        cache / "screen" / "qm9" / "structures.parquet",
    ):
        if candidate.is_file():
            return candidate
    from scannet.data.qm9 import write_qm9_table

    return Path(write_qm9_table(cache / "screen" / "qm9"))


def write_library(qm9: Path, n: int, path: Path, seed: int = 0) -> Path:
    """``n`` candidates (rotated, jittered QM9 copies) streamed into a structures table at ``path``."""
    import numpy as np
    import pyarrow as pa
    from scipy.spatial.transform import Rotation

    from scannet.data.structures_table import StructuresWriter, iter_structure_batches, structures_table_from_arrays

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    written, copy = 0, 0
    with StructuresWriter(path, {}) as writer:
        while written < n:
            for batch in iter_structure_batches(qm9, batch_size=4096, columns=["id", "numbers", "positions"]):
                take = min(batch.num_rows, n - written)
                batch = batch.slice(0, take)
                offsets = batch["numbers"].offsets.to_numpy()
                n_atoms = np.diff(offsets)
                numbers = batch["numbers"].values.to_numpy()[offsets[0] : offsets[-1]]
                positions = batch["positions"].values.values.to_numpy().reshape(-1, 3)[offsets[0] : offsets[-1]]
                owner = np.repeat(np.arange(take), n_atoms)
                rotations = Rotation.random(take, random_state=int(rng.integers(2**31))).as_matrix()[owner]
                moved = np.einsum("aij,aj->ai", rotations, positions) + rng.normal(scale=JITTER, size=positions.shape)
                ids = pa.array([f"{i}-{copy}" for i in batch["id"].to_pylist()], pa.string())
                writer.write_table(
                    structures_table_from_arrays(ids, n_atoms, numbers, moved, {}, sources="qm9-generated")
                )
                written += take
                if written >= n:
                    break
            copy += 1
    return path


def write_model(path: Path, name: str = "qm9-scann+") -> Path:
    import torch

    from scannet.checkpoint import save_model
    from scannet.featurizer import FeaturizerConfig
    from scannet.model import SCANN, preset

    if path.is_file():
        return path
    torch.manual_seed(0)
    model = SCANN(preset(name, targets=TARGETS))
    return save_model(
        path, model, FeaturizerConfig.molecules(), {"units": dict.fromkeys(TARGETS, "eV"), "note": "untrained"}
    )


# ----------------------------------------------------------------------------------- child: one screen


def child_screen(args: argparse.Namespace) -> None:
    from scannet_platform.screen.job import build_screen_config, run_screen

    config = build_screen_config(
        {
            "inputs": [args.screen],
            "models": [args.model],
            "out": args.out,
            "chunk_size": args.chunk_size,
            "actors": args.actors,
            "cpus_per_actor": args.cpus_per_actor,
            "executor": args.executor,
            "featurize_workers": args.featurize_workers,
            "graphs_dir": args.graphs_dir,
            "graphs_cache": args.graphs_dir is not None,
            "mlflow": False,
            "progress": False,
            "compile": args.compile,
            "precision": args.precision,
        }
    )
    started = time.perf_counter()
    summary, _ = run_screen(config)
    total = time.perf_counter() - started
    result = {
        "n": summary.n_input,
        "screened": summary.n_screened,
        "quarantined": summary.n_quarantined,
        "chunk_seconds": summary.screen_seconds,
        "rate": summary.rate,
        "total_seconds": total,
        "chunks": summary.n_chunks,
        "from_store": summary.chunks_from_store,
        "graphs_bytes": summary.graphs_bytes,
        "driver_hwm_mib": _status_kib(os.getpid(), "VmHWM") / 1024,
    }
    print("RESULT " + json.dumps(result), flush=True)


def child_model_only(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    import scannet
    from scannet.batch import collate_graphs
    from scannet.data.graphs_table import atom_budget_slices
    from scannet.data.structures_table import read_structures

    predictor = scannet.load(args.model, precision=args.precision)
    if args.compile:
        predictor.compile()
    molecules = next(read_structures(args.library, batch_size=2048))
    start = time.perf_counter()
    graphs = []
    for first in range(0, len(molecules), args.chunk_size):  # as the screen does: a chunk at a time
        chunk = molecules[first : first + args.chunk_size]
        graphs += [graph for graph, _ in predictor.featurize_each(chunk, [a.info["id"] for a in chunk])]
    featurize_rate = len(graphs) / (time.perf_counter() - start)
    slices = atom_budget_slices(np.array([g.n_atoms for g in graphs]), args.atom_budget)
    batches = [collate_graphs(graphs[s:e]) for s, e in slices]

    def one_pass() -> None:
        with torch.inference_mode(), predictor.autocast():
            for batch in batches:
                predictor._forward(batch)

    rates = {}
    for threads in sorted({args.model_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        one_pass()  # warm-up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            one_pass()
            seconds.append(time.perf_counter() - start)
        rates[threads] = seconds
    print("RESULT " + json.dumps({"n": len(graphs), "featurize_rate": featurize_rate, "seconds": rates}), flush=True)


def child_stages(args: argparse.Namespace) -> None:
    """F and M alone on all cores (module docstring)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    from scannet_platform.screen.chunk import RESERVED, ChunkPredictor
    from scannet_platform.screen.featurize_stage import featurize_piece
    from scannet_platform.screen.job import build_screen_config, featurize_spec, model_featurizers, screen_spec
    from scannet_platform.screen.library import plan_library
    from scannet_platform.screen.models import resolve_models

    cpus = os.cpu_count() or 1
    values = {"inputs": [args.library], "models": [args.model], "out": args.out, "chunk_size": args.chunk_size}
    values |= {"atom_budget": args.atom_budget, "threads": cpus, "precision": args.precision, "graphs_cache": False}
    config = build_screen_config(values | {"executor": "local", "mlflow": False, "progress": False})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups = resolve_models(config.models, None, reserved=RESERVED)
    pieces = plan_library(config.inputs, out, config.chunk_size, config.max_atoms, None, None, False).pieces
    featurizers = model_featurizers(groups)
    featurize = featurize_spec(config, featurizers, [])
    featurize_seconds, model_seconds = [], []
    with ProcessPoolExecutor(cpus, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(featurize_piece, repeat(featurize), pieces[:cpus]))  # warm-up: every process started
        for _ in range(args.repeats):
            start = time.perf_counter()
            chunks = list(pool.map(featurize_piece, repeat(featurize), pieces))
            featurize_seconds.append(time.perf_counter() - start)
    spec = screen_spec(config, out, groups, featurizers, "bench")
    predictor = ChunkPredictor(spec)
    predictor.predict(chunks[0])  # warm-up
    for _ in range(args.repeats):
        start = time.perf_counter()
        for chunk in chunks:
            predictor.predict(chunk)
        model_seconds.append(time.perf_counter() - start)
    process_seconds = []
    one_thread = dataclasses.replace(spec, threads=1)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(cpus, mp_context=context, initializer=_start_predictor, initargs=(one_thread,)) as pool:
        list(pool.map(_predict, chunks[:cpus]))  # warm-up: every process started, its model loaded
        for _ in range(args.repeats):
            start = time.perf_counter()
            list(pool.map(_predict, chunks))
            process_seconds.append(time.perf_counter() - start)
    n = sum(piece.rows for piece in pieces)
    result = {"featurize_seconds": featurize_seconds, "model_seconds": model_seconds}
    print("RESULT " + json.dumps({"n": n, **result, "model_process_seconds": process_seconds}))


_PREDICTOR = None  # a model process's ChunkPredictor (child_stages)


def _start_predictor(spec) -> None:
    global _PREDICTOR
    from scannet_platform.screen.chunk import ChunkPredictor

    _PREDICTOR = ChunkPredictor(spec)


def _predict(chunk):
    return _PREDICTOR.predict(chunk)


# -------------------------------------------------------------------------------- parent: measurements


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(arguments: list[str], sample: bool = False) -> dict:
    """Run this script as a child with ``arguments``; its RESULT line, plus the sampled memory of its tree."""
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parent)
    peaks = {"tree_rss_mib": 0.0, "actor_hwm_mib": 0.0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            family = [process.pid, *descendants(process.pid)]
            total = sum(_status_kib(pid, "VmRSS") for pid in family) / 1024
            peaks["tree_rss_mib"] = max(peaks["tree_rss_mib"], total)
            for pid in family:
                if "ChunkPredictor" in cmdline(pid):
                    peaks["actor_hwm_mib"] = max(peaks["actor_hwm_mib"], _status_kib(pid, "VmHWM") / 1024)

    thread = threading.Thread(target=poll, daemon=True)
    if sample:
        thread.start()
    output = process.communicate()[0]
    stop.set()
    if process.returncode != 0:
        raise RuntimeError(f"child {arguments[:2]} failed (exit {process.returncode}):\n{output[-3000:]}")
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    return {**result, **peaks} if sample else result


def summary(label: str, values: list[float], unit: str) -> str:
    return f"{label}: median {statistics.median(values):,.1f} {unit} (min {min(values):,.1f}, max {max(values):,.1f}, {len(values)} runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=HERE / "out")
    parser.add_argument(
        "--throughput", type=int, default=20_000, help="library size of the timed screens (0: memory only)"
    )
    parser.add_argument("--memory", type=int, nargs="*", default=[100_000, 300_000], help="library sizes for peak RSS")
    parser.add_argument(
        "--memory-preset",
        default="qm9-scann+",
        help="model preset of the memory screens (default qm9-scann+; 'demo' is a smaller, faster SCANN+)",
    )
    parser.add_argument("--actors", type=int, help="model actors (default: the screen's own pool sizes)")
    parser.add_argument("--executor", default="ray", choices=("ray", "local"), help="of the timed screens")
    parser.add_argument("--featurize-workers", type=int, help="screen --featurize-workers (default: the screen's)")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--atom-budget", type=int, default=4096)
    parser.add_argument("--model-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (screen --compile), in the model-only pass too"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="screen --precision, in the model-only pass too"
    )
    parser.add_argument(
        "--untrained", action="store_true", help="time an untrained qm9-scann+ instead of the shipped model"
    )
    add_repeats_option(parser)
    parser.add_argument("--screen", help=argparse.SUPPRESS)  # child: screen this library
    parser.add_argument("--model-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--graphs-dir", help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.screen:
        return child_screen(args)
    if args.model_only:
        return child_model_only(args)
    if args.stages:
        return child_stages(args)

    folder = args.cache / "screen"
    folder.mkdir(parents=True, exist_ok=True)
    qm9 = qm9_structures(args.cache)
    if args.untrained:
        model = write_model(folder / "qm9-scann+-untrained.pt")  # the name of the default --memory-preset's file too
    else:
        from scannet import pretrained

        model = pretrained.model_path()  # the shipped QM9 SCANN+ (qm9-scann+, homo, lumo, gap)
    sizes = sorted({args.throughput, *args.memory} - {0})
    libraries = {}
    for n in sizes:
        start = time.perf_counter()
        libraries[n] = write_library(qm9, n, folder / f"library-{n}.parquet")
        print(f"library of {n:,} candidates: {libraries[n]} ({time.perf_counter() - start:.1f} s)", flush=True)
    common = ["--model", str(model), "--chunk-size", str(args.chunk_size), "--executor", args.executor]
    common += ["--cpus-per-actor", str(args.cpus_per_actor)] + (["--compile"] if args.compile else [])
    common += ["--precision", args.precision] + (["--actors", str(args.actors)] if args.actors else [])
    common += ["--featurize-workers", str(args.featurize_workers)] if args.featurize_workers is not None else []
    print(
        f"\nSCANN+ qm9-scann+ ({'untrained' if args.untrained else 'shipped: ' + model.parent.name}, targets "
        f"{', '.join(TARGETS)}), {args.executor} executor, {args.actors or 'default'} model actors x "
        f"{args.cpus_per_actor:g} CPU, featurize workers {args.featurize_workers}, chunks of {args.chunk_size}, "
        f"atom budget {args.atom_budget}, {'compiled' if args.compile else 'eager'}, {args.precision}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    with machine_load():
        if args.throughput:
            model_only = run_child(
                ["--model-only", "--library", str(libraries[args.throughput]), "--model", str(model)]
                + ["--atom-budget", str(args.atom_budget), "--model-threads", str(args.model_threads)]
                + ["--repeats", str(args.repeats)]
                + (["--compile"] if args.compile else [])
                + ["--precision", args.precision, "--chunk-size", str(args.chunk_size)]
            )
            n_model = model_only["n"]
            model_rates = {int(t): [n_model / s for s in seconds] for t, seconds in model_only["seconds"].items()}
            print(f"featurizer alone, 1 process: {model_only['featurize_rate']:,.0f} molecules/s ({n_model} molecules)")
            for threads, rates in sorted(model_rates.items(), reverse=True):
                print(summary(f"model only, {threads} thread(s)", rates, "molecules/s"), flush=True)
            out = folder / f"stages-{time.time_ns()}"
            stages = run_child(
                ["--stages", "--library", str(libraries[args.throughput]), "--model", str(model), "--out", str(out)]
                + ["--atom-budget", str(args.atom_budget), "--chunk-size", str(args.chunk_size)]
                + ["--repeats", str(args.repeats), "--precision", args.precision]
            )
            _remove(out)
            featurize_rates = [stages["n"] / s for s in stages["featurize_seconds"]]
            thread_rates = [stages["n"] / s for s in stages["model_seconds"]]
            process_rates = [stages["n"] / s for s in stages["model_process_seconds"]]
            cpus = os.cpu_count()
            print(summary(f"F, featurize stage alone, {cpus} processes", featurize_rates, "molecules/s"))
            print(summary(f"model stage alone, one process x {cpus} threads", thread_rates, "molecules/s"))
            print(summary(f"model stage alone, {cpus} processes x 1 thread", process_rates, "molecules/s"))
            stage_rates = max(thread_rates, process_rates, key=statistics.median)
            print(f"M, the faster of the two (median): {statistics.median(stage_rates):,.1f} molecules/s", flush=True)
            bound = 1 / (1 / statistics.median(featurize_rates) + 1 / statistics.median(stage_rates))
            print(f"best two-stage rate on shared cores, 1/(1/F + 1/M) of the medians: {bound:,.0f} molecules/s")
            screens = []
            graphs = None
            for k in range(args.repeats):
                if graphs is not None:
                    _remove(graphs)
                out = folder / f"run-{args.throughput}-{time.time_ns()}"
                graphs = folder / f"graphs-{time.time_ns()}"  # a new store: every chunk featurized
                result = run_child(
                    ["--screen", str(libraries[args.throughput]), "--out", str(out), "--graphs-dir", str(graphs)]
                    + common,
                    sample=True,
                )
                screens.append(result)
                print(
                    f"  end to end {k + 1}: {result['rate']:,.0f} molecules/s ({result['screened']:,} screened, "
                    f"{result['quarantined']} quarantined, chunk phase {result['chunk_seconds']:.1f} s, whole job "
                    f"{result['total_seconds']:.1f} s; graph store {result['graphs_bytes'] / 1e6:,.1f} MB, "
                    f"{result['graphs_bytes'] / result['n'] / 1e3:.1f} kB per molecule); {load_line()}",
                    flush=True,
                )
                _remove(out)
            rates = [s["rate"] for s in screens]
            print(summary("E, end to end", rates, "molecules/s"))
            print(
                f"E / (1/(1/F + 1/M)), medians: {statistics.median(rates) / bound:.2f} (goal >= 0.8; min-max "
                f"{min(rates) / bound:.2f}-{max(rates) / bound:.2f})"
            )
            for threads, model in sorted(model_rates.items(), reverse=True):
                print(
                    f"ratio end to end / model only ({threads} thread(s), one process), medians: "
                    f"{statistics.median(rates) / statistics.median(model):.2f} "
                    f"(min-max {min(rates) / max(model):.2f}-{max(rates) / min(model):.2f})"
                )
            stored = []
            for k in range(args.repeats):
                out = folder / f"run-{args.throughput}-{time.time_ns()}"
                result = run_child(
                    ["--screen", str(libraries[args.throughput]), "--out", str(out), "--graphs-dir", str(graphs)]
                    + common
                )
                stored.append(result["rate"])
                print(
                    f"  from stored graphs {k + 1}: {result['rate']:,.0f} molecules/s ({result['from_store']} of "
                    f"{result['chunks']} chunks read from the store, chunk phase {result['chunk_seconds']:.1f} s); "
                    f"{load_line()}",
                    flush=True,
                )
                _remove(out)
            _remove(graphs)
            print(summary("from stored graphs", stored, "molecules/s"))
            print(
                f"from stored graphs / M, medians: {statistics.median(stored) / statistics.median(stage_rates):.2f} "
                f"(goal >= 0.8; min-max {min(stored) / max(stage_rates):.2f}-{max(stored) / min(stage_rates):.2f})"
            )
        memory = {}
        memory_model = write_model(folder / f"{args.memory_preset}-untrained.pt", args.memory_preset)
        memory_args = [*[a for a in common[2:] if a != "--compile"], "--model", str(memory_model)]
        if args.memory:
            print(f"memory screens with the untrained {args.memory_preset} preset ({memory_model.name})", flush=True)
        for n in args.memory:
            out = folder / f"run-{n}-{time.time_ns()}"
            result = run_child(["--screen", str(libraries[n]), "--out", str(out), *memory_args], sample=True)
            memory[n] = result
            print(
                f"memory, {n:,} candidates: driver peak {result['driver_hwm_mib']:,.0f} MiB, largest actor peak "
                f"{result['actor_hwm_mib']:,.0f} MiB, process tree peak {result['tree_rss_mib']:,.0f} MiB; "
                f"{result['rate']:,.0f} molecules/s over {result['chunk_seconds']:.0f} s; {load_line()}",
                flush=True,
            )
            _remove(out)
        if len(memory) >= 2:
            small, large = min(memory), max(memory)
            for key in ("driver_hwm_mib", "actor_hwm_mib", "tree_rss_mib"):
                print(f"  {key}: {large:,} / {small:,} = {memory[large][key] / memory[small][key]:.2f}x")


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
