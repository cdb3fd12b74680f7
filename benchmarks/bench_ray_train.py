"""Ray Train overhead against the plain loop: the same worker code, data and threads.

    python benchmarks/bench_ray_train.py --n 2000 --threads 2

Both run ``train_worker.run_worker`` on the first ``--n`` QM9 molecules (80/10/10 split, SCANN+, batch
128): in-process with a ``LocalSession``, and as a one-worker ``TorchTrainer`` with ``--threads`` CPUs.
Startup is cancelled out by timing ``--short`` and ``--long`` epoch runs of each: the per-epoch cost is
(T(long) - T(short)) / (long - short), checkpoints and reports included. Goal: overhead <= 10 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from scannet.data.graphs_table import featurize_table
from scannet.data.qm9 import make_split_fractions, write_qm9_table
from scannet.featurizer import FeaturizerConfig
from scannet.model import preset
from scannet.train import TrainConfig
from scannet_platform.train_worker import LocalSession, load_split_graphs, run_worker, train_loop_per_worker


def prepare(root: Path, n: int) -> dict:
    structures = write_qm9_table(root, targets=["homo"], limit=n)
    featurize_table(structures, root / "graphs", FeaturizerConfig())
    ids = pq.read_table(structures, columns=["id"]).column("id").to_pylist()
    split = make_split_fractions(len(ids), 0.1, 0.1, seed=0)
    parts = {ids[i]: part for part in ("train", "val", "test") for i in getattr(split, part)}
    (root / "split_ids.json").write_text(json.dumps(parts))
    targets = load_split_graphs(str(root / "graphs"), str(root / "split_ids.json"), ["homo"]).train.targets
    return {
        "graph_table": str(root / "graphs"),
        "split_ids": str(root / "split_ids.json"),
        "targets": ["homo"],
        "model": preset("qm9-scann+").to_dict(),
        "featurizer": FeaturizerConfig().to_dict(),
        "target_mean": targets.mean(0).tolist(),
        "target_std": targets.std(0).tolist(),
    }


def plain(config: dict, root: Path) -> float:
    start = time.perf_counter()
    run_worker(config, LocalSession(tempfile.mkdtemp(dir=root)))
    return time.perf_counter() - start


def with_ray(config: dict, root: Path, threads: int, name: str) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(name=name, storage_path=str(root / "ray")),
    )
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--short", type=int, default=1)
    parser.add_argument("--long", type=int, default=4)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=args.threads, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-train-"))
    base = prepare(root, args.n)
    times: dict[str, dict[int, float]] = {"plain": {}, "ray": {}}
    for epochs in (args.short, args.long):
        config = {
            **base,
            "threads_per_worker": args.threads,
            "train": TrainConfig(epochs=epochs, batch_size=128, schedule="cosine").to_dict(),
        }
        times["plain"][epochs] = plain(config, root)
        times["ray"][epochs] = with_ray(config, root, args.threads, f"ray-{epochs}")
        print(f"{epochs} epochs: plain {times['plain'][epochs]:.1f} s, Ray Train {times['ray'][epochs]:.1f} s")
    span = args.long - args.short
    per_epoch = {k: (v[args.long] - v[args.short]) / span for k, v in times.items()}
    overhead = per_epoch["ray"] / per_epoch["plain"] - 1
    n_train = int(np.round(0.8 * args.n))
    print(f"\nper epoch ({n_train} training molecules + validation, checkpoint, report), {args.threads} threads:")
    print(f"plain loop : {per_epoch['plain']:.2f} s  ({n_train / per_epoch['plain']:.0f} training molecules/s)")
    print(f"Ray Train  : {per_epoch['ray']:.2f} s  ({n_train / per_epoch['ray']:.0f} training molecules/s)")
    print(f"overhead   : {100 * overhead:+.1f} %  (goal <= 10 %)")
    print(
        f"startup    : plain {times['plain'][args.short] - args.short * per_epoch['plain']:.1f} s, "
        f"Ray Train {times['ray'][args.short] - args.short * per_epoch['ray']:.1f} s"
    )


if __name__ == "__main__":
    main()
