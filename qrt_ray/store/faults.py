"""Injected job-store faults, for chaos drills and tests: the store's next writes fail,
before their commit (nothing written: a full disk) or after it (written, but reported
failed: a connection lost before the answer), every write waits a while first (a
slow disk or database), or the token and tenant records cannot be read for a while
(an outage of authentication: the identity source unreachable).

The farm's scheduler wraps its store with one (``SchedulerActor.inject_store_fault``);
with no fault set, a write pays one comparison.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class StoreFaults:
    """Makes a store's next ``left`` writes fail (after their commit with ``after``),
    and each write until ``slow_until`` (unix seconds) wait ``delay_s`` first."""

    def __init__(self) -> None:
        self.left = 0
        self.after = False
        self.delay_s = 0.0
        self.slow_until = 0.0
        self.auth_cut_until = 0.0
        self._lock = threading.Lock()

    def fail(self, writes: int, after: bool = False) -> None:
        """Fail the next ``writes`` writes (after their commit with ``after``)."""
        with self._lock:
            self.left, self.after = writes, after

    def slow(self, delay_s: float, for_s: float) -> None:
        """Delay every write by ``delay_s`` for the next ``for_s`` seconds."""
        self.delay_s, self.slow_until = delay_s, time.time() + for_s

    def cut_auth(self, for_s: float) -> None:
        """Fail every read of a token or tenant record for the next ``for_s`` seconds."""
        self.auth_cut_until = time.time() + for_s

    def clear(self) -> None:
        """Heal every fault now: writes left to fail, slow writes, the auth outage."""
        with self._lock:
            self.left, self.after = 0, False
        self.delay_s = self.slow_until = self.auth_cut_until = 0.0

    def wrap(self, store: Any) -> Any:
        """Route ``store``'s writes, and its token and tenant reads, through these
        faults; returns the store."""
        write = store._write
        for name in ("token", "tenant"):
            setattr(store, name, self._auth_read(getattr(store, name)))

        def faulty(fn: Callable[[Any], T], *args: Any, **kwargs: Any) -> T:
            if self.slow_until and time.time() < self.slow_until:
                time.sleep(self.delay_s)
            if self.left <= 0:
                return write(fn, *args, **kwargs)
            with self._lock:
                failing, after = self.left > 0, self.after
                self.left -= failing
            if not failing:
                return write(fn, *args, **kwargs)
            if after:
                write(fn, *args, **kwargs)
                raise sqlite3.OperationalError("disk I/O error (injected after the commit)")
            raise sqlite3.OperationalError("database or disk is full (injected)")

        store._write = faulty
        return store

    def _auth_read(self, read: Callable[[str], T]) -> Callable[[str], T]:
        def faulty(key: str) -> T:
            if self.auth_cut_until and time.time() < self.auth_cut_until:
                raise sqlite3.OperationalError("unable to open database file (injected)")
            return read(key)

        return faulty
