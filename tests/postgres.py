"""A throwaway PostgreSQL server for the tests: started once per session, then removed.

``initdb`` makes a cluster in a temp dir; the server listens on a Unix socket in that
dir only (no TCP port at all), so nothing outside this machine's users can reach it.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
user (``runuser``). ``QRT_TEST_POSTGRES`` may name an existing server instead; every
test still gets a database of its own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_SERVER_USER = "postgres"


def _tool(name: str) -> str:
    """Path of a PostgreSQL program: on PATH, or where Debian installs it."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed; the store tests run against both "
            "SQLite and PostgreSQL. Install it (Debian: apt-get install postgresql) or set "
            "QRT_TEST_POSTGRES=postgresql://USER@HOST/DB to use a server you have"
        )
    return found


class ThrowawayPostgres:
    """One PostgreSQL server in a temp dir, reachable only through its Unix socket."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qrt-pg-"))
        self.data = self.root / "data"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, user=_SERVER_USER)
        self._run(
            _tool("initdb"),
            "-D",
            str(self.data),
            "-U",
            _SERVER_USER,
            "--auth=trust",  # reachable only through a socket in an owner-only dir
            "--encoding=UTF8",
            "--no-sync",
        )
        self._run(
            _tool("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses='' -c unix_socket_directories='{self.root}' "
            "-c max_connections=200",
            "start",
        )

    def _run(self, *argv: str) -> None:
        command = ["runuser", "-u", _SERVER_USER, "--", *argv] if self._as_root else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed:\n{done.stderr[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        """A connection URL for ``database`` on this server."""
        return f"postgresql://{_SERVER_USER}@/{database}?host={self.root}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def raw_sql(store_url: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL on the database behind a store, bypassing it, as damage from outside
    or an operator's query would (``?`` placeholders, either backend)."""
    if store_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(store_url)
    try:
        rows = conn.execute(sql, args).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


class PostgresServer:
    """Hands out fresh databases on the session's server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"qrt_{uuid.uuid4().hex[:12]}"
        raw_sql(self.admin_url, f"CREATE DATABASE {name}")
        base, _, query = self.admin_url.partition("?")
        head = base.rsplit("/", 1)[0]
        return f"{head}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL: ``$QRT_TEST_POSTGRES`` or a throwaway one."""
    given = os.environ.get("QRT_TEST_POSTGRES")
    if given:
        yield PostgresServer(given)
        return
    server = ThrowawayPostgres()
    try:
        yield PostgresServer(server.url())
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for one test."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives: a fresh SQLite file, then a fresh PostgreSQL database.

    A test taking this runs once per backend, so each guarantee is held by both.
    """
    if request.param == "sqlite":
        return str(tmp_path / "jobs.sqlite3")
    return request.getfixturevalue("postgres_url")
