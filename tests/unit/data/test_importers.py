"""``scannet data import``: extxyz/xyz (streamed), ASE db, traj, folders of CIF/xyz, quarantine, the CLI."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron
from ase.io import read, write
from ase.io.trajectory import Trajectory
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from scannet.cli import main
from scannet.data import schema as S
from scannet.data.importers import import_structures
from scannet.data.structures_table import read_quarantine, read_structures, read_units, table_to_structures

N_STEPS = 20


@pytest.fixture(scope="module")
def pt_md(tmp_path_factory) -> tuple[list[Atoms], list[float]]:
    """A short NVE trajectory of a 13-atom Pt icosahedron with EMT energies (fixed seed)."""
    atoms = Icosahedron("Pt", 2)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(42))
    frames, energies = [], []

    def record() -> None:
        frame = atoms.copy()
        energy = atoms.get_potential_energy()
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=atoms.get_forces())
        frames.append(frame)
        energies.append(energy)

    dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
    dynamics.attach(record, interval=1)
    dynamics.run(N_STEPS)
    return frames, energies


def table_of(out_dir) -> list[Atoms]:
    return [atoms for chunk in read_structures(out_dir / "structures.parquet") for atoms in chunk]


def test_extxyz_md_trajectory_with_energies(tmp_path, pt_md, monkeypatch):
    frames, energies = pt_md
    path = tmp_path / "pt_md.extxyz"
    for frame in frames:  # appended frame by frame, as an MD code would
        write(path, frame, format="extxyz", append=True)
    reference = read(path, index=":")

    def whole_file(*args, **kwargs):
        raise AssertionError("an xyz file must be streamed frame by frame, not read whole")

    monkeypatch.setattr("ase.io.read", whole_file)
    monkeypatch.setattr("ase.io.iread", whole_file)
    summary = import_structures([path], tmp_path / "out", targets=["energy"], batch_size=8, progress=False)
    monkeypatch.undo()
    assert (summary.n_written, summary.n_quarantined) == (N_STEPS + 1, 0)
    assert summary.quarantine_path == tmp_path / "out" / "quarantine.parquet"  # always written, here 0 rows
    assert read_quarantine(summary.quarantine_path) == [] and "quarantine:" not in summary.line()
    assert summary.per_source == {str(path): {"written": N_STEPS + 1, "quarantined": 0}}
    assert read_units(summary.structures_path) == {"energy": "eV"}
    assert pq.ParquetFile(summary.structures_path).metadata.num_row_groups == 3  # batches of 8 were streamed

    imported = table_of(tmp_path / "out")
    assert [a.info["id"] for a in imported] == [f"pt_md:{k}" for k in range(N_STEPS + 1)]
    for atoms, ref, frame, energy in zip(imported, reference, frames, energies, strict=True):
        assert atoms.positions.tobytes() == ref.positions.tobytes()  # what ASE reads, bit for bit
        np.testing.assert_allclose(atoms.positions, frame.positions, atol=1e-8)
        assert np.array_equal(atoms.numbers, frame.numbers) and not atoms.pbc.any()
        assert atoms.info["energy"] == pytest.approx(energy, rel=1e-12)
        assert atoms.info["source"] == str(path)
    assert len({round(e, 6) for e in energies}) > 1  # the cluster moved


def test_traj_is_exact(tmp_path, pt_md):
    frames, energies = pt_md
    path = tmp_path / "pt.traj"
    with Trajectory(path, "w") as trajectory:
        for frame in frames:
            trajectory.write(frame)
    summary = import_structures([path], tmp_path / "out", targets=["energy"], progress=False)
    assert summary.n_written == N_STEPS + 1
    for atoms, frame, energy in zip(table_of(tmp_path / "out"), frames, energies, strict=True):
        assert atoms.positions.tobytes() == frame.positions.tobytes()
        assert atoms.info["energy"] == energy


def test_ase_db_with_key_value_targets(tmp_path):
    import ase.db

    path = tmp_path / "crystals.db"
    crystals = {"Cu": bulk("Cu", "fcc", a=3.61), "Si": bulk("Si", "diamond", a=5.43), "Fe": bulk("Fe", "bcc", a=2.87)}
    with ase.db.connect(path) as db:
        db.write(crystals["Cu"], name="copper", band_gap=0.0)
        silicon = crystals["Si"].copy()
        silicon.calc = SinglePointCalculator(silicon, energy=-10.8)
        db.write(silicon, band_gap=1.1, data={"bulk_modulus": 98.0})
        db.write(crystals["Fe"], magnetic=True)  # no targets
    summary = import_structures(
        [path],
        tmp_path / "out",
        targets=["band_gap", "energy", "bulk_modulus"],
        units={"band_gap": "eV"},
        progress=False,
    )
    assert (summary.n_written, summary.n_quarantined) == (3, 0)
    assert summary.n_missing == {"band_gap": 1, "energy": 2, "bulk_modulus": 2}
    assert read_units(summary.structures_path) == {"band_gap": "eV", "energy": "eV", "bulk_modulus": ""}
    cu, si, fe = table_of(tmp_path / "out")
    assert [a.info["id"] for a in (cu, si, fe)] == ["copper", "crystals:2", "crystals:3"]
    assert cu.info["band_gap"] == 0.0 and "energy" not in cu.info
    assert si.info["band_gap"] == 1.1 and si.info["energy"] == -10.8 and si.info["bulk_modulus"] == 98.0
    assert not {"band_gap", "energy", "bulk_modulus"} & set(fe.info)
    for atoms, ref in zip((cu, si, fe), crystals.values()):
        assert atoms.cell.array.tobytes() == ref.cell.array.tobytes() and atoms.pbc.all()
        assert atoms.positions.tobytes() == ref.positions.tobytes()


def test_folder_of_cif_and_xyz(tmp_path):
    folder = tmp_path / "inputs"
    (folder / "more").mkdir(parents=True)
    crystals = {
        "NaCl": bulk("NaCl", "rocksalt", a=5.64),
        "Si": bulk("Si", "diamond", a=5.43),
        "Mg": bulk("Mg", "hcp", a=3.21, c=5.21),
        "Cu221": bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1),
    }
    for name, atoms in crystals.items():
        write(folder / ("more" if name == "Mg" else "") / f"{name}.cif", atoms)
    c60 = molecule("C60")
    c60.info["gap"] = 1.9
    write(folder / "c60.xyz", c60, format="extxyz")
    (folder / "notes.txt").write_text("not a structure")

    summary = import_structures([folder], tmp_path / "out", targets=["gap"], progress=False)
    assert (summary.n_written, summary.n_quarantined) == (5, 0)
    imported = {a.info["id"]: a for a in table_of(tmp_path / "out")}
    assert list(imported) == ["Cu221:0", "NaCl:0", "Si:0", "c60:0", "Mg:0"]  # sorted paths
    assert imported["c60:0"].info["gap"] == 1.9 and not imported["c60:0"].pbc.any()
    np.testing.assert_allclose(imported["c60:0"].positions, c60.positions, atol=1e-8)
    for name, ref in crystals.items():
        atoms = imported[f"{name}:0"]
        assert atoms.pbc.all() and "gap" not in atoms.info
        assert sorted(atoms.numbers) == sorted(ref.numbers)
        np.testing.assert_allclose(atoms.cell.cellpar(), ref.cell.cellpar(), atol=1e-4)
        np.testing.assert_allclose(atoms.get_volume(), ref.get_volume(), rtol=1e-5)


BAD_XYZ = """2
good frame energy=1.0
H 0.0 0.0 0.0
H 0.0 0.0 0.74
2
nan coordinate energy=2.0
H 0.0 0.0 nan
H 0.0 0.0 0.74
2
overlapping energy=3.0
H 0.0 0.0 0.0
H 0.0 0.0 0.01
2
broken energy=4.0
H 0.0 0.0 0.0
H 0.0 zero 0.74
3
water
O 0.0 0.0 0.0
H 0.0 0.76 0.59
H 0.0 -0.76 0.59
"""


def test_bad_records_are_quarantined_and_good_ones_kept(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "mixed.xyz").write_text(BAD_XYZ)
    (folder / "garbage.cif").write_text("data_x\n_cell_length_a what\nloop_\n_atom_site_label\n")
    (folder / "empty.xyz").write_text("")
    write(folder / "si.cif", bulk("Si", "diamond", a=5.43))
    summary = import_structures([folder], tmp_path / "out", targets=["energy"], batch_size=2, progress=False)

    assert (summary.n_written, summary.n_quarantined) == (3, 5)
    assert summary.n_missing == {"energy": 2}
    assert summary.per_source == {
        str(folder / "empty.xyz"): {"written": 0, "quarantined": 1},
        str(folder / "garbage.cif"): {"written": 0, "quarantined": 1},
        str(folder / "mixed.xyz"): {"written": 2, "quarantined": 3},
        str(folder / "si.cif"): {"written": 1, "quarantined": 0},
    }
    written = table_of(tmp_path / "out")
    assert [a.info["id"] for a in written] == ["mixed:0", "mixed:4", "si:0"]
    assert written[0].info["energy"] == 1.0 and "energy" not in written[1].info

    records = read_quarantine(summary.quarantine_path)
    assert [(r["id"], r["source"]) for r in records] == [
        (str(folder / "empty.xyz"), str(folder / "empty.xyz")),
        (str(folder / "garbage.cif"), str(folder / "garbage.cif")),
        ("mixed:1", str(folder / "mixed.xyz")),
        ("mixed:2", str(folder / "mixed.xyz")),
        (f"{folder / 'mixed.xyz'}:3", str(folder / "mixed.xyz")),
    ]
    reasons = [r["reason"] for r in records[1:]]
    assert records[0]["reason"] == "cannot read the file: no structure found in it"
    assert "cannot read the file" in reasons[0]
    assert (
        "non-finite" in reasons[1]
        and "overlap" in reasons[2]
        and reasons[3].startswith("frame 3 (line 13): cannot parse")
    )
    assert "quarantined 5" in summary.line()


def test_truncated_file_and_missing_targets(tmp_path):
    path = tmp_path / "cut.xyz"
    path.write_text("1\nenergy=1.0\nH 0 0 0\n3\nenergy=2.0\nH 0 0 0\nH 0 0 1\n")  # frame 1 is cut short
    summary = import_structures([path], tmp_path / "out", targets=["energy"], progress=False)
    assert (summary.n_written, summary.n_quarantined) == (1, 1)
    assert read_quarantine(summary.quarantine_path)[0]["reason"] == (
        "frame 1 (line 4): truncated: count line says 3 atoms but the file ends after 7 lines "
        "(2 atom lines of this frame)"
    )

    path.write_text("1\nenergy=1.0\nH 0 0 0\n1\nwater\nO 0 0 0\n")
    strict = import_structures([path], tmp_path / "strict", targets=["energy"], require_targets=True, progress=False)
    assert (strict.n_written, strict.n_quarantined) == (1, 1)
    assert read_quarantine(strict.quarantine_path) == [
        {"id": "cut:1", "source": str(path), "reason": "frame 1: missing target energy"}
    ]

    path.write_text("1\nthe energy is unknown\nH 0 0 0\n")  # ASE reads the word as the flag energy=True
    flagged = import_structures([path], tmp_path / "flag", targets=["energy"], progress=False)
    assert flagged.n_quarantined == 1
    assert "is not a number" in read_quarantine(flagged.quarantine_path)[0]["reason"]

    with pytest.raises(FileNotFoundError):
        import_structures([tmp_path / "nope.xyz"], tmp_path / "x", progress=False)


def test_duplicate_ids_are_made_unique(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        named = molecule("H2O")
        named.info["name"] = "water"
        write(tmp_path / sub / "w.xyz", [molecule("CH4"), named, named], format="extxyz")
    summary = import_structures([tmp_path / "a", tmp_path / "b"], tmp_path / "out", progress=False)
    ids = pq.read_table(summary.structures_path, columns=[S.ID]).column(S.ID).to_pylist()
    assert ids == ["w:0", "water", "water#2", "w:0#2", "water#3", "water#4"]


def test_cli_data_commands(tmp_path, capsys, pt_md):
    frames, energies = pt_md
    path = tmp_path / "md.xyz"
    write(path, frames[:5], format="extxyz")
    (tmp_path / "bad.xyz").write_text("two\nnot a count\n")
    argv = ["data", "import", str(path), str(tmp_path / "bad.xyz"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--targets", "energy", "--units", "energy=eV", "--no-progress"]) == 1  # 1 quarantined
    printed = capsys.readouterr().out
    assert "imported 5 structures, quarantined 1" in printed and "quarantine.parquet" in printed
    table = pq.read_table(tmp_path / "out" / "structures.parquet")
    assert table.num_rows == 5 and S.table_units(table.schema) == {"energy": "eV"}
    assert [a.info["energy"] for a in table_to_structures(table)] == pytest.approx(energies[:5], rel=1e-12)

    pytest.importorskip("scannet.data.qm9")
    from scannet.data.qm9 import qm9_data_dir

    try:
        qm9_data_dir()
    except FileNotFoundError:
        pytest.skip("qm9pack is not installed")
    assert main(["data", "qm9", "--out", str(tmp_path / "qm9"), "--targets", "homo", "lumo"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 130831 QM9 structures" in printed
    assert read_units(tmp_path / "qm9" / "structures.parquet") == {"homo": "eV", "lumo": "eV"}


# ------------------------------------------------------------- hostile and broken inputs, messages, exit codes

HOSTILE_XYZ = "50000000\nhostile!\nH 0 0 0\n"  # 26 bytes whose count line claims 50 million atoms

SINGULAR_CIF = """data_flat
_cell_length_a 5
_cell_length_b 5
_cell_length_c 5
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 0
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Si 0 0 0
Si 0.5 0.5 0.5
"""


def test_hostile_count_line_stops_at_end_of_file(tmp_path):
    """The reader must stop at the end of the file, never allocate for the count; checked in a child process
    so that a reader which does not stop is killed (timeout) instead of filling the memory."""
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "hostile.xyz"
    path.write_text(HOSTILE_XYZ)
    assert path.stat().st_size == 26
    child = textwrap.dedent(f"""
        import resource
        from scannet.data.importers import import_structures
        resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))
        for name, limit in (("default", None), ("huge", 10**9)):  # the limit alone must not be what stops it
            out = {str(tmp_path)!r} + "/" + name
            kwargs = {{}} if limit is None else {{"max_atoms": limit}}
            summary = import_structures([{str(path)!r}], out, progress=False, **kwargs)
            print(name, summary.n_written, summary.n_quarantined)
    """)
    try:
        done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("import of a 26-byte xyz with a hostile count line did not finish within 30 s")
    assert done.returncode == 0, done.stderr[-2000:]
    for line in done.stdout.split("\n")[:2]:  # a reader that iterated towards the count would hit the timeout
        name, written, quarantined = line.split()
        assert (written, quarantined) == ("0", "1"), name
    for name in ("default", "huge"):
        (record,) = read_quarantine(tmp_path / name / "quarantine.parquet")
        assert record["id"] == f"{path}:0" and record["source"] == str(path)
        assert record["reason"].startswith("frame 0 (line 1): truncated: count line says 50000000 atoms")
        assert "but the file ends after 3 lines (1 atom line of this frame)" in record["reason"]
    (record,) = read_quarantine(tmp_path / "default" / "quarantine.parquet")
    assert "over the limit of 100000 atoms per structure (--max-atoms)" in record["reason"]


MIDDLE_BAD_XYZ = """2
frame 0 energy=1.0
H 0 0 0
H 0 0 0.74
3
frame 1 says 3 atoms but has 2 energy=2.0
H 0 0 0
H 0 0 0.74
2
frame 2 energy=3.0
H 0 0 0
H 0 0 0.75
4
frame 3 over the limit energy=4.0
H 0 0 0
H 0 0 1
H 0 0 2
H 0 0 3
2
frame 4 energy=5.0
H 0 0 0
H 0 0 0.76
"""


def test_middle_frame_truncated_or_over_the_limit_keeps_the_others(tmp_path):
    path = tmp_path / "m.xyz"
    path.write_text(MIDDLE_BAD_XYZ)
    summary = import_structures([path], tmp_path / "out", targets=["energy"], max_atoms=3, progress=False)
    assert (summary.n_written, summary.n_quarantined) == (3, 2)
    written = table_of(tmp_path / "out")
    assert [a.info["id"] for a in written] == ["m:0", "m:2", "m:4"]
    assert [a.info["energy"] for a in written] == [1.0, 3.0, 5.0]
    assert read_quarantine(summary.quarantine_path) == [
        {
            "id": f"{path}:1",
            "source": str(path),
            "reason": "frame 1 (line 5): truncated: count line says 3 atoms but only 2 atom lines follow "
            "before the next frame's count line (line 9)",
        },
        {
            "id": f"{path}:3",
            "source": str(path),
            "reason": "frame 3 (line 13): 4 atoms, over the limit of 3 atoms per structure (--max-atoms)",
        },
    ]
    # the limit applies to every format (here a trajectory, read by ASE)
    with Trajectory(tmp_path / "big.traj", "w") as trajectory:
        trajectory.write(molecule("H2O"))
        trajectory.write(molecule("H2"))
    small = import_structures([tmp_path / "big.traj"], tmp_path / "traj", max_atoms=2, progress=False)
    assert (small.n_written, small.n_quarantined) == (1, 1)
    assert read_quarantine(small.quarantine_path)[0]["reason"] == (
        "frame 0: 3 atoms, over the limit of 2 atoms per structure (--max-atoms)"
    )
    with pytest.raises(ValueError, match="max_atoms"):
        import_structures([path], tmp_path / "x", max_atoms=0, progress=False)


def test_messages_name_file_frame_and_reason(tmp_path):
    (tmp_path / "flat.cif").write_text(SINGULAR_CIF)
    (tmp_path / "ethanol.smi").write_text("CCO\n")
    summary = import_structures([tmp_path / "flat.cif", tmp_path / "ethanol.smi"], tmp_path / "out", progress=False)
    assert (summary.n_written, summary.n_quarantined, summary.n_files_failed) == (0, 2, 2)
    cif, smi = read_quarantine(summary.quarantine_path)
    # ASE raises an AssertionError without a message: the type, where and a sentence are given instead
    assert cif["reason"].startswith("cannot read the file: AssertionError raised without a message")
    assert "cellpar_to_cell" in cif["reason"] and "no valid cell" in cif["reason"]
    assert smi["reason"] == (
        "cannot read the file: unsupported file type '.smi' (ASE does not recognize it; supported: .xyz, "
        ".extxyz, .traj, .db, .cif and the other formats ase.io.read knows)"
    )
    assert summary.messages == [
        f"{tmp_path / 'flat.cif'}: {cif['reason']}",
        f"{tmp_path / 'ethanol.smi'}: {smi['reason']}",
    ]


def test_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.xyz"
    write(good, [molecule("H2O"), molecule("CH4")], format="extxyz")
    (tmp_path / "cut.xyz").write_text("1\nenergy=1.0\nH 0 0 0\n3\nenergy=2.0\nH 0 0 0\n")
    (tmp_path / "flat.cif").write_text(SINGULAR_CIF)
    (tmp_path / "ethanol.smi").write_text("CCO\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no structures here")

    def run(*inputs: str, out: str = "out") -> tuple[int, str, str]:
        code = main(["data", "import", *inputs, "--out", str(tmp_path / out), "--no-progress"])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = run(str(good))
    assert code == 0 and "imported 2 structures, quarantined 0" in out and err == ""

    code, out, err = run(
        str(good), str(tmp_path / "cut.xyz"), str(tmp_path / "flat.cif"), str(tmp_path / "ethanol.smi")
    )
    assert code == 1 and "imported 3 structures, quarantined 3" in out
    lines = err.strip().splitlines()
    assert lines[0] == (
        f"scannet data import: quarantined {tmp_path / 'cut.xyz'}: frame 1 (line 4): truncated: count line says "
        "3 atoms but the file ends after 6 lines (1 atom line of this frame)"
    )
    assert lines[1].startswith(
        f"scannet data import: quarantined {tmp_path / 'flat.cif'}: cannot read the file: AssertionError"
    )
    assert "ethanol.smi: cannot read the file: unsupported file type '.smi'" in lines[2]
    assert lines[-1].startswith("scannet data import: 3 records quarantined (2 of 4 files unreadable), 3 written")

    code, out, err = run(str(tmp_path / "flat.cif"), str(tmp_path / "ethanol.smi"), out="none")
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("scannet: error: data import wrote no structure: none of the 2 input files gave a valid structure")
    )

    before = {f.name: f.read_bytes() for f in (tmp_path / "out").iterdir()}
    code, out, err = run(str(tmp_path / "flat.cif"), out="out")  # nothing valid into an existing dataset
    assert code == 2 and {f.name: f.read_bytes() for f in (tmp_path / "out").iterdir()} == before  # kept whole
    assert not any(name.startswith(".out.") for name in os.listdir(tmp_path))  # no staging folder left

    code, out, err = run(str(tmp_path / "empty"), out="nothing")
    assert code == 2 and err.strip() == (
        "scannet: error: data import wrote no structure: no structure file in the inputs "
        "(folders are searched for .cif, .xyz, .extxyz, .traj; 1 other file ignored)"
    )

    code = main(["data", "import", str(good), "--out", str(tmp_path / "lim"), "--max-atoms", "4", "--no-progress"])
    assert code == 1 and "5 atoms, over the limit of 4 atoms" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        main(["data", "import", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 all inputs imported, 1 some inputs quarantined or skipped" in text
    assert "2 nothing written" in text and "--max-atoms" in text and "default 100000" in text
