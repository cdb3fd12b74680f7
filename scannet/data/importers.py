"""Import users' structure files into a structures table (``scannet data import``).

Inputs, by suffix:

* ``.xyz`` / ``.extxyz``: multi-frame (extended) XYZ, streamed frame by frame by a reader of our own (the
  file is never loaded whole): it reads a frame's lines itself and hands only those to ASE's parser, so
  memory follows the lines that are in the file, never the count a count line claims. A frame that cannot
  be parsed is quarantined and the next one is read. A frame whose atom lines stop early is quarantined as
  truncated ("count line says N atoms but the file ends after M lines"); when a bare integer (the next
  frame's count line) comes where an atom line was expected, reading goes on from there. A frame of more
  than ``max_atoms`` atoms is quarantined before its atom lines are kept (they are skipped). A count line
  that is not a number ends the file (the frames after it cannot be located) and is quarantined too.
* ``.traj``: ASE trajectories, frame by frame.
* ``.db``: ASE databases (SQLite), row by row (``ase.db.connect(path).select()``).
* ``.cif`` and anything else: read with ``ase.io.read(path, index=":")`` (such files are small).
* a folder: its ``.cif``, ``.xyz``, ``.extxyz`` and ``.traj`` files, recursively, in sorted path order.

Targets are looked up by name for each structure, first found wins: ``atoms.info[name]``, the database row's
key-value pairs, the row's ``data``, then the results of the attached calculator (``atoms.calc.results``,
e.g. ``energy`` / ``free_energy`` of an extxyz file written with energies, or of a database row). A target
that is missing (or not finite) is stored as null, unless ``require_targets`` is set: then the structure is
quarantined with the reason ``missing target <name>``. A value that is not a scalar number (an array, a
string that is not a number, a flag such as the ``energy`` that ASE makes of the word "energy" in a plain xyz
comment line) quarantines the structure.

Ids: ``atoms.info["id"]`` or ``["name"]`` (a database row's ``name`` key) when present, else
``f"{file stem}:{frame index}"`` (for a database the row id). Ids are made unique in input order: a repeat
gets ``#2``, ``#3``, ... appended. The source column is the file path.

Every structure has at most ``max_atoms`` atoms (default :data:`DEFAULT_MAX_ATOMS`, ``--max-atoms``) and
passes :func:`scannet.structures.validate_structure`. Structures that fail, unreadable frames and unreadable
files (a file type ASE does not know, such as ``.smi``; a file in which no structure is found) go to
``out_dir/quarantine.parquet`` (``id``, ``source``, ``reason``; for an unreadable file or frame the id is
``path`` or ``path:frame``) and the import goes on. A reason starts with the frame (``frame 3 (line 13): ...``,
``row 2: ...`` for a database) or ``cannot read the file``; an exception without a message is reported with
its type, where it was raised and a sentence. A missing input path is an error raised before anything is
written.

``out_dir`` is written as a whole with :class:`scannet.io.atomic.AtomicWrite`: the table and its
quarantine (always written, 0 rows when nothing was quarantined) are staged in a hidden sibling folder and
replace the previous dataset together when the import succeeds. An import that fails, is interrupted
(Ctrl-C, ``kill``) or is killed leaves the previous dataset as it was; other files in ``out_dir`` are kept.
"""

from __future__ import annotations

import io
import math
import re
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from scannet.data import DEFAULT_MAX_ATOMS
from scannet.data.structures_table import (
    DATASET_FILES,
    QUARANTINE_FILE,
    STRUCTURES_FILE,
    Quarantine,
    StructuresWriter,
)
from scannet.io.atomic import AtomicWrite
from scannet.io.paths import OutputFolder
from scannet.structures import StructureError, validate_structure

#: File suffixes collected from a folder input.
FOLDER_SUFFIXES = (".cif", ".xyz", ".extxyz", ".traj")
_XYZ_SUFFIXES = (".xyz", ".extxyz")
_DB_SUFFIXES = (".db",)
#: Quarantine messages kept in :attr:`ImportSummary.messages` (all of them are in the quarantine file).
MAX_MESSAGES = 10
#: Longest line of an xyz file (characters, without the newline). A longer line is never held whole (it is read
#: in bounded pieces and dropped): its frame is quarantined with the reason and reading goes on after the frame;
#: a count line that long ends the file.
MAX_LINE_LENGTH = 1 << 20
#: Largest ``Atoms.info`` of a structure (bytes, estimated: strings, arrays, nested values; for an xyz frame the
#: comment line's key=value pairs); a structure with more is quarantined with the reason.
MAX_INFO_SIZE = 1 << 16
#: Characters read at a time while dropping the rest of a line over :data:`MAX_LINE_LENGTH`.
_SKIP_CHUNK = 1 << 16
#: A line that can only be a count line (where an atom line is expected: the next frame starts there).
_COUNT_LINE = re.compile(r"[0-9]+")
#: Sentences for exceptions that ASE raises without a message, by the function that raised them.
_SILENT_ERROR_HINTS = {"cellpar_to_cell": "the cell lengths and angles describe no valid cell"}
#: Units assumed for common targets when the caller gives none (ASE conventions).
DEFAULT_UNITS = {"energy": "eV", "free_energy": "eV", "energy_per_atom": "eV/atom"}


@dataclass
class ImportSummary:
    """What :func:`import_structures` wrote."""

    structures_path: Path
    #: the quarantine file (it always exists after an import, with 0 rows when nothing was quarantined)
    quarantine_path: Path
    n_written: int = 0
    n_quarantined: int = 0
    #: per target, how many written structures have no value (null)
    n_missing: dict[str, int] = field(default_factory=dict)
    #: per source file: {"written": n, "quarantined": m}
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    #: files that could not be read at all (an unknown type, a broken or empty file)
    n_files_failed: int = 0
    #: files in input folders left out for their suffix (see :data:`FOLDER_SUFFIXES`)
    n_ignored: int = 0
    #: the first :data:`MAX_MESSAGES` quarantine messages, ``"<file>: <reason>"``
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        """A one-line summary for the command line."""
        text = f"imported {self.n_written} structures, quarantined {self.n_quarantined}"
        text += f" from {len(self.per_source)} sources in {self.seconds:.1f} s -> {self.structures_path}"
        missing = {name: n for name, n in self.n_missing.items() if n}
        if missing:
            text += "; null targets: " + ", ".join(f"{name} {n}" for name, n in missing.items())
        if self.n_quarantined:
            text += f"; quarantine: {self.quarantine_path}"
        if self.n_ignored:
            text += f"; {_plural(self.n_ignored, 'other file')} in the folders ignored"
        return text

    def why_empty(self) -> str:
        """Why nothing was written (for a run with ``n_written == 0``)."""
        if not self.per_source:
            return (
                f"no structure file in the inputs (folders are searched for {', '.join(FOLDER_SUFFIXES)}; "
                f"{_plural(self.n_ignored, 'other file')} ignored)"
            )
        n_files = len(self.per_source)
        text = "the input file gave no" if n_files == 1 else f"none of the {n_files} input files gave a"
        unreadable = f", {self.n_files_failed} of them unreadable" if self.n_files_failed and n_files > 1 else ""
        return (
            f"{text} valid structure ({_plural(self.n_quarantined, 'record')} quarantined{unreadable}; "
            f"reasons in {self.quarantine_path})"
        )

    def lines(self) -> list[str]:
        """The summary line followed by one line per source."""
        width = max((len(s) for s in self.per_source), default=0)
        rows = [
            f"  {s:<{width}}  written {c['written']}, quarantined {c['quarantined']}"
            for s, c in self.per_source.items()
        ]
        return [self.line(), *rows]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass
class _Record:
    """One input structure (or the reason it could not be read)."""

    source: str
    key: str  # frame index or database row id
    atoms: Atoms | None = None
    extra: tuple[Mapping[str, Any], ...] = ()  # database key-value pairs and data, looked up after info
    error: str | None = None
    unit: str = "frame"  # what ``key`` counts: "frame", or "row" for a database
    #: the exception behind ``error`` (without its traceback): a file that cannot be read, or what ASE's parser
    #: says of a truncated frame's lines
    exc: BaseException | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.unit} {self.key}"


# ---------------------------------------------------------------------------------------------- inputs


def _collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], int]:
    """The files to import and how many files in the folders were left out for their suffix."""
    files: list[Path] = []
    ignored = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file()]
            kept = [p for p in found if p.suffix.lower() in FOLDER_SUFFIXES]
            ignored += len(found) - len(kept)
            files.extend(sorted(kept))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return files, ignored


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The files to import: files as given, folders expanded to their structure files (recursive, sorted)."""
    return _collect_inputs(inputs)[0]


def _error_text(exc: BaseException) -> str:
    """``Type: first line of the message``; for an empty message, where it was raised and a sentence."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    if text:
        return f"{name}: {text[0]}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return f"{name} raised without a message: the reader rejected the file's content"
    last = frames[-1]
    filename = last.filename.replace("\\", "/")
    filename = filename.split("site-packages/")[-1] if "site-packages/" in filename else Path(filename).name
    code = f", `{last.line}`" if last.line else ""
    hint = _SILENT_ERROR_HINTS.get(last.name, "the file's content is not valid for its format")
    return f"{name} raised without a message in {last.name} ({filename}:{last.lineno}{code}): {hint}"


def _over_limit(n_atoms: int, max_atoms: int) -> str:
    return f"{n_atoms} atoms, over the limit of {max_atoms} atoms per structure (--max-atoms)"


def _iter_xyz(path: Path, source: str, max_atoms: int = DEFAULT_MAX_ATOMS) -> Iterator[_Record]:
    """Frames of an (extended) XYZ file, one at a time: each frame's lines are handed to ASE's parser.

    The lines are read here, one by one, up to the end of the file: a count line is never trusted to size
    anything, a frame of more than ``max_atoms`` atoms is skipped (its lines are not kept), and a frame
    cut short by the end of the file or by the next frame's count line is reported as truncated. No line is
    held longer than :data:`MAX_LINE_LENGTH`: a longer comment or atom line quarantines its frame (the rest of
    the frame is skipped and reading goes on with the next one); a longer line where a count line belongs ends
    the file.
    """
    from ase.io.extxyz import read_xyz

    limit = MAX_LINE_LENGTH
    too_long = f"longer than {limit} characters"
    with open(path) as handle:
        frame = 0
        n_lines = 0  # lines read so far (the line number of the last one)
        nothing = object()
        pending: Any = nothing  # a line read ahead (already counted)

        def read_line() -> str | None:
            """The next line ("" at the end of the file); None for a line over the limit (its rest is dropped)."""
            nonlocal n_lines
            line = handle.readline(limit + 1)
            n_lines += line != ""
            if len(line) <= limit or line.endswith("\n"):
                return line
            while (rest := handle.readline(_SKIP_CHUNK)) and not rest.endswith("\n"):
                pass
            return None

        while True:
            line = read_line() if pending is nothing else pending
            pending = nothing
            if line == "":
                return
            where = f"frame {frame} (line {n_lines})"
            if line is None:
                yield _Record(
                    source,
                    str(frame),
                    error=f"{where}: line {too_long} where an atom count belongs; the rest of the file is skipped",
                )
                return
            if not line.strip():
                continue
            text = line.strip()
            try:
                n_atoms = int(text)
                if n_atoms < 0:
                    raise ValueError
            except ValueError:
                yield _Record(
                    source,
                    str(frame),
                    error=f"{where}: expected an atom count, got {text[:60]!r}; the rest of the file is skipped",
                )
                return
            over = n_atoms > max_atoms
            problem: str | None = None  # a line over the limit: the frame is quarantined, its lines dropped
            lines = [line]
            n_read = 0
            comment = read_line()
            ended = "file" if comment == "" else None
            if comment is None:
                problem = f"comment line {too_long}"
            else:
                lines.append(comment)
            while ended is None and n_read < n_atoms:
                atom_line = read_line()
                if atom_line == "":
                    ended = "file"
                elif atom_line is None:
                    n_read += 1
                    problem = problem or f"atom line {n_read} (line {n_lines}) {too_long}"
                elif _COUNT_LINE.fullmatch(atom_line.strip()):
                    ended, pending = "frame", atom_line
                else:
                    n_read += 1
                    if not over and problem is None:
                        lines.append(atom_line)
            if problem is not None:
                lines = []
            if ended is not None:
                if ended == "file":
                    cut = (
                        f"the file ends after {_plural(n_lines, 'line')} ({_plural(n_read, 'atom line')} of this frame)"
                    )
                else:
                    follow = "follows" if n_read == 1 else "follow"
                    cut = f"only {_plural(n_read, 'atom line')} {follow} before the next frame's count line (line {n_lines})"
                reason = f"{where}: truncated: count line says {n_atoms} atoms but {cut}"
                if over:
                    reason += f"; {_over_limit(n_atoms, max_atoms)}"
                if problem is not None:
                    reason += f"; {problem}"
                yield _Record(source, str(frame), error=reason, exc=None if over else _parser_error(lines, n_atoms))
                if ended == "file":
                    return
                frame += 1
                continue
            while True:  # up to three VEC lines follow a frame
                after = read_line()
                if after is not None and after.lstrip().startswith("VEC"):
                    if not over and problem is None:
                        lines.append(after)
                else:
                    pending = after
                    break
            if over:
                yield _Record(source, str(frame), error=f"{where}: {_over_limit(n_atoms, max_atoms)}")
            elif problem is not None:
                yield _Record(source, str(frame), error=f"{where}: {problem}")
            else:
                try:
                    atoms = next(read_xyz(io.StringIO("".join(lines)), 0))
                    yield _Record(source, str(frame), atoms)
                except Exception as exc:
                    yield _Record(source, str(frame), error=f"{where}: cannot parse: {_error_text(exc)}")
            frame += 1


def _parser_error(lines: list[str], n_atoms: int) -> BaseException | None:
    """What ASE's parser says of a truncated frame's lines (its own words: "Frame has 5 atoms, expected 9", or a
    coordinate that is not a number); None when it has nothing to say or the lines were not kept. ASE's frame
    parser is given the lines directly: its file reader would first skip ``n_atoms`` lines one by one."""
    try:
        from ase.io.extxyz import _read_xyz_frame
    except ImportError:  # a private function of ASE: without it, the reason stands alone
        return None

    if len(lines) < 2:
        return None
    try:
        _read_xyz_frame(io.StringIO("".join(lines[1:])), n_atoms)
    except Exception as exc:
        return exc.with_traceback(None)
    return None


def _iter_traj(path: Path, source: str) -> Iterator[_Record]:
    from ase.io.trajectory import Trajectory

    with Trajectory(str(path)) as trajectory:
        for frame in range(len(trajectory)):
            try:
                yield _Record(source, str(frame), trajectory[frame])
            except Exception as exc:
                yield _Record(source, str(frame), error=f"frame {frame}: cannot read: {_error_text(exc)}")


def _iter_db(path: Path, source: str) -> Iterator[_Record]:
    import ase.db

    with ase.db.connect(str(path)) as db:
        for row in db.select():
            try:
                atoms = row.toatoms()
                pairs = dict(row.key_value_pairs)
                if "name" in pairs and "name" not in atoms.info:
                    atoms.info["name"] = pairs["name"]
                yield _Record(source, str(row.id), atoms, extra=(pairs, dict(row.get("data", {}) or {})), unit="row")
            except Exception as exc:
                yield _Record(source, str(row.id), error=f"row {row.id}: cannot read: {_error_text(exc)}", unit="row")


def _iter_other(path: Path, source: str) -> Iterator[_Record]:
    from ase.io import read

    frames = read(str(path), index=":")
    for frame, atoms in enumerate(frames):
        yield _Record(source, str(frame), atoms)


def _info_size(value: Any) -> int:
    """About how many bytes ``value`` (an ``Atoms.info`` and what it holds) takes: strings and bytes by length,
    arrays by ``nbytes``, containers by their items, anything else 8."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Mapping):
        return sum(_info_size(k) + _info_size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(_info_size(item) for item in value)
    return 8


def _checked(record: _Record, max_atoms: int) -> _Record:
    """``record``, or an error record in its place when its structure has more than ``max_atoms`` atoms or an
    ``info`` over :data:`MAX_INFO_SIZE` (formats other than xyz are read before they can be counted)."""
    atoms = record.atoms
    if atoms is None:
        return record
    reason = None
    if len(atoms) > max_atoms:
        reason = _over_limit(len(atoms), max_atoms)
    elif (size := _info_size(atoms.info)) > MAX_INFO_SIZE:
        reason = (
            f"info holds about {size} bytes (for xyz: the comment line's key=value pairs), over the limit of "
            f"{MAX_INFO_SIZE} bytes"
        )
    if reason is None:
        return record
    return _Record(record.source, record.key, error=f"{record.where}: {reason}", unit=record.unit)


def iter_records(path: Path, max_atoms: int = DEFAULT_MAX_ATOMS) -> Iterator[_Record]:
    """The structures of one file as records; a file that cannot be opened is one error record.

    The one streaming reader of every entry point (``data import``, ``screen``, ``predict``, ``explain``): a
    structure of more than ``max_atoms`` atoms or with an ``info`` over :data:`MAX_INFO_SIZE` is an error record
    with the reason (an xyz frame is counted before its atom lines are kept); a frame that cannot be read is an
    error record and the frames after it are still read.
    """
    from ase.io.formats import UnknownFileTypeError

    source = str(path)
    suffix = path.suffix.lower()
    records = (
        _iter_xyz(path, source, max_atoms)
        if suffix in _XYZ_SUFFIXES
        else _iter_db(path, source)
        if suffix in _DB_SUFFIXES
        else _iter_traj(path, source)
        if suffix == ".traj"
        else _iter_other(path, source)
    )
    n = 0
    try:
        for record in records:
            n += 1
            yield _checked(record, max_atoms)
    except Exception as exc:  # the file (or its remainder) cannot be read
        where = "cannot read the file" if n == 0 else f"cannot read the file after {n} records"
        if isinstance(exc, UnknownFileTypeError):
            kind = repr(suffix) if suffix else "(no suffix)"
            reason = (
                f"unsupported file type {kind} (ASE does not recognize it; supported: .xyz, .extxyz, .traj, "
                ".db, .cif and the other formats ase.io.read knows)"
            )
        else:
            reason = _error_text(exc)
        yield _Record(source, "", error=f"{where}: {reason}", exc=exc.with_traceback(None))
        return
    if n == 0:
        yield _Record(source, "", error="cannot read the file: no structure found in it")


# --------------------------------------------------------------------------------------------- targets


def lookup_target(atoms: Atoms, name: str, extra: Sequence[Mapping[str, Any]] = ()) -> Any:
    """The raw value of target ``name``: ``atoms.info``, then ``extra`` mappings, then calculator results."""
    if name in atoms.info:
        return atoms.info[name]
    for mapping in extra:
        if name in mapping:
            return mapping[name]
    results = getattr(atoms.calc, "results", None) or {}
    return results.get(name)


def _as_target(value: Any, name: str) -> float | None:
    """A finite float, or None for a missing / non-finite value; :class:`ValueError` for a non-scalar."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):  # e.g. the word "energy" in a plain xyz comment line
        raise ValueError(f"target {name!r} is not a number (the flag {value})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        array = np.asarray(value)
        if array.size == 1 and array.dtype.kind in "biuf":
            number = float(array.reshape(()))
        else:
            raise ValueError(f"target {name!r} is not a scalar number ({type(value).__name__})") from None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------------------- import


class _UniqueIds:
    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        if name not in self._seen:
            self._seen[name] = 1
            return name
        k = self._seen[name]
        while True:
            k += 1
            candidate = f"{name}#{k}"
            if candidate not in self._seen:
                self._seen[name] = k
                self._seen[candidate] = 1
                return candidate


def _record_id(record: _Record, path: Path) -> str:
    atoms = record.atoms
    for key in ("id", "name"):
        value = atoms.info.get(key) if atoms is not None else None
        if value is not None and str(value) != "":
            return str(value)
    return f"{path.stem}:{record.key}"


def _import_into(
    staged: AtomicWrite,
    files: list[Path],
    table_units: dict[str, str],
    summary: ImportSummary,
    unique: _UniqueIds,
    batch_size: int,
    progress: bool,
    max_atoms: int,
    names: list[str],
    require_targets: bool,
) -> None:
    """Write the records of ``files`` into the staged dataset folder. A run that wrote no structure is discarded
    when the target already holds a dataset (kept whole); into a new folder it still writes its quarantine."""
    from tqdm.auto import tqdm

    batch: list[Atoms] = []
    batch_ids: list[str] = []
    batch_sources: list[str] = []
    with (
        StructuresWriter(staged.path / STRUCTURES_FILE, table_units) as writer,
        Quarantine(staged.path / QUARANTINE_FILE) as bad,
    ):

        def flush() -> None:
            if batch:
                writer.write(batch, source=batch_sources, ids=batch_ids)
                for pending in (batch, batch_ids, batch_sources):
                    pending.clear()

        def reject(identifier: str, source: str, reason: str) -> None:
            bad.add(identifier, source, reason)
            summary.per_source[source]["quarantined"] += 1
            if len(summary.messages) < MAX_MESSAGES:
                summary.messages.append(f"{source}: {reason}")

        bar = tqdm(desc="importing", unit="structure", disable=not progress)
        for path in files:
            source = str(path)
            summary.per_source.setdefault(source, {"written": 0, "quarantined": 0})
            for record in iter_records(path, max_atoms):
                bar.update(1)
                if record.error is not None:
                    summary.n_files_failed += not record.key
                    reject(f"{source}:{record.key}" if record.key else source, source, record.error)
                    continue
                atoms = record.atoms
                identifier = unique(_record_id(record, path))
                try:
                    if len(atoms) > max_atoms:
                        raise StructureError(identifier, _over_limit(len(atoms), max_atoms))
                    validate_structure(atoms, identifier)
                    values = {name: _as_target(lookup_target(atoms, name, record.extra), name) for name in names}
                    missing = [name for name, value in values.items() if value is None]
                    if require_targets and missing:
                        raise StructureError(identifier, f"missing target {missing[0]}")
                except (StructureError, ValueError) as exc:
                    reason = exc.reason if isinstance(exc, StructureError) else str(exc)
                    reject(identifier, source, f"{record.where}: {reason}")
                    continue
                for name, value in values.items():
                    atoms.info[name] = value
                    summary.n_missing[name] += value is None
                batch.append(atoms)
                batch_ids.append(identifier)
                batch_sources.append(source)
                summary.per_source[source]["written"] += 1
                if len(batch) >= batch_size:
                    flush()
        flush()
        bar.close()

    summary.n_written = writer.n_rows
    summary.n_quarantined = bad.count
    if writer.n_rows == 0 and staged.target.exists():
        staged.discard()  # an import that wrote nothing never replaces an earlier dataset


def import_structures(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    targets: Sequence[str] = (),
    units: Mapping[str, str] | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    require_targets: bool = False,
    max_atoms: int = DEFAULT_MAX_ATOMS,
) -> ImportSummary:
    """Convert structure files into ``out_dir/structures.parquet`` (bad records to ``quarantine.parquet``).

    Args:
        inputs: files and folders (see the module docstring for the formats).
        out_dir: output folder, created if needed; an existing table and quarantine there are replaced together
            when the import succeeds (and kept as they were when it does not).
        targets: target names, looked up per structure (info, database key-value pairs and data, calculator).
        units: ``{target: unit}`` recorded in the schema; default :data:`DEFAULT_UNITS` or ``""``.
        batch_size: structures per write (memory holds one batch).
        progress: show a tqdm progress bar.
        require_targets: quarantine structures that miss a target instead of storing null.
        max_atoms: most atoms per structure; a larger one is quarantined (an xyz frame before it is read).

    Returns an :class:`ImportSummary`; ``quarantine_path`` is always written (0 rows: nothing quarantined).
    """

    if isinstance(max_atoms, bool) or not isinstance(max_atoms, int) or max_atoms < 1:
        raise ValueError(f"max_atoms must be a positive integer, got {max_atoms!r}")
    # before anything is written: out is a folder (or missing) and none of the dataset's entries is a link
    OutputFolder(out_dir).check_tree(*DATASET_FILES)
    start_time = time.perf_counter()
    files, n_ignored = _collect_inputs(inputs)
    names = list(dict.fromkeys(targets))
    units = dict(units or {})
    table_units = {name: units.get(name, DEFAULT_UNITS.get(name, "")) for name in names}
    out = Path(out_dir)
    summary = ImportSummary(
        out / STRUCTURES_FILE, out / QUARANTINE_FILE, n_missing=dict.fromkeys(names, 0), n_ignored=n_ignored
    )
    unique = _UniqueIds()

    with AtomicWrite(out, DATASET_FILES) as staged:
        _import_into(
            staged, files, table_units, summary, unique, batch_size, progress, max_atoms, names, require_targets
        )
    summary.seconds = time.perf_counter() - start_time
    return summary
