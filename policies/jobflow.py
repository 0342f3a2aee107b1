"""The job state machine: events in, decisions out.

Everything that happens to a job reaches the scheduler as an :data:`Event` (placed,
compiled, batch started, run counted, device lost, deadline, cancel, recovered, ...).
The machine answers each with a :class:`Decision`: the state update to store, if the
event moves the job, and the :data:`Instruction` s to carry out once it is stored.
Which moves an event may make, and what each move does, is one table, :data:`ROWS`;
a handler per event only picks its row and fills in the reason and the fields.

Two calls keep the rule that a change is stored before anything acts on it:

1. :meth:`JobMachine.decide` reads the jobs and changes nothing;
2. the scheduler stores the decisions' updates (compare-and-set on the state);
3. :meth:`JobMachine.commit` mirrors the updates the store applied into the
   :class:`~qrt_ray.policies.jobs.JobTable` and returns their instructions.

Every stored transition names the event that made it, so a job's stored transitions
are its story (event, from, to, why): ``job.events()``, ``qrt status`` and ``qrt
explain`` show it.

Pure: no Ray, no Aer, no store, no clock (``now`` is passed in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar

from qrt_ray.errors import brief
from qrt_ray.lifecycle import FINAL_STATES, ErrorClass, JobState, check_transition
from qrt_ray.policies.jobs import Expected, JobTable, LiveJob
from qrt_ray.policies.placer import JobShape
from qrt_ray.results import RawRun, missing_shots, shots_executed
from qrt_ray.store import JobRecord, StateUpdate

logger = logging.getLogger("qrt.jobflow")
S = JobState
EC = ErrorClass
# Attempts a job gets (partial runs, corrupt payloads, simulator errors, lost devices)
# before it fails with the last reason: retries must end, or a broken circuit would
# loop forever.
MAX_ATTEMPTS = 5
# Faults that cost no attempt (the scheduler's own lag, a slice cut short by its device
# pausing) must end too: a device recalibrating every minute could otherwise cut a long
# job's every attempt and drop its shots forever. Past this many times MAX_ATTEMPTS
# attempts of any kind, the job fails.
FREE_ATTEMPTS_FACTOR = 3
LIVE_STATES = tuple(s for s in JobState if s not in FINAL_STATES)


# == events =========================================================================


@dataclass(frozen=True, slots=True)
class Placed:
    """Placement chose a device for a QUEUED job.

    ``rerun_whole`` says why the shots counted so far are dropped (their device
    recalibrated or cannot take the rest), if they are.
    """

    name: ClassVar[str] = "placed"
    job_id: str
    device: str
    placement: dict[str, Any]
    expected: Expected
    rerun_whole: str | None = None


@dataclass(frozen=True, slots=True)
class PlacementRefused:
    """No device could ever run the job (its limits, an unknown policy)."""

    name: ClassVar[str] = "placement refused"
    job_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Compiled:
    """Every circuit of a COMPILING job compiled for the device's calibration."""

    name: ClassVar[str] = "compiled"
    job_id: str
    calibration_id: str
    compile_info: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class CompileFailed:
    """A circuit of the job does not compile for its device (or the compile crashed)."""

    name: ClassVar[str] = "compile failed"
    job_id: str
    error: str


@dataclass(frozen=True, slots=True)
class CompileStale:
    """The device recalibrated while the job compiled: place it again."""

    name: ClassVar[str] = "compile stale"
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class HandOffFailed:
    """The device did not take the job's compiled work.

    ``spent``: whether the attempt counts (a device that refused the work on its
    merits) or is taken back (a device that was unreachable or restarting: nothing ran).
    """

    name: ClassVar[str] = "hand-off failed"
    job_id: str
    attempt: int
    reason: str
    spent: bool


@dataclass(frozen=True, slots=True)
class BatchStarted:
    """A device is about to run this attempt of the job.

    ``calibration_taken_at``: when the device's calibration was taken, as last seen.
    """

    name: ClassVar[str] = "batch started"
    job_id: str
    device: str
    attempt: int
    calibration_taken_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunCounted:
    """A run's shots were judged good and entered in the shot ledger.

    ``complete``: every shot of the job is now in. ``slice_waits``: the run was one
    slice of the attempt and the rest waits in a device queue that still runs work.
    """

    name: ClassVar[str] = "run counted"
    job_id: str
    run: RawRun
    complete: bool
    slice_waits: bool
    reason: str = ""

    @property
    def slices_left(self) -> bool:
        """Whether slices of this attempt are still queued on the device."""
        return self.run.remaining > 0


@dataclass(frozen=True, slots=True)
class RunRejected:
    """A run came back unusable (device error, corrupt payload, another calibration).

    ``free``: the fault is the scheduler's own lag (work compiled for a calibration
    the device had left), so it costs no attempt.
    """

    name: ClassVar[str] = "run rejected"
    job_id: str
    attempt: int
    reason: str
    free: bool = False
    slices_left: bool = False
    # the class the job fails with should this run have been its last attempt
    error_class: ErrorClass = ErrorClass.DEVICE


@dataclass(frozen=True, slots=True)
class RunFailed:
    """The device reported an error that no retry can fix."""

    name: ClassVar[str] = "run failed"
    job_id: str
    attempt: int
    error: str
    slices_left: bool = False


@dataclass(frozen=True, slots=True)
class WorkMoved:
    """The job's device stopped taking work or recalibrated: its work there is taken
    out of the device queue and placed again."""

    name: ClassVar[str] = "work moved"
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceLost:
    """The job's device restarted or was given up as hung: its queue is gone."""

    name: ClassVar[str] = "device lost"
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The job's ``max_execution_time_s`` ran out."""

    name: ClassVar[str] = "deadline"
    job_id: str


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The user cancelled the job."""

    name: ClassVar[str] = "cancel"
    job_id: str


@dataclass(frozen=True, slots=True)
class Recovered:
    """A restarted scheduler rebuilt the job from the store."""

    name: ClassVar[str] = "recovered"
    job_id: str


@dataclass(frozen=True, slots=True)
class Unrecoverable:
    """A restarted scheduler could not rebuild the job (unreadable record or runs)."""

    name: ClassVar[str] = "unrecoverable"
    job_id: str
    why: str


@dataclass(frozen=True, slots=True)
class Poisoned:
    """The job's circuits crashed its simulator again and again while it ran alone
    (:mod:`qrt_ray.policies.quarantine`): it is dead-lettered, never run again."""

    name: ClassVar[str] = "poisoned"
    job_id: str
    error: str


@dataclass(frozen=True, slots=True)
class ResultStored:
    """The job's result was built from its runs and stored under ``sha256``."""

    name: ClassVar[str] = "result stored"
    job_id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class ResultFailed:
    """The job's result could not be built from its runs."""

    name: ClassVar[str] = "result failed"
    job_id: str
    error: str


Event = (
    Placed
    | PlacementRefused
    | Compiled
    | CompileFailed
    | CompileStale
    | HandOffFailed
    | BatchStarted
    | RunCounted
    | RunRejected
    | RunFailed
    | WorkMoved
    | DeviceLost
    | DeadlinePassed
    | CancelRequested
    | Recovered
    | Unrecoverable
    | Poisoned
    | ResultStored
    | ResultFailed
)


# == instructions ===================================================================


@dataclass(frozen=True, slots=True)
class Requeue:
    """Put the job in the placement queue; ``replaced_from`` names the device it left."""

    job_id: str
    replaced_from: str | None = None


@dataclass(frozen=True, slots=True)
class Compile:
    """Compile the job's circuits for ``device`` (then report :class:`Compiled`)."""

    job_id: str
    device: str


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Hand the job's compiled work to ``device`` as ``attempt``."""

    job_id: str
    device: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Start:
    """Let the device run the job's work now."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Drop:
    """Take the job's work out of ``device``'s queue (only ``attempt``'s, if given)."""

    job_id: str
    device: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """Build the job's result from its counted runs and store it."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Retire:
    """The job is final: it has left the table; wake its waiters."""

    record: JobRecord


Instruction = Requeue | Compile | Dispatch | Start | Drop | Finish | Retire


# == the transition table ===========================================================


class Effect(StrEnum):
    """What a transition does once it is stored (each becomes an instruction)."""

    REQUEUE = "requeue"  # back to the placement queue
    REPLACE = "replace"  # back to the placement queue, counted as moved off its device
    COMPILE = "compile"
    DISPATCH = "dispatch"
    START = "start"
    DROP = "drop"  # take all its work out of its device's queue
    DROP_ATTEMPT = "drop attempt"  # take this attempt's work out of its device's queue
    DROP_SLICES = "drop slices"  # the rest of a sliced attempt, if slices are left
    FINISH = "finish"


@dataclass(frozen=True, slots=True)
class Row:
    """One thing an event may do to a job in ``start``: move it to ``finish`` (None:
    stay) and carry out ``effects``. ``when`` tells an event's rows apart."""

    event: str
    start: JobState
    finish: JobState | None
    effects: tuple[Effect, ...] = ()
    when: str = ""


E = Effect
_EXHAUSTED = "attempts exhausted"

ROWS: tuple[Row, ...] = (
    Row(Placed.name, S.QUEUED, S.COMPILING, (E.COMPILE,)),
    Row(PlacementRefused.name, S.QUEUED, S.FAILED),
    Row(Compiled.name, S.COMPILING, S.PLACED, (E.DISPATCH,)),
    Row(CompileFailed.name, S.COMPILING, S.FAILED),
    Row(CompileStale.name, S.COMPILING, S.QUEUED, (E.REQUEUE,)),
    Row(HandOffFailed.name, S.PLACED, S.QUEUED, (E.REQUEUE,)),
    Row(BatchStarted.name, S.PLACED, S.RUNNING, (E.START,)),
    Row(
        BatchStarted.name,
        S.PLACED,
        S.QUEUED,
        (E.REQUEUE, E.DROP_ATTEMPT),
        "calibration older than max_calibration_age_s",
    ),
    Row(BatchStarted.name, S.RUNNING, None, (E.START,), "a later slice of the attempt"),
    Row(RunCounted.name, S.RUNNING, S.POSTPROCESSING, (E.FINISH,), "all shots in"),
    Row(RunCounted.name, S.RUNNING, None, (), "a slice; the rest waits in the queue"),
    Row(RunCounted.name, S.RUNNING, S.QUEUED, (E.REQUEUE, E.DROP_SLICES), "shots missing"),
    Row(RunCounted.name, S.RUNNING, S.FAILED, (E.DROP_SLICES,), _EXHAUSTED),
    Row(RunRejected.name, S.RUNNING, S.QUEUED, (E.REQUEUE, E.DROP_SLICES)),
    Row(RunRejected.name, S.RUNNING, S.FAILED, (E.DROP_SLICES,), _EXHAUSTED),
    Row(RunFailed.name, S.RUNNING, S.FAILED, (E.DROP_SLICES,)),
    Row(WorkMoved.name, S.PLACED, S.QUEUED, (E.REPLACE, E.DROP_ATTEMPT)),
    Row(WorkMoved.name, S.RUNNING, S.QUEUED, (E.REQUEUE, E.DROP_ATTEMPT)),
    Row(DeviceLost.name, S.PLACED, S.QUEUED, (E.REPLACE,)),
    Row(DeviceLost.name, S.RUNNING, S.QUEUED, (E.REPLACE,)),
    Row(DeviceLost.name, S.PLACED, S.FAILED, (), _EXHAUSTED),
    Row(DeviceLost.name, S.RUNNING, S.FAILED, (), _EXHAUSTED),
    *(Row(DeadlinePassed.name, s, S.FAILED, (E.DROP,)) for s in LIVE_STATES),
    *(Row(CancelRequested.name, s, S.CANCELLED, (E.DROP,)) for s in LIVE_STATES),
    Row(Recovered.name, S.QUEUED, None, (E.REQUEUE,)),
    *(Row(Recovered.name, s, S.QUEUED, (E.REQUEUE,)) for s in (S.COMPILING, S.PLACED, S.RUNNING)),
    *(
        Row(Recovered.name, s, S.POSTPROCESSING, (E.FINISH,), "all shots in")
        for s in (S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING)
    ),
    Row(Recovered.name, S.POSTPROCESSING, None, (E.FINISH,)),
    *(Row(Unrecoverable.name, s, S.FAILED) for s in LIVE_STATES),
    *(Row(Poisoned.name, s, S.FAILED, (E.DROP,)) for s in (S.QUEUED, S.PLACED, S.RUNNING)),
    Row(ResultStored.name, S.POSTPROCESSING, S.DONE),
    Row(ResultFailed.name, S.POSTPROCESSING, S.FAILED),
)

_TABLE: dict[tuple[str, JobState, JobState | None, str], Row] = {
    (r.event, r.start, r.finish, r.when): r for r in ROWS
}


def row_for(event: str, start: JobState, finish: JobState | None, when: str = "") -> Row:
    """The table's row for that move.

    Raises:
        KeyError: the table has no such row (a handler asked for a move it does not allow).
    """
    return _TABLE[(event, start, finish, when)]


def rows_markdown() -> str:
    """The transition table as a Markdown table (``docs/architecture.md`` holds it;
    a test keeps the two equal). Rows that differ only in their start state are one
    line."""
    lines = ["| event | from | to | effects | when |", "| --- | --- | --- | --- | --- |"]
    seen: set[tuple[Any, ...]] = set()
    for r in ROWS:
        key = (r.event, r.finish, r.effects, r.when)
        if key in seen:
            continue
        seen.add(key)
        starts = [x.start for x in ROWS if (x.event, x.finish, x.effects, x.when) == key]
        start = "any live" if len(starts) == len(LIVE_STATES) else ", ".join(starts)
        finish = r.finish.value if r.finish else "(stays)"
        effects = ", ".join(e.value for e in r.effects) or "-"
        lines.append(f"| {r.event} | {start} | {finish} | {effects} | {r.when} |")
    return "\n".join(lines)


# == decisions ======================================================================


@dataclass(frozen=True, slots=True)
class Decision:
    """What the machine decided for one event: the update to store (None: the job
    stays where it is) and the instructions to carry out once it is stored.

    ``expected``, ``run`` and ``rerun_from`` are memory-only changes made at commit:
    placement's expectation, a counted run, and the attempt from which runs count
    again (with the shots dropped) after the job is rerun whole.
    """

    event: Event
    row: Row
    update: StateUpdate | None
    instructions: tuple[Instruction, ...]
    expected: Expected | None = None
    run: RawRun | None = None
    rerun_from: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class _Choice:
    """A handler's pick: the move, the reason for it, and the fields it stores."""

    finish: JobState | None
    reason: str = ""
    when: str = ""
    fields: Mapping[str, Any] | None = None
    attempt: int | None = None
    # the class of a move to FAILED, stored with it
    error_class: ErrorClass | None = None


Handler = Callable[["JobMachine", LiveJob, Any, float], "_Choice | None"]


class JobMachine:
    """The live jobs and the rules that move them.

    Args:
        max_attempts: attempts a job gets before it fails with the last reason.
    """

    def __init__(self, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.jobs = JobTable()
        self.max_attempts = max_attempts
        self.attempt_ceiling = max_attempts * FREE_ATTEMPTS_FACTOR

    # -- tracking ----------------------------------------------------------------------

    def track(
        self,
        record: JobRecord,
        shape: JobShape | None = None,
        *,
        runs: Sequence[RawRun] = (),
        runs_from: int | None = None,
        discarded_shots: int = 0,
    ) -> LiveJob:
        """Start tracking a job the store holds (admitted now, or recovered)."""
        job = self.jobs.add(record, shape)
        job.runs = list(runs)
        job.runs_from = runs_from
        job.discarded_shots = discarded_shots
        return job

    # -- decide --------------------------------------------------------------------------

    def decide(
        self,
        events: Sequence[Event],
        now: float,
        stored: Mapping[str, JobRecord] | None = None,
    ) -> list[Decision]:
        """The decision for each event that applies (stale events are left out).

        Changes nothing: events about one job see the moves decided for it earlier in
        the same call. ``stored`` gives records of jobs not in the table (an
        unreadable job at recovery, a job another process changed).
        """
        out: list[Decision] = []
        seen: dict[str, LiveJob] = {}
        for event in events:
            job = seen.get(event.job_id) or self.jobs.get(event.job_id)
            if job is None and stored and event.job_id in stored:
                job = LiveJob(stored[event.job_id], -1)
            if job is None:
                logger.debug("%s for %s: job not live; ignored", event.name, event.job_id)
                continue
            decision = self._decide_one(job, event, now)
            if decision is None:
                continue
            out.append(decision)
            seen[event.job_id] = _projected(job, decision)
        return out

    def projected(self, decisions: Sequence[Decision]) -> dict[str, LiveJob]:
        """Each live job of ``decisions`` as it will be once they are all stored (its
        state, record and counted runs): what a bill or a result built before the
        store write must see. Changes nothing; jobs not in the table are left out."""
        out: dict[str, LiveJob] = {}
        for d in decisions:
            job = out.get(d.event.job_id) or self.jobs.get(d.event.job_id)
            if job is not None:
                out[d.event.job_id] = _projected(job, d)
        return out

    def _decide_one(self, job: LiveJob, event: Event, now: float) -> Decision | None:
        handler = _HANDLERS[type(event)]
        choice = handler(self, job, event, now)
        if choice is None:
            return None
        rec = job.record
        row = row_for(event.name, rec.state, choice.finish, choice.when)
        update = None
        if choice.finish is not None:
            check_transition(rec.job_id, rec.state, choice.finish)
            update = StateUpdate(
                rec.job_id,
                rec.state,
                choice.finish,
                now,
                reason=choice.reason or choice.when or event.name,
                fields=_with_class(choice),
                event=event.name,
            )
        attempt = choice.attempt if choice.attempt is not None else rec.attempts
        instructions = tuple(
            i for e in row.effects if (i := _instruction(e, job, event, attempt)) is not None
        )
        return Decision(
            event,
            row,
            update,
            instructions,
            expected=event.expected if isinstance(event, Placed) else None,
            run=event.run if isinstance(event, RunCounted) else None,
            rerun_from=_rerun_from(job, event),
        )

    def unreadable(self, job_id: str, state: JobState, why: str, now: float) -> Decision | None:
        """The decision for a stored job whose record no longer decodes (so it was never
        tracked): it fails with ``why``, by the same row as any unrecoverable job."""
        if state.is_final:
            return None
        event = Unrecoverable(job_id, why)
        update = StateUpdate(
            job_id,
            state,
            S.FAILED,
            now,
            reason="unrecoverable",
            fields={
                "error": _unrecoverable_error(why),
                "error_class": ErrorClass.UNRECOVERABLE.value,
            },
            event=event.name,
        )
        return Decision(event, row_for(event.name, state, S.FAILED), update, ())

    # -- commit --------------------------------------------------------------------------

    def commit(self, decisions: Sequence[Decision], applied: Sequence[bool]) -> list[Instruction]:
        """Mirror the stored decisions into the table; returns their instructions.

        Args:
            decisions: from :meth:`decide`.
            applied: for each decision *with an update*, in order, whether the store
                applied it. A refused update (the job moved meanwhile) is dropped with
                the rest of that job's decisions in the call.
        """
        flags = iter(applied)
        refused: set[str] = set()
        out: list[Instruction] = []
        for d in decisions:
            job_id = d.event.job_id
            ok = next(flags) if d.update is not None else True
            if not ok or job_id in refused:
                refused.add(job_id)
                logger.warning(
                    "job %s moved meanwhile; %s not applied", job_id, d.update or d.event.name
                )
                continue
            job = self.jobs.get(job_id)
            if job is None:  # a stored-only record: nothing is kept in memory
                out.extend(d.instructions)
                continue
            out.extend(self._apply(job, d))
        return out

    def _apply(self, job: LiveJob, d: Decision) -> list[Instruction]:
        if d.rerun_from is not None:
            job.runs = []
            job.runs_from, job.discarded_shots = d.rerun_from
        # a run this job holds already is not taken in twice: the job may have been
        # rebuilt from the store's ledger (a failed write read back) while this
        # decision's write was on its way
        if d.run is not None and not job.holds_run(d.run):
            job.runs.append(d.run)
        u = d.update
        if u is None:
            return list(d.instructions)
        rec = replace(job.record, state=u.to_state, updated_at=u.at, **u.fields)
        if u.to_state.is_final:
            self.jobs.remove(job.job_id)
            return [*d.instructions, Retire(rec)]
        self.jobs.update(rec)
        if u.from_state is S.QUEUED:
            job.waiting = None  # placed: no longer waiting for a device
        if d.expected is not None:
            self.jobs.expect(job.job_id, d.expected)
        elif u.to_state is S.QUEUED:
            self.jobs.expect(job.job_id, None)
        return list(d.instructions)

    # -- queries -------------------------------------------------------------------------

    def exhausted(self, job: LiveJob) -> bool:
        """Whether the job has used all its attempts."""
        return job.record.attempts >= self.max_attempts

    def gave_up(self, reason: str, attempts: int | None = None) -> dict[str, str]:
        """The error of a job out of attempts, naming the last reason."""
        n = self.max_attempts if attempts is None else attempts
        return {"error": f"gave up after {n} attempts; last: {reason}"}


# == handlers: pick the row, name the reason, fill the fields ========================


def _on_placed(m: JobMachine, job: LiveJob, e: Placed, now: float) -> _Choice | None:
    if job.state is not S.QUEUED:
        return None
    fields: dict[str, Any] = {"device": e.device, "placement": e.placement}
    rerun = _rerun_from(job, e)
    runs_from = rerun[0] if rerun else job.runs_from
    if runs_from is not None:
        # stored with the move, so a restarted scheduler counts only the runs that do
        discarded = rerun[1] if rerun else job.discarded_shots
        fields["recovery"] = {"runs_from_attempt": runs_from, "discarded_shots": discarded}
    return _Choice(S.COMPILING, f"placed on {e.device}", fields=fields)


def _on_placement_refused(
    m: JobMachine, job: LiveJob, e: PlacementRefused, now: float
) -> _Choice | None:
    if job.state is not S.QUEUED:
        return None
    return _Choice(S.FAILED, "placement", fields={"error": e.error}, error_class=EC.PLACEMENT)


def _on_compiled(m: JobMachine, job: LiveJob, e: Compiled, now: float) -> _Choice | None:
    if job.state is not S.COMPILING:
        return None
    attempt = job.record.attempts + 1
    fields = {
        "calibration_id": e.calibration_id,
        "attempts": attempt,
        "compile_info": e.compile_info,
    }
    return _Choice(S.PLACED, f"compiled for {e.calibration_id}", fields=fields, attempt=attempt)


def _on_compile_failed(m: JobMachine, job: LiveJob, e: CompileFailed, now: float) -> _Choice | None:
    if job.state is not S.COMPILING:
        return None
    return _Choice(S.FAILED, "compile", fields={"error": e.error}, error_class=EC.COMPILE)


def _on_compile_stale(m: JobMachine, job: LiveJob, e: CompileStale, now: float) -> _Choice | None:
    return _Choice(S.QUEUED, e.reason) if job.state is S.COMPILING else None


def _on_hand_off_failed(
    m: JobMachine, job: LiveJob, e: HandOffFailed, now: float
) -> _Choice | None:
    if job.state is not S.PLACED or job.record.attempts != e.attempt:
        return None
    # Nothing ran, so the attempt is not spent: a device restarting again and again
    # must not use up its jobs' attempts. Should the hand-off have landed after all,
    # that copy runs under an attempt number used again later, and the shot ledger
    # (keyed by job, attempt and first shot) counts its shots once.
    fields = None if e.spent else {"attempts": e.attempt - 1}
    return _Choice(S.QUEUED, e.reason, fields=fields)


def _on_batch_started(m: JobMachine, job: LiveJob, e: BatchStarted, now: float) -> _Choice | None:
    rec = job.record
    if rec.attempts != e.attempt or rec.device != e.device:
        return None  # moved, rerun or cancelled meanwhile: the device must not run it
    if rec.state is S.RUNNING:
        return _Choice(None, when="a later slice of the attempt")
    if rec.state is not S.PLACED:
        return None
    limit = rec.spec.max_calibration_age_s
    if limit and e.calibration_taken_at is not None and now - e.calibration_taken_at > limit:
        when = "calibration older than max_calibration_age_s"
        return _Choice(S.QUEUED, f"{e.device}'s calibration aged past max_calibration_age_s", when)
    return _Choice(S.RUNNING, f"running on {e.device}")


def _on_run_counted(m: JobMachine, job: LiveJob, e: RunCounted, now: float) -> _Choice | None:
    if job.state is not S.RUNNING or job.record.attempts != e.run.attempt:
        return None
    if job.holds_run(e.run):
        return None  # in already: a report delivered again after a failed store write
    if e.complete:
        return _Choice(S.POSTPROCESSING, when="all shots in")
    if e.slice_waits:
        return _Choice(None, when="a slice; the rest waits in the queue")
    # A slice whose rest was still queued when its device stopped running work (paused
    # for calibration, maintenance, or out of reach) lost nothing: the farm paused it,
    # so the attempt is not spent (up to the machine's ceiling: a recalibration drops
    # the shots counted so far, so such moves are not always progress).
    free = e.slices_left
    return _retry(m, job, e.reason, EC.PARTIAL_RUN, free=free, when="shots missing")


def _on_run_rejected(m: JobMachine, job: LiveJob, e: RunRejected, now: float) -> _Choice | None:
    if job.state is not S.RUNNING or job.record.attempts != e.attempt:
        return None
    return _retry(m, job, e.reason, e.error_class, free=e.free)


def _on_run_failed(m: JobMachine, job: LiveJob, e: RunFailed, now: float) -> _Choice | None:
    if job.state is not S.RUNNING or job.record.attempts != e.attempt:
        return None
    return _Choice(S.FAILED, "device error", fields={"error": e.error}, error_class=EC.DEVICE)


def _on_work_moved(m: JobMachine, job: LiveJob, e: WorkMoved, now: float) -> _Choice | None:
    if job.state not in (S.PLACED, S.RUNNING):
        return None
    return _Choice(S.QUEUED, f"re-placed: {e.reason}")


def _on_device_lost(m: JobMachine, job: LiveJob, e: DeviceLost, now: float) -> _Choice | None:
    # Shots already counted stay counted; the next attempt runs only the missing ones,
    # and a late report of the old attempt is ignored (its attempt number is old).
    if job.state not in (S.PLACED, S.RUNNING):
        return None
    if m.exhausted(job):
        return _Choice(S.FAILED, _EXHAUSTED, _EXHAUSTED, m.gave_up(e.reason), None, EC.DEVICE_LOST)
    return _Choice(S.QUEUED, f"re-placed: {e.reason} (was {job.state.value})")


def _on_deadline(m: JobMachine, job: LiveJob, e: DeadlinePassed, now: float) -> _Choice | None:
    if job.state.is_final:
        return None
    limit = job.record.spec.max_execution_time_s or 0.0
    error = (
        f"max_execution_time_s={limit:g} exceeded while the job was {job.state.value}; "
        "raise the limit or use fewer shots"
    )
    return _Choice(
        S.FAILED, "max_execution_time_s exceeded", fields={"error": error}, error_class=EC.DEADLINE
    )


def _on_cancel(m: JobMachine, job: LiveJob, e: CancelRequested, now: float) -> _Choice | None:
    return None if job.state.is_final else _Choice(S.CANCELLED, "cancelled by user")


def _on_recovered(m: JobMachine, job: LiveJob, e: Recovered, now: float) -> _Choice | None:
    rec = job.record
    if rec.state is S.POSTPROCESSING:
        return _Choice(None, "finished from the ledger")
    if job.runs and not missing_shots(rec.spec.shots, job.runs):
        # every shot is in the ledger: the move to POSTPROCESSING was not stored (a
        # crash between the two), or the job was placed again while its last run was
        # being counted (a failed store write read back). Finish it, run nothing.
        return _Choice(S.POSTPROCESSING, when="all shots in")
    if rec.state is S.QUEUED:
        return _Choice(None)
    if rec.state in (S.COMPILING, S.PLACED, S.RUNNING):
        return _Choice(S.QUEUED, f"recovered after restart (was {rec.state.value})")
    return None


def _on_unrecoverable(m: JobMachine, job: LiveJob, e: Unrecoverable, now: float) -> _Choice | None:
    if job.state.is_final:
        return None
    error = _unrecoverable_error(e.why)
    return _Choice(S.FAILED, "unrecoverable", fields={"error": error}, error_class=EC.UNRECOVERABLE)


def _on_poisoned(m: JobMachine, job: LiveJob, e: Poisoned, now: float) -> _Choice | None:
    if job.state not in (S.QUEUED, S.PLACED, S.RUNNING):
        return None
    return _Choice(S.FAILED, "dead-lettered", fields={"error": e.error}, error_class=EC.POISON)


def _on_result_stored(m: JobMachine, job: LiveJob, e: ResultStored, now: float) -> _Choice | None:
    if job.state is not S.POSTPROCESSING:
        return None
    return _Choice(S.DONE, "result stored", fields={"result_sha256": e.sha256})


def _on_result_failed(m: JobMachine, job: LiveJob, e: ResultFailed, now: float) -> _Choice | None:
    if job.state is not S.POSTPROCESSING:
        return None
    return _Choice(
        S.FAILED, "postprocessing", fields={"error": e.error}, error_class=EC.POSTPROCESS
    )


_HANDLERS: dict[type, Handler] = {
    Placed: _on_placed,
    PlacementRefused: _on_placement_refused,
    Compiled: _on_compiled,
    CompileFailed: _on_compile_failed,
    CompileStale: _on_compile_stale,
    HandOffFailed: _on_hand_off_failed,
    BatchStarted: _on_batch_started,
    RunCounted: _on_run_counted,
    RunRejected: _on_run_rejected,
    RunFailed: _on_run_failed,
    WorkMoved: _on_work_moved,
    DeviceLost: _on_device_lost,
    DeadlinePassed: _on_deadline,
    CancelRequested: _on_cancel,
    Recovered: _on_recovered,
    Unrecoverable: _on_unrecoverable,
    Poisoned: _on_poisoned,
    ResultStored: _on_result_stored,
    ResultFailed: _on_result_failed,
}


# == helpers ========================================================================


def _with_class(choice: _Choice) -> dict[str, Any]:
    """The fields a choice stores; a move to FAILED carries its error class."""
    fields = dict(choice.fields or {})
    if choice.finish is JobState.FAILED:
        fields["error_class"] = (choice.error_class or ErrorClass.DEVICE).value
    return fields


def _retry(
    m: JobMachine, job: LiveJob, reason: str, error_class: ErrorClass, *, free: bool, when: str = ""
) -> _Choice:
    """A run that did not finish the job: rerun the missing shots, or fail the job out
    of attempts (a fault that costs no attempt only past ``attempt_ceiling``)."""
    attempts = job.record.attempts
    if free and attempts >= m.attempt_ceiling:
        error = m.gave_up(f"{reason} (most of them cut short by the farm)", attempts)
        return _Choice(S.FAILED, _EXHAUSTED, _EXHAUSTED, error, None, error_class)
    if m.exhausted(job) and not free:
        return _Choice(S.FAILED, _EXHAUSTED, _EXHAUSTED, m.gave_up(reason), None, error_class)
    return _Choice(S.QUEUED, reason, when)


def _unrecoverable_error(why: str) -> str:
    return f"the farm restarted and could not recover this job: {brief(why, 300)}; submit it again"


def _rerun_from(job: LiveJob, event: Event) -> tuple[int, int] | None:
    """(first attempt whose runs count, shots dropped so far) when ``event`` reruns the
    job whole, else None."""
    if not isinstance(event, Placed) or event.rerun_whole is None:
        return None
    shots = sum(shots_executed(r) for r in job.runs)
    return job.record.attempts + 1, job.discarded_shots + shots


def _instruction(effect: Effect, job: LiveJob, event: Event, attempt: int) -> Instruction | None:
    device = event.device if isinstance(event, Placed) else job.device
    match effect:
        case E.REQUEUE:
            return Requeue(job.job_id)
        case E.REPLACE:
            return Requeue(job.job_id, replaced_from=device)
        case E.COMPILE:
            return Compile(job.job_id, device or "")
        case E.DISPATCH:
            return Dispatch(job.job_id, device or "", attempt)
        case E.START:
            return Start(job.job_id)
        case E.FINISH:
            return Finish(job.job_id)
        case E.DROP:
            return Drop(job.job_id, device) if device else None
        case E.DROP_ATTEMPT:
            return Drop(job.job_id, device, attempt) if device else None
        case E.DROP_SLICES:
            slices = isinstance(event, RunRejected | RunFailed | RunCounted) and event.slices_left
            return Drop(job.job_id, device, attempt) if device and slices else None
    raise AssertionError(effect)  # pragma: no cover


def _projected(job: LiveJob, d: Decision) -> LiveJob:
    """The job as it will be once ``d`` is stored (for later events of one call)."""
    rec = job.record
    if d.update is not None:
        rec = replace(rec, state=d.update.to_state, updated_at=d.update.at, **d.update.fields)
    runs = [] if d.rerun_from is not None else list(job.runs)
    if d.run is not None and not job.holds_run(d.run):
        runs.append(d.run)
    out = LiveJob(rec, job.seq, job.shape, job.expected, runs, job.discarded_shots, job.runs_from)
    if d.rerun_from is not None:
        out.runs_from, out.discarded_shots = d.rerun_from
    return out
