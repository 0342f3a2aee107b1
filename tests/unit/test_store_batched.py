"""A SQLite store writes a batch of moves, ledger lines and new jobs in a few statements
of many rows, and decides each row as one statement a row would.

Each statement the store's writer runs hands the GIL over and must win it back; beside
a busy event loop that took up to the switch interval each time, so a write of 200
moves cost 20-330 ms where it costs 4.5 ms alone (``benchmarks/store_contention.py``).
These tests hold the batched writes to the row-by-row ones (PostgreSQL's, and
SQLite's before) on random batches, and count the statements.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt_ray.errors import IntegrityError, ValidationError
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.models import JobSpec
from qrt_ray.store import JobRecord, ShotRecord, SQLiteJobStore, StateUpdate
from qrt_ray.store.base import Charge
from tests.unit.test_store_plans import TracedStore

S = JobState
SPEC = JobSpec(circuits=("OPENQASM 2.0;",), shots=100)
JOBS = [f"job-{i}" for i in range(5)]
STATES = [S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING, S.POSTPROCESSING, S.DONE, S.FAILED]

fields = st.fixed_dictionaries(
    {},
    optional={
        "device": st.sampled_from(["manila", "lima", None]),
        "attempts": st.integers(0, 3),
        "error": st.sampled_from(["boom", None]),
        "placement": st.sampled_from([{"device": "manila", "ranking": [["manila", 0.5]]}, None]),
        "error_class": st.sampled_from([ErrorClass.DEVICE, None]),
        "result_sha256": st.sampled_from(["ab" * 32]),
    },
)


@st.composite
def moves(draw: st.DrawFn) -> StateUpdate:
    job_id = draw(st.sampled_from([*JOBS, "not-stored"]))
    lines = draw(st.lists(st.integers(0, 2), max_size=2, unique=True))
    charges = tuple(
        Charge(job_id, line, "default", "manila", "shots", 100, 0.1, 0.01, 5.0) for line in lines
    )
    return StateUpdate(
        job_id,
        draw(st.sampled_from(STATES)),
        draw(st.sampled_from(STATES)),
        draw(st.floats(1.0, 9.0)),
        reason=draw(st.sampled_from(["why", None])),
        fields=draw(fields),
        event=draw(st.sampled_from(["Placed", None])),
        charges=charges,
    )


ledger_lines = st.builds(
    ShotRecord,
    job_id=st.sampled_from(JOBS),
    attempt=st.integers(1, 2),
    calibration_id=st.just("cal-1"),
    shots=st.integers(1, 100),
    at=st.just(4.0),
    first_shot=st.sampled_from([0, 50]),
)


@st.composite
def new_jobs(draw: st.DrawFn) -> JobRecord:
    key = draw(st.sampled_from(["a", "b", "gone", None]))
    tenant = draw(st.sampled_from(["default", "other"]))
    spec = SPEC.model_copy(update={"idempotency_key": key, "tenant": tenant})
    return JobRecord(f"new-{draw(st.integers(0, 10**9))}", S.QUEUED, spec, 2.0, 2.0)


def _store(path: Path, batched: bool) -> SQLiteJobStore:
    store = SQLiteJobStore(path)
    store.locked_writes = batched  # False: each row its own statement, as PostgreSQL
    store.admit([JobRecord(j, S.QUEUED, SPEC, 1.0, 1.0) for j in JOBS])
    # a key whose job retention removed: using it again is refused
    spent = SPEC.model_copy(update={"idempotency_key": "gone"})
    store.admit([JobRecord("spent", S.QUEUED, spent, 1.0, 1.0)])
    store.apply([StateUpdate("spent", S.QUEUED, S.CANCELLED, 1.5)])
    assert store.purge_jobs(["spent"], 1.7).jobs == 1
    return store


def _admitted(store: SQLiteJobStore, records: list[JobRecord]) -> object:
    """What admitting ``records`` answers: each job and whether it is new, or the error."""
    try:
        return [(rec.job_id, rec.tenant, new) for rec, new in store.admit(records)]
    except (ValidationError, IntegrityError) as exc:
        return type(exc).__name__, str(exc)


def _contents(store: SQLiteJobStore) -> dict[str, list[Any]]:
    return {
        "jobs": store.read_sql("SELECT * FROM jobs ORDER BY job_id"),
        "transitions": store.read_sql("SELECT * FROM transitions ORDER BY job_id, seq"),
        "ledger": store.read_sql("SELECT * FROM ledger ORDER BY job_id, line"),
        "shots": store.read_sql("SELECT * FROM shot_ledger ORDER BY job_id, attempt, first_shot"),
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(moves(), min_size=1, max_size=12), min_size=1, max_size=4),
    lines=st.lists(st.lists(ledger_lines, min_size=1, max_size=6), max_size=3),
    admits=st.lists(
        st.lists(new_jobs(), min_size=1, max_size=6, unique_by=lambda r: r.job_id), max_size=3
    ),
)
def test_batched_writes_decide_every_row_as_one_statement_a_row_would(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[StateUpdate]],
    lines: list[list[ShotRecord]],
    admits: list[list[JobRecord]],
) -> None:
    base = tmp_path_factory.mktemp("batched")
    one, many = _store(base / "rows.sqlite3", False), _store(base / "batched.sqlite3", True)
    try:
        for batch in batches:
            assert many.apply(batch) == one.apply(batch)
        for records in lines:
            assert many.record_shots(records) == one.record_shots(records)
        for records in admits:
            assert _admitted(many, records) == _admitted(one, records)
        assert _contents(many) == _contents(one)
    finally:
        one.close()
        many.close()


def test_two_hundred_moves_take_a_few_statements(tmp_path: Path) -> None:
    store = TracedStore(tmp_path / "jobs.sqlite3")
    try:
        ids = [f"job-{i:03d}" for i in range(200)]
        store.statements.clear()
        keyed = [SPEC.model_copy(update={"idempotency_key": j}) for j in ids]
        store.admit(
            [JobRecord(j, S.QUEUED, spec, 1.0, 1.0) for j, spec in zip(ids, keyed, strict=True)]
        )
        admitted = len(store.statements)
        store.statements.clear()
        moves = [
            u
            for j in ids
            for u in (
                StateUpdate(j, S.QUEUED, S.COMPILING, 2.0, fields={"device": "manila"}),
                StateUpdate(j, S.COMPILING, S.PLACED, 2.5, fields={"calibration_id": "c"}),
            )
        ]
        assert store.apply(moves) == [True] * 400
        applied = len(store.statements)
        store.statements.clear()
        records = [ShotRecord(j, 1, "c", 100, 3.0) for j in ids]
        assert store.record_shots(records) == [True] * 200
        assert store.record_shots(records) == [False] * 200  # counted once
        counted = len(store.statements)
        # BEGIN, SAVEPOINT, RELEASE and COMMIT included; a row each: about 600, 800 and 400
        assert admitted <= 12, store.statements
        assert applied <= 14, [s[:80] for s in store.statements]
        assert counted <= 20, [s[:80] for s in store.statements]
        for j in ids:  # every slice of every statement landed
            placed = store.get(j)
            assert (placed.state, placed.device, placed.calibration_id) == (S.PLACED, "manila", "c")
            assert [e.to_state for e in store.events(j)] == [S.QUEUED, S.COMPILING, S.PLACED]
        assert len(store.read_sql("SELECT * FROM shot_ledger")) == 200
    finally:
        store.close()


def test_a_batch_with_a_field_that_cannot_be_set_writes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs.sqlite3", True)
    try:
        good = StateUpdate(JOBS[0], S.QUEUED, S.COMPILING, 2.0)
        bad = StateUpdate(JOBS[1], S.QUEUED, S.COMPILING, 2.0, fields={"tenant": "other"})
        with pytest.raises(ValueError, match="'tenant' is not settable"):
            store.apply([good, bad])
        assert store.get(JOBS[0]).state is S.QUEUED
        assert len(store.events(JOBS[0])) == 1
    finally:
        store.close()


def test_admitting_a_stored_job_id_again_is_refused_whole(tmp_path: Path) -> None:
    store = _store(tmp_path / "jobs.sqlite3", True)
    try:
        again = [
            JobRecord("job-new", S.QUEUED, SPEC, 2.0, 2.0),
            JobRecord(JOBS[2], S.QUEUED, SPEC, 2.0, 2.0),
        ]
        with pytest.raises(IntegrityError, match="job-2: a job with this id is already stored"):
            store.admit(again)
        assert store.read_sql("SELECT COUNT(*) FROM jobs WHERE job_id='job-new'") == [(0,)]
    finally:
        store.close()


def test_a_row_changed_under_the_lock_fails_the_write(tmp_path: Path) -> None:
    """The batched UPDATE names the state each row was read in; were a row changed
    between the read and the write (it cannot be, under SQLite's write lock), the
    write fails whole instead of writing over it."""
    store = _store(tmp_path / "jobs.sqlite3", True)
    path = tmp_path / "jobs.sqlite3"
    try:
        from qrt_ray.store import batched

        real = batched._states

        def stale(conn: Any, job_ids: Any) -> dict[str, tuple[str, int]]:
            seen = real(conn, job_ids)
            conn.execute("UPDATE jobs SET state='RUNNING' WHERE job_id=?", (JOBS[0],))
            return seen

        batched._states = stale
        try:
            with pytest.raises(IntegrityError, match="1 of 1 jobs changed state"):
                store.apply([StateUpdate(JOBS[0], S.QUEUED, S.COMPILING, 2.0)])
        finally:
            batched._states = real
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT state FROM jobs WHERE job_id=?", (JOBS[0],)).fetchone() == (
                "QUEUED",
            )
    finally:
        store.close()


def _both(tmp_path: Path) -> tuple[SQLiteJobStore, SQLiteJobStore]:
    return _store(tmp_path / "rows.sqlite3", False), _store(tmp_path / "batched.sqlite3", True)


def test_a_later_move_applies_where_an_earlier_one_of_its_job_did_not(tmp_path: Path) -> None:
    one, many = _both(tmp_path)
    try:
        moves = [
            StateUpdate(JOBS[0], S.RUNNING, S.DONE, 2.0),  # not RUNNING: refused
            StateUpdate(JOBS[0], S.QUEUED, S.COMPILING, 2.1, fields={"device": "lima"}),
            StateUpdate(JOBS[0], S.QUEUED, S.FAILED, 2.2),  # COMPILING now: refused
            StateUpdate(JOBS[0], S.COMPILING, S.PLACED, 2.3, fields={"attempts": 1}),
        ]
        assert many.apply(moves) == one.apply(moves) == [False, True, False, True]
        assert _contents(many) == _contents(one)
        job = many.get(JOBS[0])
        assert (job.state, job.device, job.attempts, job.updated_at) == (S.PLACED, "lima", 1, 2.3)
    finally:
        one.close()
        many.close()


def test_six_hundred_jobs_in_one_batch_cross_every_slice(tmp_path: Path) -> None:
    """More jobs than one IN list or one statement's variables hold."""
    one, many = _both(tmp_path)
    try:
        ids = [f"big-{i:03d}" for i in range(600)]
        for store in (one, many):
            store.admit([JobRecord(j, S.QUEUED, SPEC, 1.0, 1.0) for j in ids])
        moves = [
            u
            for j in ids
            for u in (
                StateUpdate(j, S.QUEUED, S.COMPILING, 2.0, fields={"placement": {"device": j}}),
                StateUpdate(j, S.COMPILING, S.PLACED, 2.5, fields={"calibration_id": j}),
            )
        ]
        assert many.apply(moves) == one.apply(moves) == [True] * 1200
        lines = [ShotRecord(j, 1, "c", 10, 3.0) for j in ids]
        assert many.record_shots(lines) == one.record_shots(lines) == [True] * 600
        assert _contents(many) == _contents(one)
        assert all((many.get(j).state, many.get(j).calibration_id) == (S.PLACED, j) for j in ids)
    finally:
        one.close()
        many.close()


def test_the_first_job_refused_in_order_names_the_error(tmp_path: Path) -> None:
    """A stored id, a purged key and an id named twice are refused as a row at a time
    refuses them: the same error, from the same job, and nothing written."""

    def keyed(job_id: str, key: str | None) -> JobRecord:
        spec = SPEC.model_copy(update={"idempotency_key": key})
        return JobRecord(job_id, S.QUEUED, spec, 2.0, 2.0)

    one, many = _both(tmp_path)
    try:
        for batch in (
            [keyed(JOBS[0], "b"), keyed("fresh", "gone")],  # a stored id comes first
            [keyed("fresh", "gone"), keyed(JOBS[0], None)],  # the purged key comes first
            [keyed("twice", "b"), keyed("twice", None)],  # one id named twice
        ):
            answers = _admitted(many, batch), _admitted(one, batch)
            assert answers[0] == answers[1], answers
            assert answers[0][0] in ("IntegrityError", "ValidationError")
        assert _contents(many) == _contents(one)
    finally:
        one.close()
        many.close()


def test_this_sqlite_runs_the_batched_writes() -> None:
    from qrt_ray.store.sqlite import batches_work

    assert batches_work() is True  # SQLite 3.33 or later with its JSON functions
    assert SQLiteJobStore.locked_writes is True


def test_blobs_larger_than_a_statement_holds_are_all_stored(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    try:
        blobs = [bytes([k]) * (5 << 20) for k in range(3)]  # 15 MiB: two statements or more
        digests = store.put_blobs(blobs)
        assert store.get_blobs(digests) == blobs
    finally:
        store.close()
