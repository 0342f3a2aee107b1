"""Polling device snapshots without waiting on a device that hangs.

A round asks every device that has no question outstanding and waits a short while
(``round_wait_s``) for those answers only. A device that answers gives its new
snapshot; one still answering
an earlier question is taken as it last was, until that question is
``timeout_s`` old: then it is left out (the scheduler counts it as not answering)
until it answers again. A device this poller has never heard from is waited on for
the whole timeout, round after round until it first answers, so that a farm that
starts (or a scheduler that restarts) sees every device before it admits work for
one. Before, every round
waited for the slowest device: one device hanging (a network partition) held up the
scheduler's loop and every submit for the whole timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

logger = logging.getLogger("qrt.scheduler")

T = TypeVar("T")
ROUND_WAIT_S = 0.5


class SnapshotPoller(Generic[T]):
    """Rounds of questions to devices, by name (see the module docstring).

    Args:
        ask: starts one device's question; its result is the answer.
        timeout_s: how old a question may get before its device is left out.
        round_wait_s: how long a round waits for answers.
        clock: monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        ask: Callable[[str], Awaitable[T]],
        timeout_s: float,
        round_wait_s: float = ROUND_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._timeout_s = timeout_s
        self._round_wait_s = min(round_wait_s, timeout_s)
        self._clock = clock
        self._asking: dict[str, tuple[asyncio.Future[T], float]] = {}
        self._last: dict[str, T] = {}
        self._silent: set[str] = set()  # left out until they answer again

    async def round(self, names: Iterable[str]) -> dict[str, T]:
        """One round: each device's snapshot as it answers, or as it last was while a
        question to it is younger than the timeout. Devices left out are missing."""
        names = list(names)
        started = self._clock()
        waiting = []  # only this round's questions: one still open from before is slow
        for name in names:
            if name not in self._asking:
                task = asyncio.ensure_future(self._ask(name))
                self._asking[name] = (task, started)
                waiting.append(task)
        if waiting:
            await asyncio.wait(waiting, timeout=self._round_wait_s)
        # rounds may overlap (the loop's, a submit's): another may have taken an
        # answer in meanwhile, so entries are looked up again after every wait
        first = [
            entry[0]
            for n in names
            if (entry := self._asking.get(n)) is not None
            and n not in self._last
            and not entry[0].done()
        ]
        if first:  # never heard from (starting, or restarting with this scheduler)
            left = self._timeout_s - (self._clock() - started)
            await asyncio.wait(first, timeout=max(0.0, left))
        now = self._clock()
        out: dict[str, T] = {}
        for name in names:
            entry = self._asking.get(name)
            if entry is None:  # answered in an overlapping round
                if name in self._last and name not in self._silent:
                    out[name] = self._last[name]
                continue
            task, asked_at = entry
            if task.done():
                del self._asking[name]
                error = task.exception() if not task.cancelled() else asyncio.CancelledError()
                if error is not None:
                    logger.warning("device %s did not answer: %r", name, error)
                    self._silent.add(name)
                    continue
                self._last[name] = out[name] = task.result()
                self._silent.discard(name)
            elif now - asked_at >= self._timeout_s:
                if name not in self._silent:
                    logger.warning("device %s did not answer within %.0f s", name, self._timeout_s)
                task.cancel()  # asked afresh next round
                del self._asking[name]
                self._silent.add(name)
            elif name in self._last and name not in self._silent:
                out[name] = self._last[name]  # still answering: as it last was
        return out

    def lost(self, name: str) -> None:
        """A device is being restarted: leave it out until its new actor answers."""
        pending = self._asking.pop(name, None)
        if pending is not None:
            pending[0].cancel()
        self._silent.add(name)
