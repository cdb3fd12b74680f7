"""Training throughput on this CPU: fp32 eager against bf16 autocast and ``torch.compile``, in one run.

    python benchmarks/bench_training_speed.py [--molecules 2048] [--threads 2] [--batch-size 128] [--repeats 3]
        [--variants fp32-eager bf16-eager fp32-compiled bf16-compiled]

The first ``--molecules`` QM9 molecules (targets homo, lumo, gap; the shipped model's featurizer), collated into
batches before the clock, through the one training step (``TrainLoop.train_epoch``: forward, loss, L2 penalty,
backward, Adam) of a fresh SCANN+ (``qm9-scann+``, seed 0) per variant. Per variant: one untimed epoch (for a
compiled variant it compiles every batch shape), then ``--repeats`` timed epochs. The variants alternate epoch by
epoch (round-robin), so a change of the machine's load falls on all of them alike. Printed: molecules/s, median
and best, and each variant's ratio to fp32 eager (medians; "inside the noise" where the ranges overlap). The CPU's
bf16 instructions (AMX, AVX-512-BF16) are printed first: bf16 autocast is only fast where they exist.

What this does not measure: the accuracy cost of bf16 training (a validation curve against fp32 over the same
epochs; issue 24).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import Timing, add_repeats_option, machine_load, ratio

from scannet.batch import collate_graphs
from scannet.data.qm9 import load_qm9
from scannet.featurizer import FeaturizerConfig, featurize_many
from scannet.model import SCANN, preset
from scannet.static_shapes import compile_forward
from scannet.train import TrainConfig
from scannet.train.launches import cpu_description
from scannet.train.trainer import TrainLoop

TARGETS = ["homo", "lumo", "gap"]
VARIANTS = ("fp32-eager", "bf16-eager", "fp32-compiled", "bf16-compiled")


def training_loop(variant: str, steps: int) -> TrainLoop:
    precision, mode = variant.split("-")
    torch.manual_seed(0)
    model = SCANN(preset("qm9-scann+"))
    forward = compile_forward(model, False, torch.device("cpu")) if mode == "compiled" else model
    return TrainLoop(model, TrainConfig(epochs=100, batch_size=128), steps, "cpu", forward, precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    add_repeats_option(parser)
    args = parser.parse_args()
    if args.variants[0] != "fp32-eager":
        parser.error("the first variant must be fp32-eager (the others are compared with it)")
    torch.set_num_threads(args.threads)
    print(cpu_description())

    molecules = load_qm9(limit=args.molecules, targets=TARGETS)
    graphs, errors = featurize_many(molecules, FeaturizerConfig.molecules(), progress=True)
    assert not errors, errors[:3]
    labels = np.array([[m.info[t] for t in TARGETS] for m in molecules], dtype=np.float32)  # [N, 3]
    size = args.batch_size
    batches = [collate_graphs(graphs[k : k + size], labels[k : k + size]) for k in range(0, len(graphs), size)]
    print(f"{len(graphs)} molecules in {len(batches)} batches of {size}, {args.threads} threads, torch {torch.__version__}")

    loops = {}
    with machine_load():
        for variant in args.variants:  # untimed: the first epoch (compiles every batch shape)
            started = time.perf_counter()
            loops[variant] = training_loop(variant, len(batches))
            loops[variant].train_epoch(batches)
            print(f"{variant}: warm-up epoch {time.perf_counter() - started:.1f} s", flush=True)
        timings = {variant: Timing(f"training {variant}") for variant in args.variants}
        for _ in range(args.repeats):
            for variant, loop in loops.items():
                started = time.perf_counter()
                loop.train_epoch(batches)
                timings[variant].add(time.perf_counter() - started, molecules=len(graphs))
        for variant, timing in timings.items():
            print(timing.summary())
            if variant != "fp32-eager":
                print(f"  {variant}: {ratio(timing, timings['fp32-eager'])} fp32 eager", flush=True)


if __name__ == "__main__":
    main()
