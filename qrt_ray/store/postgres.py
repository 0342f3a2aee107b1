"""PostgreSQL job store: the same queries and guarantees as SQLite, on a server.

A farm whose store is a PostgreSQL URL keeps every job when its head node is lost: a
new head given the same URL recovers them. Commits are durable the moment they return
(the server's WAL; ``synchronous_commit`` as the server sets it, ``on`` by default),
and the group-commit writer shares one commit among every write waiting for it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from qrt_ray.errors import StoreUnavailableError
from qrt_ray.store.migrations import migrate_postgres
from qrt_ray.store.sql import Cursor, SQLJobStore
from qrt_ray.store.urls import redact_url

_CONNECT_TIMEOUT_S = 10


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """The store's ``?`` placeholders in psycopg's spelling (no statement holds '%')."""
    return sql.replace("?", "%s")


def probe(url: str) -> None:
    """Connect once and let go: raises StoreUnavailableError when the server is not there."""
    _open(url).close()


def _open(url: str) -> _Connection:
    try:
        raw = psycopg.connect(
            url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, application_name="qrt-ray"
        )
    except psycopg.Error as exc:
        raise StoreUnavailableError(
            f"store={redact_url(url)!r}: cannot connect to PostgreSQL "
            f"({_first_line(exc)}); check that the server is up, the host, port, "
            "database and user are right, and the password (PGPASSWORD or ~/.pgpass)"
        ) from None
    return _Connection(raw)


class _Connection:
    """A psycopg connection seen through the store's small connection protocol."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Cursor:
        return self._conn.execute(_placeholders(sql), tuple(args))  # type: ignore[return-value]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_placeholders(sql), rows)

    def close(self) -> None:
        self._conn.close()


class PostgresJobStore(SQLJobStore):
    """A job store in a PostgreSQL database, named by a ``postgresql://`` URL.

    Args:
        url: a libpq connection URL. Keep passwords out of it where you can: libpq also
            reads ``PGPASSWORD`` and ``~/.pgpass``. The URL is never logged or shown
            with its password.

    Raises:
        StoreUnavailableError: the server cannot be reached or refuses the login.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        conn = self._connect()
        try:
            migrate_postgres(conn)
        finally:
            conn.close()
        super().__init__()

    def __repr__(self) -> str:
        return f"PostgresJobStore({redact_url(self.url)!r})"

    def _connect(self) -> _Connection:
        return _open(self.url)

    def data_bytes(self) -> int:
        """The database's size on the server."""
        return int(self.read_sql("SELECT pg_database_size(current_database())")[0][0])

    def _broken(self, exc: Exception) -> bool:
        if isinstance(exc, psycopg.InterfaceError | StoreUnavailableError):
            return True
        if isinstance(exc, psycopg.OperationalError):
            # no SQLSTATE: the client lost the server; class 08 and 57P: the server
            # dropped the connection or is shutting down
            state = exc.sqlstate
            return state is None or state.startswith(("08", "57P"))
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
