"""Which devices have stopped finishing their work: the batches each one is running.

The scheduler tells :class:`BatchWatch` when a device starts a batch (with the run
time placement expected for it) and when runs come back; :meth:`BatchWatch.overdue`
names the devices whose oldest unfinished batch has run far longer than expected.
Pure bookkeeping on a clock the caller passes in, so tests drive it without Ray or
sleeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Batch:
    started: float
    expected_s: float
    jobs: set[str] = field(default_factory=set)


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
            self._batches.setdefault(device, []).append(_Batch(now, max(expected_s, 0.0), jobs))

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

    def forget(self, device: str) -> set[str]:
        """Drop every batch of a device (it restarted); returns the jobs they held."""
        return {j for b in self._batches.pop(device, []) for j in b.jobs}

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
