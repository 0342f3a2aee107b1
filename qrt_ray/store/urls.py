"""Which store a path or URL names, and how to show a URL without its secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from qrt_ray.errors import ValidationError

if TYPE_CHECKING:
    from qrt_ray.store.base import JobStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_MAX_URL_CHARS = 4096


def is_postgres_url(url: str | Path | None) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return isinstance(url, str) and url.startswith(POSTGRES_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    text = re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url[:_MAX_URL_CHARS])
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def resolve_store_url(url: str | Path | None) -> str | Path | None:
    """The store a farm should use: ``url``, else ``$QRT_STORE``, else None (default)."""
    if url is not None and str(url) != "":
        return url
    return os.environ.get("QRT_STORE") or None


def store_label(url: str | Path | None) -> str:
    """The store ``url`` names (None: ``$QRT_STORE``, else the default file), as a user
    reads it, passwords hidden."""
    from qrt_ray.store.sqlite import default_store_path

    resolved = resolve_store_url(url)
    if resolved is None:
        return str(default_store_path())
    return redact_url(str(resolved))


def check_store(url: str | Path | None) -> str | None:
    """Fail fast, in the caller's process, on a store the farm could not open.

    A PostgreSQL URL is tried with one connection (the scheduler would otherwise find
    out on the head, later); a path is left to the scheduler, which creates it.

    Returns:
        ``url`` as a string (None stays None).

    Raises:
        ValidationError: the URL is malformed or names an unsupported database.
        StoreUnavailableError: the PostgreSQL server cannot be reached.
    """
    if url is None:
        return None
    text = _checked_text(url)
    if is_postgres_url(text):
        from qrt_ray.store.postgres import probe

        probe(text)
    return text


def _checked_text(url: str | Path) -> str:
    text = str(url)
    if len(text) > _MAX_URL_CHARS:
        raise ValidationError(
            f"store: {len(text)} characters is too long for a path or URL "
            f"(at most {_MAX_URL_CHARS})"
        )
    if "://" in text and not text.startswith((*POSTGRES_SCHEMES, "sqlite:///")):
        scheme = text.split("://", 1)[0][:20]
        raise ValidationError(
            f"store: unsupported database URL scheme {scheme!r}; use a file path, "
            "sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
        )
    check_sqlite_path(text.removeprefix("sqlite:///"))
    return text


def check_sqlite_path(path: str | Path) -> None:
    """Refuse SQLite names that are not a file: the jobs would live in one
    process's memory and be lost with it (and each actor would see its own store).

    Raises:
        ValidationError: ``path`` is empty, ``:memory:`` or a ``file:`` URI.
    """
    text = str(path)
    if text.strip() in ("", ".", ":memory:") or text.startswith("file:"):
        shown = text[:40]
        raise ValidationError(
            f"store: {shown!r} is not a database file; the job store must be a file "
            "every farm process can open (a path, sqlite:///PATH) or a PostgreSQL URL"
        )


def open_store(url: str | Path | None = None) -> JobStore:
    """Open the store named by a path, a ``sqlite:///`` or ``postgresql://`` URL.

    With no argument: ``$QRT_STORE``, else the SQLite file in the user data dir.

    Raises:
        ValidationError: the URL names a database qrt-ray cannot open.
        StoreUnavailableError: a PostgreSQL server cannot be reached.
    """
    from qrt_ray.store.sqlite import SQLiteJobStore, default_store_path

    url = resolve_store_url(url)
    if url is None:
        return SQLiteJobStore(default_store_path())
    text = _checked_text(url)
    if is_postgres_url(text):
        from qrt_ray.store.postgres import PostgresJobStore

        return PostgresJobStore(text)
    return SQLiteJobStore(Path(text.removeprefix("sqlite:///")))
