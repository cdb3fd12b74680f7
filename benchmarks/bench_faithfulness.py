"""The deletion test of GA scores (``scannet explain --faithfulness``) with its controls and its cost, on a recorded
test split.

    SCANNET_HOME=/tmp/explain_home scannet train --preset demo --name faith-demo
    python benchmarks/bench_faithfulness.py --model /tmp/explain_home/runs/faith-demo/best_model.pt \\
        [--run RUN_DIR] [--n-molecules 200] [--k 1 2 3] [--random-seeds 5] [--seed 0] [--seeds 3] [--threads 1]
        [--repeats 3]

Prints the mean |Δprediction| of the first seed's sample when the k atoms ranked highest by GA score, by chance,
or by |gradient × input| leave the global-attention pool, then the tables and verdict ``scannet explain
--faithfulness`` prints (:func:`scannet.explain.faithfulness.controlled_deletion_test`: GA ÷ random beside the
same ratio of an untrained model of the same architecture and beside |gradient × input|, and the effect per unit
of pool weight, each a mean [95 % CI] over ``--seeds`` seeds), then the time of one deletion test, of the
controlled study and of one plain prediction of the first sample, each ``--repeats`` times (see ``_timing.py``),
and the machine's load. Every repeat must give the same tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _timing import add_repeats_option, machine_load, measure

import scannet
from scannet.batch import collate_graphs
from scannet.checkpoint import resolve_checkpoint
from scannet.explain.faithfulness import (
    DeletionConfig,
    controlled_deletion_test,
    controlled_verdict,
    deletion_test,
    format_controlled_tables,
    format_deletion_table,
    seeded_samples,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint in a training run folder (or use --run)")
    parser.add_argument("--run", help="the training run folder (default: the checkpoint's folder)")
    parser.add_argument("--n-molecules", type=int, default=200)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the controlled study")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    add_repeats_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checkpoint = resolve_checkpoint(args.model)
    run_dir = Path(args.run) if args.run else checkpoint.parent
    predictor = scannet.load(checkpoint)
    config = DeletionConfig(tuple(sorted(set(args.k))), args.random_seeds, args.seed, args.batch_size)
    seeds = range(args.seed, args.seed + args.seeds)
    samples, left_out = seeded_samples(predictor, run_dir, args.n_molecules, seeds, min_atoms=max(config.ks) + 1)
    assert not left_out, left_out[:3]
    graphs = samples[args.seed]
    n_atoms = sum(g.n_atoms for g in graphs)
    print(f"model {checkpoint} ({predictor.metadata.get('run', 'run not recorded')}); test split of {run_dir}")
    print(
        f"first sample: {len(graphs)} structures ({n_atoms} atoms), k = {list(config.ks)}, {config.n_random} random "
        f"draws; controlled study: seeds {list(seeds)}"
    )

    units = {t: predictor.unit(t) for t in predictor.targets}
    tables: list[list[str]] = []
    studies: list[list[str]] = []

    def run_test() -> None:
        tables.append(format_deletion_table(deletion_test(predictor.model, graphs, config), units, config.n_random))

    def run_study() -> None:
        rows = controlled_deletion_test(predictor.model, samples, config)
        studies.append(format_controlled_tables(rows, units, len(seeds)) + [""] + controlled_verdict(rows))

    @torch.no_grad()
    def predict_once() -> None:
        for start in range(0, len(graphs), config.batch_size):
            predictor.model(collate_graphs(graphs[start : start + config.batch_size]))

    with machine_load():
        run_test()  # warm-up
        predict_once()
        deletion = measure(run_test, args.repeats, "deletion test", structures=len(graphs))
        study = measure(run_study, args.repeats, "controlled study", structures=len(graphs) * len(seeds))
        plain = measure(predict_once, args.repeats, "plain prediction", structures=len(graphs))
    assert all(table == tables[0] for table in tables), "the repeats gave different tables"
    assert all(lines == studies[0] for lines in studies), "the repeats gave different controlled studies"
    print()
    print("\n".join(tables[0]))
    print()
    print("\n".join(studies[0]))
    print()
    print(deletion.summary())
    print(study.summary())
    print(plain.summary())
    print(f"deletion test / plain prediction: {deletion.median_seconds / plain.median_seconds:.1f}x the time")
    print(f"controlled study / deletion test: {study.median_seconds / deletion.median_seconds:.1f}x the time")


if __name__ == "__main__":
    main()
