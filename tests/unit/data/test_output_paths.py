"""scannet.io.paths: the one rule for writing inside an output folder."""

from __future__ import annotations

import pytest

from scannet.io.paths import OutputFolder, OutputPathError, path_inside


def test_paths_below_the_folder_are_checked_component_by_component(tmp_path):
    out = OutputFolder(tmp_path / "out", create=True)
    assert out.folder("a", "b") == tmp_path / "out" / "a" / "b" and (tmp_path / "out" / "a" / "b").is_dir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "out" / "a", target_is_directory=True)  # even inside
    for parts in (("link", "x.csv"), ("link",)):
        with pytest.raises(OutputPathError, match="symbolic link"):
            out.path(*parts)
    with pytest.raises(OutputPathError, match="symbolic link"):
        out.check_tree("a", "link")
    for bad in ("..", "../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(OutputPathError, match="not a name inside"):
            out.path(bad)
    (tmp_path / "out" / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        out.folder("file")
    with pytest.raises(OutputPathError, match="not a folder"):
        OutputFolder(tmp_path / "out" / "file")
    with pytest.raises(OutputPathError, match="not a file name directly inside"):
        path_inside(tmp_path / "out", "a/b.xyz")
    assert path_inside(tmp_path / "out", "b.xyz") == tmp_path / "out" / "b.xyz"
