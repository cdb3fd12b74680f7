"""Import users' structure files into a structures table (``scannet data import``).

Inputs, by suffix:

* ``.xyz`` / ``.extxyz``: multi-frame (extended) XYZ, streamed frame by frame (the file is never loaded
  whole); a frame that cannot be parsed is quarantined and the next one is read. A count line that is not
  a number ends the file (the frames after it cannot be located) and is quarantined too.
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

Every structure passes :func:`scannet.structures.validate_structure`. Structures that fail, unreadable
frames and unreadable files (also a file in which no structure is found) go to ``out_dir/quarantine.parquet`` (``id``, ``source``, ``reason``; for an
unreadable file or frame the id is ``path`` or ``path:frame``) and the import goes on. A missing input path
is an error raised before anything is written.

``out_dir`` is written as a whole with :class:`scannet.data.atomic.AtomicWrite`: the table and its
quarantine (always written, 0 rows when nothing was quarantined) are staged in a hidden sibling folder and
replace the previous dataset together when the import succeeds. An import that fails, is interrupted
(Ctrl-C, ``kill``) or is killed leaves the previous dataset as it was; other files in ``out_dir`` are kept.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from scannet.data.atomic import AtomicWrite
from scannet.data.structures_table import (
    DATASET_FILES,
    QUARANTINE_FILE,
    STRUCTURES_FILE,
    Quarantine,
    StructuresWriter,
)
from scannet.structures import StructureError, validate_structure

#: File suffixes collected from a folder input.
FOLDER_SUFFIXES = (".cif", ".xyz", ".extxyz", ".traj")
_XYZ_SUFFIXES = (".xyz", ".extxyz")
_DB_SUFFIXES = (".db",)
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
        return text

    def lines(self) -> list[str]:
        """The summary line followed by one line per source."""
        width = max((len(s) for s in self.per_source), default=0)
        rows = [
            f"  {s:<{width}}  written {c['written']}, quarantined {c['quarantined']}"
            for s, c in self.per_source.items()
        ]
        return [self.line(), *rows]


@dataclass
class _Record:
    """One input structure (or the reason it could not be read)."""

    source: str
    key: str  # frame index or database row id
    atoms: Atoms | None = None
    extra: tuple[Mapping[str, Any], ...] = ()  # database key-value pairs and data, looked up after info
    error: str | None = None


# ---------------------------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The files to import: files as given, folders expanded to their structure files (recursive, sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES]
            files.extend(sorted(found))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return files


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _iter_xyz(path: Path, source: str) -> Iterator[_Record]:
    """Frames of an (extended) XYZ file, one at a time: each frame's lines are handed to ASE's reader."""
    from ase.io.extxyz import read_xyz

    with open(path) as handle:
        frame = 0
        pending: str | None = None
        while True:
            line = pending if pending is not None else handle.readline()
            pending = None
            if line == "":
                return
            if not line.strip():
                continue
            try:
                n_atoms = int(line.strip())
                if n_atoms < 0:
                    raise ValueError(f"negative atom count {n_atoms}")
            except ValueError:
                yield _Record(
                    source, str(frame), error=f"frame {frame}: expected an atom count, got {line.strip()[:60]!r}"
                )
                return
            lines = [line]
            for _ in range(n_atoms + 1):
                lines.append(handle.readline())
            if lines[-1] == "":
                yield _Record(source, str(frame), error=f"frame {frame}: truncated (expected {n_atoms} atom lines)")
                return
            while True:  # up to three VEC lines follow a frame
                after = handle.readline()
                if after.lstrip().startswith("VEC"):
                    lines.append(after)
                else:
                    pending = after
                    break
            try:
                atoms = next(read_xyz(io.StringIO("".join(lines)), 0))
                yield _Record(source, str(frame), atoms)
            except Exception as exc:
                yield _Record(source, str(frame), error=f"frame {frame}: cannot parse: {_error_text(exc)}")
            frame += 1


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
                yield _Record(source, str(row.id), atoms, extra=(pairs, dict(row.get("data", {}) or {})))
            except Exception as exc:
                yield _Record(source, str(row.id), error=f"row {row.id}: cannot read: {_error_text(exc)}")


def _iter_other(path: Path, source: str) -> Iterator[_Record]:
    from ase.io import read

    frames = read(str(path), index=":")
    for frame, atoms in enumerate(frames):
        yield _Record(source, str(frame), atoms)


def iter_records(path: Path) -> Iterator[_Record]:
    """The structures of one file as records; a file that cannot be opened is one error record."""
    source = str(path)
    suffix = path.suffix.lower()
    reader = (
        _iter_xyz
        if suffix in _XYZ_SUFFIXES
        else _iter_db
        if suffix in _DB_SUFFIXES
        else _iter_traj
        if suffix == ".traj"
        else _iter_other
    )
    n = 0
    try:
        for record in reader(path, source):
            n += 1
            yield record
    except Exception as exc:  # the file (or its remainder) cannot be read
        where = "cannot read the file" if n == 0 else f"cannot read the file after {n} records"
        yield _Record(source, "", error=f"{where}: {_error_text(exc)}")
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


def import_structures(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    targets: Sequence[str] = (),
    units: Mapping[str, str] | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    require_targets: bool = False,
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

    Returns an :class:`ImportSummary`; ``quarantine_path`` is always written (0 rows: nothing quarantined).
    """
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    files = expand_inputs(inputs)
    names = list(dict.fromkeys(targets))
    units = dict(units or {})
    table_units = {name: units.get(name, DEFAULT_UNITS.get(name, "")) for name in names}
    out = Path(out_dir)
    summary = ImportSummary(out / STRUCTURES_FILE, out / QUARANTINE_FILE, n_missing=dict.fromkeys(names, 0))
    unique = _UniqueIds()
    batch: list[Atoms] = []
    batch_ids: list[str] = []
    batch_sources: list[str] = []

    with (
        AtomicWrite(out, DATASET_FILES) as staged,
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

        bar = tqdm(desc="importing", unit="structure", disable=not progress)
        for path in files:
            source = str(path)
            summary.per_source.setdefault(source, {"written": 0, "quarantined": 0})
            for record in iter_records(path):
                bar.update(1)
                if record.error is not None:
                    reject(f"{source}:{record.key}" if record.key else source, source, record.error)
                    continue
                atoms = record.atoms
                identifier = unique(_record_id(record, path))
                try:
                    validate_structure(atoms, identifier)
                    values = {name: _as_target(lookup_target(atoms, name, record.extra), name) for name in names}
                    missing = [name for name, value in values.items() if value is None]
                    if require_targets and missing:
                        raise StructureError(identifier, f"missing target {missing[0]}")
                except (StructureError, ValueError) as exc:
                    reject(identifier, source, exc.reason if isinstance(exc, StructureError) else str(exc))
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
    summary.seconds = time.perf_counter() - start_time
    return summary
