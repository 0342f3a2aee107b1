"""The scheduler's live jobs: one small state object per job, in one table indexed the
ways the scheduler looks them up (by id, by state, by device).

Pure: no Ray, no store, no clock. The stored :class:`~qrt_ray.store.JobRecord` stays
the truth; a :class:`LiveJob` holds it beside what the scheduler keeps in memory about
the job until it is final (its shape for placement, the runs it counted, what
placement expected). Retiring a job is one call, and "the jobs on device X" is an
index, not a scan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from qrt_ray.lifecycle import JobState
from qrt_ray.policies.placer import JobShape
from qrt_ray.policies.simtime import SimCost
from qrt_ray.results import RawRun
from qrt_ray.store import JobRecord


@dataclass(frozen=True, slots=True)
class Expected:
    """What placement expected of a job's run on its device; once compiled, the
    simulator's prior for the compiled circuits (``prior``: the run-time model learns
    from how far each run was from it)."""

    device: str
    run_s: float
    shot_duration_s: float
    prior: SimCost | None = None


@dataclass(slots=True)
class LiveJob:
    """A job the scheduler is working on (not yet DONE, FAILED or CANCELLED).

    Attributes:
        record: the job as last stored.
        seq: order of arrival in the table (listings keep it).
        shape: what placement needs of its circuits, once known.
        expected: placement's expectation while the job is placed (set through
            :meth:`JobTable.expect`, which indexes it).
        runs: runs counted in the shot ledger that the result will use.
        discarded_shots: shots of runs dropped because the job was rerun whole.
        runs_from: the first attempt whose runs count, once the job was rerun whole.
        fresh_checked: when a fresher calibration was last looked for on its behalf.
        waiting: why placement could not place it on its last try (None: it was not
            tried, or was placed).
        dispatches: the tokens of the hand-offs of its work to a device (runs must
            answer one; empty for a job recovered from the store, whose in-flight
            runs were dispatched by the scheduler before it restarted).
    """

    record: JobRecord
    seq: int
    shape: JobShape | None = None
    expected: Expected | None = None
    runs: list[RawRun] = field(default_factory=list)
    discarded_shots: int = 0
    runs_from: int | None = None
    fresh_checked: float | None = None
    waiting: str | None = None
    dispatches: set[str] = field(default_factory=set)

    @property
    def job_id(self) -> str:
        return self.record.job_id

    def holds_run(self, run: RawRun) -> bool:
        """Whether a run of the same attempt and first shot is counted here already
        (a report delivered again)."""
        return any(r.attempt == run.attempt and r.first_shot == run.first_shot for r in self.runs)

    @property
    def state(self) -> JobState:
        return self.record.state

    @property
    def device(self) -> str | None:
        return self.record.device


class JobTable:
    """Live jobs by id, with indices by state and by device kept in step."""

    def __init__(self) -> None:
        self._jobs: dict[str, LiveJob] = {}
        self._by_state: dict[JobState, set[str]] = {}
        self._by_device: dict[str, set[str]] = {}
        self._expecting: set[str] = set()  # jobs placement has an expectation for
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[LiveJob]:
        return iter(list(self._jobs.values()))

    def get(self, job_id: str) -> LiveJob | None:
        """The live job with that id, or None (unknown, or final and retired)."""
        return self._jobs.get(job_id)

    def __getitem__(self, job_id: str) -> LiveJob:
        return self._jobs[job_id]

    def add(self, record: JobRecord, shape: JobShape | None = None) -> LiveJob:
        """Track a job (admitted, or recovered from the store); a tracked one is updated."""
        job = self._jobs.get(record.job_id)
        if job is not None:
            self.update(record)
            if shape is not None:
                job.shape = shape
            return job
        job = LiveJob(record, next(self._seq), shape)
        self._jobs[record.job_id] = job
        self._index(job)
        return job

    def update(self, record: JobRecord) -> LiveJob:
        """Replace a live job's record (a stored transition); the indices follow."""
        job = self._jobs[record.job_id]
        self._unindex(job)
        job.record = record
        self._index(job)
        return job

    def remove(self, job_id: str) -> LiveJob | None:
        """Forget a job (it became final): everything kept about it goes at once."""
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self._unindex(job)
            self._expecting.discard(job_id)
        return job

    def expect(self, job_id: str, expected: Expected | None) -> None:
        """Set (or clear, with None) what placement expects of a live job's run."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        job.expected = expected
        if expected is None:
            self._expecting.discard(job_id)
        else:
            self._expecting.add(job_id)

    def any_expected(self) -> bool:
        """Whether any job is placed and not yet finished."""
        return bool(self._expecting)

    def expectations(self) -> list[Expected]:
        """What placement expects of every job placed and not yet finished."""
        return [e for j in self._expecting if (e := self._jobs[j].expected) is not None]

    def in_state(self, *states: JobState) -> list[LiveJob]:
        """Live jobs in any of ``states``, in order of arrival."""
        ids = set().union(*(self._by_state.get(s, ()) for s in states))
        return self._ordered(ids)

    def on_device(self, device: str, *states: JobState) -> list[LiveJob]:
        """Live jobs assigned to ``device`` (in ``states``, if given), in order of arrival."""
        ids: Iterable[str] = self._by_device.get(device, ())
        if states:
            wanted = set(states)
            ids = [j for j in ids if self._jobs[j].state in wanted]
        return self._ordered(ids)

    def count_by_device(self, *states: JobState) -> dict[str, int]:
        """How many live jobs in ``states`` each device has."""
        out: dict[str, int] = {}
        for job in self.in_state(*states):
            if job.device:
                out[job.device] = out.get(job.device, 0) + 1
        return out

    def _ordered(self, ids: Iterable[str]) -> list[LiveJob]:
        return sorted((self._jobs[j] for j in ids), key=lambda job: job.seq)

    def _index(self, job: LiveJob) -> None:
        self._by_state.setdefault(job.state, set()).add(job.job_id)
        if job.device:
            self._by_device.setdefault(job.device, set()).add(job.job_id)

    def _unindex(self, job: LiveJob) -> None:
        self._by_state.get(job.state, set()).discard(job.job_id)
        if job.device:
            self._by_device.get(job.device, set()).discard(job.job_id)
