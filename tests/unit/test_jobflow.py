"""The job state machine with plain data: no Ray, no Aer, no store.

Every row of the transition table is driven by its event from a job in its start
state; then the stories the rows make together: retries and attempts, partial runs and
slices, lost devices, recovery after a crash at each state, races with cancel, and
updates the store refuses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from qrt_ray.lifecycle import TRANSITIONS, JobState
from qrt_ray.models import JobSpec
from qrt_ray.policies.jobflow import (
    LIVE_STATES,
    MAX_ATTEMPTS,
    ROWS,
    BatchStarted,
    CancelRequested,
    Compile,
    Compiled,
    CompileFailed,
    CompileStale,
    DeadlinePassed,
    Decision,
    DeviceLost,
    Dispatch,
    Drop,
    Effect,
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
    Row,
    RunCounted,
    RunFailed,
    RunRejected,
    Start,
    Unrecoverable,
    WorkMoved,
)
from qrt_ray.policies.jobs import Expected
from qrt_ray.results import RawRun
from qrt_ray.store import JobRecord

S = JobState
J = "job-1"
NOW = 1000.0
SPEC = JobSpec(circuits=("OPENQASM 2.0;",), shots=100)
EXPECTED = Expected("manila", 2.0, 0.001)


def run(shots: int = 100, *, attempt: int = 1, remaining: int = 0, first: int = 0) -> RawRun:
    return RawRun(
        J, attempt, "manila", "cal-1", 900.0, shots, ({"0": shots},), (1,), 0.1, "sv", False, "x",
        first_shot=first, remaining=remaining,
    )  # fmt: skip


def machine_with(
    state: JobState,
    *,
    attempts: int = 1,
    device: str | None = "manila",
    spec: JobSpec = SPEC,
    runs: tuple[RawRun, ...] = (),
    max_attempts: int = MAX_ATTEMPTS,
) -> JobMachine:
    m = JobMachine(max_attempts)
    rec = JobRecord(J, state, spec, 1.0, 1.0, device=device, attempts=attempts)
    m.track(rec, runs=runs)
    return m


def step(m: JobMachine, *events: Event, applied: bool = True) -> list[Instruction]:
    """Decide, 'store' (every update applied, or none), commit."""
    decisions = m.decide(events, NOW)
    return m.commit(decisions, [applied] * sum(d.update is not None for d in decisions))


# == every row, driven by its event ==================================================

# Per row: how to get a job into its start state so that the row applies, and the event.
Case = tuple[dict[str, Any], Event]
STALE_SPEC = SPEC.model_copy(update={"max_calibration_age_s": 10.0})


def case_for(row: Row) -> Case:
    ev, start, finish, when = row.event, row.start, row.finish, row.when
    full = (run(100),)
    out_of_attempts = {"attempts": MAX_ATTEMPTS}
    table: dict[tuple[str, JobState | None, str], Case] = {
        ("placed", S.COMPILING, ""): ({}, Placed(J, "nairobi", {"device": "nairobi"}, EXPECTED)),
        ("placement refused", S.FAILED, ""): ({}, PlacementRefused(J, "no device fits")),
        ("compiled", S.PLACED, ""): ({}, Compiled(J, "cal-2", [{"swaps": 0}])),
        ("compile failed", S.FAILED, ""): ({}, CompileFailed(J, "circuits[0] does not compile")),
        ("compile stale", S.QUEUED, ""): ({}, CompileStale(J, "manila recalibrated")),
        ("hand-off failed", S.QUEUED, ""): ({}, HandOffFailed(J, 1, "manila refused", True)),
        ("batch started", S.RUNNING, ""): ({}, BatchStarted(J, "manila", 1, NOW)),
        ("batch started", S.QUEUED, when): (
            {"spec": STALE_SPEC},
            BatchStarted(J, "manila", 1, NOW - 60),
        ),
        ("batch started", None, when): ({}, BatchStarted(J, "manila", 1, NOW)),
        ("run counted", S.POSTPROCESSING, when): ({}, RunCounted(J, run(), True, False)),
        ("run counted", None, when): ({}, RunCounted(J, run(40, remaining=60), False, True)),
        ("run counted", S.QUEUED, when): ({}, RunCounted(J, run(40), False, False, "60 missing")),
        ("run counted", S.FAILED, when): (
            out_of_attempts,
            RunCounted(J, run(40, attempt=MAX_ATTEMPTS), False, False, "60 missing"),
        ),
        ("run rejected", S.QUEUED, ""): ({}, RunRejected(J, 1, "checksum mismatch")),
        ("run rejected", S.FAILED, when): (
            out_of_attempts,
            RunRejected(J, MAX_ATTEMPTS, "checksum mismatch"),
        ),
        ("run failed", S.FAILED, ""): ({}, RunFailed(J, 1, "unsupported instruction")),
        ("work moved", S.QUEUED, ""): ({}, WorkMoved(J, "manila went MAINTENANCE")),
        ("device lost", S.QUEUED, ""): ({}, DeviceLost(J, "manila restarted")),
        ("device lost", S.FAILED, when): (out_of_attempts, DeviceLost(J, "manila restarted")),
        ("deadline", S.FAILED, ""): ({}, DeadlinePassed(J)),
        ("cancel", S.CANCELLED, ""): ({}, CancelRequested(J)),
        ("recovered", None, ""): ({}, Recovered(J)),
        ("recovered", S.QUEUED, ""): ({}, Recovered(J)),
        ("recovered", S.POSTPROCESSING, when): ({"runs": full}, Recovered(J)),
        ("unrecoverable", S.FAILED, ""): ({}, Unrecoverable(J, "stored run fails its checksum")),
        ("poisoned", S.FAILED, ""): ({}, Poisoned(J, "crashed its simulator twice alone")),
        ("result stored", S.DONE, ""): ({}, ResultStored(J, "ab" * 32)),
        ("result failed", S.FAILED, ""): ({}, ResultFailed(J, "counts do not add up")),
    }
    setup, event = table[(ev, finish, when)]
    if start is S.QUEUED and ev in ("deadline", "cancel", "unrecoverable", "recovered"):
        setup = {**setup, "device": None, "attempts": 0}
    return setup, event


def _expect_instructions(row: Row, d: Decision, setup: dict[str, Any]) -> list[type]:
    device = setup.get("device", "manila")
    kinds: list[type] = []
    for effect in row.effects:
        if effect in (Effect.REQUEUE, Effect.REPLACE):
            kinds.append(Requeue)
        elif effect is Effect.COMPILE:
            kinds.append(Compile)
        elif effect is Effect.DISPATCH:
            kinds.append(Dispatch)
        elif effect is Effect.START:
            kinds.append(Start)
        elif effect is Effect.FINISH:
            kinds.append(Finish)
        elif (effect in (Effect.DROP, Effect.DROP_ATTEMPT) and device) or (
            effect is Effect.DROP_SLICES and getattr(d.event, "slices_left", False)
        ):
            kinds.append(Drop)
    if row.finish is not None and row.finish.is_final:
        kinds.append(Retire)
    return kinds


@pytest.mark.parametrize(
    "row",
    ROWS,
    ids=[f"{r.event}:{r.start}->{r.finish}{':' + r.when if r.when else ''}" for r in ROWS],
)
def test_every_row_of_the_table_is_taken_by_its_event(row: Row) -> None:
    setup, event = case_for(row)
    m = machine_with(row.start, **setup)
    (decision,) = m.decide([event], NOW)
    assert decision.row == row
    if row.finish is None:
        assert decision.update is None
    else:
        assert decision.update is not None
        assert (decision.update.from_state, decision.update.to_state) == (row.start, row.finish)
        assert decision.update.event == row.event  # the story names the event
        assert decision.update.reason
    # deciding changed nothing
    assert m.jobs[J].state is row.start
    out = m.commit([decision], [True] if decision.update else [])
    assert [type(i) for i in out] == _expect_instructions(row, decision, setup)
    if row.finish is not None and row.finish.is_final:
        assert J not in m.jobs
        (retire,) = [i for i in out if isinstance(i, Retire)]
        assert retire.record.state is row.finish
    else:
        assert m.jobs[J].state is (row.finish or row.start)


def test_the_rows_make_exactly_the_moves_the_lifecycle_allows() -> None:
    moves = {(r.start, r.finish) for r in ROWS if r.finish is not None}
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert moves == allowed


def test_each_row_is_told_apart_from_its_siblings() -> None:
    keys = [(r.event, r.start, r.finish, r.when) for r in ROWS]
    assert len(keys) == len(set(keys))
    for r in ROWS:  # an event with two rows from one start says when each applies
        siblings = [o for o in ROWS if (o.event, o.start) == (r.event, r.start) and o != r]
        assert not siblings or r.when or all(o.when for o in siblings)


def test_an_event_with_no_row_for_the_state_is_ignored() -> None:
    for event in (Compiled(J, "c", []), RunCounted(J, run(), True, False), ResultStored(J, "x")):
        m = machine_with(S.QUEUED, device=None, attempts=0)
        assert m.decide([event], NOW) == []
    m = machine_with(S.DONE)
    assert m.decide([CancelRequested(J)], NOW) == []


# == what moves carry ==================================================================


def test_compiled_spends_an_attempt_and_dispatches_it() -> None:
    m = machine_with(S.COMPILING, attempts=2)
    (d,) = m.decide([Compiled(J, "cal-9", [{"swaps": 1}])], NOW)
    assert d.update is not None
    assert d.update.fields == {
        "calibration_id": "cal-9",
        "attempts": 3,
        "compile_info": [{"swaps": 1}],
    }
    assert m.commit([d], [True]) == [Dispatch(J, "manila", 3)]
    assert m.jobs[J].record.attempts == 3


def test_placed_sets_the_expectation_and_a_requeue_clears_it() -> None:
    m = machine_with(S.QUEUED, device=None, attempts=0)
    assert step(m, Placed(J, "manila", {"device": "manila"}, EXPECTED)) == [Compile(J, "manila")]
    assert m.jobs.expectations() == [EXPECTED]
    assert m.jobs[J].record.placement == {"device": "manila"}
    step(m, CompileStale(J, "recalibrated"))
    assert m.jobs.expectations() == [] and m.jobs[J].state is S.QUEUED


def test_a_failed_hand_off_takes_its_attempt_back_unless_the_device_refused_it() -> None:
    m = machine_with(S.PLACED, attempts=3)
    step(m, HandOffFailed(J, 3, "manila is restarting", spent=False))
    assert m.jobs[J].record.attempts == 2
    m = machine_with(S.PLACED, attempts=3)
    step(m, HandOffFailed(J, 3, "queue full", spent=True))
    assert m.jobs[J].record.attempts == 3


def test_events_of_an_old_attempt_or_another_device_are_ignored() -> None:
    m = machine_with(S.PLACED, attempts=2)
    assert m.decide([BatchStarted(J, "manila", 1, NOW)], NOW) == []  # old attempt
    assert m.decide([BatchStarted(J, "nairobi", 2, NOW)], NOW) == []  # moved meanwhile
    assert m.decide([HandOffFailed(J, 1, "late", False)], NOW) == []
    m = machine_with(S.RUNNING, attempts=2)
    assert m.decide([RunCounted(J, run(attempt=1), True, False)], NOW) == []
    assert m.decide([RunRejected(J, 1, "late")], NOW) == []


# == retries and attempts ==============================================================


def test_retries_end_after_max_attempts_with_the_last_reason() -> None:
    m = machine_with(S.QUEUED, device=None, attempts=0, max_attempts=3)
    for attempt in range(1, 4):
        step(m, Placed(J, "manila", {}, EXPECTED))
        step(m, Compiled(J, "cal-1", []))
        step(m, BatchStarted(J, "manila", attempt, NOW))
        out = step(m, RunRejected(J, attempt, f"checksum mismatch #{attempt}"))
    assert J not in m.jobs
    (retire,) = out
    assert isinstance(retire, Retire)
    assert retire.record.state is S.FAILED
    assert retire.record.error == "gave up after 3 attempts; last: checksum mismatch #3"


def test_work_compiled_for_a_left_calibration_is_redone_free_even_on_the_last_attempt() -> None:
    m = machine_with(S.RUNNING, attempts=MAX_ATTEMPTS)
    out = step(m, RunRejected(J, MAX_ATTEMPTS, "calibration changed", free=True))
    assert out == [Requeue(J)] and m.jobs[J].state is S.QUEUED


# == partial runs, missing shots, slices ===============================================


def test_a_partial_run_keeps_its_shots_and_the_rest_runs_as_the_next_attempt() -> None:
    m = machine_with(S.RUNNING)
    out = step(m, RunCounted(J, run(40), False, False, "60 shots missing"))
    assert out == [Requeue(J)]
    job = m.jobs[J]
    assert [r.counts for r in job.runs] == [({"0": 40},)]
    assert job.state is S.QUEUED
    # the rest runs as attempt 2 and completes the job
    step(m, Placed(J, "manila", {}, EXPECTED))
    step(m, Compiled(J, "cal-1", []))
    step(m, BatchStarted(J, "manila", 2, NOW))
    out = step(m, RunCounted(J, run(60, attempt=2, first=40), True, False))
    assert out == [Finish(J)]
    assert sum(sum(c["0"] for c in r.counts) for r in m.jobs[J].runs) == 100


def test_slices_of_one_attempt_run_on_until_the_last_completes_the_job() -> None:
    m = machine_with(S.RUNNING)
    assert step(m, RunCounted(J, run(30, remaining=70), False, True)) == []
    assert step(m, BatchStarted(J, "manila", 1, NOW)) == [Start(J)]  # the next slice
    assert step(m, RunCounted(J, run(30, remaining=40, first=30), False, True)) == []
    assert step(m, RunCounted(J, run(40, first=60), True, False)) == [Finish(J)]
    assert m.jobs[J].state is S.POSTPROCESSING and len(m.jobs[J].runs) == 3


def test_a_sliced_attempt_that_ends_early_takes_its_queued_slices_out() -> None:
    m = machine_with(S.RUNNING)
    out = step(m, RunRejected(J, 1, "checksum mismatch", slices_left=True))
    assert out == [Requeue(J), Drop(J, "manila", 1)]
    m = machine_with(S.RUNNING)
    out = step(m, RunCounted(J, run(30, remaining=70), False, False, "device paused"))
    assert out == [Requeue(J), Drop(J, "manila", 1)]


def test_a_slice_cut_short_by_its_device_pausing_costs_no_attempt() -> None:
    """The rest of the attempt was queued when the device paused (a calibration): the
    job lost nothing, so even its last attempt is re-queued, up to the machine's
    ceiling of attempts of any kind; shots the device lost (nothing left queued) still
    spend the attempt."""
    m = machine_with(S.RUNNING, attempts=MAX_ATTEMPTS)
    cut = run(30, attempt=MAX_ATTEMPTS, remaining=70)
    out = step(m, RunCounted(J, cut, False, False, "manila is CALIBRATING"))
    assert out == [Requeue(J), Drop(J, "manila", MAX_ATTEMPTS)]
    assert m.jobs[J].state is S.QUEUED and len(m.jobs[J].runs) == 1
    m = machine_with(S.RUNNING, attempts=MAX_ATTEMPTS)
    (lost,) = m.decide([RunCounted(J, run(30, attempt=MAX_ATTEMPTS), False, False, "x")], NOW)
    assert lost.update is not None and lost.update.to_state is S.FAILED
    assert "gave up after" in str(lost.update.fields["error"])
    # free, but not forever: a device that pauses every time fails the job at the ceiling
    top = m.attempt_ceiling
    m = machine_with(S.RUNNING, attempts=top)
    cut = run(30, attempt=top, remaining=70)
    (ended,) = m.decide([RunCounted(J, cut, False, False, "manila is CALIBRATING")], NOW)
    assert ended.update is not None and ended.update.to_state is S.FAILED
    assert f"gave up after {top} attempts" in str(ended.update.fields["error"])
    m = machine_with(S.RUNNING, attempts=top - 1)
    cut = run(30, attempt=top - 1, remaining=70)
    assert step(m, RunCounted(J, cut, False, False, "paused")) == [
        Requeue(J),
        Drop(J, "manila", top - 1),
    ]


def test_a_job_rerun_whole_drops_its_shots_and_remembers_it() -> None:
    m = machine_with(S.QUEUED, attempts=2, runs=(run(40),))
    (d,) = m.decide([Placed(J, "nairobi", {}, EXPECTED, rerun_whole="manila is OFFLINE")], NOW)
    assert d.update is not None
    assert d.update.fields["recovery"] == {"runs_from_attempt": 3, "discarded_shots": 40}
    m.commit([d], [True])
    job = m.jobs[J]
    assert (job.runs, job.runs_from, job.discarded_shots) == ([], 3, 40)
    # every later placement keeps the note, so a restart counts only the new runs
    step(m, CompileStale(J, "recalibrated"))
    (d,) = m.decide([Placed(J, "nairobi", {}, EXPECTED)], NOW)
    assert d.update is not None and d.update.fields["recovery"]["runs_from_attempt"] == 3


# == devices lost, stopped, recalibrated (preemption of placed work) ==================


def test_work_moved_off_a_device_leaves_its_queue_and_counts_as_replaced() -> None:
    m = machine_with(S.PLACED, attempts=2)
    out = step(m, WorkMoved(J, "manila recalibrated"))
    assert out == [Requeue(J, replaced_from="manila"), Drop(J, "manila", 2)]
    assert m.jobs[J].record.attempts == 2  # attempts are spent by compiles, not moves


def test_a_lost_device_sends_its_jobs_back_without_touching_its_queue() -> None:
    m = JobMachine()
    for job_id, state in (("a", S.PLACED), ("b", S.RUNNING), ("c", S.QUEUED)):
        m.track(JobRecord(job_id, state, SPEC, 1.0, 1.0, device="manila", attempts=1))
    events = [DeviceLost(j.job_id, "manila restarted") for j in m.jobs.on_device("manila")]
    decisions = m.decide(events, NOW)
    assert [d.event.job_id for d in decisions] == ["a", "b"]  # QUEUED "c" has no row
    out = m.commit(decisions, [True, True])
    assert out == [Requeue("a", "manila"), Requeue("b", "manila")]
    assert m.jobs.on_device("manila", S.PLACED, S.RUNNING) == []


# == recovery after a crash at each state ==============================================


@pytest.mark.parametrize(
    ("state", "runs", "finish", "instructions"),
    [
        (S.QUEUED, (), None, [Requeue(J)]),
        (S.COMPILING, (), S.QUEUED, [Requeue(J)]),
        (S.PLACED, (), S.QUEUED, [Requeue(J)]),
        (S.RUNNING, (), S.QUEUED, [Requeue(J)]),
        (S.RUNNING, (run(40),), S.QUEUED, [Requeue(J)]),  # the missing 60 run again
        (S.RUNNING, (run(100),), S.POSTPROCESSING, [Finish(J)]),  # counted, not moved
        (S.POSTPROCESSING, (run(100),), None, [Finish(J)]),
    ],
)
def test_recovery_after_a_crash_in_each_state(
    state: JobState,
    runs: tuple[RawRun, ...],
    finish: JobState | None,
    instructions: list[Instruction],
) -> None:
    m = machine_with(state, runs=runs)
    (d,) = m.decide([Recovered(J)], NOW)
    assert (d.update.to_state if d.update else None) is finish
    assert m.commit([d], [True] if d.update else []) == instructions
    assert m.jobs[J].runs == list(runs)  # counted shots survive the restart


def test_an_unreadable_job_fails_by_the_unrecoverable_row() -> None:
    m = JobMachine()
    d = m.unreadable(J, S.RUNNING, "spec_json does not decode", NOW)
    assert d is not None and d.update is not None
    assert d.row.event == "unrecoverable" and d.update.to_state is S.FAILED
    assert "submit it again" in d.update.fields["error"]
    assert m.unreadable(J, S.DONE, "x", NOW) is None


# == races ============================================================================


@pytest.mark.parametrize("state", LIVE_STATES)
def test_cancel_wins_in_any_live_state_and_takes_the_work_out(state: JobState) -> None:
    m = machine_with(state)
    out = step(m, CancelRequested(J))
    assert out[0] == Drop(J, "manila") and isinstance(out[1], Retire)
    assert out[1].record.state is S.CANCELLED


@pytest.mark.parametrize(
    "late",
    [
        Compiled(J, "cal-1", []),
        BatchStarted(J, "manila", 1, NOW),
        RunCounted(J, run(), True, False),
        RunRejected(J, 1, "checksum"),
        ResultStored(J, "ab"),
        DeadlinePassed(J),
    ],
)
def test_an_event_after_cancel_in_one_call_sees_the_job_cancelled(late: Event) -> None:
    m = machine_with(S.RUNNING)
    decisions = m.decide([CancelRequested(J), late], NOW)
    assert [d.event for d in decisions] == [CancelRequested(J)]


def test_a_cancel_after_a_completing_run_in_one_call_cancels_postprocessing() -> None:
    m = machine_with(S.RUNNING)
    decisions = m.decide([RunCounted(J, run(), True, False), CancelRequested(J)], NOW)
    assert [(d.update.from_state, d.update.to_state) for d in decisions if d.update] == [
        (S.RUNNING, S.POSTPROCESSING),
        (S.POSTPROCESSING, S.CANCELLED),
    ]


def test_an_update_the_store_refuses_changes_nothing_and_drops_the_jobs_later_moves() -> None:
    m = machine_with(S.RUNNING)
    decisions = m.decide([RunCounted(J, run(40), False, False, "missing"), CancelRequested(J)], NOW)
    assert m.commit(decisions, [False, True]) == []
    job = m.jobs[J]
    assert job.state is S.RUNNING and job.runs == []


def test_stored_records_let_the_machine_move_a_job_it_does_not_track() -> None:
    m = JobMachine()
    rec = JobRecord(J, S.PLACED, SPEC, 1.0, 1.0, device="manila", attempts=1)
    (d,) = m.decide([CancelRequested(J)], NOW, stored={J: rec})
    assert d.update is not None and d.update.to_state is S.CANCELLED
    assert m.commit([d], [True]) == [Drop(J, "manila")]
    assert J not in m.jobs


def test_deciding_is_pure_and_commit_is_the_only_writer() -> None:
    m = machine_with(S.RUNNING)
    before = replace(m.jobs[J].record)
    m.decide([RunCounted(J, run(40), False, False, "x"), DeviceLost(J, "gone")], NOW)
    assert m.jobs[J].record == before and m.jobs[J].runs == []


def test_each_stored_move_names_its_event_in_order() -> None:
    m = machine_with(S.QUEUED, device=None, attempts=0)
    moves = []
    for event in (
        Placed(J, "manila", {}, EXPECTED),
        Compiled(J, "cal-1", []),
        BatchStarted(J, "manila", 1, NOW),
        RunCounted(J, run(30, remaining=70), False, True),  # no move: nothing to store
        RunCounted(J, run(70, first=30), True, False),
    ):
        decisions = m.decide([event], NOW)
        moves += [(d.update.event, d.update.to_state) for d in decisions if d.update]
        m.commit(decisions, [True] * sum(d.update is not None for d in decisions))
    assert moves == [
        ("placed", S.COMPILING),
        ("compiled", S.PLACED),
        ("batch started", S.RUNNING),
        ("run counted", S.POSTPROCESSING),
    ]


def test_the_architecture_page_shows_the_table_the_code_has() -> None:
    from pathlib import Path

    from qrt_ray.policies.jobflow import rows_markdown

    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    assert rows_markdown() in page


def test_a_run_is_taken_in_once_when_the_job_was_rebuilt_meanwhile() -> None:
    """A report's decision is made; while its move is being stored, the job is rebuilt
    from the store's ledger (a failed write read back) with that same run. Committing
    the decision moves the job but does not count the run again (it would be billed
    twice)."""
    m = machine_with(S.RUNNING)
    decisions = m.decide([RunCounted(J, run(), True, False)], NOW)
    assert decisions and decisions[0].run is not None
    rebuilt = m.jobs.get(J).record
    m.jobs.remove(J)
    m.track(rebuilt, runs=(run(),))  # read back: the run is in the ledger already
    assert m.commit(decisions, [True]) == [Finish(J)]
    job = m.jobs.get(J)
    assert job.state is S.POSTPROCESSING and len(job.runs) == 1


@pytest.mark.parametrize("state", [S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING])
def test_a_job_recovered_with_every_shot_in_the_ledger_is_finished_not_run(
    state: JobState,
) -> None:
    """Whatever state it was caught in, a recovered job whose ledger holds all its shots
    goes to POSTPROCESSING: placed again it would ask a device for zero shots."""
    m = machine_with(state, attempts=3, runs=(run(100, attempt=1),))
    assert step(m, Recovered(J)) == [Finish(J)]
    assert m.jobs.get(J).state is S.POSTPROCESSING
    partial = machine_with(state, attempts=3, runs=(run(40, attempt=1),))
    step(partial, Recovered(J))
    assert partial.jobs.get(J).state is S.QUEUED  # 60 shots still to run
