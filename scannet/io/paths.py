"""The one rule for writing inside a folder the user named (``--out``, a run's ``storage_path``, a study folder).

The folder itself may be a symbolic link (the user named it), but nothing under it is followed: every path a
command writes goes through :class:`OutputFolder`, which checks each component below the folder with
``lstat`` and refuses a symbolic link (:class:`OutputPathError`, a user error: one line, exit code 2) before
anything is written. Temporary files of :class:`~scannet.io.atomic.AtomicWrite` live next to their target, in a
folder checked the same way, under fresh names created with ``mkdir`` (which never follows a link).

    out = OutputFolder(args.out, create=True)   # refuses a file, creates the folder
    out.folder("predictions")                    # <out>/predictions, created, not a link
    out.path("predictions", "part-000001.parquet")  # checked; write it (atomically) there

:func:`path_inside` is the same check for one file name directly inside a folder (``predict``, ``explain``).
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """A path the command would write is not inside its output folder (a symbolic link, a file where a folder
    belongs, a name that climbs out): a user error."""


def _link_error(path: Path, root: Path) -> OutputPathError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return OutputPathError(
        f"{path} is a symbolic link{target} leaving the output folder {root}: refusing to write outside it; "
        "remove the link or choose another folder"
    )


class OutputFolder:
    """A folder the user named, and the checked paths of what a command writes inside it.

    Args:
        folder: the output folder (it may be a symbolic link itself; it is resolved once, here).
        create: create it (and its parents) when missing; otherwise only check that it is not a file.

    Raises :class:`OutputPathError` when ``folder`` is a file (or lies under one).
    """

    def __init__(self, folder: str | Path, create: bool = False) -> None:
        self.given = Path(folder)
        path = self.given.expanduser()
        if os.path.lexists(path) and not path.is_dir():
            kind = "a dangling symbolic link" if path.is_symlink() else "a file"
            raise OutputPathError(f"{self.given} is {kind}, not a folder: give a folder to write into")
        parent = next((p for p in path.absolute().parents if os.path.lexists(p)), None)
        if not path.exists() and parent is not None and not parent.is_dir():
            raise OutputPathError(f"{self.given}: {parent} is a file, not a folder")
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputPathError(f"{self.given}: cannot create the folder ({exc.strerror or exc})") from exc
        self.root = path.resolve()

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.given)!r})"

    def _parts(self, parts: tuple[str | Path, ...]) -> list[str]:
        names = [name for part in parts for name in Path(part).parts]
        if not names:
            raise OutputPathError(f"no file name given inside {self.root}")
        for name in names:
            if name in ("..", ".") or os.path.isabs(name) or os.sep in name:
                raise OutputPathError(f"{os.path.join(*map(str, parts))!r}: not a name inside {self.root}")
        return names

    def path(self, *parts: str | Path) -> Path:
        """``<folder>/<parts...>`` after checking that no component below the folder is a symbolic link and
        that it resolves inside the folder; the last component may be missing (it is what will be written)."""
        names = self._parts(parts)
        path = self.root
        for name in names:
            path = path / name
            if path.is_symlink():
                raise _link_error(path, self.root)
        if not path.resolve().is_relative_to(self.root):  # a link swapped in meanwhile, a bind mount aside
            raise OutputPathError(f"{path} resolves to {path.resolve()}, outside the output folder {self.root}")
        return path

    def folder(self, *parts: str | Path) -> Path:
        """The sub-folder ``<folder>/<parts...>``, created level by level (none of them a link or a file)."""
        names = self._parts(parts)
        for k in range(1, len(names) + 1):
            path = self.path(*names[:k])
            try:
                path.mkdir(exist_ok=True)
            except FileExistsError:
                pass
            except OSError as exc:
                raise OutputPathError(f"{path}: cannot create the folder ({exc.strerror or exc})") from exc
            if not path.is_dir() or path.is_symlink():
                raise OutputPathError(f"{path} is a file, not a folder (inside the output folder {self.root})")
        return self.path(*names)

    def check(self, *names: str | Path) -> None:
        """Check the paths ``names`` (each relative to the folder) before writing any of them."""
        for name in names:
            self.path(name)

    def check_tree(self, *names: str | Path) -> None:
        """Check the paths ``names`` and, for those that are folders, every entry below them (links not
        followed): a folder whose files a command rewrites must hold no symbolic link."""
        for name in names:
            path = self.path(name)
            if not path.is_dir():
                continue
            for folder, dirs, files in os.walk(path):
                for entry in sorted(dirs + files):
                    if os.path.islink(os.path.join(folder, entry)):
                        raise _link_error(Path(folder) / entry, self.root)


def path_inside(folder: str | Path, file_name: str) -> Path:
    """``folder / file_name`` after checking that it lies directly inside ``folder`` and is not a symbolic link
    (:class:`OutputFolder`); raises :class:`OutputPathError` (a ``ValueError``) otherwise."""
    if len(Path(file_name).parts) != 1:
        raise OutputPathError(f"refusing to write {file_name!r}: not a file name directly inside {folder}")
    return OutputFolder(folder).path(file_name)
