"""The job store's interface: what the scheduler needs, whatever the database.

SQLite (the default) and PostgreSQL implement it, both through the shared queries of
:mod:`qrt_ray.store.sql`. Every write is durable when the call returns, and a state
change is a compare-and-set on the job's current state, so two writers can never
both move the same job.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qrt_ray.errors import JobNotFoundError
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.models import JobSpec
from qrt_ray.store.retention import GcReport, PurgedJob


def sha256_hex(data: bytes) -> str:
    """Content address of a blob."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored: the request, where it is, and what it produced."""

    job_id: str
    state: JobState
    spec: JobSpec
    created_at: float
    updated_at: float
    device: str | None = None
    calibration_id: str | None = None
    error: str | None = None
    result_sha256: str | None = None
    placement: dict[str, Any] | None = None
    attempts: int = 0
    # what the compiler recorded per circuit (CompileInfo dumps) for the current attempt
    compile_info: list[dict[str, Any]] | None = None
    # how the job was cut short and recovered: first counting attempt, shots discarded
    recovery: dict[str, int] | None = None
    # why a FAILED job failed (None for any other state)
    error_class: ErrorClass | None = None

    @property
    def tenant(self) -> str:
        """The tenant that owns the job."""
        return self.spec.tenant


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """Move one job from ``from_state`` to ``to_state``, optionally setting fields.

    ``fields`` may set: device, calibration_id, error, result_sha256, placement,
    attempts, compile_info, recovery, error_class. The update applies only if the job
    is still in ``from_state``.
    """

    job_id: str
    from_state: JobState
    to_state: JobState
    at: float
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    event: str | None = None
    # ledger lines written in the same transaction (a job becoming final)
    charges: tuple[Charge, ...] = ()


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A job that reached a final state, as service indicators count it (no spec)."""

    job_id: str
    tenant: str
    state: JobState
    error_class: ErrorClass | None
    device: str | None
    priority: int
    created_at: float
    finished_at: float

    @property
    def latency_s(self) -> float:
        """Submission to final state."""
        return max(0.0, self.finished_at - self.created_at)


@dataclass(frozen=True, slots=True)
class TransitionEvent:
    """One recorded lifecycle transition of a job."""

    job_id: str
    seq: int
    from_state: JobState | None
    to_state: JobState
    at: float
    reason: str | None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class ShotRecord:
    """Shots of one run of a job, counted once in the ledger.

    A run is keyed by (job, attempt, first shot): the slices of one attempt start at
    different shots, and a second delivery of the same run is not counted again.
    """

    job_id: str
    attempt: int
    calibration_id: str
    shots: int
    at: float
    run_sha256: str | None = None  # blob holding the run's raw counts
    first_shot: int = 0


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    """One calibration a device had: its parameters (JSON) and why it was taken."""

    device: str
    calibration_id: str
    taken_at: float
    recorded_at: float
    reason: str
    snapshot_json: str


@dataclass(frozen=True, slots=True)
class CanaryRecord:
    """One canary round on a device: what the calibration predicted and what ran.

    ``predicted`` and ``measured`` are the worst canary's success probability;
    ``detail`` holds every canary's figures.
    """

    device: str
    at: float
    calibration_id: str
    predicted: float
    measured: float
    drifted: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A time range in which a device takes no work."""

    window_id: str
    device: str
    start: float
    end: float
    reason: str
    created_at: float

    def covers(self, now: float) -> bool:
        """Whether ``now`` falls in the window."""
        return self.start <= now < self.end


class JobStore(abc.ABC):
    """Durable store of jobs, their transitions, result blobs and the shot ledger."""

    @abc.abstractmethod
    def admit(
        self, records: Sequence[JobRecord], audit: tuple[str, bytes, float] | None = None
    ) -> list[tuple[JobRecord, bool]]:
        """Insert new QUEUED jobs, or find the existing job with the same idempotency key.

        Args:
            audit: (actor, audit key, time): seal a ``job.create`` record for each job
                created, in the same transaction.

        Returns:
            For each input record, the stored record and whether it was created now.
        """

    @abc.abstractmethod
    def apply(self, updates: Sequence[StateUpdate], blobs: Sequence[bytes] = ()) -> list[bool]:
        """Apply state changes durably, each only if the job is still in ``from_state``.

        Args:
            updates: the moves, in order (a job may move more than once).
            blobs: stored in the same transaction, before the moves (a result its
                job's move to DONE names), whether or not a move applies; with no
                moves, nothing is written.

        Returns:
            For each update, whether it was applied (False: the job had moved on).
        """

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord:
        """The job with that id. Raises JobNotFoundError."""

    @abc.abstractmethod
    def find_by_key(self, tenant: str, idempotency_key: str) -> JobRecord | None:
        """The job a tenant submitted with that idempotency key, if any."""

    @abc.abstractmethod
    def list_jobs(
        self,
        *,
        states: Sequence[JobState] | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Jobs, newest first, filtered by state and tenant."""

    @abc.abstractmethod
    def unfinished(self) -> list[JobRecord]:
        """Every job not yet DONE, FAILED or CANCELLED, oldest first (for recovery).

        Rows that no longer decode are left out: see :meth:`unreadable`.
        """

    @abc.abstractmethod
    def unreadable(self) -> list[tuple[str, JobState, str]]:
        """Unfinished jobs whose stored row does not decode: (job id, state, why)."""

    @abc.abstractmethod
    def events(self, job_id: str) -> list[TransitionEvent]:
        """The job's transitions in order."""

    @abc.abstractmethod
    def finished_jobs(
        self, since: float, until: float | None = None, *, limit: int = 1_000_000
    ) -> list[FinishedJob]:
        """Jobs that reached a final state in ``[since, until)``, oldest first."""

    @abc.abstractmethod
    def transitions_since(self, since: float, *, limit: int = 1_000_000) -> list[TransitionEvent]:
        """Every transition recorded at or after ``since``, in time order."""

    @abc.abstractmethod
    def put_blob(self, data: bytes) -> str:
        """Store bytes under their sha256 and return it (idempotent)."""

    @abc.abstractmethod
    def get_blob(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``, verified. Raises IntegrityError on mismatch."""

    def find_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], JobRecord]:
        """The jobs stored under each (tenant, idempotency key), where there is one (one
        read per tenant where the store can)."""
        found = {key: self.find_by_key(*key) for key in dict.fromkeys(keys)}
        return {key: rec for key, rec in found.items() if rec is not None}

    def get_blobs(self, sha256s: Sequence[str]) -> list[bytes]:
        """The bytes stored under each of ``sha256s``, verified, in order (one read
        where the store can). Raises IntegrityError as :meth:`get_blob` does."""
        return [self.get_blob(sha) for sha in sha256s]

    def result_sizes(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The size in bytes of each DONE job's stored result (others are left out)."""
        out: dict[str, int] = {}
        for job_id, (state, sha) in self.result_refs(job_ids).items():
            if state is JobState.DONE and sha is not None:
                out[job_id] = len(self.get_blob(sha))
        return out

    def result_refs(self, job_ids: Sequence[str]) -> dict[str, tuple[JobState, str | None]]:
        """Each known job's state and result checksum, without decoding its spec (one
        read where the store can); ids not stored are left out."""
        out: dict[str, tuple[JobState, str | None]] = {}
        for job_id in job_ids:
            try:
                rec = self.get(job_id)
            except JobNotFoundError:
                continue
            out[job_id] = (rec.state, rec.result_sha256)
        return out

    @abc.abstractmethod
    def record_shots(
        self, records: Sequence[ShotRecord], blobs: Sequence[bytes] = ()
    ) -> list[bool]:
        """Count shots in the ledger; a (job, attempt, first shot) already counted returns
        False. ``blobs`` (the runs the records name) are stored in the same transaction."""

    @abc.abstractmethod
    def shot_ledger(self, job_id: str) -> list[ShotRecord]:
        """Every counted run of a job, by attempt and first shot."""

    # -- devices: calibration history, canaries, maintenance ---------------------------

    @abc.abstractmethod
    def record_calibration(self, record: CalibrationRecord) -> bool:
        """Keep a calibration in the device's history; False if it was already there."""

    @abc.abstractmethod
    def calibrations(self, device: str, limit: int = 20) -> list[CalibrationRecord]:
        """A device's calibrations, newest first."""

    @abc.abstractmethod
    def record_canary(self, record: CanaryRecord) -> None:
        """Keep one canary round's outcome."""

    @abc.abstractmethod
    def canaries(self, device: str, limit: int = 20) -> list[CanaryRecord]:
        """A device's canary rounds, newest first."""

    @abc.abstractmethod
    def save_rollout(self, method: str, state_json: str, at: float) -> None:
        """Keep a post-processing method's rollout state (one row per method)."""

    @abc.abstractmethod
    def rollouts(self) -> dict[str, str]:
        """Every method's stored rollout state (JSON), by method."""

    @abc.abstractmethod
    def add_maintenance(self, window: MaintenanceWindow) -> None:
        """Schedule a maintenance window."""

    @abc.abstractmethod
    def remove_maintenance(self, window_id: str) -> bool:
        """Cancel a maintenance window; False if there was none with that id."""

    @abc.abstractmethod
    def maintenance_windows(
        self, device: str | None = None, ending_after: float | None = None
    ) -> list[MaintenanceWindow]:
        """Maintenance windows by start time (of one device, not yet over at a time)."""

    @abc.abstractmethod
    def counts_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush pending writes and release the database."""

    # -- retention (see qrt_ray.store.retention) ----------------------------------------

    @abc.abstractmethod
    def mark_fetched(self, job_ids: Sequence[str], at: float) -> int:
        """Record the first fetch of these jobs' results; returns how many were new."""

    @abc.abstractmethod
    def expired_jobs(
        self, now: float, keep_fetched_s: float, keep_unfetched_s: float, limit: int
    ) -> list[str]:
        """Ids of finished jobs past their retention window, oldest first."""

    @abc.abstractmethod
    def purge_jobs(self, job_ids: Sequence[str], at: float, *, dry_run: bool = False) -> GcReport:
        """Remove finished jobs and what only they refer to, leaving tombstones."""

    @abc.abstractmethod
    def prune_canaries(self, before: float, *, dry_run: bool = False) -> int:
        """Remove canary rounds recorded before ``before``."""

    @abc.abstractmethod
    def prune_tombstones(self, before: float, *, dry_run: bool = False) -> int:
        """Remove tombstones of jobs removed before ``before``."""

    @abc.abstractmethod
    def purged(self, job_id: str) -> PurgedJob | None:
        """The tombstone of a job retention removed, if it was."""

    # -- maintenance ----------------------------------------------------------------------

    def data_bytes(self) -> int | None:
        """Bytes the store's data takes now (None: the backend cannot tell)."""
        return None

    def engine_check(self, deep: bool = False) -> list[str] | None:
        """The database engine's own consistency check: the problems it reports
        (empty: none), or None where the engine checks itself as it goes."""
        return None


@dataclass(frozen=True, slots=True)
class Charge:
    """One line of the billing ledger: what a job (or a readout measurement made for
    a tenant) cost, on one device. Keyed by (job_id, line): writing it twice keeps one.

    Attributes:
        kind: ``fee`` (per job), ``shots`` (shots x circuits the device ran) or
            ``mitigation`` (readout-calibration shots measured for the tenant).
    """

    job_id: str
    line: int
    tenant: str
    device: str
    kind: str
    shots: int
    device_s: float
    usd: float
    at: float
