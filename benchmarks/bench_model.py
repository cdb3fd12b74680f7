"""SCANN+ training and inference throughput on the first QM9 molecules (CPU).

    python benchmarks/bench_model.py --molecules 2000 --threads 2

Reference (TensorFlow 2.15 CPU, 2 threads, same 2,000 molecules, batch 128, SCANN+ 890,977 parameters):
69 molecules/s training, 169 molecules/s inference. Goal: >= 3x (210 and 500 molecules/s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from scannet.data.qm9 import load_qm9
from scannet.featurizer import FeaturizerConfig, featurize_many
from scannet.model import SCANN, count_parameters, preset
from scannet.train import GraphDataset, TrainConfig, Trainer, make_loader

REFERENCE_TRAIN, REFERENCE_INFER = 69.0, 169.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs (after one warm-up epoch)")
    parser.add_argument("--model", default="qm9-scann+")
    parser.add_argument(
        "--molecule-mode",
        default="exact",
        choices=["exact", "box10"],
        help="box10 gives the reference's (sparser) neighbour lists",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    molecules = load_qm9(limit=args.molecules, targets=["homo"])
    graphs, errors = featurize_many(molecules, FeaturizerConfig(molecule_mode=args.molecule_mode), progress=True)
    assert not errors, errors[:3]
    data = GraphDataset(graphs, np.array([[m.info["homo"]] for m in molecules]))
    model = SCANN(preset(args.model))
    trainer = Trainer(
        model, TrainConfig(epochs=args.epochs + 1, batch_size=args.batch_size, schedule="cosine"), data, data
    )

    trainer.train_epoch(trainer.train_loader)  # warm-up
    start = time.perf_counter()
    for _ in range(args.epochs):
        trainer.train_epoch(trainer.train_loader)
    train_rate = args.epochs * len(data) / (time.perf_counter() - start)

    inference = make_loader(data, args.batch_size, shuffle=False)
    trainer.predict(inference)  # warm-up
    start = time.perf_counter()
    trainer.predict(inference)
    infer_rate = len(data) / (time.perf_counter() - start)

    atoms = sum(g.n_atoms for g in graphs)
    edges = sum(g.n_edges for g in graphs)
    print(
        f"\n{args.model}: {count_parameters(model):,} parameters, {len(data)} molecules "
        f"({atoms / len(data):.1f} atoms, {edges / atoms:.2f} neighbours per atom, {args.molecule_mode}), batch {args.batch_size}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"training : {train_rate:8.1f} molecules/s  ({train_rate / REFERENCE_TRAIN:.2f}x the reference's {REFERENCE_TRAIN:.0f})"
    )
    print(
        f"inference: {infer_rate:8.1f} molecules/s  ({infer_rate / REFERENCE_INFER:.2f}x the reference's {REFERENCE_INFER:.0f})"
    )


if __name__ == "__main__":
    main()
