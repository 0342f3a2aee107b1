"""Poison jobs: circuits that crash their simulator, found by running suspects alone.

When a device's simulator fails under a batch (it raised, or the device's process
died while the batch ran), any job of that batch may be the cause. Each becomes a
**suspect**: its later attempts run alone, in a batch of their own. A suspect whose
simulator fails again while it ran alone is counted; at ``poison_after`` such failures
it is **dead-lettered**: FAILED with class ``poison`` and the last reason, and no
device runs it again. The jobs that shared a batch with it lose that one attempt and
run alone next, where they complete. Pure: the scheduler keeps one
:class:`Quarantine` and asks it on each failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Quarantine:
    """Suspect jobs and how often each crashed its simulator while it ran alone.

    Args:
        poison_after: failures alone that make a suspect poison.
    """

    poison_after: int = 3
    _alone_failures: dict[str, int] = field(default_factory=dict)

    def crashed(self, job_id: str, alone: bool) -> bool:
        """Note that ``job_id``'s simulator failed under it (``alone``: nothing else
        ran in that batch). Returns whether the job is now poison."""
        failures = self._alone_failures.get(job_id, 0) + (1 if alone else 0)
        self._alone_failures[job_id] = failures
        return failures >= self.poison_after

    def is_suspect(self, job_id: str) -> bool:
        """Whether the job must run alone."""
        return job_id in self._alone_failures

    def failures_alone(self, job_id: str) -> int:
        """How often the job crashed its simulator while it ran alone."""
        return self._alone_failures.get(job_id, 0)

    def forget(self, job_id: str) -> None:
        """The job is final: nothing to keep."""
        self._alone_failures.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._alone_failures)


def poison_error(job_id: str, failures: int, last: str) -> str:
    """What a dead-lettered job's error says."""
    return (
        f"job {job_id} dead-lettered: its simulator failed {failures} times while it ran "
        f"alone (last: {last[:300]}); its circuits crash the simulator. Check them "
        "(qrt status, qrt explain) before you submit them again"
    )
