"""Ray Train overhead against the plain loop: the same worker loop, config, data and threads.

    python benchmarks/bench_ray_train.py [--n 2000 --epochs 4 --threads 2 --repeats 3]

One :class:`~scannet.train.worker.WorkerConfig` (the first ``--n`` QM9 molecules, target ``homo``, 80/10/10
split written with ``write_split_ids``, SCANN+ ``qm9-scann+``, global batch 128, cosine schedule, ``--threads``
torch threads) is run by ``scannet.train.worker.run_worker``

(a) in this process with a ``LocalSession`` (no Ray), and
(b) as a one-worker ``TorchTrainer`` (``scannet_platform.train.session.train_loop_per_worker``,
    ``train_loop_config={"worker": config}``, ``--threads`` CPUs for the worker) on a local Ray started here
    (``address="local"``, ``--threads`` CPUs) and shut down at the end.

Each launch trains ``--epochs`` epochs; the wall-clock time of every epoch report is recorded on the worker's
side: ``on_report`` of the ``LocalSession``; for Ray Train the time each epoch's checkpoint finished landing
in the run's storage (written inside ``ray.train.report``). Not a controller callback's time: the controller
polls the workers every 2 s, which quantises it (measured: reports seen exactly 2.03 s apart for epochs that
took 1.36 s), and ``fit()`` returns at the next poll after the last epoch. The per-epoch cost is the time
between the first and the last report divided by ``epochs - 1``: training, validation, checkpoint and report,
without the start-up. Start-up = time to the first report minus the first epoch's own training and
validation seconds (the worker's ``seconds`` metric); checkpoint + report per epoch = the per-epoch cost minus
the worker's ``seconds`` of epochs 2 and later. Every path is launched ``--repeats`` times (interleaved);
per-epoch seconds and start-up are reported as min / median (``_timing.py``), and the overhead as the ratio
of the medians, flagged when inside the noise. Goal: per-epoch overhead <= 10 %.

Ray Train installs its own SIGINT handler in the driver (it stays after ``fit``): stop a run with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _timing import Timing, add_repeats_option, machine_load, ratio

from scannet.data import schema as S
from scannet.data.graphs_table import featurize_table, read_graph_table
from scannet.data.qm9 import write_qm9_table
from scannet.data.splits import make_split_fractions
from scannet.featurizer import FeaturizerConfig
from scannet.model import preset
from scannet.train import TrainConfig
from scannet.train.run_folder import RAY_TRAIN_FOLDER, RunFolder
from scannet.train.trainer import target_statistics
from scannet.train.worker import LocalSession, WorkerConfig, run_worker, split_part_ids, write_split_ids

GOAL_OVERHEAD = 0.10
TARGETS = ("homo",)


def prepare(root: Path, n: int, epochs: int, threads: int) -> tuple[WorkerConfig, int]:
    """The QM9 slice, its graph table and split, and the worker config both paths run; (config, train size)."""
    structures = write_qm9_table(root / "qm9", targets=list(TARGETS), limit=n)
    featurizer = FeaturizerConfig()
    featurize_table(structures, root / "graphs", featurizer)
    ids = pq.read_table(structures, columns=[S.ID]).column(S.ID).to_pylist()
    split = make_split_fractions(len(ids), 0.1, 0.1, seed=0)
    order = [ids[i] for i in split.indices]
    parts = [part for part in ("train", "val", "test") for _ in range(split.sizes[part])]
    split_ids = write_split_ids(RunFolder(root).split_ids, order, parts)
    graphs = read_graph_table(root / "graphs", featurizer, columns=[S.ID, *TARGETS])
    train_ids = set(split_part_ids(split_ids, "train").to_pylist())
    keep = np.array([i in train_ids for i in graphs.column(S.ID).to_pylist()])
    targets = np.stack([graphs.column(t).to_numpy()[keep] for t in TARGETS], axis=1)
    mean, std = target_statistics(targets)
    config = WorkerConfig(
        graph_table=str(root / "graphs"),
        split_ids=str(split_ids),
        model=preset("qm9-scann+", targets=TARGETS),
        train=TrainConfig(epochs=epochs, batch_size=128, schedule="cosine"),
        featurizer=featurizer,
        target_mean=tuple(mean.tolist()),
        target_std=tuple(std.tolist()),
        threads=threads,
    )
    return config, int(keep.sum())


def report_metrics_callback(path: Path):
    """A Ray Train callback (runs in the controller) appending each report's metrics to ``path``.

    Not its wall time: the controller polls the workers every 2 s (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``), so
    the time a report reaches the controller is quantised to that interval; the worker does not wait for it.
    """
    from ray.train import UserCallback

    class ReportMetrics(UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            record = {"seconds": metrics[0]["seconds"], "train_per_s": metrics[0]["train_per_s"]}
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    return ReportMetrics()


def checkpoint_times(storage: Path) -> list[float]:
    """When each checkpoint of a Ray Train run finished landing in storage (the newest file's mtime): the worker
    writes it inside ``ray.train.report``, so these are the worker's report times, in epoch order."""
    folders = [p for p in storage.glob("checkpoint_*") if p.is_dir()]
    return sorted(max(f.stat().st_mtime for f in folder.iterdir()) for folder in folders)


def run_plain(config: WorkerConfig, folder: Path) -> tuple[float, list[dict]]:
    """(launch time, per-report records, end time) of one in-process run."""
    records: list[dict] = []

    def on_report(metrics: dict) -> None:
        records.append({"time": time.time(), "seconds": metrics["seconds"], "train_per_s": metrics["train_per_s"]})

    launch = time.time()
    run_worker(config, LocalSession(folder, on_report=on_report))
    return launch, records, time.time()


def run_ray(config: WorkerConfig, folder: Path, threads: int) -> tuple[float, list[dict]]:
    """(launch time, per-report records, end time) of one one-worker ``TorchTrainer`` run."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from scannet_platform.train.session import train_loop_per_worker

    metrics = folder / "report_metrics.jsonl"
    folder.mkdir(parents=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"worker": config},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(name=RAY_TRAIN_FOLDER, storage_path=str(folder), callbacks=[report_metrics_callback(metrics)]),
    )
    launch = time.time()
    result = trainer.fit()
    end = time.time()
    if result.error is not None:
        raise RuntimeError(f"Ray Train run failed: {result.error}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    times = checkpoint_times(RunFolder(folder).ray_train)
    if len(times) != len(records):
        raise RuntimeError(f"{len(times)} checkpoints for {len(records)} reports in {folder}")
    return launch, [{**record, "time": t} for record, t in zip(records, times)], end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="QM9 molecules (80/10/10 split)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per launch (>= 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and Ray CPUs of the worker")
    add_repeats_option(parser)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the per-epoch cost is taken between the first and the last report)")

    import ray

    root = Path(tempfile.mkdtemp(prefix="bench-ray-train-"))
    ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    try:
        with machine_load():
            config, n_train = prepare(root, args.n, args.epochs, args.threads)
            print(
                f"{args.n} QM9 molecules, {n_train} training; SCANN+, global batch 128, {args.epochs} epochs per "
                f"launch, {args.threads} threads; {args.repeats} launches per path",
                flush=True,
            )
            per_epoch = {"plain": Timing("plain loop (LocalSession)"), "ray": Timing("Ray Train (1 worker)   ")}
            startup: dict[str, list[float]] = {"plain": [], "ray": []}
            compute_rate: dict[str, list[float]] = {"plain": [], "ray": []}
            bookkeeping: dict[str, list[float]] = {"plain": [], "ray": []}  # checkpoint + report per epoch
            wall: dict[str, list[float]] = {"plain": [], "ray": []}  # launch to return
            for repeat in range(args.repeats):
                for path in ("plain", "ray"):
                    folder = root / f"{path}-{repeat}"
                    launch, records, end = (
                        run_plain(config, folder) if path == "plain" else run_ray(config, folder, args.threads)
                    )
                    if len(records) != args.epochs:
                        raise RuntimeError(f"{path}: {len(records)} epoch reports, expected {args.epochs}")
                    epoch_s = (records[-1]["time"] - records[0]["time"]) / (args.epochs - 1)
                    per_epoch[path].add(epoch_s, training_molecules=n_train)
                    startup[path].append(records[0]["time"] - launch - records[0]["seconds"])
                    wall[path].append(end - launch)
                    compute_rate[path].append(statistics.median(r["train_per_s"] for r in records[1:]))
                    bookkeeping[path].append(epoch_s - statistics.mean(r["seconds"] for r in records[1:]))
                    at = ", ".join(f"+{r['time'] - launch:.1f}" for r in records)
                    print(
                        f"  {path:5s} run {repeat}: {epoch_s:.2f} s/epoch, start-up {startup[path][-1]:.1f} s, "
                        f"epoch reports at {at} s",
                        flush=True,
                    )

            print("\nper epoch (train + validation + checkpoint + report), launches of", args.epochs, "epochs:")
            for path in ("plain", "ray"):
                print(f"  {per_epoch[path].summary()}")
                print(
                    f"    start-up: min {min(startup[path]):.1f} s / median {statistics.median(startup[path]):.1f} s; "
                    f"launch to return: median {statistics.median(wall[path]):.1f} s; "
                    f"checkpoint + report per epoch: median {statistics.median(bookkeeping[path]):.2f} s; "
                    f"training steps alone (worker's train_per_s, median of epochs 2..): "
                    f"{statistics.median(compute_rate[path]):,.0f} molecules/s"
                )
            overhead = per_epoch["ray"].median_seconds / per_epoch["plain"].median_seconds - 1
            speed = ratio(per_epoch["plain"], per_epoch["ray"])
            verdict = "met" if overhead <= GOAL_OVERHEAD else "NOT met"
            if "inside the noise" in speed:
                verdict = f"cannot be told on this run (inside the noise; the median says {verdict})"
            print(
                f"\nRay Train per-epoch overhead (ratio of medians): {100 * overhead:+.1f} % "
                f"(plain / Ray rate {speed}); goal <= {100 * GOAL_OVERHEAD:.0f} %: {verdict}"
            )
            print(
                f"Ray Train start-up cost per launch (medians): "
                f"{statistics.median(startup['ray']) - statistics.median(startup['plain']):+.1f} s over the plain loop; "
                f"launch to return {statistics.median(wall['ray']) - statistics.median(wall['plain']):+.1f} s "
                "(includes the controller noticing the end, at its next 2 s poll)"
            )
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
