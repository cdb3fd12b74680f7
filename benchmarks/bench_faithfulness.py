"""The deletion test of GA scores (``scannet explain --faithfulness``) with its cost, on a recorded test split.

    SCANNET_HOME=/tmp/explain_home scannet train --preset demo --name faith-demo
    python benchmarks/bench_faithfulness.py --model /tmp/explain_home/runs/faith-demo/best_model.pt \\
        [--run RUN_DIR] [--n-molecules 200] [--k 1 2 3] [--random-seeds 5] [--threads 1] [--repeats 3]
        [--untrained-control]

Prints the table ``scannet explain --faithfulness`` prints (mean |Δprediction| when the k atoms ranked highest by
GA score, by chance, or by |gradient × input| leave the global-attention pool), then the time of the deletion
test and of one plain prediction of the same sample, each ``--repeats`` times (see ``_timing.py``), and the
machine's load. Every repeat must give the same table. ``--untrained-control`` also prints the table of an
untrained model of the same architecture (seed 0) with the trained model's target statistics: how much of the
GA-vs-random gap comes from pooling weights alone rather than from training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _timing import add_repeats_option, machine_load, measure

import scannet
from scannet.batch import collate_graphs
from scannet.checkpoint import resolve_checkpoint
from scannet.explain import (
    DeletionConfig,
    deletion_test,
    featurize_sample,
    format_deletion_table,
    recorded_test_sample,
)
from scannet.model import SCANN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint in a training run folder (or use --run)")
    parser.add_argument("--run", help="the training run folder (default: the checkpoint's folder)")
    parser.add_argument("--n-molecules", type=int, default=200)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--untrained-control", action="store_true", help="also the table of an untrained model")
    add_repeats_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checkpoint = resolve_checkpoint(args.model)
    run_dir = Path(args.run) if args.run else checkpoint.parent
    predictor = scannet.load(checkpoint)
    config = DeletionConfig(tuple(sorted(set(args.k))), args.random_seeds, args.seed, args.batch_size)
    sample = recorded_test_sample(run_dir, args.n_molecules, args.seed, min_atoms=max(config.ks) + 1)
    graphs, left_out = featurize_sample(predictor, sample)
    assert not left_out, left_out[:3]
    n_atoms = sum(g.n_atoms for g in graphs)
    print(f"model {checkpoint} ({predictor.metadata.get('run', 'run not recorded')}); test split of {run_dir}")
    print(f"{len(graphs)} structures ({n_atoms} atoms), k = {list(config.ks)}, {config.n_random} random seeds")

    tables: list[list[str]] = []
    units = {t: predictor.unit(t) for t in predictor.targets}

    def run_test() -> None:
        tables.append(format_deletion_table(deletion_test(predictor.model, graphs, config), units, config.n_random))

    @torch.no_grad()
    def predict_once() -> None:
        for start in range(0, len(graphs), config.batch_size):
            predictor.model(collate_graphs(graphs[start : start + config.batch_size]))

    with machine_load():
        run_test()  # warm-up
        predict_once()
        deletion = measure(run_test, args.repeats, "deletion test", structures=len(graphs))
        plain = measure(predict_once, args.repeats, "plain prediction", structures=len(graphs))
    assert all(table == tables[0] for table in tables), "the repeats gave different tables"
    print()
    print("\n".join(tables[0]))
    print()
    print(deletion.summary())
    print(plain.summary())
    print(f"deletion test / plain prediction: {deletion.median_seconds / plain.median_seconds:.1f}x the time")
    if args.untrained_control:
        torch.manual_seed(0)
        untrained = SCANN(predictor.model.config).eval()
        untrained.set_target_statistics(predictor.model.target_mean, predictor.model.target_std)
        print("\nuntrained control (same architecture, seed 0, the trained model's target statistics):\n")
        print("\n".join(format_deletion_table(deletion_test(untrained, graphs, config), units, config.n_random)))


if __name__ == "__main__":
    main()
