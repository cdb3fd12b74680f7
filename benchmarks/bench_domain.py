"""The applicability domain of a shipped model (``scannet.domain``): the fraction of its QM9 test split and of a
drug-like library inside the domain, per criterion, the speed of the check, and the choice of distance.

    python benchmarks/bench_domain.py [--model qm9-homo-lumo-gap-cpu] [--library benchmarks/data/drug_like.smi]
        [--repeats 3] [--compare-distances]

In-distribution: every structure of the test part of the split recorded beside the model (``split_ids.parquet``).
Out of distribution: the SMILES of ``--library`` (56 well-known drugs), embedded in 3D as ``scannet screen`` embeds
them (``embed_smiles``, seed 0). Each structure is predicted once with the shipped model; its DomainRow gives the
three criteria: known elements (a molecule with an element outside the model's vocabulary is refused by the model
and counted as failing this one), heavy atoms in the training range, and the nearest-neighbour distance at most the
threshold (counted over the molecules the model ran on). The fractions are deterministic.

Timings (``--repeats``, see ``_timing.py``): the check alone (``ApplicabilityDomain.assess`` on the pooled vectors
of the whole test split, computed once) and ``Predictor.predict`` on 2,000 test structures with and without the
domain (the overhead of the check on prediction).

``--compare-distances``: the pooled vectors of the domain's training sample and validation sample are recomputed
(``run_samples``) and three distances are calibrated the same way (95th percentile on validation): Euclidean on the
vectors standardised per feature (the one shipped), plain Euclidean, and cosine (Euclidean on unit vectors, the same
order); for each, the fraction of the test split and of the drug-like molecules the model ran on that pass.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _timing import add_repeats_option, machine_load, measure

import scannet
from scannet.domain import QUANTILE, DomainRow, nearest_distances, run_samples
from scannet.explain import recorded_test_sample
from scannet.pretrained import DEFAULT_MODEL, model_path

LIBRARY = Path(__file__).parent / "data" / "drug_like.smi"
SPEED_STRUCTURES = 2000


def fractions(rows: Sequence[DomainRow], domain) -> dict[str, str]:
    """Per criterion, ``k/n (p %)`` of the structures that pass it."""
    low, high = domain.heavy_atoms_range
    with_distance = [r for r in rows if r.nn_distance is not None]
    passing = {
        "elements": (sum(not r.unknown_elements for r in rows), len(rows)),
        f"heavy atoms {low}-{high}": (sum(low <= r.heavy_atoms <= high for r in rows), len(rows)),
        "distance (model ran)": (sum(r.nn_distance <= r.threshold for r in with_distance), len(with_distance)),
        "in domain (all three)": (sum(r.in_domain for r in rows), len(rows)),
    }
    return {name: f"{k}/{n} ({100 * k / n:.1f} %)" if n else "0/0" for name, (k, n) in passing.items()}


def drug_like(path: Path) -> tuple[list[str], list]:
    from scannet.data.smiles import embed_smiles, read_smiles_file

    records = list(read_smiles_file(str(path), None, None))
    return [r.id for r in records], [embed_smiles(r.smiles, seed=0) for r in records]


def transforms(domain) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    return {
        "standardised Euclidean (shipped)": domain.standardise,
        "plain Euclidean": lambda x: np.asarray(x, np.float32),
        "cosine": lambda x: np.asarray(x, np.float32) / np.linalg.norm(x, axis=1, keepdims=True),
    }


def compare_distances(model: Path, domain, test_pooled: np.ndarray, drug_pooled: np.ndarray) -> None:
    reference, validation, _ = run_samples(model.parent, model, len(domain.reference), domain.n_validation)
    print(f"\ndistance comparison ({len(reference):,} training, {len(validation):,} validation vectors):")
    print("| distance | threshold | QM9 test within | drug-like (model ran) within |\n|---|---|---|---|")
    for name, transform in transforms(domain).items():
        ref = transform(reference)
        threshold = float(np.quantile(nearest_distances(transform(validation), ref), QUANTILE))
        test = np.mean(nearest_distances(transform(test_pooled), ref) <= threshold)
        drugs = nearest_distances(transform(drug_pooled), ref) <= threshold
        print(
            f"| {name} | {threshold:.4g} | {100 * test:.1f} % | {drugs.sum()}/{len(drugs)} ({100 * drugs.mean():.1f} %) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a shipped model with a domain file")
    parser.add_argument("--library", type=Path, default=LIBRARY, help="SMILES file of out-of-distribution molecules")
    parser.add_argument("--compare-distances", action="store_true", help="also calibrate and compare 3 distances")
    add_repeats_option(parser)
    args = parser.parse_args()
    model = model_path(args.model)
    predictor = scannet.load(args.model)
    domain = predictor.domain
    if domain is None:
        raise SystemExit(f"{args.model}: no applicability domain beside {model}")
    print(
        f"{args.model}: domain of {len(domain.reference):,} training vectors, threshold {domain.threshold:.4g} "
        f"(validation {domain.n_validation:,}), heavy atoms {domain.heavy_atoms_range}, elements {domain.elements}"
    )
    with machine_load():
        test = recorded_test_sample(model.parent, 10**9)
        test_rows = [p.domain for p in predictor.predict(test, batch_size=256)]
        names, drugs = drug_like(args.library)
        drug_predictions = predictor.predict(drugs, batch_size=256)
        print("| criterion | QM9 test split | drug-like library |\n|---|---|---|")
        test_f, drug_f = fractions(test_rows, domain), fractions([p.domain for p in drug_predictions], domain)
        for name in test_f:
            print(f"| {name} | {test_f[name]} | {drug_f[name]} |")
        print("\ndrug-like molecules: name heavy_atoms unknown_elements domain_distance in_domain")
        for name, p in zip(names, drug_predictions):
            d = p.domain
            distance = f"{d.relative_distance:.2f}" if d.nn_distance is not None else "-"
            print(f"  {name} {d.heavy_atoms} {','.join(d.unknown_elements) or '-'} {distance} {int(d.in_domain)}")

        graphs = [g for g, _ in predictor.featurize_each(test, [str(a.info["id"]) for a in test]) if g is not None]
        pooled = predictor.pooled(graphs)
        numbers = [g.numbers for g in graphs]
        check = measure(lambda: domain.assess(numbers, pooled), args.repeats, "domain check", structures=len(graphs))
        print("\n" + check.summary())
        sample = test[:SPEED_STRUCTURES]
        with_domain = measure(
            lambda: predictor.predict(sample, 256), args.repeats, "predict with domain", structures=len(sample)
        )
        predictor.domain = None
        without = measure(
            lambda: predictor.predict(sample, 256), args.repeats, "predict without domain", structures=len(sample)
        )
        predictor.domain = domain
        print(with_domain.summary())
        print(without.summary())
        if args.compare_distances:
            ran = [(name, atoms) for name, atoms, p in zip(names, drugs, drug_predictions) if p.ok]
            drug_graphs = [predictor.featurize(atoms, name) for name, atoms in ran]
            compare_distances(model, domain, pooled, predictor.pooled(drug_graphs))


if __name__ == "__main__":
    main()
