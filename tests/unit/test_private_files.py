"""Secrets and users' data are readable by their owner only: token, store, WAL, folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qrt_ray import farm as farm_mod
from qrt_ray.private import private_dir, private_file, write_private
from qrt_ray.store import SQLiteJobStore
from qrt_ray.store import sqlite as sqlite_mod
from tests.local_farm import spec


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folders_are_created_owner_only_even_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = private_dir(tmp_path / "a" / "b" / "c")
        f = private_file(made / "data")
    finally:
        os.umask(old)
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(f) == 0o600


def test_an_existing_loose_file_of_ours_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "token"
    loose.write_text("x")
    loose.chmod(0o644)
    private_file(loose)
    assert mode(loose) == 0o600
    write_private(loose, "y")
    assert loose.read_text() == "y" and mode(loose) == 0o600


def test_a_folder_the_user_chose_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    private_dir(shared)
    assert mode(shared) == 0o755
    private_dir(shared, tighten=True)  # qrt-ray's own folders are tightened
    assert mode(shared) == 0o700


def test_the_store_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "jobs.sqlite3"
    store = SQLiteJobStore(path)
    try:
        store.admit([_record()])
        wal = path.with_name(path.name + "-wal")
        shm = path.with_name(path.name + "-shm")
        assert wal.exists() and shm.exists()
        assert (mode(path.parent), mode(path), mode(wal), mode(shm)) == (0o700, 0o600, 0o600, 0o600)
    finally:
        store.close()


def test_an_old_store_made_readable_by_all_is_tightened_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    SQLiteJobStore(path).close()
    path.chmod(0o644)
    SQLiteJobStore(path).close()
    assert mode(path) == 0o600


def test_the_default_data_folder_is_tightened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "share" / "qrt-ray"
    data.mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    monkeypatch.delenv("QRT_STORE", raising=False)
    monkeypatch.setattr(sqlite_mod, "_data_dir", lambda: data)
    SQLiteJobStore(sqlite_mod.default_store_path()).close()
    assert mode(data) == 0o700 and mode(data / "jobs.sqlite3") == 0o600


def test_a_new_ray_token_is_owner_only_in_an_owner_only_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    written = farm_mod.ensure_auth_token()
    assert written == tmp_path / ".ray" / "auth_token"
    assert mode(written) == 0o600 and mode(written.parent) == 0o700
    assert len(written.read_text()) == 64
    written.chmod(0o644)  # e.g. written by another tool
    assert farm_mod.ensure_auth_token() is None
    assert mode(written) == 0o600


def _record() -> object:
    from qrt_ray.lifecycle import JobState
    from qrt_ray.store import JobRecord

    return JobRecord("job-1", JobState.QUEUED, spec(2), 1.0, 1.0)
