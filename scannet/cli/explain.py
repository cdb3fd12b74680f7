"""``scannet explain``: GA explanations of structure files, and the deletion test of the GA scores.

    scannet explain [--model M] [FILES...] [--smiles 'SMILES [NAME]' ...] --out DIR [--top-n N] [--device cpu]
    scannet explain --faithfulness [--model M] [--run RUN_DIR] [--n-molecules 200] [--k 1 2 3] [--seeds 3]

Explanations (default model: the shipped one): for each structure, into DIR, ``<stem>_ga.xyz`` (extended XYZ,
per-atom array ``ga_score``), ``<stem>_ga.svg`` and ``<stem>_ga.png`` (the 2D drawing shaded by GA score,
:mod:`scannet.explain.drawing`), ``<stem>_top.csv`` and ``<stem>_top.md`` (the top-N local structures: centre
atom and its Voronoi neighbours, ranked by GA score); for all of them ``explanations.csv`` (every input:
predictions, GA file, error) and ``report.html`` (one self-contained sortable page with every drawing,
:mod:`scannet.explain.report`). Inputs are read as by ``scannet predict``: structure files, SMILES files
(``.smi``, ``.csv``) and ``--smiles`` texts, embedded as ``scannet screen`` embeds them; stems are sanitised,
unique and never resolve outside DIR. Exit codes: 0 every structure explained; 1 some files or structures
failed (the rest written); 2 user error (model missing or unreadable, bad option, nothing explained).

Faithfulness: the deletion test (:mod:`scannet.explain.faithfulness`) with its controls (random atoms, an untrained
model of the same architecture, |gradient × input|) on seeded samples of the test split the model's training run
recorded, one per seed; prints the tables with 95 % confidence intervals over the seeds and a verdict. Exit codes:
0 done, 2 user error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from scannet.cli.args import (
    add_device_argument,
    add_max_atoms_argument,
    add_smiles_arguments,
    device_or_cpu,
    positive_int,
)
from scannet.cli.predict import EXIT_OK, EXIT_USER_ERROR, FILES_HELP, Row, add_model_argument

if TYPE_CHECKING:
    from scannet.explain.drawing import GADrawing
    from scannet.featurizer import Graph
    from scannet.predictor import Predictor

HELP = "explain predictions: GA scores per atom drawn on the molecule, an HTML report, XYZ for OVITO; --faithfulness"
DESCRIPTION = (
    "Explain every structure of the files and every --smiles: per structure, into --out, <stem>_ga.svg and "
    "<stem>_ga.png (the 2D drawing with bonds, atoms shaded by GA score), <stem>_ga.xyz (extended XYZ with the "
    "per-atom array ga_score, for OVITO and ASE), <stem>_top.csv and <stem>_top.md (the top-N local structures: "
    "centre atom and Voronoi neighbours, ranked by GA score); and report.html (a self-contained sortable page with "
    "every drawing) and explanations.csv (every input with its predictions or error). Exit codes: 0 all explained, "
    "1 some inputs failed (the rest written), 2 user error. With --faithfulness: the deletion test of the GA scores "
    "with its controls on seeded samples of the test split of the model's training run; prints a table."
)
INDEX_FILE = "explanations.csv"
REPORT_FILE = "report.html"
EXAMPLES = """examples:
  %(prog)s --smiles "CC(=O)O acetic acid" --out explained/    # then open explained/report.html
  %(prog)s --faithfulness --n-molecules 50 --out faithfulness/"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("files", nargs="*", help=FILES_HELP)
    add_smiles_arguments(parser)
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
    test.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first seed: seed s draws the sample, the random atoms and the untrained control (default 0)",
    )
    test.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="seeds s = seed, seed+1, ... for the confidence intervals (default 3)",
    )


def run(args: argparse.Namespace) -> int:
    if args.faithfulness:
        if args.files or args.smiles:
            print(
                "scannet: error: --faithfulness takes no structures: it samples the test split of the "
                "model's training run (--run)",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        return run_faithfulness(args)
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
    drawings: dict[int, GADrawing] = {}
    for n, row in enumerate(explained, start=1):
        stem = row.ga_file.removesuffix(GA_SUFFIX)
        try:
            top, drawings[id(row)] = write_structure_explanation(out, stem, row, graphs[id(row)], args.top_n, predictor)
        except Exception as exc:
            row.error = f"GA file written, but the drawing or tables were not: {describe_error(exc)}"
            continue
        print(
            f"[{n}/{len(explained)}] {row.name} ({len(row.atoms)} atoms): top atom {top}; "
            f"{stem}{GA_SUFFIX}, _ga.svg, _ga.png, _top.csv, _top.md",
            flush=True,
        )
    model = args.model or "the shipped QM9 HOMO/LUMO/gap model"
    report = write_explanation_report(out, rows, drawings, predictor, model)
    n_ok = sum(row.error is None for row in rows)
    return finish_rows(
        opened, verb="explained", n_ok=n_ok, failed_in=INDEX_FILE, written=f"files in {out}; open {report}"
    )


def write_structure_explanation(
    out: Path, stem: str, row: Row, graph: Graph, top_n: int, predictor: Predictor
) -> tuple[str, GADrawing]:
    """The drawing (SVG and PNG) and the two local-structure tables of one predicted row; returns its top atom,
    e.g. ``C2 (0.213)``, and the drawing."""
    from scannet.explain import (
        PNG_SUFFIX,
        SVG_SUFFIX,
        TOP_CSV_SUFFIX,
        TOP_MARKDOWN_SUFFIX,
        caption_of,
        top_local_structures,
        write_local_structures_csv,
        write_local_structures_markdown,
    )
    from scannet.explain.drawing import draw_ga
    from scannet.io.paths import path_inside

    drawing = draw_ga(row.atoms, row.ga_scores, caption_of(row.name, row.values, predictor), smiles=row.smiles)
    path_inside(out, stem + SVG_SUFFIX).write_text(drawing.svg, encoding="utf-8")
    path_inside(out, stem + PNG_SUFFIX).write_bytes(drawing.png)
    top = top_local_structures(graph, row.ga_scores, top_n)
    write_local_structures_csv(path_inside(out, stem + TOP_CSV_SUFFIX), top)
    predicted = ", ".join(
        f"{target} {value:.4g} {predictor.unit(target) or ''}".rstrip() for target, value in row.values.items()
    )
    heading = f"Top {len(top)} local structures of {row.name} by GA score ({predicted})"
    write_local_structures_markdown(path_inside(out, stem + TOP_MARKDOWN_SUFFIX), top, heading)
    return f"{top[0].element}{top[0].atom_index} ({top[0].ga_score:.3f})", drawing


def write_explanation_report(
    out: Path, rows: list[Row], drawings: dict[int, GADrawing], predictor: Predictor, model: str
) -> Path:
    """``report.html``: every input row (explained or with its error), sortable, with each GA drawing."""
    from scannet.data.smiles import FORCE_FIELD_NOTE
    from scannet.explain import explained_quantity
    from scannet.explain.report import Column, Entry, Report, prediction_columns, write_html_report
    from scannet.io.paths import path_inside

    units = {t: predictor.unit(t) for t in predictor.targets}
    columns = (
        Column("name", "name"),
        Column("formula", "formula"),
        Column("smiles", "SMILES"),
        Column("n_atoms", "atoms", numeric=True),
        *prediction_columns(predictor.targets, units, uncertainty=False),
        Column("top_atom", "top GA atom"),
        Column("drawing_note", "drawing note"),
        Column("source", "source"),
    )
    entries = []
    for row in rows:
        cells = {"name": row.name, "formula": row.formula(), "smiles": row.smiles}
        cells["source"] = row.where.removeprefix(str(Path(row.source_file).parent) + "/")  # the file's name
        cells["n_atoms"] = len(row.atoms) if row.atoms is not None else None
        cells.update(row.values or {})
        if row.ga_scores is not None:
            k = int(row.ga_scores.argmax())
            cells["top_atom"] = f"{row.atoms.get_chemical_symbols()[k]}{k} ({row.ga_scores[k]:.3f})"
        drawing = drawings.get(id(row))
        if drawing is not None:
            cells["drawing_note"] = drawing.note  # why it is not a 2D drawing from the SMILES or clean bonds
        entries.append(Entry(row.name, cells, drawing.svg if drawing else None, row.error))
    notes = [
        f"Model: {model}. GA scores explain {explained_quantity(predictor.targets)}; they sum to 1 over the atoms "
        "of a structure, so compare atoms within a structure."
    ]
    if any(row.smiles for row in rows):
        notes.append(f"Structures given as SMILES: {FORCE_FIELD_NOTE}.")
    report = Report(f"GA explanations of {len(rows)} structures", columns, tuple(entries), tuple(notes))
    return write_html_report(path_inside(out, REPORT_FILE), report)


def run_faithfulness(args: argparse.Namespace) -> int:
    import scannet
    from scannet.checkpoint import resolve_checkpoint
    from scannet.explain.faithfulness import (
        DeletionConfig,
        controlled_deletion_test,
        controlled_verdict,
        format_controlled_tables,
        seeded_samples,
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
    seeds = range(args.seed, args.seed + args.seeds)
    start = time.perf_counter()
    print(
        f"sampling {args.n_molecules} test structures of the run in {run_dir} for seeds {list(seeds)} ...", flush=True
    )
    samples, failed = seeded_samples(predictor, run_dir, args.n_molecules, seeds, min_atoms=max(config.ks) + 1)
    for line in failed:
        print(f"left out: {line}", file=sys.stderr)
    empty = [seed for seed, graphs in samples.items() if not graphs]
    if empty:
        print(f"scannet: error: no test structure of {run_dir} could be featurized (seed {empty[0]})", file=sys.stderr)
        return EXIT_USER_ERROR
    print(
        f"deletion test of the model and of an untrained control, k = {' '.join(map(str, config.ks))}, "
        f"{len(seeds)} seeds ...",
        flush=True,
    )
    rows = controlled_deletion_test(predictor.model, samples, config)
    units = {t: predictor.unit(t) for t in predictor.targets}
    print()
    print("\n".join(format_controlled_tables(rows, units, len(seeds))))
    print()
    print("\n".join(controlled_verdict(rows)))
    print()
    print(
        f"model {args.model or checkpoint}; test structures with more than {max(config.ks)} atoms, sample seeds "
        f"{seeds.start}-{seeds.stop - 1}"
        + (f", {len(failed)} left out: not featurizable" if failed else "")
        + f"; {config.n_random} random draws per seed; untrained control: the same architecture, initialised with "
        f"the seed, with the model's target statistics; {time.perf_counter() - start:.1f} s"
    )
    return EXIT_OK
