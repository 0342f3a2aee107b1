"""Pipelined submission: ``submit()`` returns at once, acknowledgements follow.

A loop of synchronous ``submit()`` calls pays one round trip to the scheduler per job,
and on a busy farm that round trip, not the work, sets the pace. A pipeline takes each
validated job into a bounded queue and returns; one thread sends whatever has queued
in a single scheduler call (one durable commit for the lot), so the loop pays a round
trip per batch. While its caller is still putting jobs in, the thread gathers them
first (until no job has come for ``GATHER_IDLE_S``, at most ``GATHER_MAX_S``, or at
once when someone waits for an answer), so a loop's jobs reach the farm together and
run in one simulator batch rather than a first job alone and the rest behind it.

The durability promise moves with the acknowledgement, it is not weakened: a job is
the farm's (stored, never lost) once its :class:`Ack` says so. Until then it may still
be refused (a quota, a device that could never run it) or fail to persist; the
handle's ``accepted()``, ``result()`` and every other call raise that error, and
:meth:`SubmitPipeline.flush` waits for all of them. A job whose answer never came (the
process died, or the store failed after its commit) may or may not be stored, as with
a synchronous submit that did not return: submitting it again with the same
idempotency key (``JobHandle.idempotency_key``) finds it if it was.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from qrt_ray.errors import (
    AuthenticationError,
    JobTimeoutError,
    PermissionDeniedError,
    QrtError,
    QuotaExceededError,
    RuntimeNotRunningError,
    StoreUnavailableError,
)
from qrt_ray.models import JobSpec

logger = logging.getLogger(__name__)

SEND_MAX = 256  # jobs in one scheduler call
SEND_MAX_BYTES = 16 << 20  # circuit text in one call (the farm takes 128 MiB a request)
QUEUE_MAX = 4096  # jobs queued or in flight before submit() waits for the farm
QUEUE_MAX_BYTES = 256 << 20  # ... and circuit text queued or in flight
_MIN_PAUSE_S = 0.05  # a rate limit is waited out at least this long before a retry
# The sender gathers jobs until none has been put for GATHER_IDLE_S (the caller paused),
# for at most GATHER_MAX_S after it started gathering; a caller waiting for an answer
# (accepted(), result(), flush()) ends the gathering at once.
GATHER_IDLE_S = 0.001
GATHER_MAX_S = 0.05

# The farm or its store was out of reach (after the runtime's own retries), or the
# caller may not submit at all: no job was judged on its own, and every job queued
# behind would meet the same, so they get the same answer without another wait.
_UNREACHABLE = (RuntimeNotRunningError, StoreUnavailableError)
_NOT_JUDGED = (*_UNREACHABLE, AuthenticationError, PermissionDeniedError)


class Ack:
    """One job's acknowledgement: its id once it is stored, or why it is not."""

    __slots__ = ("_done", "_error", "_hurry", "_job_id", "key", "size", "spec")

    def __init__(self, spec: JobSpec, hurry: Callable[[], None] | None = None) -> None:
        self.spec: JobSpec | None = spec
        self._hurry = hurry  # tells the sender someone waits: send now
        self.key = spec.idempotency_key  # kept after the answer: a safe resubmit
        self.size = 512 + sum(len(c) for c in spec.circuits)  # about its JSON's bytes
        self._done = threading.Event()
        self._job_id: str | None = None
        self._error: BaseException | None = None

    @property
    def settled(self) -> bool:
        """Whether the farm has answered (accepted or refused)."""
        return self._done.is_set()

    @property
    def job_id_now(self) -> str | None:
        """The job's id if it was accepted already; never waits."""
        return self._job_id

    def wait(self, timeout_s: float | None = None) -> str:
        """Wait for the farm's answer; returns the job id.

        Raises:
            JobTimeoutError: no answer within ``timeout_s``.
            QrtError: the farm refused the job or could not store it (the error its
                synchronous submit would have raised).
        """
        if not self._done.is_set() and self._hurry is not None:
            self._hurry()
        if not self._done.wait(timeout_s):
            raise JobTimeoutError(
                f"a pipelined submit was not acknowledged within {timeout_s:g}s; "
                "the farm is slow or restarting: wait longer (accepted(timeout_s=None))"
            )
        if self._error is not None:
            # one error object answers a whole batch: each raise starts its own trace
            raise self._error.with_traceback(None)
        assert self._job_id is not None
        return self._job_id

    def accept(self, job_id: str) -> None:
        self._job_id = job_id
        self.spec = None  # answered: the handle need not keep the circuits
        self._done.set()

    def refuse(self, error: BaseException) -> None:
        self._error = error
        self.spec = None
        self._done.set()


class SubmitPipeline:
    """A bounded queue of jobs and the thread that sends them in batches.

    Args:
        send: stores a batch of specs in one call and returns their job ids in order
            (the runtime's scheduler ``submit``, riding out restarts); it raises the
            farm's error when it refuses the batch.
        send_max: jobs in one call (and ``SEND_MAX_BYTES`` of circuits; one job
            however large).
        queue_max: jobs queued or in flight before :meth:`put` waits (backpressure:
            a loop faster than the farm slows to its pace instead of growing memory);
            ``queue_max_bytes`` bounds their circuits the same way.
        wait_s: how long a batch waits out rate limits in all (each refusal's
            ``retry_after_s``, at least 0.05 s) before its handles raise the refusal.
    """

    def __init__(
        self,
        send: Callable[[Sequence[JobSpec]], list[str]],
        *,
        send_max: int = SEND_MAX,
        queue_max: int = QUEUE_MAX,
        queue_max_bytes: int = QUEUE_MAX_BYTES,
        wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send = send
        self._send_max = send_max
        self._queue_max = queue_max
        self._queue_max_bytes = queue_max_bytes
        self._wait_s = wait_s
        self._sleep = sleep
        self._cond = threading.Condition()
        self._queue: deque[Ack] = deque()
        self._in_flight = 0
        self._bytes = 0  # circuits queued or in flight
        self._put = 0  # jobs put so far
        self._last_put = 0.0  # monotonic time of the last put
        self._gathering = False  # the sender is gathering: a put need not wake it
        self._hurry = False  # someone waits for an answer: stop gathering
        self._answered = 0  # ... and answered (always in put order: a FIFO, one sender)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="qrt-submit", daemon=True)
        self._thread.start()
        # an interpreter exiting without shutdown() still sends what it queued
        atexit.register(self.close)

    def put(self, spec: JobSpec) -> Ack:
        """Queue one job (it must carry its idempotency key); waits while the queue is
        full.

        Raises:
            RuntimeNotRunningError: the pipeline was closed (the runtime shut down).
        """
        ack = Ack(spec, self.hurry)
        with self._cond:
            while not self._closed and self._full(ack.size):
                self._cond.wait()
            if self._closed:
                raise RuntimeNotRunningError(
                    "this runtime was shut down; nothing more can be submitted through it"
                )
            self._queue.append(ack)
            self._bytes += ack.size
            self._put += 1
            self._last_put = time.monotonic()
            if not self._gathering:  # a gathering sender looks again when it wakes
                self._cond.notify_all()
        return ack

    def hurry(self) -> None:
        """Send what is queued now, without gathering more (a caller waits for it)."""
        with self._cond:
            if self._queue:  # else the job waited for is in flight already
                self._hurry = True
                self._cond.notify_all()

    def _full(self, size: int) -> bool:
        jobs = len(self._queue) + self._in_flight
        if jobs == 0:
            return False  # a job larger than the byte bound still goes, alone
        return jobs >= self._queue_max or self._bytes + size > self._queue_max_bytes

    def pending(self) -> int:
        """Jobs queued or in flight, not yet answered."""
        with self._cond:
            return self._put - self._answered

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every job put before this call has its answer (jobs other
        threads put meanwhile are not waited for); returns False on timeout."""
        with self._cond:
            target = self._put
            self.hurry()  # the condition's lock is reentrant
            return self._cond.wait_for(lambda: self._answered >= target, timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Send what is queued, then stop the thread; later puts raise."""
        atexit.unregister(self.close)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    # -- the sending thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                self._gather()
                batch = [self._queue.popleft()]
                size = batch[0].size
                while (
                    self._queue
                    and len(batch) < self._send_max
                    and size + self._queue[0].size <= SEND_MAX_BYTES
                ):
                    size += self._queue[0].size
                    batch.append(self._queue.popleft())
                self._in_flight = len(batch)
            unreachable: BaseException | None = None
            try:
                unreachable = self._deliver(batch, [self._wait_s])
            except BaseException as exc:  # never leave a handle waiting forever
                logger.exception("pipelined submit of %d jobs failed", len(batch))
                for ack in batch:
                    if not ack.settled:
                        ack.refuse(exc)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._bytes -= size
                    self._answered += len(batch)
                    if unreachable is not None:
                        self._refuse_queued(unreachable)
                    self._cond.notify_all()

    def _gather(self) -> None:
        """Wait (holding the condition) while the caller is still putting jobs in:
        until none has come for ``GATHER_IDLE_S``, a call's worth has queued (jobs or
        bytes; nothing is in flight while it gathers), the pipeline closes, someone
        waits for an answer, or ``GATHER_MAX_S`` passed."""
        end = time.monotonic() + GATHER_MAX_S
        self._gathering = True
        try:
            while (
                not self._hurry
                and not self._closed
                and len(self._queue) < self._send_max
                and self._bytes < SEND_MAX_BYTES
            ):
                now = time.monotonic()
                left = min(self._last_put + GATHER_IDLE_S, end) - now
                if left <= 0:
                    break
                self._cond.wait(left)
        finally:
            self._gathering = False
            self._hurry = False

    def _refuse_queued(self, error: BaseException) -> None:
        """Answer every queued job with ``error`` (the farm stayed out of reach for the
        runtime's whole retry budget); call holding the condition."""
        for ack in self._queue:
            ack.refuse(error)
            self._bytes -= ack.size
        self._answered += len(self._queue)
        self._queue.clear()

    def _deliver(self, batch: list[Ack], budget: list[float]) -> BaseException | None:
        """Send one batch and settle every Ack in it, whatever happens; returns the
        error when the farm was out of reach (jobs queued behind get it too).

        ``budget`` holds the seconds the batch may still wait out rate limits, shared
        by its halves and its jobs: a farm that stays busy costs the batch at most
        ``wait_s``, not that a job.
        """
        while True:
            try:
                job_ids = self._send([a.spec for a in batch if a.spec is not None])
            except _NOT_JUDGED as exc:
                self._refuse_all(batch, exc)
                return exc if isinstance(exc, _UNREACHABLE) else None
            except QuotaExceededError as exc:
                pause = exc.retry_after_s
                pause = max(_MIN_PAUSE_S, pause if math.isfinite(pause) else _MIN_PAUSE_S)
                if budget[0] < pause:  # waited long enough for this batch: it stands
                    self._refuse_all(batch, exc)
                    return None
                if len(batch) > 1:
                    # a smaller call may fit at once (a burst smaller than the batch)
                    half = len(batch) // 2
                    for part in (batch[:half], batch[half:]):
                        out = self._deliver(part, budget)
                        if out is not None:
                            self._refuse_all(batch, out)
                            return out
                    return None
                budget[0] -= pause
                self._sleep(pause)  # a rate limit: the same job again after the wait
                continue
            except QrtError as exc:
                if len(batch) > 1:
                    # a refusal of one job (a device that could never run it, an
                    # invalid circuit) stores nothing: send them one at a time so the
                    # others go through and each error lands on its job (the
                    # idempotency keys make a job stored twice impossible)
                    for k, ack in enumerate(batch):
                        out = self._deliver([ack], budget)
                        if out is not None:
                            self._refuse_all(batch[k + 1 :], out)
                            return out
                    return None
                batch[0].refuse(exc)
                return None
            if len(job_ids) != len(batch):  # never expected: refuse, not misattribute
                error = RuntimeError(f"the farm answered {len(job_ids)} ids for {len(batch)} jobs")
                self._refuse_all(batch, error)
                return None
            for ack, job_id in zip(batch, job_ids, strict=True):
                ack.accept(job_id)
            return None

    @staticmethod
    def _refuse_all(batch: Sequence[Ack], error: BaseException) -> None:
        for ack in batch:
            if not ack.settled:
                ack.refuse(error)
