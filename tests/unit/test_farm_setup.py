"""The farm's Ray setup that needs no running Ray: the auth token `ray start` needs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from qrt_ray.farm import ensure_auth_token


@pytest.fixture
def token_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Token mode on, no token anywhere, ``$HOME`` in a temp dir."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return tmp_path


def test_a_fresh_machine_gets_a_private_random_token(token_env: Path) -> None:
    written = ensure_auth_token()
    assert written == token_env / ".ray" / "auth_token"
    token = written.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    # a second call keeps the token: clients already holding it must still connect
    assert ensure_auth_token() is None
    assert written.read_text() == token


def test_an_existing_token_is_never_replaced(
    token_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = token_env / "cluster-token"
    custom.write_text("abc123")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(custom))
    assert ensure_auth_token() is None
    assert custom.read_text() == "abc123"
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ensure_auth_token() is None
    assert not (token_env / ".ray" / "auth_token").exists()


def test_no_token_is_written_when_auth_is_off(
    token_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ensure_auth_token() is None
    assert not (token_env / ".ray").exists()
