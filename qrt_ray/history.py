"""Job and calibration history read straight from the store, for when no farm runs.

``qrt jobs``, ``status``, ``result``, ``explain`` and ``calibrations`` read what a farm
stored; the store is a file (or a PostgreSQL database), so they answer after ``qrt
down`` too. :class:`StoredHistory` offers the same calls as a connected
:class:`~qrt_ray.client.QuantumRuntime` for those commands, and the same views
(:mod:`qrt_ray.actors.views`); it never changes a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qrt_ray.actors.views import calibration_history, event_views, record_view
from qrt_ray.arguments import check_limit
from qrt_ray.errors import (
    IntegrityError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    RuntimeNotRunningError,
    ValidationError,
    brief,
)
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobResult
from qrt_ray.results import decode_result
from qrt_ray.store import JobStore, open_store
from qrt_ray.store.base import sha256_hex
from qrt_ray.store.urls import is_postgres_url, resolve_store_url, store_label


class StoredJob:
    """One stored job, read-only: the calls of a :class:`~qrt_ray.client.JobHandle`
    that need no farm."""

    def __init__(self, history: StoredHistory, job_id: str) -> None:
        self._history = history
        self.job_id = job_id

    def info(self) -> dict[str, Any]:
        """The job's record as plain data (``waiting`` is None: nothing places it now)."""
        return {**record_view(self._history.store.get(self.job_id)), "waiting": None}

    def status(self) -> JobState:
        """The job's stored state."""
        return self._history.store.get(self.job_id).state

    def placement(self) -> dict[str, Any] | None:
        """Why it went where it went, as stored."""
        return self._history.store.get(self.job_id).placement

    def events(self) -> list[dict[str, Any]]:
        """The job's stored transitions."""
        return event_views(self._history.store.events(self.job_id))

    def result(self, timeout_s: float | None = None) -> JobResult:
        """The job's stored result, verified against its checksum.

        Raises:
            JobFailedError, JobCancelledError: the job ended without a result.
            JobTimeoutError: the job is not final, and no farm runs to finish it.
            IntegrityError: the stored result failed its checksum.
        """
        rec = self._history.store.get(self.job_id)
        if rec.state is JobState.FAILED:
            raise JobFailedError(self.job_id, rec.error or "unknown")
        if rec.state is JobState.CANCELLED:
            raise JobCancelledError(self.job_id)
        if rec.state is not JobState.DONE or rec.result_sha256 is None:
            raise JobTimeoutError(
                f"job {self.job_id} is {rec.state.value} and no farm runs to finish it; "
                "start the farm it ran on (`qrt up`) and it carries on"
            )
        data = self._history.store.get_blob(rec.result_sha256)
        if sha256_hex(data) != rec.result_sha256:
            raise IntegrityError(f"job {self.job_id}: the stored result failed its checksum")
        return decode_result(data)


class StoredHistory:
    """A store's jobs and calibrations, read-only.

    Args:
        url: the store (a path, ``sqlite:///`` or ``postgresql://`` URL); None:
            ``$QRT_STORE``, else the default file, as a farm would pick.

    Raises:
        RuntimeNotRunningError: no store file there (nothing ran with it).
        ValidationError, StoreUnavailableError: as for
            :func:`~qrt_ray.store.open_store`.
    """

    def __init__(self, url: str | Path | None = None) -> None:
        self.label = store_label(url)
        resolved = resolve_store_url(url)
        if not is_postgres_url(resolved):
            path = Path(self.label.removeprefix("sqlite:///"))
            if not path.is_file():
                raise RuntimeNotRunningError(
                    f"no qrt farm runs here, and there is no job store at {self.label} to "
                    "read history from; start a farm with `qrt up`, or name the store "
                    "a farm used with --store"
                )
        self.store: JobStore = open_store(resolved)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def job(self, job_id: str) -> StoredJob:
        """A stored job.

        Raises:
            JobNotFoundError: the store holds no such job.
        """
        if not isinstance(job_id, str):
            raise ValidationError(f"job_id={brief(job_id)}: expected text (str)")
        self.store.get(job_id)  # raises JobNotFoundError
        return StoredJob(self, job_id)

    def jobs(
        self, *, state: str | JobState | None = None, tenant: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Stored jobs, newest first (see :meth:`QuantumRuntime.jobs`)."""
        limit = check_limit(limit)
        states = None
        if state is not None:
            try:
                states = [JobState(str(getattr(state, "value", state)).upper())]
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise ValidationError(f"state={brief(state)!r}: use one of {names}") from None
        recs = self.store.list_jobs(states=states, tenant=tenant, limit=limit)
        return [record_view(r) for r in recs]

    def calibrations(self, device: str, limit: int = 20) -> list[dict[str, Any]]:
        """A device's stored calibration history, newest first."""
        limit = check_limit(limit)
        records = self.store.calibrations(device, limit)
        if not records:
            raise JobNotFoundError(
                f"the store at {self.label} holds no calibration of a device {brief(device)!r}"
            )
        return calibration_history(records, self.store.canaries(device, 500))
