"""Atomic dataset writes (:mod:`scannet.io.atomic`): a failed, interrupted or killed write of a structures
or graph table folder leaves the previous dataset byte-identical, and the next run cleans up and succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase import Atoms
from ase.build import molecule
from ase.io import write

from scannet.data.graphs_table import featurize_records, featurize_table, read_graph_table, write_featurized
from scannet.data.importers import import_structures
from scannet.data.structures_table import (
    StructuresWriter,
    iter_structure_batches,
    num_structures,
    open_structures,
    read_quarantine,
    read_units,
    write_structures,
)
from scannet.featurizer import FeaturizerConfig
from scannet.io import atomic
from scannet.io.atomic import AtomicWrite, recover

SUBPROCESS_TIMEOUT = 120


# ------------------------------------------------------------------------------------------------ helpers


def frames(n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule("CH4")
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.info["energy"] = float(-24.0 + 0.01 * k)
        out.append(atoms)
    return out


@pytest.fixture
def inputs(tmp_path):
    """v1: 10 good frames and an unreadable file (1 quarantined); v2: 60 good frames (0 quarantined)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    write(folder / "v1.extxyz", frames(10, 1), format="extxyz")
    (folder / "bad.xyz").write_text("two\nnot a count\n")
    write(folder / "v2.extxyz", frames(60, 2), format="extxyz")
    return folder


def import_v1(inputs: Path, out: Path):
    summary = import_structures([inputs / "v1.extxyz", inputs / "bad.xyz"], out, ["energy"], progress=False)
    assert (summary.n_written, summary.n_quarantined) == (10, 1)
    (out / "notes.txt").write_text("the user's own file")  # not part of the dataset: must survive
    (out / "graphs-0123").mkdir()
    (out / "graphs-0123" / "summary.json").write_text("{}")
    return summary


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (relative path -> bytes, None for a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def leftovers(parent: Path) -> list[str]:
    """Staging and aside entries in ``parent``."""
    return sorted(e for e in os.listdir(parent) if ".tmp-" in e or ".old-" in e)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def start_slow_import(inputs: Path, out: Path, marker: Path, before: str = "") -> subprocess.Popen:
    """``scannet data import`` in a subprocess whose every batch write takes 0.3 s; ``marker`` appears after
    the first batch is written (so the dataset is then being staged)."""
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        from pathlib import Path
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
        import scannet.data.structures_table as st
        write_table = st.StructuresWriter.write_table
        def slow(self, table):
            write_table(self, table)
            Path({str(marker)!r}).touch()
            time.sleep(0.3)
        st.StructuresWriter.write_table = slow
        {before}
        from scannet.cli import main
        sys.exit(main(["data", "import", {str(inputs / "v2.extxyz")!r}, "--out", {str(out)!r},
                       "--targets", "energy", "--batch-size", "5", "--no-progress"]))
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=out.parent, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the import ended early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the import did not start writing")
        time.sleep(0.02)


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


# ----------------------------------------------------------------------------------- (a) exceptions


def test_exception_mid_import_leaves_the_previous_dataset_byte_identical(tmp_path, inputs, monkeypatch):
    out = tmp_path / "out"
    import_v1(inputs, out)
    before, parent_before = snapshot(out), sorted(os.listdir(tmp_path))
    calls = []

    def failing(atoms, identifier):
        calls.append(identifier)
        if len(calls) > 12:  # after two batches of 5 have been written
            raise RuntimeError("boom")

    monkeypatch.setattr("scannet.data.importers.validate_structure", failing)
    with pytest.raises(RuntimeError, match="boom"):
        import_structures([inputs / "v2.extxyz"], out, ["energy"], batch_size=5, progress=False)
    assert len(calls) == 13
    assert snapshot(out) == before and sorted(os.listdir(tmp_path)) == parent_before
    assert not leftovers(tmp_path) and not leftovers(out)


def test_keyboard_interrupt_mid_graph_table_leaves_the_previous_table(tmp_path, molecules):
    config = FeaturizerConfig.molecules()
    structures = write_structures(tmp_path / "s.parquet", molecules, {})
    out = tmp_path / "graphs"
    featurize_table(structures, out, config)
    before = snapshot(out)

    def records():
        for batch in iter_structure_batches(structures, batch_size=3):
            yield featurize_records(batch, config, {})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_featurized(records(), out, config, {}, row_group_size=2, overwrite=True)
    assert snapshot(out) == before and not leftovers(tmp_path)
    assert read_graph_table(out, config).num_rows == len(molecules)


def test_a_successful_import_replaces_table_and_quarantine_together_and_keeps_other_files(tmp_path, inputs):
    out = tmp_path / "out"
    import_v1(inputs, out)
    assert len(read_quarantine(out / "quarantine.parquet")) == 1
    summary = import_structures([inputs / "v2.extxyz"], out, ["energy"], progress=False)
    assert (summary.n_written, summary.n_quarantined) == (60, 0)
    assert num_structures(out / "structures.parquet") == 60
    assert pq.ParquetFile(out / "quarantine.parquet").metadata.num_rows == 0  # v1's record is gone with v1
    assert (out / "notes.txt").read_text() == "the user's own file" and (out / "graphs-0123" / "summary.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["inputs", "out"]


def test_the_current_folder_and_a_file_are_not_replaced(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "file").write_text("x")
    monkeypatch.chdir(tmp_path / "ds")
    with pytest.raises(ValueError, match="current working directory"):
        AtomicWrite(tmp_path / "ds")
    with pytest.raises(ValueError, match="current working directory"):
        AtomicWrite(tmp_path)
    with pytest.raises(NotADirectoryError):
        AtomicWrite(tmp_path / "file")
    with pytest.raises(IsADirectoryError):
        AtomicWrite(tmp_path / "ds", file=True)
    assert sorted(os.listdir(tmp_path)) == ["ds", "file"]


@pytest.fixture(autouse=True)
def default_signal_handlers():
    """Python's default SIGINT and SIGTERM handlers for each test here: a ray.init or a Ray Train fit earlier in
    the session installs handlers of its own and leaves them installed."""
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, signal.SIG_DFL),
    }
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_sigterm_handler_is_only_installed_while_writing(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with AtomicWrite(tmp_path / "d") as staged:
        assert signal.getsignal(signal.SIGTERM) is atomic._raise_exit
        with StructuresWriter(staged.path / "structures.parquet", {}):  # nested: still installed after it
            pass
        assert signal.getsignal(signal.SIGTERM) is atomic._raise_exit
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert os.listdir(tmp_path / "d") == ["structures.parquet"] and sorted(os.listdir(tmp_path)) == ["d"]


# --------------------------------------------------------------------------- (b), (c) killed imports


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill", "int", "term"])
def test_killed_import_leaves_the_previous_dataset_and_the_next_run_succeeds(tmp_path, inputs, signum):
    out = tmp_path / "out"
    import_v1(inputs, out)
    before = snapshot(out)
    marker = tmp_path / "writing"
    process = start_slow_import(inputs, out, marker)
    wait_for(marker, process)
    staged = leftovers(tmp_path)
    assert len(staged) == 1 and staged[0].startswith(f".out.tmp-{process.pid}-")  # killed while staging
    process.send_signal(signum)
    code = process.wait(SUBPROCESS_TIMEOUT)
    stderr = process.stderr.read()
    assert snapshot(out) == before
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert leftovers(tmp_path) == staged  # nothing could clean up; the next run does
    else:  # Ctrl-C and kill run the cleanup: the staging folder is gone at once
        assert code == (-signal.SIGINT if signum == signal.SIGINT else 128 + signal.SIGTERM), stderr
        assert leftovers(tmp_path) == []

    summary = import_structures([inputs / "v2.extxyz"], out, ["energy"], progress=False)
    assert summary.n_written == num_structures(out / "structures.parquet") == 60
    assert read_quarantine(out / "quarantine.parquet") == [] and (out / "notes.txt").exists()
    assert leftovers(tmp_path) == []


def test_killed_graph_featurization_leaves_the_previous_table(tmp_path, molecules):
    config = FeaturizerConfig.molecules()
    structures = write_structures(tmp_path / "s.parquet", molecules, {})
    out = tmp_path / "graphs"
    featurize_table(structures, out, config)
    before = snapshot(out)
    result = run_script(
        f"""
        import os
        import scannet.data.graphs_table as g
        from scannet.featurizer import FeaturizerConfig
        write = g.GraphTableWriter.write
        def write_then_die(self, records):
            write(self, records)
            os._exit(9)  # as a SIGKILL: no cleanup at all
        g.GraphTableWriter.write = write_then_die
        g.featurize_table({str(structures)!r}, {str(out)!r}, FeaturizerConfig.molecules(), batch_size=3,
                          overwrite=True)
        """,
        tmp_path,
    )
    assert result.returncode == 9, result.stderr
    assert snapshot(out) == before and len(leftovers(tmp_path)) == 1
    featurize_table(structures, out, config, overwrite=True)
    assert leftovers(tmp_path) == [] and read_graph_table(out, config).num_rows == len(molecules)


# ------------------------------------------------------------------------- (d) crashes inside a commit

_CRASH_IMPORT = """
    import os
    import scannet.io.atomic as atomic
    from scannet.data.importers import import_structures
    atomic.{step} = lambda *args: os._exit(7)
    import_structures([{source!r}], {out!r}, ["energy"], progress=False)
"""


@pytest.mark.parametrize("next_step", ["read", "write"])
def test_crash_between_moving_aside_and_putting_in_place_is_recovered(tmp_path, inputs, next_step):
    out = tmp_path / "out"
    import_v1(inputs, out)
    before = snapshot(out)
    script = _CRASH_IMPORT.format(step="_put_in_place", source=str(inputs / "v2.extxyz"), out=str(out))
    result = run_script(script, tmp_path)
    assert result.returncode == 7, result.stderr
    assert not out.exists()  # the crash came after step 2: the old folder is aside, the new one staged
    assert [e.split("-")[0] for e in leftovers(tmp_path)] == [".out.old", ".out.tmp"]

    if next_step == "read":  # opening the table puts the previous dataset back, complete
        assert read_units(out / "structures.parquet") == {"energy": "eV"}
        assert snapshot(out) == before
        assert len(read_quarantine(out / "quarantine.parquet")) == 1
    else:  # the next import recovers first, then writes
        summary = import_structures([inputs / "v2.extxyz"], out, ["energy"], progress=False)
        assert summary.n_written == num_structures(out / "structures.parquet") == 60
        assert (out / "notes.txt").exists() and read_quarantine(out / "quarantine.parquet") == []
    assert leftovers(tmp_path) == []


def test_crash_after_putting_in_place_is_finished_by_the_next_run(tmp_path, inputs):
    out = tmp_path / "out"
    import_v1(inputs, out)
    script = _CRASH_IMPORT.format(step="_finish", source=str(inputs / "v2.extxyz"), out=str(out))
    result = run_script(script, tmp_path)
    assert result.returncode == 7, result.stderr
    # the new dataset is complete in place; the user's files are still in the aside folder
    assert num_structures(out / "structures.parquet") == 60 and read_quarantine(out / "quarantine.parquet") == []
    assert not (out / "notes.txt").exists()
    assert [e.split("-")[0] for e in leftovers(tmp_path)] == [".out.old"]
    recover(out)
    assert (out / "notes.txt").read_text() == "the user's own file" and (out / "graphs-0123").is_dir()
    assert num_structures(out / "structures.parquet") == 60 and leftovers(tmp_path) == []


def test_the_commit_steps_undo_a_failed_rename(tmp_path, monkeypatch):
    target = tmp_path / "d"
    target.mkdir()
    (target / "a").write_text("old")
    staged = AtomicWrite(target)
    (staged.path / "a").write_text("new")

    def failing(stage, target):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic, "_put_in_place", failing)
    with pytest.raises(OSError, match="disk gone"):
        staged.commit()
    assert (target / "a").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["d"]


def test_a_signal_during_the_renames_waits_until_the_commit_is_done(tmp_path, monkeypatch):
    target = tmp_path / "d"
    target.mkdir()
    (target / "mine.txt").write_text("kept")
    put_in_place = atomic._put_in_place

    def interrupted(stage, target):
        put_in_place(stage, target)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between steps 3 and 4
        sum(range(1000))  # bytecode to run the handler on, if the signal were not held

    monkeypatch.setattr(atomic, "_put_in_place", interrupted)
    staged = AtomicWrite(target, ["a"])
    (staged.path / "a").write_text("new")
    with pytest.raises(KeyboardInterrupt):
        staged.commit()
    assert sorted(os.listdir(target)) == ["a", "mine.txt"] and sorted(os.listdir(tmp_path)) == ["d"]


def test_a_dataset_missing_one_of_its_entries_is_not_committed(tmp_path):
    target = tmp_path / "d"
    with AtomicWrite(target, ["structures.parquet", "quarantine.parquet"]) as staged:
        (staged.path / "structures.parquet").write_text("new")
        (staged.path / "quarantine.parquet").write_text("new")
    assert sorted(os.listdir(target)) == ["quarantine.parquet", "structures.parquet"]
    with pytest.raises(FileNotFoundError, match="quarantine.parquet"):
        with AtomicWrite(target, ["structures.parquet", "quarantine.parquet"]) as staged:
            (staged.path / "structures.parquet").write_text("newer")
    assert (target / "structures.parquet").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["d"]


# ---------------------------------------------------------------------------------- stale temporaries


def test_stale_temporaries_of_gone_processes_are_removed_live_ones_kept(tmp_path):
    gone, alive = dead_pid(), os.getppid()
    path = tmp_path / "ds" / "structures.parquet"
    path.parent.mkdir()
    stale = [
        tmp_path / "ds" / f".structures.parquet.tmp-{gone}",  # the old StructuresWriter's temp file
        tmp_path / f".ds.tmp-{gone}-0badc0de",  # a staging folder
        tmp_path / f"ds.tmp-{gone}",  # the old GraphTableWriter's temp folder
    ]
    live = tmp_path / f".ds.tmp-{alive}-0000abcd"
    for p in (*stale[:1],):
        p.write_text("partial")
    for p in (*stale[1:], live):
        p.mkdir()
    write_structures(path, frames(2, 0), {})  # cleans its own temporaries
    assert not stale[0].exists() and stale[1].exists()
    with AtomicWrite(tmp_path / "ds"):  # cleans the folder's
        pass
    assert not any(p.exists() for p in stale) and live.is_dir()
    assert open_structures(path).metadata.num_rows == 2
