"""The token file of a local Ray is private (0600): created so, or fixed when Ray left it readable by others."""

from __future__ import annotations

import stat

import pytest

from scannet_platform.runtime import secure_ray_token


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_token_is_created_with_mode_0600(home):
    line = secure_ray_token()
    token = home / ".ray" / "auth_token"
    assert mode(token) == 0o600 and len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0
    assert line == f"Ray auth token: created {token} with mode 0600"


def test_a_token_readable_by_others_is_fixed(home):
    token = home / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("f" * 64)
    token.chmod(0o644)  # what Ray 2.60's ray.init() leaves with the usual umask
    assert "had mode 0644" in secure_ray_token()
    assert mode(token) == 0o600 and token.read_text() == "f" * 64
    assert secure_ray_token() == f"Ray auth token: {token} (mode 0600)"


def test_the_token_path_variable_is_followed(home, monkeypatch):
    other = home / "elsewhere" / "token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    secure_ray_token()
    assert mode(other) == 0o600 and not (home / ".ray").exists()


@pytest.mark.parametrize("variable, value", [("RAY_AUTH_MODE", "disabled"), ("RAY_AUTH_TOKEN", "abc")])
def test_nothing_is_written_without_a_token_file(home, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert secure_ray_token() is None and not (home / ".ray").exists()
