"""Which refusals go into the audit chain, and when: the first of a kind in a minute at
once, the rest of that minute as one record with their count.

A caller hammering a limit, or a source presenting bad tokens, then costs the chain
two records a minute, not one a call, and every refusal is still accounted for. Pure:
the minute comes in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

from qrt_ray.access.audit import AuditEntry


@dataclass(slots=True)
class _Window:
    minute: int
    more: int
    first: AuditEntry


class RefusalLog:
    """Refusals by kind (any hashable key), a minute at a time."""

    def __init__(self, max_kinds: int = 10_000) -> None:
        self._windows: dict[Hashable, _Window] = {}
        self._max = max_kinds

    def add(self, key: Hashable, entry: AuditEntry, minute: int) -> list[AuditEntry]:
        """Note a refusal; returns the records to seal now (none, or the first of this
        minute after the count of the kind's last minute)."""
        window = self._windows.get(key)
        if window is not None and window.minute == minute:
            window.more += 1
            return []
        out = self._close(key)
        if len(self._windows) >= self._max:  # memory stays bounded: seal every count
            out += self.drain(minute, force=True)
        self._windows[key] = _Window(minute, 0, entry)
        return [*out, entry]

    def waiting(self, minute: int) -> bool:
        """Whether counts of a minute that is over wait to be sealed."""
        return any(w.more and w.minute < minute for w in self._windows.values())

    def drain(self, minute: int, force: bool = False) -> list[AuditEntry]:
        """The count records of minutes before ``minute`` (of every minute: ``force``)."""
        out: list[AuditEntry] = []
        for key, w in list(self._windows.items()):
            if force or w.minute < minute:
                out += self._close(key)
        return out

    def _close(self, key: Hashable) -> list[AuditEntry]:
        window = self._windows.pop(key, None)
        if window is None or not window.more:
            return []
        detail = {**window.first.detail, "more_refusals": window.more,
                  "minute_start": window.minute * 60}  # fmt: skip
        return [dataclasses.replace(window.first, detail=detail)]
