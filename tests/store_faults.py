"""A job store whose next writes fail, for tests of what the farm does then."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class StoreFaults:
    """Makes a store's next ``left`` writes fail: before their commit (nothing written:
    a full disk) or, with ``after``, once committed (written, but reported failed)."""

    def __init__(self) -> None:
        self.left = 0
        self.after = False

    def wrap(self, store: Any) -> Any:
        write = store._write

        def faulty(fn: Callable[[Any], T]) -> T:
            if self.left <= 0:
                return write(fn)
            self.left -= 1
            if self.after:
                write(fn)
                raise sqlite3.OperationalError("disk I/O error (injected after the commit)")
            raise sqlite3.OperationalError("database or disk is full (injected)")

        store._write = faulty
        return store
