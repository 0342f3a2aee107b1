"""Which devices have stopped finishing their work: the batches each one is running.

The scheduler tells :class:`BatchWatch` when a device starts a batch (with the run
time placement expected for it), when the device reports progress (after each
simulator call) and when runs come back; :meth:`BatchWatch.overdue` names the devices
whose oldest unfinished batch has gone far longer than expected without progress.
Pure bookkeeping on a clock the caller passes in, so tests drive it without Ray or
sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Batch:
    started: float  # restarts with each progress report (the hung clock)
    expected_s: float
    jobs: set[str] = field(default_factory=set)
    began: float = 0.0  # when the batch started, never moved


def hung_limit_s(expected_s: float, min_s: float, factor: float) -> float:
    """How long a batch expected to take ``expected_s`` may run before it counts as hung."""
    return max(min_s, factor * expected_s)


class BatchWatch:
    """Unfinished batches per device, oldest first."""

    def __init__(self) -> None:
        self._batches: dict[str, list[_Batch]] = {}

    def started(self, device: str, job_ids: Iterable[str], expected_s: float, now: float) -> None:
        """A device started running these jobs; placement expected ``expected_s``."""
        jobs = set(job_ids)
        if jobs:
            batch = _Batch(now, max(expected_s, 0.0), jobs, began=now)
            self._batches.setdefault(device, []).append(batch)

    def finished(self, device: str, job_ids: Iterable[str]) -> None:
        """Runs of these jobs came back; each clears the oldest batch that holds it."""
        batches = self._batches.get(device, [])
        for job_id in job_ids:
            for batch in batches:
                if job_id in batch.jobs:
                    batch.jobs.discard(job_id)
                    break
        batches[:] = [b for b in batches if b.jobs]
        if not batches:
            self._batches.pop(device, None)

    def progress(self, device: str, now: float) -> None:
        """A device reports progress on its work: each of its batches' clocks restarts,
        so a limit measures time without progress, not the length of a batch."""
        for batch in self._batches.get(device, []):
            batch.started = now

    def forget(self, device: str) -> set[str]:
        """Drop every batch of a device (it restarted); returns the jobs they held."""
        return {j for b in self._batches.pop(device, []) for j in b.jobs}

    def in_flight(self, device: str) -> set[str]:
        """Jobs with a batch running on a device now."""
        return {j for b in self._batches.get(device, []) for j in b.jobs}

    def running_for(self, device: str, now: float) -> float | None:
        """How long the device's oldest unfinished batch has run (None: none runs)."""
        batches = self._batches.get(device)
        return now - batches[0].began if batches else None

    def running(self, device: str) -> int:
        """Unfinished batches of a device."""
        return len(self._batches.get(device, []))

    def overdue(self, now: float, min_s: float, factor: float) -> list[tuple[str, str]]:
        """``(device, reason)`` for each device whose oldest batch passed its limit."""
        late = []
        for device, batches in self._batches.items():
            oldest = batches[0]
            elapsed = now - oldest.started
            limit = hung_limit_s(oldest.expected_s, min_s, factor)
            if elapsed > limit:
                late.append(
                    (
                        device,
                        f"{device} hung: a batch of {len(oldest.jobs)} jobs has run "
                        f"{elapsed:.0f} s (expected {oldest.expected_s:.1f} s, "
                        f"limit {limit:.0f} s)",
                    )
                )
        return late


def backoff_delay(retry: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (0-based): exponential with full jitter.

    A random delay between 0 and ``min(max_s, base_s * 2**retry)``: devices that lost
    their link at the same moment do not all retry at the same moment.
    """
    return rng.uniform(0.0, min(max_s, base_s * 2.0**retry))


class CircuitBreaker:
    """Stops sending work to a device whose control link keeps failing.

    Closed: work flows. ``failures`` link failures within ``window_s`` open it: no new
    work for ``cooldown_s``. Then it is half-open: work flows again, and the next
    outcome decides (a success closes it, a failure opens it for another cooldown).
    """

    def __init__(self, failures: int, window_s: float, cooldown_s: float) -> None:
        self.failures = failures
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._recent: list[float] = []
        self._opened_at: float | None = None
        self.trips = 0

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self._opened_at is None:
            return "closed"
        return "open" if now - self._opened_at < self.cooldown_s else "half-open"

    def allows(self, now: float) -> bool:
        """Whether the device may take new work now."""
        return self.state(now) != "open"

    def failure(self, now: float) -> bool:
        """Count a link failure; returns True when this opens the breaker."""
        if self.state(now) == "half-open":
            self._opened_at = now
            self.trips += 1
            return True
        self._recent = [t for t in self._recent if now - t < self.window_s] + [now]
        if self._opened_at is None and len(self._recent) >= self.failures:
            self._opened_at = now
            self._recent.clear()
            self.trips += 1
            return True
        return False

    def success(self, now: float) -> None:
        """A batch ran; a half-open breaker closes."""
        if self.state(now) == "half-open":
            self._opened_at = None
            self._recent.clear()

    def reason(self, now: float) -> str:
        """Why the device takes no work while the breaker is open."""
        left = self.cooldown_s - (now - (self._opened_at or now))
        return (
            f"circuit breaker open: {self.failures} control-link failures within "
            f"{self.window_s:g} s; retrying in {max(0.0, left):.0f} s"
        )
