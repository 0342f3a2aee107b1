"""The handle a primitive's ``run`` returns: a Qiskit ``BasePrimitiveJob``.

The work (construct, submit, wait, mitigate, combine) runs on a background thread;
the farm jobs it submits are durable on their own, so a result can always be read
again from them (``farm_job_ids``).
"""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from qiskit.primitives import BasePrimitiveJob, PrimitiveResult
from qiskit.providers import JobStatus

from qrt_ray.errors import JobCancelledError, JobTimeoutError
from qrt_ray.lifecycle import JobState

if TYPE_CHECKING:
    from qrt_ray.client import JobHandle, QuantumRuntime
    from qrt_ray.models import JobResult


class PrimitiveJob(BasePrimitiveJob[PrimitiveResult, JobStatus]):
    """A Sampler or Estimator run: ``job_id()``, ``status()``, ``result()``, ``cancel()``."""

    def __init__(
        self,
        runtime: QuantumRuntime,
        work: Callable[[PrimitiveJob], PrimitiveResult],
        inputs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"prim-{uuid.uuid4().hex[:16]}")
        self._rt = runtime
        self._inputs = inputs or {}
        self._created = time.time()
        self._finished: float | None = None
        self._lock = threading.Lock()
        self._handles: list[JobHandle] = []
        self._ran: list[JobResult] = []  # the farm jobs' results, once in
        self._cancel = threading.Event()
        self._future: Future[PrimitiveResult] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(work,), name=self._job_id, daemon=True
        )
        self._thread.start()

    def _run(self, work: Callable[[PrimitiveJob], PrimitiveResult]) -> None:
        if not self._future.set_running_or_notify_cancel():
            return
        try:
            result = work(self)
            self.check_cancelled()  # cancelled while mitigating: no result after all
            self._finished = time.time()
            self._future.set_result(result)
        except BaseException as exc:  # the caller sees it from result()
            self._finished = time.time()
            self._future.set_exception(exc)

    # -- used by the work -------------------------------------------------------------

    def add_handles(self, handles: list[JobHandle]) -> None:
        """Record farm jobs of this run (cancel reaches them)."""
        with self._lock:
            self._handles.extend(handles)
        if self._cancel.is_set():
            self._cancel_farm_jobs()

    def note_results(self, results: list[JobResult]) -> None:
        """Keep the farm jobs' results (for ``usage()``, ``metrics()``, ``backend()``)."""
        with self._lock:
            self._ran = list(results)

    def check_cancelled(self) -> None:
        """Raise JobCancelledError if ``cancel()`` was called."""
        if self._cancel.is_set():
            raise JobCancelledError(self._job_id)

    # -- BasePrimitiveJob -------------------------------------------------------------

    @property
    def farm_job_ids(self) -> list[str]:
        """The ids of the farm jobs this run submitted (``qrt status`` knows them)."""
        with self._lock:
            return [h.job_id for h in self._handles]

    def result(self, timeout: float | None = None) -> PrimitiveResult:
        """Wait for the run and return its result.

        Raises:
            JobFailedError: a farm job failed; MitigationError: a mitigation step
            could not give a trustworthy value; JobCancelledError; JobTimeoutError.
        """
        try:
            return self._future.result(timeout)
        except FutureTimeout:
            raise JobTimeoutError(
                f"{self._job_id} is still {self.status().name} after {timeout:g} s"
            ) from None

    def status(self) -> JobStatus:
        """INITIALIZING, QUEUED, RUNNING, DONE, ERROR or CANCELLED."""
        if self._future.done():
            error = self._future.exception()
            if isinstance(error, JobCancelledError):
                return JobStatus.CANCELLED
            return JobStatus.ERROR if error else JobStatus.DONE
        with self._lock:
            handles = list(self._handles)
        if not handles:
            return JobStatus.INITIALIZING
        states = set(self._rt.wait(handles, 0).values())
        waiting = {JobState.QUEUED, JobState.COMPILING, JobState.PLACED}
        return JobStatus.QUEUED if states <= waiting else JobStatus.RUNNING

    def done(self) -> bool:
        """Finished with a result."""
        return self.status() is JobStatus.DONE

    def running(self) -> bool:
        """Some of its farm jobs run, or it is mitigating."""
        return self.status() is JobStatus.RUNNING

    def cancelled(self) -> bool:
        """Cancelled before it finished."""
        return self.status() is JobStatus.CANCELLED

    def in_final_state(self) -> bool:
        """DONE, ERROR or CANCELLED."""
        return self._future.done()

    @property
    def inputs(self) -> dict[str, Any]:
        """What the run was given: its PUB count and options (as a dict)."""
        return dict(self._inputs)

    def backend(self) -> Any:
        """The backend (``rt.backend(name)``) the run's first farm job ran on (None
        before any has finished)."""
        with self._lock:
            ran = list(self._ran)
        return self._rt.backend(ran[0].metadata.device) if ran else None

    def usage(self) -> float:
        """Device seconds the run's farm jobs took (0 until they have finished)."""
        with self._lock:
            return float(sum(r.metadata.run_s for r in self._ran))

    def metrics(self) -> dict[str, Any]:
        """Timestamps, usage, the farm jobs, shots executed and devices used."""
        with self._lock:
            ran = list(self._ran)
        finished = self._finished
        return {
            "timestamps": {
                "created": _iso(self._created),
                "finished": _iso(finished) if finished is not None else None,
            },
            "usage": {"seconds": self.usage(), "quantum_seconds": self.usage()},
            "farm_jobs": self.farm_job_ids,
            "shots": sum(r.metadata.shots_executed * len(r.circuits) for r in ran),
            "devices": sorted({r.metadata.device for r in ran}),
        }

    def cancel(self) -> bool:
        """Cancel the run and every farm job of it that is not final."""
        if self._future.done():
            return False
        self._cancel.set()
        self._cancel_farm_jobs()
        return True

    def _cancel_farm_jobs(self) -> None:
        with self._lock:
            handles = list(self._handles)
        for h in handles:
            h.cancel()

    def __repr__(self) -> str:
        return f"PrimitiveJob({self._job_id!r})"


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).isoformat()
