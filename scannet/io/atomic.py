"""Atomic writes of dataset folders and table files: stage in a hidden sibling, commit by renames.

Every table writer goes through :class:`AtomicWrite`, the one place where scannet writes to a temporary
location and renames. A dataset folder (a structures table with its quarantine, a graph table folder with
its parts, quarantine and summary) is written into a sibling folder ``.<name>.tmp-<pid>-<random>`` and
committed by :meth:`AtomicWrite.commit`:

1. the staged files are flushed to disk (``fsync``);
2. an existing target is renamed aside, to ``.<name>.old-<pid>-<random>``;
3. the staged folder is renamed to the target;
4. entries of the old folder that are not part of the dataset (files of the user, the graph caches
   ``graphs-<hash>/`` kept in a structures folder) are moved into the new folder, and the old folder is
   deleted.

So the target folder never holds a mix of old and new dataset files: steps 2 and 3 are single renames, and
a writer names the entries its dataset consists of (``owned``): each must be staged (an empty quarantine
too) or the commit is refused, and none of them is ever carried over from the old folder. A single file (``file=True``, e.g. a
:class:`~scannet.data.structures_table.StructuresWriter` given a bare path) is staged the same way in
``.<name>.tmp-<pid>-<random>/<name>`` and committed with one ``os.replace``.

Crashes. After an exception, ``KeyboardInterrupt`` or a ``SystemExit`` the staged folder is removed and the
target is as it was. SIGTERM and SIGHUP are turned into ``SystemExit(128 + signal)`` while a write is open
(in the main thread, where the handler was the default one), so ``kill`` cleans up as Ctrl-C does;
SIGINT, SIGTERM and SIGHUP are held back during the renames of a commit (and raised right after). After
a SIGKILL or a power loss at any point, :func:`recover` (run by every new write of the same target, and by the readers when the
path they open is missing) finds either the complete old or the complete new dataset: it removes the
staging folders of processes that are gone (:func:`scannet.io.process.pid_exists`), puts an aside
folder back when the target is missing (a crash between steps 2 and 3) and otherwise finishes step 4. Commits and recoveries
hold an exclusive ``flock`` on the parent folder, so two of them never interleave.

Limits: the parent folder must be writable (the staging folder lives there); a mount point or a folder
holding the current working directory cannot be replaced (a clear error is raised before any work).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from types import FrameType
from typing import Self

from scannet.io.process import pid_exists

#: Infix of staging folders (``.<name>.tmp-<pid>-<random>``) and of aside folders (``.<name>.old-...``).
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"
#: Signals turned into ``SystemExit`` while a write is open (when their handler is the default one).
EXIT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
_HELD_SIGNALS = {signal.SIGINT, *EXIT_SIGNALS}
#: Any staging or aside name (legacy writers left ``.<file>.tmp-<pid>`` and ``<folder>.tmp-<pid>``).
_TEMP_NAME = re.compile(r"^\.?.+\.(?:tmp|old)-(\d+)(?:-[0-9a-f]+)?$")


def _absolute(path: str | Path) -> Path:
    return Path(path).resolve()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync(path: str | Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. a file system without fsync on directories
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    if root.is_file():
        _fsync(root)
        return
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(folder, name))
        _fsync(folder, directory=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` (yields False where the file system has no locks)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        yield locked
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM/SIGHUP so that a rename sequence is not cut in the middle; a signal that
    arrives meanwhile is raised again, to the previous handler, at the end.

    Python runs signal handlers in the main thread whichever thread the signal reaches, so the handlers are
    swapped (a thread's signal mask would not do: other threads of pyarrow or Ray would take the signal).
    Off the main thread nothing can be swapped and nothing is raised into this thread either.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {}
    for signum in _HELD_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: a handler not set from Python, which could not be put back
            previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


# ---------------------------------------------------------------------------------- exit on SIGTERM


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


_handlers_lock = threading.Lock()
_handlers_users = 0
_saved_handlers: dict[int, object] = {}


def _install_exit_handlers() -> bool:
    """Make SIGTERM/SIGHUP raise ``SystemExit`` while at least one write is open; False off the main thread."""
    global _handlers_users
    if threading.current_thread() is not threading.main_thread():
        return False
    with _handlers_lock:
        if _handlers_users == 0:
            for signum in EXIT_SIGNALS:
                if signal.getsignal(signum) is signal.SIG_DFL:  # never replace an application's handler
                    _saved_handlers[signum] = signal.signal(signum, _raise_exit)
        _handlers_users += 1
    return True


def _restore_exit_handlers() -> None:
    global _handlers_users
    with _handlers_lock:
        _handlers_users -= 1
        if _handlers_users == 0:
            for signum, handler in _saved_handlers.items():
                if signal.getsignal(signum) is _raise_exit:
                    signal.signal(signum, handler)
            _saved_handlers.clear()


# ------------------------------------------------------------------------------------------- recovery


def staging_names(target: str | Path, parent_entries: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(staging names, aside names) for ``target`` among its parent's entries (legacy temp names included)."""
    target = _absolute(target)
    if parent_entries is None:
        try:
            parent_entries = os.listdir(target.parent)
        except OSError:
            return [], []
    name = re.escape(target.name)
    stage = re.compile(rf"^\.?{name}\.tmp-\d+(?:-[0-9a-f]+)?$")
    aside = re.compile(rf"^\.{name}\.old-\d+-[0-9a-f]+$")
    stages = sorted(e for e in parent_entries if stage.match(e))
    asides = sorted(e for e in parent_entries if aside.match(e))
    return stages, asides


def _owner(name: str) -> int:
    match = _TEMP_NAME.match(name)
    return int(match.group(1)) if match else -1


def _carry_over(aside: Path, target: Path, owned: Collection[str] = ()) -> None:
    """Move the entries of the old folder that the new one lacks into it, except the dataset's own entries
    (``owned``) and staging leftovers of gone processes."""
    if not aside.is_dir() or aside.is_symlink():
        return
    for entry in sorted(os.listdir(aside)):
        if entry in owned:
            continue
        if _TEMP_NAME.match(entry) and entry.startswith(".") and not pid_exists(_owner(entry)):
            continue  # removed with the old folder
        if not os.path.lexists(target / entry):
            os.rename(aside / entry, target / entry)


def recover(target: str | Path) -> None:
    """Finish or undo what a crashed write of ``target`` left behind; keep the work of running writers.

    Removes the staging folders (and legacy ``.tmp-<pid>`` files) of processes that no longer exist. An
    aside folder (a commit cut between its renames) is put back when the target is missing, otherwise its
    remaining entries are moved into the target and it is removed (step 4 of the commit; the dataset's
    entries are in the target already, every writer stages all of them).
    """
    target = _absolute(target)
    stages, asides = staging_names(target)
    dead = [s for s in stages if not pid_exists(_owner(s))]
    if not dead and not asides:
        return
    parent = target.parent
    with _signals_held(), _locked(parent) as locked:
        for name in asides:
            aside = parent / name
            if not os.path.lexists(aside):
                continue  # recovered by another process meanwhile
            if not locked and pid_exists(_owner(name)):
                continue  # without a lock an aside of a running process may be a commit in progress
            if not os.path.lexists(target):
                os.rename(aside, target)
                _fsync(parent, directory=True)
            else:
                _carry_over(aside, target)
                _remove(aside)
        for name in dead:
            _remove(parent / name)


def recover_path(path: str | Path) -> None:
    """Before opening ``path``: when it is missing, :func:`recover` it and its folder (errors ignored)."""
    path = Path(path)
    if os.path.lexists(path):
        return
    for candidate in (path.parent, path):
        with contextlib.suppress(OSError):
            recover(candidate)


# ---------------------------------------------------------------------------------------- the commit


def _move_aside(target: Path) -> Path:
    """Commit step 2: rename the existing target to ``.<name>.old-<pid>-<random>``."""
    aside = target.with_name(f".{target.name}{OLD_TAG}{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(target, aside)
    return aside


def _put_in_place(stage: Path, target: Path) -> None:
    """Commit step 3: rename the staged folder to the target."""
    os.rename(stage, target)
    _fsync(target.parent, directory=True)


def _finish(aside: Path, target: Path, owned: Collection[str] = ()) -> None:
    """Commit step 4: move what the old folder has besides the dataset into the new one, delete the rest."""
    _carry_over(aside, target, owned)
    _remove(aside)


def _swap_in(stage: Path, target: Path, owned: Collection[str] = ()) -> None:
    """Replace the folder ``target`` by ``stage`` (steps 2-4); an error before step 3 restores the old one."""
    aside = _move_aside(target) if os.path.lexists(target) else None
    try:
        _put_in_place(stage, target)
    except BaseException:
        if aside is not None and not os.path.lexists(target):
            os.rename(aside, target)
        raise
    if aside is not None:
        _finish(aside, target, owned)


class AtomicWrite:
    """Stage a dataset folder (or one file) next to ``target`` and put it in place on :meth:`commit`.

    Write into :attr:`path`: the staging folder itself, or with ``file=True`` the staged file
    ``<staging folder>/<name>``. As a context manager it commits when the block succeeds and discards the
    staging folder when it raises (any exception, ``KeyboardInterrupt`` and ``SystemExit`` included). A new
    write first runs :func:`recover` on the target. See the module docstring for the guarantees.

    Args:
        target: the dataset folder (or the file with ``file=True``); its parent is created when missing.
        owned: the entries of the dataset folder (e.g. ``structures.parquet``, ``quarantine.parquet``):
            :meth:`commit` refuses a staged folder that lacks one, and they are never carried over from the
            previous folder (other entries there are).
        file: stage and commit a single file instead of a folder.
        overwrite: when False, an existing target is a :class:`FileExistsError` (raised before any work).
    """

    def __init__(
        self, target: str | Path, owned: Collection[str] = (), *, file: bool = False, overwrite: bool = True
    ) -> None:
        self.given = Path(target)
        self.target = _absolute(target)
        self.owned = tuple(owned)
        self.file = file
        parent = self.target.parent
        if parent == self.target or not self.target.name:
            raise ValueError(f"{self.given}: cannot replace a file system root")
        if os.path.lexists(self.target):
            if file and self.target.is_dir():
                raise IsADirectoryError(f"{self.given} is a folder, a file was expected")
            if not file and not self.target.is_dir():
                raise NotADirectoryError(f"{self.given} exists and is not a folder")
        if not file:
            if os.path.ismount(self.target):
                raise ValueError(f"{self.given} is a mount point and cannot be replaced; write into a subfolder")
            with contextlib.suppress(OSError):
                cwd = Path.cwd().resolve()
                if cwd == self.target or self.target in cwd.parents:
                    raise ValueError(
                        f"{self.given} holds the current working directory ({cwd}) and cannot be replaced; "
                        "write the dataset into a folder of its own"
                    )
        parent.mkdir(parents=True, exist_ok=True)
        recover(self.target)
        if not overwrite and os.path.lexists(self.target):
            raise FileExistsError(f"{self.given} exists; pass overwrite=True to write it again")
        self.stage = parent / f".{self.target.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
        self.stage.mkdir()
        self.path = self.stage / self.target.name if file else self.stage
        self._open = True
        self._handlers = _install_exit_handlers()

    def _close(self) -> None:
        self._open = False
        if self._handlers:
            self._handlers = False
            _restore_exit_handlers()

    def commit(self) -> Path:
        """Put the staged folder (file) in place of the target; returns the target as given."""
        if not self._open:
            raise ValueError(f"{self.given}: this write is already committed or discarded")
        try:
            with _signals_held():
                try:
                    staged = self.path
                    missing = [name for name in self.owned if not os.path.lexists(staged / name)]
                    if (self.file and not staged.exists()) or missing:
                        raise FileNotFoundError(f"{self.given}: not committed, {missing or 'the file'} not written")
                    _fsync_tree(staged)
                    with _locked(self.target.parent):
                        if self.file:
                            os.replace(staged, self.target)
                            _fsync(self.target.parent, directory=True)
                        else:
                            _swap_in(self.stage, self.target, self.owned)
                finally:
                    _remove(self.stage)  # after an error; after a commit, the empty staging folder of a file
        finally:
            self._close()
        return self.given

    def discard(self) -> None:
        """Remove the staging folder; the target stays as it was (no-op after commit or discard)."""
        if not self._open:
            return
        try:
            with _signals_held():
                _remove(self.stage)
        finally:
            self._close()

    def __enter__(self) -> AtomicWrite:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self._open:  # a block may have discarded the write itself
                self.commit()
        else:
            self.discard()


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write a small text file (a JSON state, a summary) whole: staged and put in place by one rename with
    :class:`AtomicWrite`, so a reader never sees a partial file. Returns ``path``."""
    with AtomicWrite(path, file=True) as write:
        write.path.write_text(text, encoding=encoding)
    return Path(path)


class Writer:
    """The context-manager protocol of every table writer: ``close()`` (commit) when the block succeeds,
    ``abort()`` (discard) when it raises."""

    def close(self):
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
