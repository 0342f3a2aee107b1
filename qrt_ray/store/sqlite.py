"""SQLite job store: one owner-only file in WAL mode with ``synchronous=FULL``.

The queries and the group-commit writer are shared with every backend
(:mod:`qrt_ray.store.sql`); this module opens SQLite connections. WAL lets the
per-thread read connections run beside the writer.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import platformdirs

from qrt_ray.private import private_dir, private_file
from qrt_ray.store.migrations import migrate
from qrt_ray.store.sql import SQLJobStore
from qrt_ray.store.urls import check_sqlite_path


def _data_dir() -> Path:
    """qrt-ray's own data folder (the default store's home)."""
    return Path(platformdirs.user_data_dir("qrt-ray"))


def default_store_path() -> Path:
    """Where the SQLite store lives unless told otherwise: the user data dir."""
    return _data_dir() / "jobs.sqlite3"


_LOCK_WAIT_S = 30.0


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=_LOCK_WAIT_S
    )
    _enter_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(_LOCK_WAIT_S * 1000)}")
    return conn


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch ``conn``'s database to WAL, waiting out other openers doing the same.

    Turning a new database to WAL takes an exclusive lock, and SQLite answers
    "database is locked" at once instead of calling the busy handler when another
    connection holds it (several actors open a fresh store together when a farm
    starts). So this retries for up to ``_LOCK_WAIT_S`` before giving up.
    """
    deadline = time.monotonic() + _LOCK_WAIT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def batches_work() -> bool:
    """Whether this process's SQLite runs the batched writes' SQL: ``UPDATE ... FROM``
    (SQLite 3.33) and the JSON functions (built in since 3.38, often before). Where it
    does not, a batch is written a row a statement, as on PostgreSQL."""
    try:
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY, b TEXT)")
            conn.execute(
                "UPDATE t SET b = v.column2 FROM (VALUES ('x', 'y')) AS v WHERE t.a = v.column1"
            )
            conn.execute("SELECT json_group_array(json_array(1, 'a'))").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return True


class SQLiteJobStore(SQLJobStore):
    """The default job store: one SQLite file in WAL mode with ``synchronous=FULL``."""

    begin_sql = "BEGIN IMMEDIATE"
    locked_writes = batches_work()

    def __init__(self, path: str | Path) -> None:
        check_sqlite_path(path)
        self.path = Path(path)
        # jobs, circuits and results are the tenants' data: owner-only, and the WAL
        # and shared-memory files SQLite makes beside it copy the database's mode
        private_dir(self.path.parent, tighten=self.path.parent == _data_dir())
        private_file(self.path)
        for suffix in ("-wal", "-shm", "-journal"):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                private_file(extra)
        conn = _connect(self.path)
        try:
            migrate(conn)
        finally:
            conn.close()
        super().__init__()

    def _connect(self) -> sqlite3.Connection:
        return _connect(self.path)

    def data_bytes(self) -> int:
        """Bytes of the pages in use (freed pages are reused; the file shrinks only
        with ``VACUUM``)."""
        (count,) = self.read_sql("PRAGMA page_count")[0]
        (free,) = self.read_sql("PRAGMA freelist_count")[0]
        (size,) = self.read_sql("PRAGMA page_size")[0]
        return int((count - free) * size)

    def engine_check(self, deep: bool = False) -> list[str]:
        """SQLite's ``quick_check`` (``integrity_check`` when deep, which also reads
        every index against its table)."""
        rows = self.read_sql("PRAGMA integrity_check" if deep else "PRAGMA quick_check")
        found = [str(r[0]) for r in rows]
        return [] if found == ["ok"] else found

    @property
    def _write_conn(self) -> sqlite3.Connection:
        """The writer's connection (tests read its per-connection settings)."""
        conn = self._writer._conn
        assert conn is not None
        return conn  # type: ignore[return-value]
