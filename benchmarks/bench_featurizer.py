"""Featurization throughput on QM9, single process: SCANNet's exact mode against the reference path.

    python benchmarks/bench_featurizer.py --n 2000 --n-reference 200 [--chunk 1024] [--repeats 3]

Times ``scannet.featurizer.featurize_each`` (validation + Voronoi + SCANN filter) on the first ``--n`` QM9
molecules, ``--chunk`` molecules per call (featurized together, as the screen and the data pipeline do) and
one molecule per call (``featurize``), and pymatgen's VoronoiNN as the reference code calls it (boxed molecule, every site) on the
first ``--n-reference``, in the same run, each ``--repeats`` times after a one-molecule warm-up (see
``_timing.py``: median and best rates, ratios of medians). The reference figure measured on this machine
type is 18.8 molecules/s; the goal is >= 1,500 molecules/s per core.
"""

from __future__ import annotations

import argparse

from _timing import Timing, add_repeats_option, machine_load, measure, ratio
from compare_box10 import reference_facet_sets  # the pymatgen reference path, defined once

from scannet.data.qm9 import load_qm9
from scannet.featurizer import FeaturizerConfig, featurize, featurize_each

DOCUMENTED_REFERENCE = 18.8  # molecules/s, pymatgen path, 2-core machine, first 2,000 QM9 molecules
GOAL = 1500.0


def timed(run, items, label: str, repeats: int, molecules: int | None = None) -> Timing:
    """``run`` on every item (a molecule, or a chunk of ``molecules`` molecules in all) per timed repeat."""
    run(items[0][:1] if molecules else items[0])  # imports and caches outside the timed loop

    def all_items() -> None:
        for item in items:
            run(item)

    return measure(all_items, repeats, label, molecules=molecules or len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="QM9 molecules featurized by SCANNet (0: all)")
    parser.add_argument("--n-reference", type=int, default=200, help="molecules run through pymatgen")
    parser.add_argument("--chunk", type=int, default=1024, help="molecules per featurize_each call")
    add_repeats_option(parser)
    args = parser.parse_args()
    molecules = load_qm9(limit=args.n or None, targets=[])
    config = FeaturizerConfig.molecules()

    chunks = [molecules[k : k + args.chunk] for k in range(0, len(molecules), args.chunk)]
    with machine_load():
        label = f"scannet featurize_each (exact), {args.chunk} per call"
        ours = timed(lambda chunk: featurize_each(chunk, config), chunks, label, args.repeats, len(molecules))
        print(ours.summary(), flush=True)
        alone = timed(
            lambda atoms: featurize(atoms, config), molecules, "scannet featurize (exact), 1 per call", args.repeats
        )
        print(alone.summary(), flush=True)
        print(f"together / one at a time: {ratio(ours, alone)}")
        reference = timed(reference_facet_sets, molecules[: args.n_reference], "pymatgen reference path", args.repeats)
        print(reference.summary(), flush=True)
        print(f"goal {GOAL:.0f} molecules/s: {ratio(ours, GOAL)}")
        print(f"ratio to pymatgen measured here: {ratio(ours, reference)}")
        print(f"ratio to the documented {DOCUMENTED_REFERENCE} molecules/s: {ratio(ours, DOCUMENTED_REFERENCE)}")


if __name__ == "__main__":
    main()
