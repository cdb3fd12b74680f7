"""Inference precision: what bfloat16 autocast costs in accuracy and buys in speed, with the shipped model.

    python benchmarks/bench_precision.py [--n-test 0] [--n-timed 2048] [--repeats 3] [--threads 1 2]

Accuracy: the shipped QM9 model (``scannet/pretrained/``) predicts the test part of its recorded split
(``--n-test`` molecules, a seeded sample in id order; 0: all 10,831) in fp32 and in bf16, eager and compiled;
printed are the MAE per target against the DFT labels and the largest and mean difference from the fp32
eager predictions. Speed: the first ``--n-timed`` of those molecules (featurized beforehand) through
``Predictor.predict_graphs`` (batches of 128 structures), ``--repeats`` timed passes after a warm-up, for each
precision, eager and compiled (``Predictor.compile``; compilation outside the clock), at each ``--threads``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import add_repeats_option, machine_load, measure, ratio

import scannet
from scannet.explain import featurize_sample, recorded_test_sample
from scannet.pretrained import DEFAULT_MODEL, model_path
from scannet.units import report_unit

BATCH = 128  # structures per model call


def predictions(predictor: scannet.Predictor, graphs: list, names: list[str]) -> np.ndarray:
    """[N, T] predictions in the model's units; raises if any structure fails (the sample is fixed)."""
    results = predictor.predict_graphs(graphs, names, batch_size=BATCH)
    failed = [f"{r.name}: {r.error}" for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} structures failed: {failed[:3]}")
    return np.array([[r.values[t] for t in predictor.targets] for r in results], dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=0, help="test molecules for the accuracy (0: all)")
    parser.add_argument("--n-timed", type=int, default=2048, help="molecules per timed pass")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    add_repeats_option(parser)
    args = parser.parse_args()

    run_dir = model_path(DEFAULT_MODEL).parent
    structures = recorded_test_sample(run_dir, args.n_test or 10**9)
    variants = {}
    for precision in ("fp32", "bf16"):
        for compiled in (False, True):
            predictor = scannet.load(DEFAULT_MODEL, precision=precision)
            variants[f"{precision} {'compiled' if compiled else 'eager'}"] = (
                predictor.compile() if compiled else predictor
            )
    reference = variants["fp32 eager"]
    graphs, failed = featurize_sample(reference, structures)
    if failed:
        raise RuntimeError(f"{len(failed)} test molecules could not be featurized: {failed[:3]}")
    names = [str(atoms.info["id"]) for atoms in structures]
    labels = np.array([[atoms.info[t] for t in reference.targets] for atoms in structures], dtype=np.float64)
    scales = [report_unit(reference.unit(t) or "")[0] for t in reference.targets]
    units = [report_unit(reference.unit(t) or "")[1] for t in reference.targets]

    with machine_load():
        print(f"accuracy on {len(structures):,} test molecules of {DEFAULT_MODEL} ({', '.join(reference.targets)})")
        torch.set_num_threads(max(args.threads))
        fp32 = predictions(reference, graphs, names)
        for label, predictor in variants.items():
            values = fp32 if predictor is reference else predictions(predictor, graphs, names)
            mae = np.abs(values - labels).mean(axis=0) * scales
            difference = np.abs(values - fp32) * scales
            print(
                f"  {label:14s} MAE "
                + ", ".join(f"{t} {m:.2f} {u}" for t, m, u in zip(reference.targets, mae, units))
                + " | |difference from fp32 eager| max "
                + ", ".join(f"{d:.2f}" for d in difference.max(axis=0))
                + ", mean "
                + ", ".join(f"{d:.3f}" for d in difference.mean(axis=0)),
                flush=True,
            )

        timed_graphs, timed_names = graphs[: args.n_timed], names[: args.n_timed]
        for threads in args.threads:
            torch.set_num_threads(threads)
            timings = {}
            for label, predictor in variants.items():
                predictor.predict_graphs(timed_graphs[:BATCH], timed_names[:BATCH], batch_size=BATCH)  # warm-up

                def one_pass(predictor=predictor) -> None:
                    predictor.predict_graphs(timed_graphs, timed_names, batch_size=BATCH)

                timings[label] = measure(
                    one_pass, args.repeats, f"{label}, {threads} thread(s)", molecules=len(timed_graphs)
                )
                print("  " + timings[label].summary(), flush=True)
            for compiled in ("eager", "compiled"):
                print(
                    f"  bf16 / fp32, {compiled}, {threads} thread(s): {ratio(timings[f'bf16 {compiled}'], timings[f'fp32 {compiled}'])}"
                )
            print(
                f"  bf16 compiled / fp32 eager, {threads} thread(s): {ratio(timings['bf16 compiled'], timings['fp32 eager'])}"
            )


if __name__ == "__main__":
    main()
