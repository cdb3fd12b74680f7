"""The ``scannet`` command: ``scannet train-qm9``, ``scannet predict``, ``scannet info``, ``scannet data``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def _train_qm9(args: argparse.Namespace) -> int:
    from scannet.train.qm9_run import run_preset, run_qm9

    config = run_preset(args.preset)
    overrides: dict = {"out_dir": args.out}
    if args.targets:
        overrides["targets"] = tuple(args.targets)
    if args.n_molecules is not None:
        overrides["n_molecules"] = args.n_molecules or None
    if args.model:
        overrides["model_preset"] = args.model
    if args.threads:
        overrides["num_threads"] = args.threads
    train_overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size)) if v}
    if train_overrides:
        overrides["train"] = dataclasses.replace(config.train, **train_overrides)
    summary = run_qm9(dataclasses.replace(config, **overrides))
    print("\n".join(["", "SCANN QM9 run finished", *summary.lines()]))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ase.io import read

    import scannet
    from scannet.explain import write_ga_xyz

    predictor = scannet.load(args.model)
    structures, names = [], []
    for path in args.files:
        try:
            frames = read(path, index=":")
        except Exception as exc:  # an unreadable file is reported, the others still predicted
            print(f"{path}: cannot read ({exc})", file=sys.stderr)
            continue
        for k, atoms in enumerate(frames):
            atoms.info.setdefault("name", Path(path).stem if len(frames) == 1 else f"{Path(path).stem}-{k}")
            structures.append(atoms)
            names.append(atoms.info["name"])
    results = predictor.predict(structures)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = ["name", *predictor.targets, "error"]
    lines = [",".join(header)]
    for atoms, result in zip(structures, results):
        values = [f"{result.values[t]:.6g}" if result.ok else "" for t in predictor.targets]
        lines.append(",".join([result.name, *values, result.error or ""]))
        if result.ok:
            write_ga_xyz(out / f"{result.name}_ga.xyz", atoms, result)
    (out / "predictions.csv").write_text("\n".join(lines) + "\n")
    n_ok = sum(r.ok for r in results)
    print(f"predicted {n_ok} of {len(results)} structures; table and GA files in {out}")
    for result in results:
        if not result.ok:
            print(f"  failed: {result.name}: {result.error}")
    return 0 if n_ok == len(results) else 1


def _info(args: argparse.Namespace) -> int:
    import scannet

    predictor = scannet.load(args.model)
    config = predictor.model.config
    print(f"targets   : {', '.join(config.targets)}")
    print(f"variant   : {'SCANN+' if config.g_update else 'SCANN'}, {config.num_blocks} blocks")
    print(f"elements  : {list(config.elements)}")
    print(f"featurizer: {predictor.featurizer_config.to_dict()}")
    print(f"metadata  : {predictor.metadata}")
    return 0


def _data_qm9(args: argparse.Namespace) -> int:
    import time

    from scannet.data.qm9 import write_qm9_table
    from scannet.data.structures_table import num_structures

    start = time.perf_counter()
    path = write_qm9_table(args.out, targets=args.targets or None)
    seconds = time.perf_counter() - start
    print(f"wrote {num_structures(path)} QM9 structures in {seconds:.1f} s to {path}")
    return 0


def _parse_units(items: list[str] | None) -> dict[str, str]:
    units = {}
    for item in items or []:
        name, sep, unit = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"scannet data import: --units expects name=unit, got {item!r}")
        units[name] = unit
    return units


def _data_import(args: argparse.Namespace) -> int:
    from scannet.data.importers import import_structures

    summary = import_structures(
        args.inputs,
        args.out,
        targets=args.targets or [],
        units=_parse_units(args.units),
        batch_size=args.batch_size,
        progress=not args.no_progress,
        require_targets=args.require_targets,
    )
    print("\n".join(summary.lines()))
    if summary.n_quarantined:
        print(f"quarantined records: {summary.n_quarantined} (id, source, reason) in {summary.quarantine_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scannet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train-qm9", help="train SCANN/SCANN+ on QM9 (no Ray)")
    train.add_argument("--preset", default="demo", choices=["demo", "paper"])
    train.add_argument("--targets", nargs="+", help="e.g. homo lumo gap alpha cv")
    train.add_argument("--model", help="model preset: qm9-scann+ (default), qm9-scann, demo")
    train.add_argument("--n-molecules", type=int, help="size of the QM9 slice (0: all)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--out", default="runs/qm9-demo", help="output folder")
    train.set_defaults(func=_train_qm9)

    predict = commands.add_parser("predict", help="predict structure files and write GA scores for OVITO")
    predict.add_argument("model", help="a model checkpoint (.pt)")
    predict.add_argument("files", nargs="+", help="structure files ASE can read (xyz, extxyz, cif, ...)")
    predict.add_argument("--out", default="predictions", help="output folder")
    predict.set_defaults(func=_predict)

    info = commands.add_parser("info", help="describe a model checkpoint")
    info.add_argument("model")
    info.set_defaults(func=_info)

    data = commands.add_parser("data", help="build structures tables (Parquet) from QM9 or structure files")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    qm9 = data_commands.add_parser("qm9", help="the QM9 structures table (130,831 molecules) from qm9pack")
    qm9.add_argument("--out", required=True, help="output folder (structures.parquet is written there)")
    qm9.add_argument("--targets", nargs="+", help="QM9 targets to keep (default: all)")
    qm9.set_defaults(func=_data_qm9)

    imp = data_commands.add_parser(
        "import", help="convert xyz/extxyz, ASE db, traj, CIF files or folders into a structures table"
    )
    imp.add_argument("inputs", nargs="+", help="files or folders")
    imp.add_argument("--out", required=True, help="output folder (structures.parquet, quarantine.parquet)")
    imp.add_argument("--targets", nargs="+", help="target names read from Atoms.info, db key-value pairs or energies")
    imp.add_argument("--units", nargs="+", metavar="NAME=UNIT", help="units of the targets, e.g. energy=eV")
    imp.add_argument("--require-targets", action="store_true", help="quarantine structures that miss a target")
    imp.add_argument("--batch-size", type=int, default=1024, help="structures per write")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(func=_data_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
