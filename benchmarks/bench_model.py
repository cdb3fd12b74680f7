"""SCANN+ training and inference throughput on the first QM9 molecules (CPU).

    python benchmarks/bench_model.py --molecules 2000 --threads 2 [--epochs 2 --repeats 3]

One warm-up epoch, then ``--repeats`` timed repeats of ``--epochs`` training epochs each (training includes
loss, L2 penalty, backward and Adam); one warm-up inference pass, then ``--repeats`` timed passes. See
``_timing.py``: median and best rates, ratios of medians.

Reference (TensorFlow 2.15 CPU, 2 threads, same 2,000 molecules, batch 128, SCANN+ 890,977 parameters):
69 molecules/s training, 169 molecules/s inference. Goal: >= 3x (210 and 500 molecules/s).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import add_repeats_option, machine_load, measure, ratio

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
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per timed repeat (after one warm-up)")
    parser.add_argument("--model", default="qm9-scann+")
    parser.add_argument(
        "--molecule-mode",
        default="exact",
        choices=["exact", "box10"],
        help="box10 gives the reference's (sparser) neighbour lists",
    )
    add_repeats_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    molecules = load_qm9(limit=args.molecules, targets=["homo"])
    graphs, errors = featurize_many(molecules, FeaturizerConfig(molecule_mode=args.molecule_mode), progress=True)
    assert not errors, errors[:3]
    data = GraphDataset(graphs, np.array([[m.info["homo"]] for m in molecules]))
    model = SCANN(preset(args.model))
    total_epochs = 1 + args.repeats * args.epochs
    trainer = Trainer(
        model, TrainConfig(epochs=total_epochs, batch_size=args.batch_size, schedule="cosine"), data, data
    )

    def train_epochs() -> None:
        for _ in range(args.epochs):
            trainer.train_epoch(trainer.train_loader)

    inference = make_loader(data, args.batch_size, shuffle=False)
    atoms = sum(g.n_atoms for g in graphs)
    edges = sum(g.n_edges for g in graphs)
    print(
        f"\n{args.model}: {count_parameters(model):,} parameters, {len(data)} molecules "
        f"({atoms / len(data):.1f} atoms, {edges / atoms:.2f} neighbours per atom, {args.molecule_mode}), "
        f"batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}"
    )
    with machine_load():
        trainer.train_epoch(trainer.train_loader)  # warm-up
        training = measure(train_epochs, args.repeats, "training ", molecules=args.epochs * len(data))
        print(training.summary())
        print(f"  {ratio(training, REFERENCE_TRAIN)} the reference's {REFERENCE_TRAIN:.0f} molecules/s", flush=True)
        trainer.predict(inference)  # warm-up
        inferring = measure(lambda: trainer.predict(inference), args.repeats, "inference", molecules=len(data))
        print(inferring.summary())
        print(f"  {ratio(inferring, REFERENCE_INFER)} the reference's {REFERENCE_INFER:.0f} molecules/s")


if __name__ == "__main__":
    main()
