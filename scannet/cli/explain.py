"""``scannet explain``: GA explanations of structure files, and the deletion test of the GA scores.

    scannet explain [--model M] FILES... --out DIR [--top-n N] [--device cpu]   (default model: the shipped one)
    scannet explain --faithfulness [--model M] [--run RUN_DIR] [--n-molecules 200] [--k 1 2 3]

Explanations: for each structure, into DIR, ``<stem>_ga.xyz`` (extended XYZ, per-atom array ``ga_score``),
``<stem>_ga.png`` (the structure coloured by GA score), ``<stem>_top.csv`` and ``<stem>_top.md`` (the top-N
local structures: centre atom and its Voronoi neighbours, ranked by GA score), and ``explanations.csv``
(every input: predictions, GA file, error). Files are read as by ``scannet predict``; stems are sanitised,
unique and never resolve outside DIR. Exit codes: 0 every structure explained; 1 some files or structures
failed (the rest written); 2 user error (model missing or unreadable, bad option, nothing explained).

Faithfulness: the deletion test (:mod:`scannet.explain.faithfulness`) on a seeded sample of the test split the
model's training run recorded; prints the table. Exit codes: 0 done, 2 user error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from scannet.cli.args import add_device_argument, add_max_atoms_argument, device_or_cpu, positive_int
from scannet.cli.predict import EXIT_OK, EXIT_USER_ERROR, Row, add_model_argument

if TYPE_CHECKING:
    from scannet.featurizer import Graph
    from scannet.predictor import Predictor

HELP = "explain predictions: GA scores per atom as XYZ, PNG and ranked local structures; --faithfulness"
DESCRIPTION = (
    "Explain every structure in the files: per structure, into --out, <stem>_ga.xyz (extended XYZ with the "
    "per-atom array ga_score, for OVITO and ASE), <stem>_ga.png (the structure coloured by GA score), "
    "<stem>_top.csv and <stem>_top.md (the top-N local structures: centre atom and Voronoi neighbours, ranked by "
    "GA score), and explanations.csv (every input with its predictions or error). Exit codes: 0 all explained, "
    "1 some files or structures failed (the rest written), 2 user error. With --faithfulness: the deletion test "
    "of the GA scores on a seeded sample of the test split of the model's training run; prints a table."
)
INDEX_FILE = "explanations.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("files", nargs="*", help="structure files ASE can read (xyz, extxyz, cif, POSCAR, ...)")
    parser.add_argument("--out", default="explanations", help="output folder (default: explanations)")
    parser.add_argument("--top-n", type=positive_int, default=10, help="local structures per table (default 10)")
    add_device_argument(parser, "torch device for the model, e.g. cpu (default), cuda")
    add_max_atoms_argument(parser)
    test = parser.add_argument_group("faithfulness (deletion test)")
    test.add_argument("--faithfulness", action="store_true", help="run the deletion test instead of explaining files")
    test.add_argument(
        "--run", help="the training run folder whose test split is sampled (default: the checkpoint's folder)"
    )
    test.add_argument("--n-molecules", type=positive_int, default=200, help="structures sampled (default 200)")
    test.add_argument("--k", type=positive_int, nargs="+", default=[1, 2, 3], help="atoms removed (default 1 2 3)")
    test.add_argument("--random-seeds", type=positive_int, default=5, help="seeds of the random baseline (default 5)")
    test.add_argument("--seed", type=int, default=0, help="seed of the sample and the random atoms (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.faithfulness:
        if args.files:
            print(
                "scannet: error: --faithfulness takes no structure files: it samples the test split of the "
                "model's training run (--run)",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        return run_faithfulness(args)
    if not args.files:
        print("scannet: error: give structure files to explain (or --faithfulness)", file=sys.stderr)
        return EXIT_USER_ERROR
    return run_explanations(args)


def run_explanations(args: argparse.Namespace) -> int:
    from scannet.cli.predict import finish_rows, open_inputs, write_ga_files
    from scannet.explain import GA_SUFFIX
    from scannet.predictor import describe_error

    opened = open_inputs(args, INDEX_FILE)
    if opened is None:
        return EXIT_USER_ERROR
    predictor, rows, readable, out = opened.predictor, opened.rows, opened.readable, opened.out

    graphs = {}
    for row, (graph, error) in zip(
        readable, predictor.featurize_each([r.atoms for r in readable], [r.name for r in readable])
    ):
        row.error = error
        if graph is not None:
            graphs[id(row)] = graph
    featurized = [row for row in readable if id(row) in graphs]
    predictions = predictor.predict_graphs([graphs[id(row)] for row in featurized], [row.name for row in featurized])
    for row, prediction in zip(featurized, predictions):
        row.values, row.ga_scores, row.error = prediction.values, prediction.ga_scores, prediction.error
    write_ga_files(out, rows, multiframe=False)

    explained = [row for row in featurized if row.ga_file is not None and row.error is None]
    for n, row in enumerate(explained, start=1):
        stem = row.ga_file.removesuffix(GA_SUFFIX)
        try:
            top = write_structure_explanation(out, stem, row, graphs[id(row)], args.top_n, predictor)
        except Exception as exc:
            row.error = f"GA file written, but the picture or tables were not: {describe_error(exc)}"
            continue
        print(
            f"[{n}/{len(explained)}] {row.name} ({len(row.atoms)} atoms): top atom {top}; "
            f"{stem}{GA_SUFFIX}, _ga.png, _top.csv, _top.md",
            flush=True,
        )
    n_ok = sum(row.error is None for row in rows)
    return finish_rows(opened, verb="explained", n_ok=n_ok, failed_in=INDEX_FILE, written=f"files in {out}")


def write_structure_explanation(out: Path, stem: str, row: Row, graph: Graph, top_n: int, predictor: Predictor) -> str:
    """The PNG and the two local-structure tables of one predicted row; returns its top atom, e.g. ``C2 (0.213)``."""
    from scannet.explain import (
        PNG_SUFFIX,
        TOP_CSV_SUFFIX,
        TOP_MARKDOWN_SUFFIX,
        plot_ga_structure,
        top_local_structures,
        write_local_structures_csv,
        write_local_structures_markdown,
    )
    from scannet.io.paths import path_inside

    predicted = ", ".join(
        f"{target} {value:.4g} {predictor.unit(target) or ''}".rstrip() for target, value in row.values.items()
    )
    top = top_local_structures(graph, row.ga_scores, top_n)
    title = f"{row.name}: {predicted}"
    plot_ga_structure(path_inside(out, stem + PNG_SUFFIX), row.atoms, row.ga_scores, title, [s.atom_index for s in top])
    write_local_structures_csv(path_inside(out, stem + TOP_CSV_SUFFIX), top)
    heading = f"Top {len(top)} local structures of {row.name} by GA score ({predicted})"
    write_local_structures_markdown(path_inside(out, stem + TOP_MARKDOWN_SUFFIX), top, heading)
    return f"{top[0].element}{top[0].atom_index} ({top[0].ga_score:.3f})"


def run_faithfulness(args: argparse.Namespace) -> int:
    import scannet
    from scannet.checkpoint import resolve_checkpoint
    from scannet.explain import (
        DeletionConfig,
        deletion_test,
        featurize_sample,
        format_deletion_table,
        recorded_test_sample,
    )
    from scannet.train.run_folder import SPLIT_IDS_FILE

    checkpoint = resolve_checkpoint(args.model)  # CheckpointError: one line, exit 2
    run_dir = Path(args.run) if args.run else checkpoint.parent
    if args.run is None and not (run_dir / SPLIT_IDS_FILE).is_file():
        print(
            f"scannet: error: {run_dir} (the checkpoint's folder) holds no {SPLIT_IDS_FILE}: it is not a training "
            "run folder; give the run whose test split to sample with --run",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    predictor = scannet.load(checkpoint, device=device_or_cpu(args))
    config = DeletionConfig(ks=tuple(sorted(set(args.k))), n_random=args.random_seeds, seed=args.seed)
    start = time.perf_counter()
    print(f"sampling {args.n_molecules} test structures of the run in {run_dir} ...", flush=True)
    sample = recorded_test_sample(run_dir, args.n_molecules, args.seed, min_atoms=max(config.ks) + 1)
    graphs, failed = featurize_sample(predictor, sample)
    for line in failed:
        print(f"left out: {line}", file=sys.stderr)
    if not graphs:
        print(f"scannet: error: no test structure of {run_dir} could be featurized", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"deletion test on {len(graphs)} structures, k = {' '.join(map(str, config.ks))} ...", flush=True)
    rows = deletion_test(predictor.model, graphs, config)
    units = {t: predictor.unit(t) for t in predictor.targets}
    print()
    print("\n".join(format_deletion_table(rows, units, config.n_random)))
    print()
    print(
        f"model {args.model or checkpoint}; {len(graphs)} test structures with more than {max(config.ks)} atoms "
        f"(sample seed {args.seed}"
        + (f", {len(failed)} left out: not featurizable" if failed else "")
        + f"); mean |Δprediction| when k atoms leave the GA pool; {time.perf_counter() - start:.1f} s"
    )
    return EXIT_OK
