"""GA drawings (``scannet.explain.drawing.draw_ga``): milliseconds per QM9 molecule, SVG, PNG and both.

    python benchmarks/bench_drawing.py [--n 200] [--pool 0] [--largest 100] [--scores model|uniform]
        [--repeats 3]

Draws ``--n`` QM9 molecules, evenly spaced over the first ``--pool`` (qm9pack, ``load_qm9``; 0: all), along each of the
three layouts: ``2d`` (bonds from the QM9 SMILES; a molecule whose SMILES atom order differs from its XYZ falls
back to perception, counted in the output), ``2d-perceived`` (no SMILES: bonds perceived from the coordinates)
and ``projection`` (the same molecules made periodic in a 15 Å cubic box). Each path is timed for SVG only, PNG
only and both, ``--repeats`` times after a one-molecule warm-up (see ``_timing.py``), then "both" again on the
``--largest`` molecules of the pool (most atoms; QM9 has at most 29). The figure is milliseconds per molecule:
median and min over the repeats. The goal is <= 50 ms per molecule for SVG and PNG together.

The GA scores come from the shipped model (``scannet.load()``), predicted once before any timing; ``--scores
uniform`` uses 1/n per atom instead. Only the drawing is timed.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
from _timing import Timing, add_repeats_option, machine_load, measure

from scannet.data.qm9 import QM9_TARGETS, load_qm9
from scannet.explain.drawing import Caption, draw_ga

GOAL_MS = 50.0
BOX = 15.0  # Å, the periodic box of the projection path
FORMAT_SETS = {"svg": ("svg",), "png": ("png",), "both": ("svg", "png")}
EXPLAINS = "HOMO, LUMO and gap (one attention pool shared by the three targets)"


def scored(molecules, source: str) -> list[tuple[object, np.ndarray, Caption]]:
    """(molecule, GA scores, caption) per molecule: the shipped model's predictions, or uniform scores."""
    if source == "uniform":
        return [(m, np.full(len(m), 1 / len(m)), Caption(m.info["name"], (), "nothing (uniform)")) for m in molecules]
    import scannet

    predictions = scannet.load().predict(molecules)
    failed = [p.name for p in predictions if not p.ok]
    assert not failed, failed[:3]
    return [
        (m, p.ga_scores, Caption(p.name, tuple((t, v, QM9_TARGETS[t].unit) for t, v in p.values.items()), EXPLAINS))
        for m, p in zip(molecules, predictions)
    ]


def in_box(atoms):
    periodic = atoms.copy()
    periodic.set_cell([BOX, BOX, BOX])
    periodic.center()
    periodic.pbc = True
    return periodic


def path_items(items, path: str) -> list[tuple[object, np.ndarray, Caption, str | None]]:
    """The arguments of ``draw_ga`` (atoms, scores, caption, smiles) of ``items`` along ``path``."""
    if path == "2d":
        return [(m, s, c, m.info["smiles"]) for m, s, c in items]
    if path == "2d-perceived":
        return [(m, s, c, None) for m, s, c in items]
    return [(in_box(m), s, c, None) for m, s, c in items]


def timed(calls, formats: tuple[str, ...], label: str, repeats: int) -> Timing:
    draw_ga(*calls[0][:3], smiles=calls[0][3], formats=formats)  # imports and fonts outside the timed loop

    def draw_all() -> None:
        for atoms, scores, caption, smiles in calls:
            draw_ga(atoms, scores, caption, smiles=smiles, formats=formats)

    return measure(draw_all, repeats, label, molecules=len(calls))


def ms_line(timing: Timing, n: int) -> str:
    per = [1000 * s / n for s in timing.seconds]
    median, best = float(np.median(per)), min(per)
    flag = (
        ""
        if "both" not in timing.label
        else f"  (goal <= {GOAL_MS:.0f} ms: {'met' if median <= GOAL_MS else 'MISSED'})"
    )
    return f"{timing.label}: {median:.1f} ms per molecule median, {best:.1f} min{flag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="molecules drawn per figure")
    parser.add_argument("--pool", type=int, default=0, help="first QM9 molecules to sample from (0: all)")
    parser.add_argument("--largest", type=int, default=100, help="largest molecules of the pool, drawn as 'both'")
    parser.add_argument("--scores", choices=("model", "uniform"), default="model")
    add_repeats_option(parser)
    args = parser.parse_args()
    pool = load_qm9(limit=args.pool or None, targets=[])
    sample = [pool[int(k)] for k in np.linspace(0, len(pool) - 1, args.n).round()]
    largest = sorted(pool, key=len, reverse=True)[: args.largest]
    for what, molecules in (("sample", sample), ("largest", largest)):
        sizes = [len(m) for m in molecules]
        print(
            f"{what}: {len(molecules)} molecules, atoms min {min(sizes)} / mean {np.mean(sizes):.1f} / max {max(sizes)}"
        )
    items, big = scored(sample, args.scores), scored(largest, args.scores)

    with machine_load():
        for path in ("2d", "2d-perceived", "projection"):
            calls = path_items(items, path)
            layouts = Counter(draw_ga(*c[:3], smiles=c[3], formats=("svg",)).layout for c in calls)
            print(f"{path} path, layouts drawn: {dict(layouts)}", flush=True)
            for name, formats in FORMAT_SETS.items():
                print(ms_line(timed(calls, formats, f"{path} {name}", args.repeats), len(calls)), flush=True)
            big_calls = path_items(big, path)
            label = f"{path} both, {len(big_calls)} largest"
            print(ms_line(timed(big_calls, FORMAT_SETS["both"], label, args.repeats), len(big_calls)), flush=True)


if __name__ == "__main__":
    main()
