"""``scannet predict``: structure files in, a predictions table and GA files out.

Every input is accounted for: each structure read gets a row with its predictions or its error,
each file (or frame) that cannot be read gets a row with the reason, and every failure is also
printed on stderr as ``<file>: frame <k>: ...``. Output file names derived from structure names are
sanitised and made unique (:mod:`scannet.explain`) and never resolve outside ``--out``.

Exit codes: 0 every structure predicted; 1 some files or structures failed (the rest written);
2 user error (missing or unreadable model, bad option, no input file readable, nothing predicted).
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scannet.cli.args import (
    add_batch_size_argument,
    add_device_argument,
    add_max_atoms_argument,
    add_progress_argument,
    add_smiles_arguments,
    device_or_cpu,
)
from scannet.precision import PRECISIONS

if TYPE_CHECKING:  # not at run time: `scannet --help` imports this module and must not wait for NumPy and ASE
    import numpy as np
    from ase import Atoms

HELP = "predict structure files and write GA scores for OVITO"
DESCRIPTION = (
    "Predict every structure in the files; write a predictions table and GA files to --out. "
    "Exit codes: 0 all predicted, 1 some files or structures failed (the rest written), "
    "2 user error (model missing or unreadable, no input readable, nothing predicted)."
)
EXIT_OK, EXIT_SOME_FAILED, EXIT_USER_ERROR = 0, 1, 2
DEFAULT_BATCH_SIZE = 128
MODEL_HELP = (
    "a checkpoint (.pt), a shipped model's name or a models:/ URI (default: the shipped QM9 HOMO/LUMO/gap model, "
    "scannet/pretrained/)"
)
FILES_HELP = (
    "structure files ASE can read (xyz, extxyz, cif, POSCAR, db, traj, ...) and SMILES files (.smi: 'SMILES [name]' "
    "per line; .csv: a smiles column)"
)
TABLE_FILES = {"csv": "predictions.csv", "parquet": "predictions.parquet"}
#: The table's columns; the predicted targets (``<target>_<unit>``) come between ``n_atoms`` and ``ga_file``.
LEADING_COLUMNS = ("name", "source_file", "frame", "smiles", "formula", "n_atoms")
TRAILING_COLUMNS = ("ga_file", "ga_frame", "error")
#: Between the targets and ``ga_file`` when the model has an applicability domain (:mod:`scannet.domain`).
DOMAIN_COLUMNS = ("heavy_atoms", "unknown_elements", "domain_distance", "in_domain")
EXAMPLES = """examples:
  %(prog)s a.xyz b.cif --out preds/                      # every frame of your files, with the shipped model
  %(prog)s --smiles "CC(=O)O acetic acid" --smiles "c1ccccc1 benzene" --out preds/"""


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``: the checkpoint to load (``predict``, ``explain``, ``info`` takes it as its argument)."""
    parser.add_argument("--model", help=MODEL_HELP)


@dataclass
class Row:
    """One line of the predictions table: a structure read from ``source_file`` or a read failure."""

    name: str
    source_file: str  # the file, or "--smiles" for a SMILES given on the command line
    frame: int | None
    atoms: Atoms | None = None  # None: this file or frame could not be read, or this SMILES not embedded
    error: str | None = None
    values: dict[str, float] | None = None
    ga_scores: np.ndarray | None = None
    ga_file: str | None = None
    ga_frame: int | None = None
    smiles: str | None = None  # the SMILES this structure was embedded from (force-field geometry)
    line: int | None = None  # the line of a SMILES file
    domain: Any = None  # its scannet.domain.DomainRow when the model has an applicability domain

    def domain_cells(self) -> list:
        """heavy_atoms, unknown_elements, domain_distance (nn distance / threshold), in_domain (1/0)."""
        if self.domain is None:
            return [None] * len(DOMAIN_COLUMNS)
        d = self.domain
        return [d.heavy_atoms, ",".join(d.unknown_elements), d.relative_distance, int(d.in_domain)]

    @property
    def where(self) -> str:
        if self.line is not None:
            return f"{self.source_file}: line {self.line}"
        return f"{self.source_file}: frame {self.frame}" if self.frame is not None else self.source_file

    def formula(self) -> str | None:
        try:
            return self.atoms.get_chemical_formula() if self.atoms is not None else None
        except Exception:
            return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help=FILES_HELP)
    add_model_argument(parser)
    add_smiles_arguments(parser)
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument(
        "--format", choices=sorted(TABLE_FILES), default="csv", help="table format: predictions.csv or .parquet"
    )
    parser.add_argument(
        "--ga-multiframe",
        action="store_true",
        help="write all GA structures into one multi-frame ga_scores.extxyz instead of one <name>_ga.xyz each",
    )
    add_batch_size_argument(parser, f"structures per model call (default {DEFAULT_BATCH_SIZE})")
    add_device_argument(parser, "torch device for the model, e.g. cpu (default), cuda, cuda:1")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default) or bf16: faster on CPUs with AMX/AVX-512-BF16, a few meV apart (figures: benchmarks/README.md)",
    )
    add_max_atoms_argument(parser)
    add_progress_argument(parser)


def describe_read_error(exc: BaseException, path: str) -> str:
    """One line saying why ASE could not read ``path`` (never empty)."""
    from ase.io.formats import UnknownFileTypeError

    from scannet.predictor import describe_error

    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError) or Path(path).is_dir():
        return "is a folder, not a structure file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnknownFileTypeError):
        return (
            f"unsupported file format ({' '.join(str(exc).split()) or Path(path).suffix}): ASE cannot read it; use a "
            "structure format such as xyz, extxyz, cif, POSCAR, an ASE db or traj"
        )
    if not str(exc).strip():
        hint = (
            " (for a CIF, often cell lengths or angles that give a singular cell)"
            if path.lower().endswith(".cif")
            else ""
        )
        return (
            f"{type(exc).__name__} without a message from the ASE reader: the file is malformed or describes "
            f"an impossible structure{hint}"
        )
    return describe_error(exc)


def read_inputs(paths: list[str], max_atoms: int | None = None) -> list[Row]:
    """Every frame of every file as a row; a file or a frame that cannot be read as a row with the reason.

    Files are read by the streaming reader of ``scannet data import`` and ``scannet screen``
    (:func:`scannet.data.importers.iter_records`): a structure of more than ``max_atoms`` atoms (default
    :data:`~scannet.data.importers.DEFAULT_MAX_ATOMS`; an xyz frame is refused before its atom lines are kept)
    or with an oversized ``info`` or a line over the length limit gets a row with the reason, and a frame that
    cannot be parsed does not stop the frames after it. Names: ``Atoms.info["name"]`` when present, else the file
    stem (``<stem>-<k>`` for frame k of a multi-frame file). Read failures and reader warnings are printed on
    stderr, naming the file.
    """
    from scannet.data.importers import DEFAULT_MAX_ATOMS, iter_records

    limit = DEFAULT_MAX_ATOMS if max_atoms is None else max_atoms
    rows: list[Row] = []
    for path in paths:
        stem = Path(path).stem or Path(path).name or "structure"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = list(iter_records(Path(path), limit))
        multi = len(records) > 1
        for k, record in enumerate(records):
            if record.atoms is not None:
                atoms = record.atoms
                name = str(atoms.info.get("name", "")).strip() or (f"{stem}-{k}" if multi else stem)
                atoms.info["name"] = name
                rows.append(Row(name, path, k, atoms))
                continue
            error = record_error(record, path)
            row = Row(f"{stem}-{k}" if multi else stem, path, k if multi else None, error=error)
            rows.append(row)
            print(f"{row.where}: cannot read: {error}", file=sys.stderr)
        for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
            print(f"{path}: warning while reading: {message}", file=sys.stderr)
    return rows


def read_smiles_inputs(
    paths: list[str], texts: list[str], max_atoms: int | None, smiles_column: str | None, id_column: str | None
) -> list[Row]:
    """A row per SMILES of the ``.smi``/``.csv`` files and of ``texts`` (``SMILES [name]``), embedded in 3D as
    ``scannet screen`` embeds them (:func:`scannet.data.smiles.embed_smiles`); a SMILES that cannot be parsed or
    embedded, or is over ``max_atoms`` atoms, gets its row with the reason (printed on stderr too). A file that
    cannot be read gets one row with the reason."""
    from scannet.data.importers import DEFAULT_MAX_ATOMS
    from scannet.data.smiles import EmbeddingError, SmilesRecord, embed_smiles, parse_smiles_line, read_smiles_file
    from scannet.predictor import describe_error
    from scannet.typed_config import ConfigError

    records: list[SmilesRecord | Row] = []
    for path in paths:
        try:
            records += list(read_smiles_file(path, smiles_column, id_column))
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            error = describe_read_error(exc, path) if isinstance(exc, OSError) else describe_error(exc)
            records.append(Row(Path(path).stem or "smiles", path, None, error=error))
    for text in texts:
        smiles, name = parse_smiles_line(text, "") if text.strip() else ("", "")
        records.append(SmilesRecord(name or smiles or "(empty)", "--smiles", None, smiles or None, "empty SMILES"))
    rows = []
    for record in records:
        if isinstance(record, Row):
            rows.append(record)
        elif record.smiles is None:
            rows.append(Row(record.id, record.source, None, error=record.error, line=record.line))
        else:
            row = Row(record.id, record.source, None, smiles=record.smiles, line=record.line)
            try:
                row.atoms = embed_smiles(record.smiles, max_atoms=DEFAULT_MAX_ATOMS if max_atoms is None else max_atoms)
                row.atoms.info["name"] = row.name
            except EmbeddingError as exc:
                row.error = f"SMILES not embedded: {exc}"
            rows.append(row)
    for row in rows:
        if row.atoms is None:
            print(f"{row.where}: cannot read: {row.error}", file=sys.stderr)
    return rows


def record_error(record, path: str) -> str:
    """The reason of an error record of :func:`~scannet.data.importers.iter_records`, for a person: a file that
    cannot be read as :func:`describe_read_error` says it; a frame's reason with ASE's own words added."""
    if not record.key and record.exc is not None:
        return describe_read_error(record.exc, path)
    if record.exc is not None:
        detail = describe_read_error(record.exc, path)
        if detail not in record.error:
            return f"{record.error}; {detail}"
    return record.error


def target_columns(predictor) -> dict[str, str]:
    """Target -> column name: ``<target>_<unit>`` with the unit from the checkpoint metadata, else the bare name."""
    columns = {}
    for target in predictor.targets:
        unit = predictor.unit(target)
        column = f"{target}_{unit}" if unit else target
        if column in LEADING_COLUMNS + TRAILING_COLUMNS:
            column = f"predicted_{column}"
        columns[target] = column
    return columns


def write_table(path: Path, rows: list[Row], columns: dict[str, str], units: dict[str, str | None]) -> Path:
    """The predictions table; the :data:`DOMAIN_COLUMNS` only when some row was assessed against a domain."""
    domain = list(DOMAIN_COLUMNS) if any(row.domain is not None for row in rows) else []
    header = [*LEADING_COLUMNS, *columns.values(), *domain, *TRAILING_COLUMNS]
    records = [
        [
            row.name,
            row.source_file,
            row.frame if row.line is None else row.line,
            row.smiles,
            row.formula(),
            len(row.atoms) if row.atoms is not None else None,
            *[row.values[t] if row.values else None for t in columns],
            *(row.domain_cells() if domain else []),
            row.ga_file,
            row.ga_frame,
            row.error,
        ]
        for row in rows
    ]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = [pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(), pa.int64()]
        types += [pa.float64()] * len(columns)
        types += [pa.int64(), pa.string(), pa.float64(), pa.int8()] if domain else []
        types += [pa.string(), pa.int64(), pa.string()]
        fields = [pa.field(name, kind) for name, kind in zip(header, types)]
        for k, target in enumerate(columns, start=len(LEADING_COLUMNS)):
            if units.get(target):
                fields[k] = fields[k].with_metadata({"unit": units[target]})
        table = pa.Table.from_arrays(
            [pa.array([record[k] for record in records], type=kind) for k, kind in enumerate(types)],
            schema=pa.schema(fields),
        )
        pq.write_table(table, path)
        return path
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if value is None else value for value in record] for record in records])
    return path


def write_ga_files(out: Path, rows: list[Row], multiframe: bool) -> None:
    """GA files for the predicted rows (``<stem>_ga.xyz`` each, or one ``ga_scores.extxyz``); a row whose
    file cannot be written keeps its values and gets the reason as its error."""
    from scannet.explain import (
        GA_MULTIFRAME_FILE,
        GA_SUFFIX,
        unique_file_stems,
        with_ga_scores,
        write_ga_multiframe,
        write_ga_xyz,
    )
    from scannet.io.paths import path_inside
    from scannet.predictor import Prediction, describe_error

    readable = [row for row in rows if row.atoms is not None]
    stems = dict(zip(map(id, readable), unique_file_stems(row.name for row in readable)))
    frames, framed = [], []
    for row in readable:
        if row.values is None:
            continue
        prediction = Prediction(row.name, row.values, row.ga_scores)
        info = {"name": row.name, "source_file": row.source_file, "source_frame": row.frame}
        try:
            if multiframe:
                frames.append(with_ga_scores(row.atoms, prediction, info))
                framed.append(row)
            else:
                path = path_inside(out, stems[id(row)] + GA_SUFFIX)
                write_ga_xyz(path, row.atoms, prediction, info)
                row.ga_file = path.name
        except Exception as exc:
            row.error = f"predicted, but the GA file was not written: {describe_error(exc)}"
    if frames:
        try:
            write_ga_multiframe(path_inside(out, GA_MULTIFRAME_FILE), frames)
        except Exception as exc:
            for row in framed:
                row.error = f"predicted, but the GA file was not written: {describe_error(exc)}"
        else:
            for k, row in enumerate(framed):
                row.ga_file, row.ga_frame = GA_MULTIFRAME_FILE, k


@dataclass
class OpenedInputs:
    """The model, every input row (read or not), the readable ones and the output folder with its main file."""

    predictor: Any
    rows: list
    readable: list
    out: Path
    main_file: Path


def open_inputs(args: argparse.Namespace, main_file: str) -> OpenedInputs | None:
    """Load ``args.model``, read ``args.files``, create ``args.out`` (``predict`` and ``explain``); None after
    printing the one-line user error (no readable input, an unusable output folder)."""
    import scannet
    from scannet.io.paths import path_inside

    checkpoints = [f for f in args.files if Path(f).suffix == ".pt"]
    if checkpoints:
        print(
            f"scannet: error: {checkpoints[0]}: a model checkpoint among the structure files; give it with --model",
            file=sys.stderr,
        )
        return None
    from scannet.data.smiles import SMILES_SUFFIXES

    texts = args.smiles or []
    if not args.files and not texts:
        print("scannet: error: give structure files, SMILES files or --smiles", file=sys.stderr)
        return None
    precision = getattr(args, "precision", "fp32")  # explain always runs in fp32
    # CheckpointError, ConfigError: one line, exit 2
    predictor = scannet.load(args.model, device_or_cpu(args), precision)
    smiles_files = [f for f in args.files if Path(f).suffix.lower() in SMILES_SUFFIXES]
    rows = read_inputs([f for f in args.files if f not in smiles_files], args.max_atoms)
    if smiles_files or texts:
        rows += read_smiles_inputs(smiles_files, texts, args.max_atoms, args.smiles_column, args.id_column)
    readable = [row for row in rows if row.atoms is not None]
    if not readable:
        n = len(args.files) + len(texts)
        print(f"scannet: error: no input could be read ({n} input{'s' if n != 1 else ''})", file=sys.stderr)
        return None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = path_inside(out, main_file)
    except (OSError, ValueError) as exc:
        print(f"scannet: error: --out {out}: {exc}", file=sys.stderr)
        return None
    return OpenedInputs(predictor, rows, readable, out, path)


def run(args: argparse.Namespace) -> int:
    """Exit 0: all predicted; 1: some files or structures failed (the rest written); 2: user error."""
    opened = open_inputs(args, TABLE_FILES[args.format])
    if opened is None:
        return EXIT_USER_ERROR
    predictor, rows, readable, out, table_path = (
        opened.predictor,
        opened.rows,
        opened.readable,
        opened.out,
        opened.main_file,
    )

    results = predictor.predict(
        [row.atoms for row in readable], batch_size=args.batch_size or DEFAULT_BATCH_SIZE, progress=args.progress
    )
    for row, result in zip(readable, results):
        row.domain = result.domain
        if result.ok:
            row.values, row.ga_scores = result.values, result.ga_scores
        else:
            row.error = result.error
    write_ga_files(out, rows, args.ga_multiframe)
    return finish_rows(
        opened,
        verb="predicted",
        n_ok=sum(row.values is not None for row in rows),
        failed_in="the table",
        written=f"table {out / table_path.name}, GA scores in {out}",
    )


def finish_rows(opened: OpenedInputs, verb: str, n_ok: int, failed_in: str, written: str) -> int:
    """Name each failed structure on stderr, write the table of every row, print the counts; the exit code
    (2 when the table cannot be written or no structure succeeded, 1 when some failed, else 0)."""
    rows, table_path = opened.rows, opened.main_file
    for row in opened.readable:
        if row.error is not None:
            print(f"{row.where}: structure {row.name!r}: {row.error}", file=sys.stderr)
    predictor = opened.predictor
    try:
        write_table(table_path, rows, target_columns(predictor), {t: predictor.unit(t) for t in predictor.targets})
    except OSError as exc:
        print(f"scannet: error: cannot write {table_path}: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    n_failed = sum(row.error is not None for row in rows)
    print(
        f"{verb} {n_ok} of {len(rows)} structures"
        + (f" ({n_failed} failed, named above and in {failed_in})" if n_failed else "")
        + f"; {written}"
    )
    if any(row.smiles and row.atoms is not None for row in rows):
        from scannet.data.smiles import FORCE_FIELD_NOTE

        print(f"note: {FORCE_FIELD_NOTE}")
    if n_ok == 0:
        reasons = opened.out / table_path.name
        print(f"scannet: error: no structure could be {verb} (reasons in {reasons})", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_SOME_FAILED if n_failed else EXIT_OK
