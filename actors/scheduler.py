"""The scheduler engine: gathers events, asks the job state machine, stores the moves
it decides, then carries out its instructions through the ports.

:class:`Scheduler` is a plain asyncio object; the Ray actor in
``actors/scheduler_actor.py`` is a thin shell around it, and unit tests drive it with
:class:`~qrt_ray.actors.ports.LocalPorts`. What each event does to a job is decided in
:mod:`qrt_ray.policies.jobflow`; admission checks are in
:mod:`~qrt_ray.actors.admission`, the view of the devices (snapshots, breakers,
watchdog) in :mod:`~qrt_ray.actors.device_view`, compiles in
:mod:`~qrt_ray.actors.compile_stage`. One control loop polls the devices, restarts hung
ones, expires deadlines and places waiting jobs; each step is wrapped so that one
failure is logged, counted and the loop goes on. Rule: a move is written to the store
before anything acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from qrt_ray import tracing
from qrt_ray.access.audit import AuditEntry
from qrt_ray.actors import collector
from qrt_ray.actors.admission import Admission, job_deadline, placement_options
from qrt_ray.actors.compile_stage import (
    FIRST_CHUNK,
    CompileStage,
    ToCompile,
    chunk_cap,
    compiled_work,
    work_item,
)
from qrt_ray.actors.device_view import DeviceView
from qrt_ray.actors.job_telemetry import JobTelemetry, span_attributes
from qrt_ray.actors.ports import SchedulerPorts
from qrt_ray.compiler import DEFAULT_OPTIMIZATION_LEVEL, CompiledCircuit
from qrt_ray.config import PolicyConfig, load_policy_config
from qrt_ray.errors import (
    DeviceUnavailableError,
    FarmBusyError,
    IntegrityError,
    JobNotFoundError,
    PlacementError,
    QrtError,
    StoreUnavailableError,
    ValidationError,
    brief,
)
from qrt_ray.intake.admit import InlineIntake, Intake
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.mitigation.twirling import copies_for
from qrt_ray.models import DeviceSnapshot, DeviceStatus, JobSpec, Placement
from qrt_ray.policies.billing import Prices, job_charges
from qrt_ray.policies.jobflow import (
    MAX_ATTEMPTS,
    BatchStarted,
    CancelRequested,
    Compile,
    Compiled,
    CompileFailed,
    CompileStale,
    DeadlinePassed,
    DeviceLost,
    Dispatch,
    Drop,
    Event,
    Finish,
    HandOffFailed,
    Instruction,
    JobMachine,
    Placed,
    PlacementRefused,
    Poisoned,
    Recovered,
    Requeue,
    ResultFailed,
    ResultStored,
    Retire,
    RunCounted,
    RunFailed,
    RunRejected,
    Start,
    Unrecoverable,
    WorkMoved,
)
from qrt_ray.policies.jobs import Expected, LiveJob
from qrt_ray.policies.placement import describe
from qrt_ray.policies.placer import DeviceLoad, JobShape, Placer
from qrt_ray.policies.quarantine import Quarantine, poison_error
from qrt_ray.policies.simtime import SimCost
from qrt_ray.reports import new_dispatch, verify_run, verify_start
from qrt_ray.results import RawRun, RunError, decode_run, encode_result, encode_run, shots_executed
from qrt_ray.store import JobRecord, JobStore, ShotRecord, StateUpdate
from qrt_ray.store.base import Charge, sha256_hex
from qrt_ray.store.retention import GcReport, collect_garbage
from qrt_ray.versions import software_versions

__all__ = ["FIRST_CHUNK", "MAX_ATTEMPTS", "PASS_BUDGET_S", "Scheduler", "chunk_cap"]

logger = logging.getLogger("qrt.scheduler")
S = JobState
EC = ErrorClass
# A job waiting for a fresh enough calibration looks for a device to ask at most this
# often (seconds).
_FRESH_CHECK_S = 5.0
# A placement pass stops taking jobs once it has spent this long placing (it keeps
# those placed so far), stores and compiles them, and the next pass places the rest at
# once: the first jobs of a large submission start compiling while the later ones are
# still being placed (each placement runs a layout search per new circuit).
PASS_BUDGET_S = 0.02
# circuits in one hand-off to a device at most (a device call runs up to 256)
_DISPATCH_CIRCUITS = 256
# how often an idle farm's devices are polled for their gauges (seconds)
_IDLE_POLL_S = 5.0
# how often the queue gauges are worked out from the live jobs (seconds)
_GAUGES_S = 1.0
# job ids whose first result fetch the scheduler remembers having stored
_FETCHED_KEPT = 100_000
# a busy farm asks for a retry after this many seconds, at least and at most
_BUSY_MIN_S, _BUSY_MAX_S = 1.0, 300.0
_UNHEARD_RETRY_S = 1.0  # a call judged before every device answered: ask again then


def _unheard_text(unheard: Sequence[str], names: Sequence[str]) -> str:
    """Which of the farm's devices have not answered its scheduler, briefly."""
    more = len(unheard) - 5
    shown = ", ".join(unheard[:5]) + (f" and {more} more" if more > 0 else "")
    return (
        f"{len(unheard)} of the farm's {len(names)} devices have not answered since the "
        f"scheduler started ({shown}: starting, or busy running)"
    )


def _too_old(snap: DeviceSnapshot, now: float, limit: float | None) -> DeviceSnapshot:
    """``snap`` as a job that accepts calibrations up to ``limit`` seconds old sees it:
    a device with an older calibration takes none of its work until recalibrated."""
    age = now - snap.calibration.taken_at
    if limit is None or age <= limit or snap.status is not DeviceStatus.ONLINE:
        return snap
    return replace(
        snap,
        status=DeviceStatus.CALIBRATING,
        status_reason=f"calibration {age:.0f} s old > max_calibration_age_s={limit:g}",
    )


def _with_held(snap: DeviceSnapshot, held: dict[str, int]) -> DeviceSnapshot:
    """``snap`` with its queue counting the jobs already placed on it that the device
    may not have yet: a full device takes no more (enqueueing past ``queue_limit`` is
    refused, and the refused jobs would come straight back)."""
    depth = held.get(snap.name, 0)
    return snap if depth <= snap.queue_depth else replace(snap, queue_depth=depth)


def _compile_outcomes(
    device: str, compiled: Mapping[str, Sequence[CompiledCircuit]], cal_id: str
) -> list[Event]:
    """Each job's compile outcome: Compiled, or CompileFailed naming its first circuit
    that does not compile for ``device``."""
    events: list[Event] = []
    for job_id, circuits in compiled.items():
        broken = next((i for i, c in enumerate(circuits) if c.error), None)
        if broken is not None:
            error = f"circuits[{broken}] does not compile for {device}: {circuits[broken].error}"
            events.append(CompileFailed(job_id, error))
        else:
            info = [c.info.model_dump() for c in circuits if c.info]
            events.append(Compiled(job_id, cal_id, info))
    return events


@dataclass(slots=True)
class Outcome:
    """What handling events did: the moves the store applied, and the instructions
    left for the caller (compile, dispatch, start)."""

    moved: list[StateUpdate] = field(default_factory=list)
    todo: list[Instruction] = field(default_factory=list)


class Scheduler:
    """Job admission, placement, compile, dispatch and completion over a job store."""

    def __init__(
        self,
        store: JobStore,
        ports: SchedulerPorts,
        *,
        optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL,
        seed_transpiler: int = 11,
        compile_chunk: int = 64,
        snapshot_interval_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        metrics: RuntimeMetrics | None = None,
        policy_config: PolicyConfig | None = None,
        intake: Intake | None = None,
        report_key: bytes | None = None,
    ) -> None:
        self.store = store
        # the farm's key: runs must be signed with it (None: runs are not checked, a
        # scheduler with devices of its own in one process)
        self._report_key = report_key
        self.ports = ports
        self.metrics = metrics or RuntimeMetrics()
        self._snap_interval = snapshot_interval_s
        self._clock = clock
        self._versions = software_versions()
        policies = policy_config or load_policy_config()
        self.placer = Placer(policies)
        # Circuits are parsed off the event loop (the actor plugs in a pool of parser
        # processes; the default parses in a thread).
        self.admission = Admission(
            policies.intake, self.placer, intake or InlineIntake(policies.intake)
        )
        self.view = DeviceView(policies.faults, policies.link, clock, self.metrics)
        self._started_at = clock()  # devices not heard from since count for a while
        self.telemetry = JobTelemetry(self.metrics)
        self._gauges_at = 0.0
        self.compiler = CompileStage(
            ports,
            self.placer,
            self.metrics,
            optimization_level=optimization_level,
            seed=seed_transpiler,
            chunk=compile_chunk,
        )
        self.machine = JobMachine(MAX_ATTEMPTS)
        self._jobs = self.machine.jobs
        # jobs whose simulator failed under them run alone; repeat offenders are
        # dead-lettered (policies/quarantine.py)
        self.quarantine = Quarantine(policies.faults.poison_after)
        # when a recalibration was last asked for each device (max_calibration_age_s)
        self._fresh_asked: dict[str, float] = {}
        self._pending: list[tuple[int, float, str]] = []
        self._deadlines: list[tuple[float, str]] = []
        self._done: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._inflight: set[asyncio.Task[Any]] = set()
        # the trust boundary plugs these in: the key that seals job.create records
        # into the audit chain, and what to tell once ledger lines have landed
        self.audit_key: bytes | None = None
        self._prices: dict[str, tuple[float, float]] = {}
        self.on_billed: Callable[[list[Charge]], Any] | None = None
        self.retention = policies.retention
        self._max_live = policies.scheduling.max_live_jobs
        # when the last jobs finished: the busy answer's retry estimate
        self._finished_at: deque[float] = deque(maxlen=1_000)
        self._gc_at = time.monotonic()  # the first collection waits an interval
        self._gc_task: asyncio.Task[GcReport] | None = None
        # results fetched lately: their first fetch is stored, the rest are not
        self._fetched: OrderedDict[str, None] = OrderedDict()
        # live jobs a store write failed for: read back and set going again once the
        # store answers (see _resync_step)
        self._resync: set[str] = set()
        # jobs an admission failed for: looked for in the store, and run if it has them
        self._unacked: set[str] = set()
        # a store write failed since the last sweep of the store's unfinished jobs
        self._store_trouble = False
        # jobs being admitted just now (in the store before they are tracked here)
        self._admitting: set[str] = set()
        # jobs a call is deciding on across awaits (a report being counted, moves
        # being stored): not rebuilt from the store meanwhile (see _deciding)
        self._deciding_on: Counter[str] = Counter()

    # == lifecycle of the scheduler itself ============================================

    async def start(self) -> int:
        """Recover unfinished jobs from the store and start the control loop.

        Returns:
            How many unfinished jobs were recovered.
        """
        self._started_at = self._clock()
        recovered = await self._recover()
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run_forever(), name="qrt-scheduler-loop")
        return recovered

    async def stop(self) -> None:
        """Stop the loop; durable state stays in the store for the next start."""
        # The flag, not only the cancel: on Python 3.11 asyncio.wait_for can swallow a
        # cancellation that lands as its inner wait completes, and the loop would go on
        # forever (seen as a rare hang of stop() in the recovery test).
        self._stopping = True
        self._wake.set()
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _run_forever(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.05)
            if self._stopping:
                return
            self._wake.clear()
            for name, step in (
                ("snapshots", self._refresh_snapshots),
                ("watchdog", self._watchdog),
                ("deadlines", self._expire),
                ("place", self._place_pending),
                ("gauges", self._gauges),
                ("retention", self._retention_step),
                ("resync", self._resync_step),
            ):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("scheduler step %s failed", name)
                    self.metrics.loop_errors.labels(step=name).inc()

    # == events in, moves stored, instructions carried out ============================

    async def _handle(
        self,
        events: Sequence[Event],
        *,
        stored: Mapping[str, JobRecord] | None = None,
        blobs: Sequence[bytes] = (),
    ) -> Outcome:
        """Ask the state machine about ``events``, store the moves it decides (with
        ``blobs``, in the same transaction), mirror those the store applied, then
        carry out their instructions.

        Requeues, drops, results and retirements are carried out here; compiles,
        dispatches and starts are returned for the caller, which holds what they need.
        """
        if not events:
            return Outcome()
        with self._deciding(e.job_id for e in events):
            decisions = self.machine.decide(events, self._clock(), stored)
            updates = [d.update for d in decisions if d.update is not None]
            # a job that ends in this call is billed for the runs it will then hold
            ending = {u.job_id for u in updates if u.to_state.is_final}
            after = (
                self.machine.projected([d for d in decisions if d.event.job_id in ending])
                if ending
                else {}
            )
            try:
                applied = await self._store(updates, blobs, after)
            except StoreUnavailableError:
                # none of these moves is mirrored nor carried out (a requeue without a
                # write included): each job is read back and set going again
                self._resync.update(e.job_id for e in events)
                raise
            instructions = self.machine.commit(decisions, applied)
        moved = [u for u, ok in zip(updates, applied, strict=True) if ok]
        return Outcome(moved, await self._perform(instructions))

    async def _store(
        self,
        updates: Sequence[StateUpdate],
        blobs: Sequence[bytes] = (),
        after: Mapping[str, LiveJob] | None = None,
    ) -> list[bool]:
        """Write moves durably (each a compare-and-set on its job's state), with
        ``blobs`` in the same transaction. ``after``: jobs as these moves leave them,
        for the bills of those that end."""
        if not updates:
            return []
        updates = [self._billed(u, after) for u in updates]
        # each job as it was before its move (a job can move twice in one batch)
        before = {u.job_id: r for u in updates if (r := self._record(u.job_id)) is not None}
        try:
            applied = await asyncio.to_thread(self.store.apply, updates, blobs)
        except Exception as exc:
            raise self._store_failed([u.job_id for u in updates], exc) from exc
        charges: list[Charge] = []
        for u, ok in zip(updates, applied, strict=True):
            if ok:
                self.metrics.transitions.labels(to_state=u.to_state.value).inc()
                rec = before.get(u.job_id)
                if rec is not None:
                    self.telemetry.moved(rec, u)
                    device = u.fields.get("device", rec.device)
                    before[u.job_id] = replace(rec, updated_at=u.at, device=device)
                charges.extend(u.charges)
        if charges and self.on_billed is not None:
            try:
                await self.on_billed(charges)
            except Exception:
                logger.exception("counting %d ledger lines failed", len(charges))
        return list(applied)

    def _store_failed(self, job_ids: Iterable[str], exc: Exception) -> StoreUnavailableError:
        """A write for these jobs failed (a full disk, an I/O error, a lost database
        connection): nothing of it is mirrored here, and what the store now holds is
        read back by :meth:`_resync_step`. Returns the error for the caller to raise
        (a device retries its report on it; a client sees it)."""
        if isinstance(exc, StoreUnavailableError):
            return exc
        self._resync.update(job_ids)
        self._store_trouble = True
        self.metrics.loop_errors.labels(step="store").inc()
        logger.warning("job store write failed (%s); will read the jobs back", brief(str(exc), 200))
        self._wake.set()
        return StoreUnavailableError(
            f"the job store refused a write ({type(exc).__name__}: {brief(str(exc), 200)}); "
            "nothing was acknowledged, retry shortly"
        )

    async def _resync_step(self) -> None:
        """Set going again the live jobs a store write failed for, once the store
        answers. Each goes the way a job recovered after a restart does (placed
        again for the shots it misses, or finished when every shot is in): the moves
        it missed (a requeue, a drop from a device) may have been what it waited on.
        Each is rebuilt from the store first: a failed write may have landed after
        all (a connection lost after its commit), and a ledger write may have landed
        when the move after it did not. A device's retried report of a job placed
        again meanwhile is refused as stale; its shots in the ledger count."""
        if not self._resync and not self._unacked and not self._store_trouble:
            return
        sweep = self._store_trouble
        self._store_trouble = False
        ids = [j for j in self._resync if j in self._jobs]
        # each live job as it was when read: one that moves while it is rebuilt (its
        # own path took it on) is left as it is, and looked at again next pass
        seen = {j: (self._jobs[j], self._jobs[j].state) for j in ids}
        unacked = [j for j in self._unacked if j not in self._jobs]
        # the jobs tracked before the sweep reads the store: one that finishes and
        # leaves while the read runs is still unfinished in what it returns, and
        # must not be taken up again from that stale row (it would wait forever)
        tracked = {job.job_id for job in self._jobs} if sweep else set()
        self._resync.clear()
        self._unacked.clear()
        try:
            stored = await asyncio.to_thread(lambda: {j: self.store.get(j) for j in ids})
            found = await asyncio.to_thread(self._stored_of, unacked)
            if sweep:
                # and every unfinished job the store holds that this scheduler does
                # not: whatever path a failed write cut short, no job is left behind
                found += [
                    r
                    for r in await asyncio.to_thread(self.store.unfinished)
                    if r.job_id not in self._jobs
                    and r.job_id not in tracked
                    and r.job_id not in unacked
                    and r.job_id not in self._admitting
                ]
        except Exception:
            self._resync.update(ids)
            self._unacked.update(unacked)
            self._store_trouble = self._store_trouble or sweep
            raise
        events: list[Event] = []
        for rec in found:
            if (event := await self._rebuild(rec)) is not None:
                events.append(event)
        for job_id, rec in stored.items():
            job = self._jobs.get(job_id)
            if job is None:
                continue
            # rebuilt from the store (its state, and its runs from the ledger: a ledger
            # write may have landed when the move after it did not)
            try:
                event = await self._rebuild(rec, replace=seen[job_id])
            except Exception:
                self._resync.add(job_id)  # the store is still not answering
                raise
            if event is not None:
                events.append(event)
        if events:
            logger.info("set %d jobs going again after a failed store write", len(events))
        await self._handle(events)

    def _stored_of(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The records the store holds of these jobs (those it has not are left out)."""
        out = []
        for job_id in job_ids:
            try:
                out.append(self.store.get(job_id))
            except JobNotFoundError:
                continue
        return out

    def prices(self) -> Prices:
        """(price per shot, price per job) of each device, as last seen (a device that
        stopped answering keeps its last prices: budgets still bound a job by them)."""
        for s in self.view.snapshots:
            self._prices[s.name] = (s.price_per_shot_usd, s.price_per_job_usd)
        return dict(self._prices)

    def _billed(self, u: StateUpdate, after: Mapping[str, LiveJob] | None = None) -> StateUpdate:
        """A move to a final state with the job's ledger lines, to land with it: for
        the runs the job holds once the call's moves land (``after``, where given)."""
        job = (after or {}).get(u.job_id) or self._jobs.get(u.job_id)
        if not u.to_state.is_final or job is None:
            return u
        spec = job.record.spec
        lines = job_charges(
            u.job_id, spec.tenant, len(spec.circuits), job.runs, self.prices(), u.at
        )
        return replace(u, charges=tuple(lines)) if lines else u

    async def ensure_snapshots(self) -> None:
        """Have every device's snapshot (and so its prices) before deciding on a job:
        right after a start no device has been asked yet."""
        if not self.view.snapshots:
            await self._refresh_snapshots(force=True)

    def live_specs(self, tenant: str) -> list[JobSpec]:
        """Specs of the tenant's jobs that are not final."""
        return [j.record.spec for j in self._jobs if j.record.tenant == tenant]

    async def _perform(self, instructions: Sequence[Instruction]) -> list[Instruction]:
        """Carry out the instructions this engine owns; returns the others in order."""
        rest: list[Instruction] = []
        drops: dict[str, dict[str, int | None]] = {}
        requeue: list[Requeue] = []
        finish: list[str] = []
        for i in instructions:
            match i:
                case Retire(record=rec):
                    self._retired(rec)
                case Requeue():
                    requeue.append(i)
                case Drop(job_id=job_id, device=device, attempt=attempt):
                    drops.setdefault(device, {})[job_id] = attempt
                case Finish(job_id=job_id):
                    finish.append(job_id)
                case _:
                    rest.append(i)
        for device, wanted in drops.items():
            exact = {j: a for j, a in wanted.items() if a is not None}
            whole = [j for j, a in wanted.items() if a is None]
            if exact:
                await self._safe_drop(device, list(exact), exact)
            if whole:
                await self._safe_drop(device, whole)
        for r in requeue:
            job = self._jobs.get(r.job_id)
            if job is None:
                continue
            if r.replaced_from:
                self.metrics.replacements.labels(device=r.replaced_from).inc()
            self._enqueue_pending(job.record)
        # a job finished in the call that moved it to POSTPROCESSING is not finished again
        finish = [j for j in finish if (job := self._jobs.get(j)) and job.state is S.POSTPROCESSING]
        if finish:
            await self._finish(finish)
        return rest

    def _retired(self, rec: JobRecord) -> None:
        self._finished_at.append(self._clock())
        self.quarantine.forget(rec.job_id)
        self.metrics.job_latency.labels(final_state=rec.state.value).observe(
            max(0.0, rec.updated_at - rec.created_at)
        )
        event = self._done.pop(rec.job_id, None)
        if event:
            event.set()

    def _record(self, job_id: str) -> JobRecord | None:
        """A live job's record as last stored (None: unknown here, or final)."""
        job = self._jobs.get(job_id)
        return job.record if job is not None else None

    def _enqueue_pending(self, rec: JobRecord) -> None:
        heapq.heappush(self._pending, (-rec.spec.priority, rec.created_at, rec.job_id))
        self.metrics.pending.set(len(self._pending))
        self._wake.set()

    def _track(self, rec: JobRecord, shape: JobShape | None = None, **kept: Any) -> None:
        self.machine.track(rec, shape, **kept)
        self._done.setdefault(rec.job_id, asyncio.Event())
        if rec.spec.max_execution_time_s:
            heapq.heappush(self._deadlines, (job_deadline(rec), rec.job_id))

    async def _safe_drop(
        self, device: str, job_ids: list[str], attempts: dict[str, int] | None = None
    ) -> list[str]:
        try:
            return await self.ports.drop(device, job_ids, attempts)
        except Exception:
            logger.warning("could not drop %s from %s", job_ids, device, exc_info=True)
            return []

    # == admission ====================================================================

    async def submit(
        self, specs: Sequence[JobSpec], actor: str = "operator"
    ) -> list[tuple[JobRecord, bool]]:
        """Validate, persist as QUEUED and schedule jobs; idempotency keys dedupe.

        All specs are validated before any is stored, so a bad one stores nothing.
        With an audit key, each job created is sealed into the audit chain as
        ``actor``'s, in the same transaction.

        Returns:
            For each spec, its job record and whether it was created now.

        Raises:
            ValidationError: a circuit does not parse, or an idempotency key was reused
                for a different request.
            PlacementError: no device in the farm could ever run one of the jobs.
        """
        called_at = self._clock()
        await self._refresh_snapshots(force=not self.view.snapshots)
        wheres = self.admission.check_count(specs)
        job_ids = [f"job-{uuid.uuid4().hex[:16]}" for _ in specs]
        devices = self.view.snapshots
        try:
            shapes = await self.admission.shapes(specs, wheres, job_ids, devices)
        except PlacementError as exc:
            raise self._judged_refusal(exc, [s.device for s in specs]) from None
        now = self._clock()
        records: list[JobRecord] = []
        known = 0  # specs whose idempotency key names a stored job: they add nothing
        keys = [(s.tenant, s.idempotency_key) for s in specs if s.idempotency_key]
        priors = await asyncio.to_thread(self.store.find_by_keys, keys) if keys else {}
        in_call: dict[tuple[str, str], tuple[str, JobSpec]] = {}  # a key's first use here
        for i, (spec, where, job_id, shape) in enumerate(
            zip(specs, wheres, job_ids, shapes, strict=True)
        ):
            try:
                self.admission.check_feasible(spec, shape, where, devices)
            except PlacementError as exc:
                raise self._judged_refusal(exc, [spec.device]) from None
            if spec.idempotency_key:
                key = (spec.tenant, spec.idempotency_key)
                prior = priors.get(key)
                if prior is not None and prior.spec != spec:
                    raise ValidationError(
                        f"{where}.idempotency_key={brief(spec.idempotency_key)!r} was already "
                        f"used for job {prior.job_id} with a different request; use a new key"
                    )
                earlier = in_call.setdefault(key, (where, spec))
                if earlier[1] != spec:  # twice in this call, for different requests
                    raise ValidationError(
                        f"{where}.idempotency_key={brief(spec.idempotency_key)!r} is also "
                        f"{earlier[0]}'s, a different request; use a new key"
                    )
                known += prior is not None or earlier[0] != where
            # a microsecond apart: listings (newest first) and the queue (oldest first
            # within a priority) keep the order of the call
            at = now + i * 1e-6
            records.append(JobRecord(job_id, S.QUEUED, spec, at, at))
        self._check_room(len(records) - known)
        audit = (actor, self.audit_key, now) if self.audit_key is not None else None
        admitting = {r.job_id for r in records}
        self._admitting |= admitting
        try:
            admitted = await asyncio.to_thread(self.store.admit, records, audit)
        except Exception as exc:
            # nothing is acknowledged; should the write have landed after all, the
            # jobs are found and run all the same (see _resync_step)
            self._unacked |= admitting
            raise self._store_failed((), exc) from exc
        finally:
            self._admitting -= admitting
        stored_at = self._clock()
        for (rec, created), shape in zip(admitted, shapes, strict=True):
            if not created:
                continue
            if tracing.enabled():
                attrs = span_attributes(rec)
                tracing.stage_span(rec.job_id, "submit", called_at, stored_at, attrs)
                tracing.stage_span(rec.job_id, "admission", called_at, now, attrs)
            self.metrics.jobs_submitted.labels(tenant=rec.tenant).inc()
            self.metrics.transitions.labels(to_state=S.QUEUED.value).inc()
            self._track(rec, shape)
            self._enqueue_pending(rec)
        return admitted

    def unheard(self) -> list[str]:
        """The farm's devices that have not answered a poll since this scheduler
        started (their actor is starting, or busy in a simulator call), for at most
        ``faults.silent_restart_s`` after the start: a device silent that long (say, one
        that needs a GPU no node has) is judged absent, as the watchdog would give up on
        one it knew."""
        if self._clock() - self._started_at >= self.view.faults.silent_restart_s:
            return []
        known = {s.name for s in self.view.snapshots}
        return [name for name in self.ports.device_names() if name not in known]

    def _judged_refusal(self, exc: PlacementError, pinned: Sequence[str | None]) -> QrtError:
        """``exc``, a refusal judged on the devices that answered; while some of the
        farm's devices have not answered yet, a busy answer instead: the job may fit a
        device the scheduler has not heard from. Jobs each pinned to a device that
        answered (``pinned``: each refused job's device) are judged on those alone:
        their refusal stands.

        A scheduler that has just started (or restarted) polls devices that may be
        building their noise model or running a batch; refusing then would tell a
        caller "no such device" or "the farm has no devices" about a farm that has them.
        """
        unheard = self._unjudged(pinned)
        if not unheard:
            return exc
        return FarmBusyError(
            f"the job cannot be judged yet: {_unheard_text(unheard, self.ports.device_names())}"
            f". Nothing was stored: retry after {_UNHEARD_RETRY_S:g} s",
            limit="devices_unheard",
            retry_after_s=_UNHEARD_RETRY_S,
        )

    def _unjudged(self, pinned: Sequence[str | None]) -> list[str]:
        """The devices not heard from yet that could change a refusal of jobs pinned
        to ``pinned`` (None: not pinned); empty when the refusal stands."""
        heard = {s.name for s in self.view.snapshots}
        if all(p is not None and p in heard for p in pinned):
            return []
        return self.unheard()

    def _check_room(self, new: int) -> None:
        """Refuse a call that would take the farm past ``max_live_jobs`` unfinished jobs,
        with how long until enough of them should have finished.

        Raises:
            FarmBusyError: the farm is full; the message says when to retry.
        """
        limit = self._max_live
        live = len(self._jobs)
        if live + new <= limit:
            return
        over = live + new - limit
        rate = self._finish_rate()
        wait = min(_BUSY_MAX_S, max(_BUSY_MIN_S, over / rate)) if rate > 0 else _BUSY_MAX_S / 10
        self.metrics.busy_refusals.inc()
        raise FarmBusyError(
            f"the farm is busy: it holds {live} unfinished jobs and takes at most {limit} "
            f"(scheduling.max_live_jobs); {new} more do not fit. Nothing was stored: "
            f"retry after {wait:.0f} s"
            + (f" (jobs finish at about {rate:.1f}/s)" if rate > 0 else ""),
            limit="max_live_jobs",
            retry_after_s=wait,
        )

    def _finish_rate(self) -> float:
        """Jobs finished per second lately (0 when too few finished to tell)."""
        ends = self._finished_at
        if len(ends) < 2:
            return 0.0
        span = max(self._clock() - ends[0], 1e-3)
        return len(ends) / span

    def _loads(self) -> dict[str, float]:
        """Expected seconds of work placed on each device and not yet finished."""
        backlog = {s.name: 0.0 for s in self.view.snapshots}
        for expected in self._jobs.expectations():
            backlog[expected.device] = backlog.get(expected.device, 0.0) + expected.run_s
        return backlog

    # == the control loop's steps =====================================================

    async def _gauges(self) -> None:
        """Queue gauges (M7) from the live jobs, at most once a second."""
        now = self._clock()
        if now - self._gauges_at < _GAUGES_S:
            return
        self._gauges_at = now
        self.telemetry.queues([j.record for j in self._jobs], now)

    async def _refresh_snapshots(self, force: bool = False) -> None:
        now = time.monotonic()
        # Placement needs fresh figures (every snapshot_interval_s); watching placed
        # work for a device that stops or recalibrates can look less often; an idle
        # farm is polled only to keep the device gauges (status, calibration age) live.
        interval = self._snap_interval if self._pending else max(1.0, self._snap_interval)
        busy = self._pending or self._jobs.any_expected()
        if not busy:
            interval = max(_IDLE_POLL_S, self._snap_interval)
        if not force and now - self.view.polled_at < interval:
            return
        found = self.view.observe(await self.ports.snapshots(), now)
        for name, reason in found.restarted.items():
            await self._take_back_from(name, reason)
        if found.changed:
            await self._replace_from(found.changed)

    async def _replace_from(self, changed: dict[str, str]) -> None:
        """Send work waiting on devices that stopped or recalibrated back to placement.

        PLACED jobs (compiled, waiting in the device queue) go back to QUEUED first, so
        the device refuses them at batch start if it takes them meanwhile; then their
        work leaves the device queue, and placement weighs every device again. RUNNING
        jobs with slices still queued on a device that stopped taking work, and no
        batch running there, go back too (placement waits for the device or reruns them
        whole elsewhere); a job whose batch is running finishes it first.
        """
        events: list[Event] = []
        for device in self.view.stopped(changed):
            busy = self.view.watch.in_flight(device)
            events += [
                WorkMoved(job.job_id, changed[device])
                for job in self._jobs.on_device(device, S.RUNNING)
                if job.job_id not in busy
            ]
        events += [
            WorkMoved(job.job_id, changed[device])
            for device in changed
            for job in self._jobs.on_device(device, S.PLACED)
        ]
        done = await self._handle(events)
        if done.moved:
            logger.info("re-placing %d jobs: %s", len(done.moved), "; ".join(changed.values()))

    async def _watchdog(self) -> None:
        """Restart devices the view gives up on (hung or silent); their jobs go back to
        placement first."""
        for g in self.view.give_up():
            logger.warning("%s; restarting it and placing its jobs again", g.reason)
            await self._take_back_from(g.device, g.reason)
            try:
                await self.ports.restart(g.device)
            except Exception:
                logger.exception("could not restart %s", g.device)

    async def _take_back_from(self, device: str, reason: str) -> None:
        """Send every job waiting or running on a lost device back to placement (it
        restarted, so its queue and running batch are gone, or was given up as hung)."""
        self.view.watch.forget(device)
        running = self._jobs.on_device(device, S.RUNNING)
        # whatever ran when the device went may have crashed it
        poisoned = self._crashed([j.job_id for j in running], f"{device}: {reason}")
        lost: list[Event] = [
            poisoned.get(job.job_id) or DeviceLost(job.job_id, reason)
            for job in self._jobs.on_device(device, S.PLACED, S.RUNNING)
        ]
        await self._handle(lost)
        if lost:
            logger.info("took %d jobs back from %s: %s", len(lost), device, reason)

    def _crashed(self, job_ids: Sequence[str], reason: str) -> dict[str, Poisoned]:
        """Note that the simulator failed under a batch of these jobs; the dead-letter
        event of each that is now poison."""
        alone = len(job_ids) == 1
        out = {}
        for job_id in job_ids:
            if self.quarantine.crashed(job_id, alone):
                failures = self.quarantine.failures_alone(job_id)
                out[job_id] = Poisoned(job_id, poison_error(job_id, failures, reason))
                logger.warning("job %s dead-lettered after %d failures alone", job_id, failures)
        return out

    async def _expire(self) -> None:
        now = self._clock()
        events: list[Event] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, job_id = heapq.heappop(self._deadlines)
            if job_id in self._jobs:
                events.append(DeadlinePassed(job_id))
        await self._handle(events)

    async def _place_pending(self) -> None:
        if not self._pending:
            return
        events: list[Event] = []
        waiting: list[tuple[int, float, str]] = []
        backlog = self._loads()
        held = self._held()
        seen: set[str] = set()
        started = time.perf_counter()
        while self._pending:
            if events and time.perf_counter() - started > PASS_BUDGET_S:
                self._wake.set()  # the next pass places the rest at once
                break
            entry = heapq.heappop(self._pending)
            rec = self._record(entry[2])
            if rec is None or rec.state is not S.QUEUED or rec.job_id in seen:
                continue  # final, placed meanwhile, or a second entry of one job
            seen.add(rec.job_id)
            placing_at = self._clock()
            try:
                placement, rerun = self._place(rec, backlog, held)
            except DeviceUnavailableError as exc:
                self._jobs[rec.job_id].waiting = str(exc)
                if rec.spec.max_calibration_age_s:
                    await self._ask_fresh(rec, backlog)
                waiting.append(entry)
                continue
            except PlacementError as exc:
                unheard = self._unjudged([rec.spec.device])
                if unheard:  # the job may fit a device not heard from yet: it waits
                    names = self.ports.device_names()
                    self._jobs[rec.job_id].waiting = f"waiting: {_unheard_text(unheard, names)}"
                    waiting.append(entry)
                    continue
                events.append(PlacementRefused(rec.job_id, str(exc)))
                continue
            if tracing.enabled():
                attrs = span_attributes(rec, placement.device)
                attrs["qrt.ranking"] = [f"{d}={score:.3f}" for d, score in placement.ranking]
                tracing.stage_span(rec.job_id, "placement", placing_at, self._clock(), attrs)
            held[placement.device] = held.get(placement.device, 0) + 1
            backlog[placement.device] = backlog.get(placement.device, 0.0) + placement.run_s
            events.append(
                Placed(
                    rec.job_id,
                    placement.device,
                    {
                        "device": placement.device,
                        "ranking": placement.ranking,
                        **placement.explanation,
                    },
                    Expected(placement.device, placement.run_s, placement.shot_duration_s),
                    rerun_whole=rerun,
                )
            )
        for entry in waiting:
            heapq.heappush(self._pending, entry)
        self.metrics.pending.set(len(self._pending))
        try:
            compiled_now, warm = await self._compile_warm(events)
        except Exception:  # a shortcut only: these jobs compile as any other
            logger.exception("compiling %d placed jobs from the cache failed", len(events))
            compiled_now, warm = [], {}
        done = await self._handle(events + compiled_now)
        # jobs whose every circuit was in the compile cache are PLACED already (their
        # placement and compile stored in one transaction): they go out together, and
        # the device runs them in one batch
        for device, groups in self._dispatch_groups(done.todo).items():
            for group in groups if device in warm else ():
                task = asyncio.create_task(self._dispatch(device, group, warm[device]))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        compiling = {e.job_id for e in compiled_now}
        # The rest compile in chunks of about `compile_chunk` circuits, each compiled
        # and dispatched on its own, so a device starts on the first chunk while later
        # ones still compile; a pass's first chunk per device is smaller (see
        # `chunk_cap`), so that start comes soon. Circuits already in the compile cache
        # count for nothing, so a chunk's warm jobs do not split it.
        chunks: dict[str, list[list[str]]] = {}
        sizes: dict[str, int] = {}  # per device: circuits to compile in its last chunk
        widths: dict[str, int] = {}  # ... and all its circuits
        calibrations = {s.name: s.calibration.calibration_id for s in self.view.snapshots}
        for i in done.todo:
            if not isinstance(i, Compile) or i.job_id in compiling:
                continue
            per_device = chunks.setdefault(i.device, [[]])
            full = sizes.get(i.device, 0) >= chunk_cap(len(per_device) - 1, self.compiler.chunk)
            if full or widths.get(i.device, 0) >= _DISPATCH_CIRCUITS:
                per_device.append([])
                sizes[i.device] = widths[i.device] = 0
            per_device[-1].append(i.job_id)
            job = ToCompile(i.job_id, self._jobs[i.job_id].record.spec, self._shape(i.job_id))
            cold = self.compiler.cold_circuits(job, i.device, calibrations.get(i.device, ""))
            sizes[i.device] = sizes.get(i.device, 0) + cold
            widths[i.device] = widths.get(i.device, 0) + len(job.spec.circuits)
        for device, groups in chunks.items():
            for job_ids in groups:
                task = asyncio.create_task(self._compile_and_dispatch(device, job_ids))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _ask_fresh(self, rec: JobRecord, backlog: dict[str, float]) -> None:
        """A job waits only because every device it could use has an older calibration
        than its ``max_calibration_age_s``: ask for the one placement would pick to be
        recalibrated (once per device per limit)."""
        limit = rec.spec.max_calibration_age_s or 0.0
        now = self._clock()
        # waiting jobs are tried every pass; the extra placement runs at most every
        # few seconds per job
        job = self._jobs[rec.job_id]
        checked = job.fresh_checked if job.fresh_checked is not None else -math.inf
        if now - checked < min(limit, _FRESH_CHECK_S):
            return
        job.fresh_checked = now
        runs = job.runs
        options = placement_options(rec.spec, device=runs[0].device if runs else None)
        loads = [DeviceLoad(s, backlog.get(s.name, 0.0)) for s in self.view.snapshots]
        try:
            device = self.placer.place(self._shape(rec.job_id), loads, options).device
        except (QrtError, ValueError):
            return  # it waits for something else too (busy, paused)
        snap = next(s for s in self.view.snapshots if s.name == device)
        if now - snap.calibration.taken_at <= limit:
            return
        if now - self._fresh_asked.get(device, -math.inf) < limit:
            return
        self._fresh_asked[device] = now
        reason = f"job {rec.job_id} needs a calibration at most {limit:g} s old"
        logger.info("asking for %s to be recalibrated: %s", device, reason)
        try:
            await self.ports.request_calibration(device, reason)
        except Exception:
            logger.warning("could not ask for %s to be recalibrated", device, exc_info=True)

    def _held(self) -> dict[str, int]:
        """Jobs placed on each device and not yet running (compiling, or in its queue):
        its queue's room is ``queue_limit`` less these, whatever its last snapshot says."""
        return self._jobs.count_by_device(S.COMPILING, S.PLACED)

    def _shape(self, job_id: str) -> JobShape:
        # every live job got its shape at admission or recovery, through the intake
        shape = self._jobs[job_id].shape
        assert shape is not None
        return shape

    def _place(
        self, rec: JobRecord, backlog: dict[str, float], held: dict[str, int] | None = None
    ) -> tuple[Placement, str | None]:
        """Where the job goes, and why its counted shots are dropped (None: they stay).

        Missing shots of a partial run go back to the device and calibration that ran
        the rest, so the job's shots all come from one calibration; when that device
        cannot take them (see :meth:`DeviceView.stranded`) or was recalibrated, the job
        is rerun whole.
        """
        runs = self._jobs[rec.job_id].runs
        rerun = None
        if runs and not rec.spec.device:
            rerun = self.view.stranded(runs[0].device)
            if rerun:
                runs = []
        pinned = runs[0].device if runs else rec.spec.device
        deadline = job_deadline(rec)
        now = self._clock()
        left = deadline - now if deadline < math.inf else None
        options = placement_options(rec.spec, device=pinned, deadline_s=left)
        limit = rec.spec.max_calibration_age_s
        held = held or {}
        loads = [
            DeviceLoad(_with_held(_too_old(s, now, limit), held), backlog.get(s.name, 0.0))
            for s in self.view.snapshots
        ]
        try:
            placement = self.placer.place(self._shape(rec.job_id), loads, options)
        except ValueError as exc:  # an unknown policy name in a stored spec
            raise PlacementError(str(exc)) from None
        if runs:
            snap = self.view.get(pinned or "")
            if snap is not None and snap.calibration.calibration_id != runs[0].calibration_id:
                rerun = f"{pinned} was recalibrated"
        if rerun:
            shots = sum(shots_executed(r) for r in self._jobs[rec.job_id].runs)
            logger.info(
                "job %s: %s; its %d shots so far are dropped, rerun whole", rec.job_id, rerun, shots
            )
        return placement, rerun

    # == compile and dispatch =========================================================

    async def _compile_warm(
        self, events: Sequence[Event]
    ) -> tuple[list[Event], dict[str, dict[str, list[CompiledCircuit]]]]:
        """Compile now the jobs of ``events`` placed with every circuit in the compile
        cache for their device's calibration: a lookup each, no compile task. Their
        compile outcomes follow their placements in one :meth:`_handle`, so the
        COMPILING and PLACED moves of a warm job are stored in one transaction, and
        it goes to its device without a store round of its own. Returns those
        outcome events and, per device, what its warm jobs compiled to; a job left
        out (a cold circuit, or a lookup that failed) compiles as usual."""
        warm: dict[str, tuple[DeviceSnapshot, list[ToCompile]]] = {}
        for e in events:
            snap = self.view.get(e.device) if isinstance(e, Placed) else None
            live = self._jobs.get(e.job_id)
            # a job cancelled while the pass awaited (a calibration asked for) is gone
            if snap is None or live is None or live.state is not S.QUEUED or live.shape is None:
                continue
            job = ToCompile(e.job_id, live.record.spec, live.shape)
            if not self.compiler.cold_circuits(job, snap.name, snap.calibration.calibration_id):
                warm.setdefault(snap.name, (snap, []))[1].append(job)
        outcomes: list[Event] = []
        compiled: dict[str, dict[str, list[CompiledCircuit]]] = {}
        for device, (snap, jobs) in warm.items():
            try:
                compiled[device], cal_id = await self.compiler.compile(snap, jobs)
            except Exception as exc:  # the compile tasks try them again
                logger.info("compile-cache lookup for %s failed: %s", device, exc)
                continue
            outcomes += _compile_outcomes(device, compiled[device], cal_id)
        return outcomes, compiled

    def _dispatch_groups(self, todo: Sequence[Instruction]) -> dict[str, list[list[Dispatch]]]:
        """``todo``'s dispatches by device, in hand-offs of at most
        ``_DISPATCH_CIRCUITS`` circuits."""
        groups: dict[str, list[list[Dispatch]]] = {}
        widths: dict[str, int] = {}
        for i in todo:
            if not isinstance(i, Dispatch):
                continue
            per_device = groups.setdefault(i.device, [[]])
            width = len(self._jobs[i.job_id].record.spec.circuits) if i.job_id in self._jobs else 0
            if per_device[-1] and widths.get(i.device, 0) + width > _DISPATCH_CIRCUITS:
                per_device.append([])
                widths[i.device] = 0
            per_device[-1].append(i)
            widths[i.device] = widths.get(i.device, 0) + width
        return groups

    async def _compile_and_dispatch(self, device: str, job_ids: list[str]) -> None:
        job_ids = [j for j in dict.fromkeys(job_ids) if j in self._jobs]  # once, if live
        snap = self.view.get(device)
        jobs = [ToCompile(j, self._jobs[j].record.spec, self._shape(j)) for j in job_ids]
        try:
            if snap is None:
                raise DeviceUnavailableError(f"{device} is no longer in the farm")
            compiled, cal_id = await self.compiler.compile(snap, jobs)
        except asyncio.CancelledError:
            raise
        except DeviceUnavailableError as exc:  # recalibrated during compile: place again
            await self._handle([CompileStale(j, str(exc)) for j in job_ids])
            return
        except Exception as exc:
            logger.exception("compile for %s failed", device)
            error = f"compile for {device} failed: {exc}"
            await self._handle([CompileFailed(j, error) for j in job_ids])
            return
        done = await self._handle(_compile_outcomes(device, compiled, cal_id))
        await self._dispatch(device, [i for i in done.todo if isinstance(i, Dispatch)], compiled)

    async def _dispatch(
        self,
        device: str,
        dispatch: Sequence[Dispatch],
        compiled: Mapping[str, Sequence[CompiledCircuit]],
    ) -> None:
        """Hand PLACED jobs' compiled work to the device's queue."""
        items = []
        snap = self.view.get(device)
        for i in dispatch:
            job = self._jobs.get(i.job_id)
            if job is not None:
                cal_id = job.record.calibration_id or ""
                # a job the farm already cut short and rerun whole runs unsliced now:
                # on a device recalibrating faster than a sliced job finishes, it
                # would otherwise be cut at every recalibration until out of attempts
                item = work_item(
                    job.record, job.runs, compiled[i.job_id], cal_id, whole=job.discarded_shots > 0
                )
                if self.quarantine.is_suspect(job.job_id):
                    item = replace(item, solo=True)
                prior = None
                if snap is not None:
                    prior = self._expect_compiled(job, snap, compiled[i.job_id], item.shots)
                if prior is not None:  # the queue slices by it: the prior, reproducible
                    item = replace(item, fixed_s=prior.fixed_s, shot_s=prior.per_shot_s)
                token = new_dispatch()
                job.dispatches.add(token)
                items.append(replace(item, dispatch=token))
        if not items:
            return
        try:
            await self.ports.enqueue(device, items)
        except DeviceUnavailableError as exc:
            # the device refused the hand-off or is restarting: nothing ran, so the
            # attempt is not spent, and placement sees it unavailable until it answers
            logger.info("device %s took none of %d jobs: %s", device, len(items), exc)
            self.view.mark_unreachable(device, str(exc))
            await self._handle(
                [HandOffFailed(i.job_id, i.attempt, f"{device}: {exc}", False) for i in items]
            )
        except QrtError as exc:
            logger.info("device %s refused %d jobs: %s", device, len(items), exc)
            await self._handle(
                [HandOffFailed(i.job_id, i.attempt, f"{device}: {exc}", True) for i in items]
            )

    def _expect_compiled(
        self, job: LiveJob, snap: DeviceSnapshot, circuits: Sequence[CompiledCircuit], shots: int
    ) -> SimCost | None:
        """Placement's run-time figure again, now from the compiled circuits (what the
        simulator will run): the watchdog and the devices' backlogs use it. Returns the
        prior it corrected (None: nothing to expect)."""
        if job.expected is None or job.expected.device != snap.name:
            return None
        works = [compiled_work(c) for c in circuits]
        if not works:
            return None
        spec = job.record.spec
        copies = copies_for(spec.twirling, shots) if spec.twirling is not None else 1
        prior = self.placer.sim_time.job_prior(
            works, shots, gpu=snap.gpu, threads=snap.threads, copies=copies
        )
        run_s = self.placer.sim_time.expected_s(snap.name, prior, shots)
        self._jobs.expect(job.job_id, replace(job.expected, run_s=run_s, prior=prior))
        return prior

    # == callbacks from devices =======================================================

    async def batch_started(
        self, device: str, attempts: Sequence[Sequence[Any]], signature: str = ""
    ) -> list[str]:
        """A device is about to run these (job, attempt, dispatch token)s; returns the
        job ids to run.

        RUNNING is stored first; work cancelled or moved meanwhile is not returned. A
        later slice of a job already RUNNING there (same attempt) runs on. With a farm
        key, the list must carry the device's signature and answer hand-offs this
        scheduler made (see :meth:`Device.claim`), or nothing starts.
        """
        attempts = self._start_authentic(device, attempts, signature)
        if not attempts:
            return []
        snap = self.view.get(device)
        taken_at = snap.calibration.taken_at if snap is not None else None
        done = await self._handle(
            [BatchStarted(entry[0], device, entry[1], taken_at) for entry in attempts]
        )
        started = [i.job_id for i in done.todo if isinstance(i, Start)]
        expected = sum(
            job.expected.run_s
            for job in map(self._jobs.get, started)
            if job is not None and job.expected is not None
        )
        self.view.watch.started(device, started, expected, self._clock())
        return started

    def batch_progress(self, device: str) -> None:
        """A device finished a simulator call of its running batch: the hung-batch
        clock of its batches restarts (slow work is not a hung device)."""
        self.view.watch.progress(device, self._clock())

    async def batch_finished(self, device: str, runs: Sequence[RawRun]) -> None:
        """A device finished runs: judge each, count good shots once in the ledger,
        then let the state machine complete, requeue or fail each job."""
        with self._deciding(r.job_id for r in runs):
            await self._take_in(device, runs)

    async def _take_in(self, device: str, runs: Sequence[RawRun]) -> None:
        """:meth:`batch_finished`'s work, with its jobs marked as decided on."""
        # a job whose max_execution_time_s ran out while the loop was busy elsewhere
        # fails now, before a late run could complete it
        await self._expire()
        now = self._clock()
        known = self.view.get(device)
        if known and any(r.calibration_id != known.calibration.calibration_id for r in runs):
            self.view.look_again()  # the device recalibrated: look again first
        self.view.link_outcome(device, runs, now)
        events: list[Event] = []
        accepted: list[tuple[RawRun, collector.Verdict]] = []
        crashed = [
            r.job_id
            for r in runs
            if r.error_kind is RunError.SIMULATOR
            and (j := self._jobs.get(r.job_id)) is not None
            and j.state is S.RUNNING
            and j.record.attempts == r.attempt
        ]
        poisoned = self._crashed(crashed, f"{device}: {runs[0].error}") if crashed else {}
        for run in runs:
            if run.job_id in poisoned:
                events.append(poisoned[run.job_id])
                continue
            job = self._jobs.get(run.job_id)
            if not self._authentic(device, run, job):
                continue
            if job is None or job.state is not S.RUNNING or job.record.attempts != run.attempt:
                continue  # cancelled, expired, or a stale delivery: never counted
            slices_left = run.remaining > 0
            if run.error_kind is RunError.PERMANENT:
                error = run.error or "permanent device error"
                events.append(RunFailed(run.job_id, run.attempt, error, slices_left))
                continue
            verdict = collector.judge_run(run, job.record.spec.shots, job.runs)
            if verdict.accepted:
                accepted.append((run, verdict))
                continue
            if verdict.cause is collector.Cause.CHECKSUM:
                self.metrics.integrity_failures.labels(device=device).inc()
            # refused as compiled for a calibration the device has left: the scheduler
            # compiled from a target it kept for the calibration it last saw, so this
            # is its own lag, not a failure of the job, and costs no attempt
            free = run.error_kind is RunError.CALIBRATION
            kind = EC.INTEGRITY if verdict.cause is collector.Cause.CHECKSUM else EC.DEVICE
            events.append(
                RunRejected(run.job_id, run.attempt, verdict.reason, free, slices_left, kind)
            )
        for run, verdict in await self._count_shots(accepted, now):
            job = self._jobs.get(run.job_id)
            if job is None:
                continue  # cancelled or expired while its shots were counted
            prior = job.expected.prior if job.expected is not None else None
            if prior is not None and run.run_s > 0:
                self.placer.sim_time.observe(
                    device, prior.method, prior.seconds(shots_executed(run)), run.run_s
                )
            self.metrics.shots.labels(device=device).inc(shots_executed(run) * len(run.counts))
            partial = verdict.outcome is collector.Outcome.PARTIAL
            waits = partial and run.remaining > 0 and self.view.runs_work(device)
            reason = verdict.reason
            if waits:
                self.metrics.slices.labels(device=device).inc()
            elif partial:
                self.metrics.partial_runs.labels(device=device).inc()
                if run.remaining > 0:
                    reason = f"{reason}: {self.view.paused_why(device)} before the rest ran"
            events.append(RunCounted(run.job_id, run, not partial, waits, reason))
        await self._settle(events)
        # only now: a report the store refused keeps its batch in the hung-batch
        # watchdog's view until the device's retry lands (or the device is restarted)
        self.view.watch.finished(device, [run.job_id for run in runs])

    def _start_authentic(
        self, device: str, attempts: Sequence[Sequence[Any]], signature: str
    ) -> list[Sequence[Any]]:
        """The entries of a batch start that come from ``device`` for work dispatched
        to it (see :meth:`_authentic`). A start not signed by the device is refused
        whole. One entry answering a hand-off this scheduler no longer holds (made by
        a scheduler before a restart, or before the job was handed off again) is
        refused alone: the rest of the batch, and the job's current hand-off still in
        the device's queue, run on. Each refusal is counted and logged."""
        if self._report_key is None:
            return list(attempts)
        entries = [(str(e[0]), int(e[1]), str(e[2]) if len(e) > 2 else "") for e in attempts]
        if not verify_start(self._report_key, device, entries, signature):
            self._refused(device, "signature", "a batch start")
            return []
        kept: list[Sequence[Any]] = []
        for entry, (job_id, _, token) in zip(attempts, entries, strict=True):
            job = self._jobs.get(job_id)
            if job is not None and job.dispatches and token not in job.dispatches:
                self._refused(device, "dispatch", f"a batch start of job {job_id}")
            else:
                kept.append(entry)
        return kept

    def _authentic(self, device: str, run: RawRun, job: LiveJob | None) -> bool:
        """Whether ``run`` comes from a device the work was dispatched to: signed with
        the farm's key, for this device, answering a hand-off this scheduler made (a
        job recovered after a restart has no hand-offs in memory: the signature
        alone). A refused run is counted and logged, and changes nothing."""
        if self._report_key is None:
            return True
        reason = None
        if run.device != device or not verify_run(self._report_key, run):
            reason = "signature"
        elif job is not None and job.dispatches and run.dispatch not in job.dispatches:
            reason = "dispatch"
        return reason is None or self._refused(device, reason, f"a run of job {run.job_id}")

    def _refused(self, device: str, reason: str, what: str) -> bool:
        """Count, log and audit a report that is not ``device``'s; returns False."""
        self.metrics.forged_reports.labels(device=device, reason=reason).inc()
        logger.warning(
            "refused %s said to come from %s: its %s does not check out", what, device, reason
        )
        if self.audit_key is not None:
            entry = AuditEntry(
                f"device:{device}", "report.refused", "", what[:120], "refused", {"reason": reason}
            )
            task = asyncio.create_task(
                asyncio.to_thread(self.store.audited, None, [entry], self.audit_key, self._clock())
            )
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return False

    async def _settle(self, events: Sequence[Event]) -> None:
        """The moves a delivery causes, once its good shots are in the ledger (a crash
        before this leaves jobs RUNNING with shots counted; recovery finishes them).

        A run that completes its job finishes it here: the result is built from the
        job as its moves will leave it, and lands with the moves to POSTPROCESSING
        and DONE in one transaction (one store round where there were three). The
        decisions are looked at first, and made again in :meth:`_handle` with no
        await between: nothing can move these jobs in between."""
        preview = self.machine.decide(events, self._clock())
        ending = {
            d.event.job_id
            for d in preview
            if d.update is not None and d.update.to_state is S.POSTPROCESSING
        }
        if not ending:
            await self._handle(events)
            return
        after = self.machine.projected([d for d in preview if d.event.job_id in ending])
        blobs, outcomes = self._results(list(after.values()))
        await self._handle([*events, *outcomes], blobs=blobs)

    async def _count_shots(
        self, accepted: list[tuple[RawRun, collector.Verdict]], now: float
    ) -> list[tuple[RawRun, collector.Verdict]]:
        if not accepted:
            return []
        blobs = [encode_run(run) for run, _ in accepted]
        digests = [sha256_hex(b) for b in blobs]
        ledger = [
            ShotRecord(
                run.job_id,
                run.attempt,
                run.calibration_id,
                shots_executed(run),
                now,
                d,
                run.first_shot,
            )
            for (run, _), d in zip(accepted, digests, strict=True)
        ]
        try:
            # each run's counts land with its ledger line, in one transaction
            fresh = await asyncio.to_thread(self.store.record_shots, ledger, blobs)
        except Exception as exc:
            raise self._store_failed((), exc) from exc  # the device reports again
        # A run already in the ledger is counted once there; it still moves its job
        # when this scheduler has not taken it in yet (the device's report is a retry
        # of one whose ledger write landed and whose move did not).
        return [
            pair
            for pair, new in zip(accepted, fresh, strict=True)
            if new or not ((job := self._jobs.get(pair[0].job_id)) and job.holds_run(pair[0]))
        ]

    async def _finish(self, job_ids: Sequence[str]) -> None:
        """Build and store the results of POSTPROCESSING jobs from their counted runs
        (a job recovered, or read back, in POSTPROCESSING): each result lands with its
        job's move to DONE, in one transaction."""
        blobs, events = self._results([j for j in map(self._jobs.get, job_ids) if j is not None])
        await self._handle(events, blobs=blobs)

    def _results(self, jobs: Sequence[LiveJob]) -> tuple[list[bytes], list[Event]]:
        """Each job's result, built from its counted runs and encoded: the results to
        store, and for each job ResultStored (naming its result) or ResultFailed."""
        blobs: list[bytes] = []
        events: list[Event] = []
        for job in jobs:
            try:
                result = collector.finish(
                    job.job_id,
                    job.runs,
                    _compile_info(job.record),
                    self._versions,
                    job.record.spec.shots,
                    job.discarded_shots,
                )
                blob = encode_result(result)
            except QrtError as exc:
                events.append(ResultFailed(job.job_id, str(exc)))
                continue
            except Exception as exc:  # a defect fails its job, not the whole delivery
                logger.exception("building the result of job %s failed", job.job_id)
                error = f"building the result failed ({type(exc).__name__}): {brief(str(exc), 200)}"
                events.append(ResultFailed(job.job_id, error))
                continue
            blobs.append(blob)
            events.append(ResultStored(job.job_id, sha256_hex(blob)))
        return blobs, events

    # == recovery =====================================================================

    async def _recover(self) -> int:
        """Rebuild live jobs from the store; one unreadable job fails, the rest go on.

        A row that no longer decodes, a stored run that fails its checksum, or
        circuits the intake gate now refuses fail that job with the reason instead of
        stopping the farm from starting. What each recovered job does next (placed
        again, finished from the ledger) is the state machine's call.
        """
        records = await asyncio.to_thread(self.store.unfinished)
        unreadable = await asyncio.to_thread(self.store.unreadable)
        now = self._clock()
        broken = [
            d
            for job_id, state, why in unreadable
            if (d := self.machine.unreadable(job_id, state, why, now)) is not None
        ]
        failed: list[Event] = []
        stored: dict[str, JobRecord] = {}
        recovered: list[Event] = []
        for rec in records:
            if rec.job_id in self._jobs:
                continue  # admitted by this scheduler already: nothing to rebuild
            event = await self._rebuild(rec)
            if event is None:
                continue
            if isinstance(event, Unrecoverable):
                failed.append(event)
                stored[rec.job_id] = rec
            else:
                recovered.append(event)
        self.machine.commit(broken, await self._store([d.update for d in broken if d.update]))
        try:
            await self._handle(failed, stored=stored)
            await self._handle(recovered)
        except StoreUnavailableError:
            # the store refuses writes just now: the scheduler starts all the same, and
            # its loop sets these jobs going once the store answers (_resync_step)
            logger.warning("recovered jobs wait for the job store to take writes again")
        if records or unreadable:
            lost = len(broken) + len(failed)
            logger.info(
                "recovered %d unfinished jobs (%d failed: unreadable)",
                len(records) + len(unreadable) - lost,
                lost,
            )
        return len(records) + len(unreadable)

    async def _rebuild(
        self, rec: JobRecord, replace: tuple[LiveJob, JobState] | None = None
    ) -> Event | None:
        """Track a job again as the store holds it, with the runs that still count;
        returns the event that sets it going (or fails it, when it cannot be read).
        A final one is only retired (None).

        ``replace``: the live job of that id and its state when ``rec`` was read; it
        is replaced once the runs are read, unless it moved meanwhile (then it is
        looked at again on the next pass, and None is returned)."""
        if replace is not None and not self._unmoved(rec.job_id, replace):
            return None
        if rec.state.is_final:
            if replace is not None:
                self._jobs.remove(rec.job_id)
            self._retired(rec)
            return None
        try:
            runs, runs_from, discarded = await self._recover_runs(rec)
            devices = self.view.snapshots
            shape = (await self.admission.shapes([rec.spec], ["job"], [rec.job_id], devices))[0]
        except PlacementError as exc:
            if replace is not None and self.unheard():  # wider than those heard so far
                logger.info("job %s waits for every device to answer: %s", rec.job_id, exc)
                return None  # its current picture stays; the next pass looks again
            logger.error("job %s cannot be recovered: %s", rec.job_id, exc)
            return Unrecoverable(rec.job_id, str(exc))
        except (QrtError, ValueError, KeyError, TypeError) as exc:
            logger.error("job %s cannot be recovered: %s", rec.job_id, exc)
            return Unrecoverable(rec.job_id, str(exc))
        if replace is not None:
            if not self._unmoved(rec.job_id, replace):
                return None
            self._jobs.remove(rec.job_id)
        self._track(rec, shape, runs=runs, runs_from=runs_from, discarded_shots=discarded)
        return Recovered(rec.job_id)

    @contextlib.contextmanager
    def _deciding(self, job_ids: Iterable[str]) -> Iterator[None]:
        """Mark jobs a call decides on across awaits. A job read back after a failed
        write is not rebuilt meanwhile: the call's decision, made on the job as it
        was, would land on the rebuilt one (and take in a run the rebuilt job already
        holds from the ledger, billing its shots twice)."""
        ids = list(job_ids)
        self._deciding_on.update(ids)
        try:
            yield
        finally:
            self._deciding_on.subtract(ids)
            for job_id in ids:
                if self._deciding_on[job_id] <= 0:
                    del self._deciding_on[job_id]

    def _unmoved(self, job_id: str, was: tuple[LiveJob, JobState]) -> bool:
        """Whether the live job is still the one seen, in the state seen, and no call
        is deciding on it; if not, it is looked at again on the next pass."""
        job, state = was
        if self._jobs.get(job_id) is job and job.state is state and job_id not in self._deciding_on:
            return True
        self._resync.add(job_id)
        return False

    async def _recover_runs(self, rec: JobRecord) -> tuple[list[RawRun], int | None, int]:
        """The runs of a recovered job that still count, each verified and decoded, with
        the first attempt whose runs count and the shots discarded (if it was rerun whole).

        Raises:
            IntegrityError: a stored run is missing or fails its checksum.
            ValueError: a stored run does not decode.
        """
        ledger = await asyncio.to_thread(self.store.shot_ledger, rec.job_id)
        note = _recovery_note(rec)
        runs_from, discarded = None, 0
        if "runs_from_attempt" in note:
            runs_from = int(note["runs_from_attempt"])
            discarded = int(note.get("discarded_shots", 0))
        # runs dropped when the job was rerun whole never count again
        first = runs_from or 0
        counted = [r for r in ledger if r.attempt >= first and r.run_sha256]
        kept = [
            counted[i]
            for i in collector.tiling([(r.first_shot, r.shots, r.attempt) for r in counted])
        ]

        def read() -> list[RawRun]:
            runs = []
            for r in kept:
                try:
                    runs.append(decode_run(self.store.get_blob(r.run_sha256)))
                except IntegrityError as exc:
                    raise IntegrityError(f"a stored run of this job is unreadable: {exc}") from None
            return runs

        return await asyncio.to_thread(read), runs_from, discarded

    # == queries and control ==========================================================

    def waiting(self, job_id: str) -> str | None:
        """Why a job waits: for a QUEUED one, why placement could not place it (as it
        last found); for one placed and not running yet, its place on the device and
        when it is expected to start. None: it does not wait (or placement has not
        tried it yet)."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.state is S.QUEUED:
            return job.waiting
        if job.state not in (S.COMPILING, S.PLACED) or job.device is None:
            return None
        ahead = [
            other
            for other in self._jobs.on_device(job.device, S.COMPILING, S.PLACED, S.RUNNING)
            if other.state is S.RUNNING or other.seq < job.seq
        ]
        work = sum(o.expected.run_s for o in ahead if o.expected is not None)
        running = self.view.watch.running_for(job.device, self._clock()) or 0.0
        start = max(0.0, work - running)
        return (
            f"on {job.device}: {len(ahead)} job(s) placed ahead of it or running; "
            f"expected to start in about {start:.1f} s"
        )

    async def get(self, job_id: str) -> JobRecord:
        """The job's current record (live jobs from memory, others from the store)."""
        rec = self._record(job_id)
        return rec if rec is not None else await asyncio.to_thread(self.store.get, job_id)

    async def wait(self, job_ids: Sequence[str], timeout_s: float | None) -> dict[str, JobState]:
        """Wait until every job is final or the timeout passes; returns their states."""
        events = [self._done[j] for j in job_ids if j in self._jobs and j in self._done]
        if events:
            waiter = asyncio.gather(*(e.wait() for e in events))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=timeout_s)
        return await self._states(job_ids)

    async def _states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Each job's state: live ones from memory, the rest in one store read.

        Raises:
            JobNotFoundError: a job id is unknown (or purged: the message says so).
        """
        states = {j: rec.state for j in job_ids if (rec := self._record(j)) is not None}
        rest = [j for j in job_ids if j not in states]
        if rest:
            stored = await asyncio.to_thread(self.store.result_refs, rest)
            for j in rest:
                if j not in stored:
                    await self.get(j)  # raises JobNotFoundError, saying if it was purged
                    raise JobNotFoundError(f"job_id={brief(j)!r}: no such job")
                states[j] = stored[j][0]
        return {j: states[j] for j in job_ids}

    async def list_jobs(
        self, states: Sequence[JobState] | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Jobs newest first, from the store, with live jobs as they are in memory now."""
        wanted = list(states) if states else None
        recs = await asyncio.to_thread(
            self.store.list_jobs, states=wanted, tenant=tenant, limit=limit
        )
        return [self._record(r.job_id) or r for r in recs]

    async def _retention_step(self) -> None:
        """Every ``retention.interval_s``, remove finished jobs past their window, in a
        thread beside the loop (see :mod:`qrt_ray.store.retention`)."""
        cfg = self.retention
        if not cfg.enabled or (self._gc_task is not None and not self._gc_task.done()):
            return
        if time.monotonic() - self._gc_at < cfg.interval_s:
            return
        self._gc_at = time.monotonic()

        def run() -> GcReport:
            report = collect_garbage(
                self.store,
                keep_fetched_s=cfg.keep_fetched_s,
                keep_unfetched_s=cfg.keep_unfetched_s,
                batch=cfg.batch,
                keep_tombstones_s=cfg.keep_tombstones_s,
                now=self._clock(),
            )
            if report.jobs or report.canaries:
                logger.info("retention: %s", report.as_dict())
            return report

        task = asyncio.create_task(asyncio.to_thread(run), name="qrt-retention")
        self._gc_task = task
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(_log_failure)

    async def mark_fetched(self, job_ids: Sequence[str]) -> None:
        """Record the first fetch of results a client read ahead and has now handed to
        its caller (their retention window starts); a failed write is logged, not
        raised (they are kept longer, and marked at a later fetch)."""
        first = [j for j in dict.fromkeys(job_ids) if j not in self._fetched]
        if not first:
            return
        try:
            await asyncio.to_thread(self.store.mark_fetched, first, self._clock())
        except Exception as exc:
            logger.warning("could not mark %d results fetched: %s", len(first), exc)
            return
        self._remember_fetched(first)

    def _remember_fetched(self, job_ids: Sequence[str]) -> None:
        """Note results whose first fetch is stored (the oldest forgotten past a bound)."""
        for j in job_ids:
            self._fetched[j] = None
        while len(self._fetched) > _FETCHED_KEPT:
            self._fetched.popitem(last=False)

    async def done_now(self, job_ids: Sequence[str], max_bytes: int) -> list[str]:
        """Those of ``job_ids`` that are DONE now, in order, while their results add up
        to at most ``max_bytes`` (unknown ids are left out); one store read."""
        sizes = await asyncio.to_thread(self.store.result_sizes, job_ids) if job_ids else {}
        out, total = [], 0
        for j in job_ids:
            size = sizes.get(j)
            if size is None:
                continue
            if total + size > max_bytes:
                break
            out.append(j)
            total += size
        return out

    async def result_blobs(
        self, job_ids: Sequence[str], *, mark: bool = True, also_fetched: Sequence[str] = ()
    ) -> list[tuple[str, bytes]]:
        """(sha256, bytes) of DONE jobs' results, in order, verified against their checksums.

        One call for many jobs: fetching 500 results one call at a time cost the client
        about half a second. ``also_fetched``: results read ahead earlier and handed
        out since, marked fetched in the same write as these (``mark``: these too).

        Raises:
            IntegrityError: a stored result is corrupt.
            JobNotFoundError: a job id is unknown.
            ValidationError: a job is not DONE.
        """
        live = {j: self._jobs[j].record for j in job_ids if j in self._jobs}

        def read() -> tuple[list[tuple[str, bytes]], bool]:
            # two reads for the lot (states, then blobs), not two a job
            stored = self.store.result_refs([j for j in job_ids if j not in live])
            shas = []
            for job_id in job_ids:
                rec = live.get(job_id)
                if rec is not None:
                    state, sha = rec.state, rec.result_sha256
                elif job_id in stored:
                    state, sha = stored[job_id]
                else:
                    self.store.get(job_id)  # raises JobNotFoundError, saying if purged
                    raise JobNotFoundError(f"job_id={brief(job_id)!r}: no such job")
                if state is not S.DONE or sha is None:
                    raise ValidationError(f"job {job_id} is {state.value}, not DONE; no result yet")
                shas.append(sha)
            out = list(zip(shas, self.store.get_blobs(shas), strict=True))
            if not first:
                return out, True
            try:  # the retention window of a fetched result starts to count
                self.store.mark_fetched(first, self._clock())
            except Exception as exc:
                # the results are served all the same; unmarked, they are kept longer
                # (retention counts from a first fetch), and the next fetch marks them
                logger.warning("could not mark %d results fetched: %s", len(first), exc)
                return out, False
            return out, True

        # which fetches are first ones is decided here, on the loop, not in the thread;
        # a read-ahead (``mark=False``) is no fetch: nobody asked for these yet, so
        # their results keep the longer window of unfetched ones
        asked = [*job_ids, *also_fetched] if mark else list(also_fetched)
        first = [j for j in dict.fromkeys(asked) if j not in self._fetched]
        out, marked = await asyncio.to_thread(read)
        if marked:
            self._remember_fetched(first)
        return out

    async def cancel(self, job_id: str) -> tuple[JobState, bool]:
        """Cancel a job that has not finished; returns (state now, whether it changed).

        The cancel is a compare-and-set on the state it read; when the job moved on
        meanwhile (placed, compiled, started), it reads the new state and tries again.
        """
        while True:
            rec = await self.get(job_id)
            if rec.state.is_final:
                return rec.state, False
            stored = None if job_id in self._jobs else {job_id: rec}
            done = await self._handle([CancelRequested(job_id)], stored=stored)
            if done.moved:
                return (await self.get(job_id)).state, True
            await self._read_back(job_id)

    async def _read_back(self, job_id: str) -> None:
        """A move of a live job was refused: if the store holds another state than
        this scheduler (a write that failed after its commit), rebuild the job from
        the store now rather than on a later loop pass. A caller that tries again at
        once (a cancel) would otherwise keep deciding on the stale job."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        was = (job, job.state)
        rec = await asyncio.to_thread(self.store.get, job_id)
        if rec.state is job.state:
            return  # it moved along its own path meanwhile: try again on it
        event = await self._rebuild(rec, replace=was)
        if event is not None:
            await self._handle([event])

    async def estimate(self, spec: JobSpec) -> list[dict[str, Any]]:
        """Per fitting device: estimated fidelity, cost, wait and run time; runs nothing.

        Ordered as the job's composite weights would rank them. Devices that are busy
        or paused are listed too (``accepting`` says which take work now).

        Raises:
            ValidationError: a circuit does not parse, or the options are invalid.
            PlacementError: no device could ever run the job.
        """
        await self._refresh_snapshots(force=True)
        devices = self.view.snapshots
        backlog = self._loads()
        loads = [DeviceLoad(s, backlog.get(s.name, 0.0)) for s in devices]
        try:
            shape = (await self.admission.shapes([spec], ["job"], ["estimate"], devices))[0]
            try:
                cands = self.placer.estimate(shape, loads, placement_options(spec))
            except ValueError as exc:
                raise ValidationError(f"job: {exc}") from None
        except PlacementError as exc:
            raise self._judged_refusal(exc, [spec.device]) from None
        return [{**describe(c), "accepting": c.accepting, "status": c.status} for c in cands]

    async def devices(self) -> list[DeviceSnapshot]:
        """Fresh snapshots of every device, with what the scheduler knows beside them:
        the batch running there (a device busy in a simulator call may not answer, and
        its last answer predates the batch) and the jobs placed on it and not yet in
        its queue."""
        await self._refresh_snapshots(force=True)
        now = self._clock()
        held = self._held()
        watch = self.view.watch
        return [
            replace(
                _with_held(s, held),
                running_jobs=len(watch.in_flight(s.name)),
                running_s=watch.running_for(s.name, now),
            )
            for s in self.view.snapshots
        ]

    def live_count(self) -> int:
        """Jobs not yet final."""
        return len(self._jobs)


def _compile_info(rec: JobRecord) -> list[dict[str, Any]]:
    """What the compiler recorded for the job's attempt (a job stored before schema 4
    kept it in its placement)."""
    if rec.compile_info is not None:
        return rec.compile_info
    return list((rec.placement or {}).get("compile", []))


def _recovery_note(rec: JobRecord) -> dict[str, Any]:
    """The job's recovery note (a job stored before schema 4 kept it in its placement)."""
    if rec.recovery is not None:
        return dict(rec.recovery)
    return rec.placement or {}


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Log a background task's failure (its result is otherwise never read)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", task.get_name(), exc_info=task.exception())
