"""The job store's guarantees, held by both backends: SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from qrt_ray.errors import IntegrityError, JobNotFoundError, StoreUnavailableError, ValidationError
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.store import (
    JobRecord,
    JobStore,
    ShotRecord,
    SQLiteJobStore,
    StateUpdate,
    open_store,
    redact_url,
)
from qrt_ray.store.migrations import SCHEMA_VERSION
from qrt_ray.store.postgres import PostgresJobStore
from tests.postgres import raw_sql as raw

S = JobState


def rec(job_id: str, key: str | None = None, tenant: str = "default", t: float = 1.0) -> JobRecord:
    spec = JobSpec(circuits=("OPENQASM 2.0;",), shots=100, idempotency_key=key, tenant=tenant)
    return JobRecord(job_id, S.QUEUED, spec, t, t)


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    s = open_store(store_url)
    yield s
    s.close()


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: check the store's own writer connection
    assert store._write_conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_postgres_commits_are_durable(store_url: str, store: JobStore) -> None:
    if not isinstance(store, PostgresJobStore):
        return  # SQLite's durability: the test above
    # fsync and synchronous_commit on: a commit is on disk when it returns
    assert raw(store_url, "SHOW synchronous_commit") == [("on",)]
    assert raw(store_url, "SHOW fsync") == [("on",)]


def test_schema_is_current(store_url: str, store: JobStore) -> None:
    assert raw(store_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_reopen_keeps_data_and_schema(store_url: str) -> None:
    s = open_store(store_url)
    s.admit([rec("a")])
    s.close()
    s2 = open_store(store_url)
    assert s2.get("a").state is S.QUEUED
    s2.close()


def test_newer_schema_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    raw(store_url, "UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer than this qrt-ray supports"):
        open_store(store_url)


def test_idempotency_key_returns_the_same_job(store: JobStore) -> None:
    ((_first, created1),) = store.admit([rec("a", key="k")])
    ((second, created2),) = store.admit([rec("b", key="k")])
    assert created1 and not created2
    assert second.job_id == "a"
    with pytest.raises(JobNotFoundError):
        store.get("b")
    # the same key under another tenant is another job
    ((other, created3),) = store.admit([rec("c", key="k", tenant="t2")])
    assert created3 and other.job_id == "c"


def test_one_job_per_key_across_processes(store_url: str) -> None:
    # two store owners (two heads, a client retrying against a restarted scheduler)
    # admitting the same key at the same instant still make one job
    stores = [open_store(store_url) for _ in range(4)]
    gate = threading.Barrier(len(stores))
    outcomes: list[tuple[JobRecord, bool]] = []

    def admit(i: int) -> None:
        gate.wait()
        outcomes.extend(stores[i].admit([rec(f"j{i}", key="same")]))

    _together([lambda i=i: admit(i) for i in range(len(stores))])
    for s in stores:
        s.close()
    assert sum(created for _, created in outcomes) == 1
    assert len({r.job_id for r, _ in outcomes}) == 1
    assert raw(store_url, "SELECT COUNT(*) FROM jobs") == [(1,)]


def test_a_stored_job_id_is_not_overwritten(store: JobStore) -> None:
    store.admit([rec("a", key="k1")])
    with pytest.raises(IntegrityError, match="already stored"):
        store.admit([rec("a", key="k2")])
    assert store.get("a").spec.idempotency_key == "k1"


def test_transition_is_compare_and_set(store: JobStore) -> None:
    store.admit([rec("a")])
    ok = store.apply([StateUpdate("a", S.QUEUED, S.COMPILING, 2.0, fields={"device": "d1"})])
    stale = store.apply([StateUpdate("a", S.QUEUED, S.CANCELLED, 3.0)])
    assert ok == [True] and stale == [False]
    got = store.get("a")
    assert got.state is S.COMPILING and got.device == "d1"
    assert [(e.from_state, e.to_state) for e in store.events("a")] == [
        (None, S.QUEUED),
        (S.QUEUED, S.COMPILING),
    ]


def test_each_transition_keeps_the_event_that_made_it(store: JobStore) -> None:
    store.admit([rec("a")])
    store.apply(
        [StateUpdate("a", S.QUEUED, S.COMPILING, 2.0, reason="placed on d1", event="placed")]
    )
    store.apply([StateUpdate("a", S.COMPILING, S.CANCELLED, 3.0)])  # no event named
    got = [(e.event, e.reason) for e in store.events("a")]
    assert got == [("submitted", "submitted"), ("placed", "placed on d1"), (None, None)]


def test_racing_writers_move_a_job_once(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    stores[0].admit([rec("a")])
    gate = threading.Barrier(len(stores))
    applied: list[bool] = []

    def move(s: JobStore, to: S) -> None:
        gate.wait()
        applied.extend(s.apply([StateUpdate("a", S.QUEUED, to, 2.0)]))

    targets = [S.COMPILING, S.CANCELLED, S.COMPILING, S.CANCELLED]
    _together([lambda s=s, t=t: move(s, t) for s, t in zip(stores, targets, strict=True)])
    assert sorted(applied) == [False, False, False, True]
    assert [e.seq for e in stores[0].events("a")] == [0, 1]
    for s in stores:
        s.close()


def test_unknown_field_fails_only_its_own_write(store: JobStore) -> None:
    store.admit([rec("a"), rec("b", t=2.0)])
    with pytest.raises(ValueError, match="not settable"):
        store.apply([StateUpdate("a", S.QUEUED, S.COMPILING, 2.0, fields={"bogus": 1})])
    assert store.get("a").state is S.QUEUED  # rolled back, nothing half-written
    assert store.apply([StateUpdate("b", S.QUEUED, S.COMPILING, 2.0)]) == [True]


def test_blob_round_trip_and_corruption_detected(store_url: str, store: JobStore) -> None:
    payload = bytes(range(256)) * 3  # every byte value survives the round trip
    digest = store.put_blob(payload)
    assert store.put_blob(payload) == digest  # idempotent
    assert store.get_blob(digest) == payload
    raw(store_url, "UPDATE blobs SET data=? WHERE sha256=?", (b'{"counts": 2}', digest))
    with pytest.raises(IntegrityError, match="failed its checksum"):
        store.get_blob(digest)
    with pytest.raises(IntegrityError, match="missing"):
        store.get_blob("0" * 64)


def test_batch_reads_answer_as_one_at_a_time_reads_do(store_url: str, store: JobStore) -> None:
    # more ids than one IN (...) list holds, some unknown, a tenant's key under another
    store.admit([rec(f"j{i}", key=f"k{i}") for i in range(0, 1200, 2)])
    store.admit([rec("other", key="k0", tenant="t2")])
    asked = [("default", f"k{i}") for i in range(1200)] + [("t2", "k0"), ("t3", "k0")]
    found = store.find_by_keys(asked)
    assert set(found) == {("default", f"k{i}") for i in range(0, 1200, 2)} | {("t2", "k0")}
    assert all(found[key] == store.find_by_key(*key) for key in found)
    assert found[("t2", "k0")].job_id == "other"

    refs = store.result_refs([f"j{i}" for i in range(1200)] + ["nope"])
    assert set(refs) == {f"j{i}" for i in range(0, 1200, 2)}
    assert refs["j0"] == (S.QUEUED, None)

    blobs = [bytes([i]) * (i + 1) for i in range(3)]
    digests = [store.put_blob(b) for b in blobs]
    for k, job_id in enumerate(("j0", "j2")):  # two jobs DONE with results of 1 and 3 bytes
        path = (S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING, S.POSTPROCESSING, S.DONE)
        for a, b in itertools.pairwise(path):
            fields = {"result_sha256": digests[2 * k]} if b is S.DONE else {}
            assert store.apply([StateUpdate(job_id, a, b, 2.0, fields=fields)]) == [True]
    assert store.result_sizes(["j0", "j2", "j4", "nope"]) == {"j0": 1, "j2": 3}
    asked_blobs = [digests[2], digests[0], digests[2]]  # order and repeats kept
    assert store.get_blobs(asked_blobs) == [blobs[2], blobs[0], blobs[2]]
    with pytest.raises(IntegrityError, match="missing"):
        store.get_blobs([digests[0], "0" * 64])
    raw(store_url, "UPDATE blobs SET data=? WHERE sha256=?", (b"tampered", digests[1]))
    with pytest.raises(IntegrityError, match="failed its checksum"):
        store.get_blobs(digests)


def test_shot_ledger_counts_each_run_once(store: JobStore) -> None:
    r = ShotRecord("a", 1, "cal-1", 400, 1.0)
    assert store.record_shots([r]) == [True]
    assert store.record_shots([r, ShotRecord("a", 2, "cal-1", 600, 2.0)]) == [False, True]
    # a second slice of attempt 2, from shot 600 on, is another run
    assert store.record_shots([ShotRecord("a", 2, "cal-1", 100, 3.0, first_shot=600)]) == [True]
    assert sum(x.shots for x in store.shot_ledger("a")) == 1100


def test_group_commit_batches_concurrent_writers(store: JobStore) -> None:
    threads = [
        threading.Thread(target=lambda i=i: store.admit([rec(f"j{i}", t=float(i))]))
        for i in range(200)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts_by_state()[S.QUEUED] == 200
    assert store.write_count >= 200
    assert store.commit_count < store.write_count  # several writes shared one commit


def test_unfinished_and_listing(store: JobStore) -> None:
    store.admit([rec("a", t=1.0), rec("b", t=2.0), rec("c", t=3.0)])
    store.apply([StateUpdate("b", S.QUEUED, S.CANCELLED, 4.0)])
    assert [r.job_id for r in store.unfinished()] == ["a", "c"]
    assert [r.job_id for r in store.list_jobs(states=[S.CANCELLED])] == ["b"]
    assert [r.job_id for r in store.list_jobs(limit=2)] == ["c", "b"]


def test_undecodable_row_is_reported_not_recovered(store_url: str, store: JobStore) -> None:
    store.admit([rec("a"), rec("b", t=2.0)])
    raw(store_url, "UPDATE jobs SET spec_json=? WHERE job_id=?", ("{not json", "a"))
    assert [r.job_id for r in store.unfinished()] == ["b"]
    assert [(j, s) for j, s, _ in store.unreadable()] == [("a", S.QUEUED)]
    with pytest.raises(IntegrityError, match="does not decode"):
        store.get("a")


def test_open_store_names_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="unsupported database URL scheme 'mysql'"):
        open_store("mysql://x")
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(s, SQLiteJobStore)
    s.close()
    for name in (":memory:", "sqlite:///:memory:", "file:jobs?mode=memory"):
        with pytest.raises(ValidationError, match="is not a database file"):
            open_store(name)
    with pytest.raises(ValidationError, match="is not a database file"):
        SQLiteJobStore(":memory:")
    assert not Path(":memory:").exists()
    monkeypatch.setenv("QRT_STORE", str(tmp_path / "env.db"))
    s = open_store()
    assert isinstance(s, SQLiteJobStore) and s.path == tmp_path / "env.db"
    s.close()


def test_unreachable_postgres_fails_fast_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://qrt:hunter2@/qrt?host={tmp_path}&port=1"
    with pytest.raises(StoreUnavailableError, match="cannot connect to PostgreSQL") as err:
        open_store(url)
    assert "hunter2" not in str(err.value)
    assert "***" in str(err.value)
    assert redact_url("postgresql://u:pw@h:5/db?password=pw2&x=1") == (
        "postgresql://u:***@h:5/db?password=***&x=1"
    )


def test_postgres_connection_loss_costs_one_write_not_the_store(
    store_url: str, store: JobStore
) -> None:
    if not isinstance(store, PostgresJobStore):
        return  # a file has no connection to lose
    store.admit([rec("a")])
    store.get("a")  # this thread's read connection exists now
    # the server drops every connection of the store (a failover, a restart)
    raw(
        store_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name='qrt-ray' AND pid <> pg_backend_pid()",
    )
    with pytest.raises(psycopg.OperationalError):
        store.admit([rec("b")])  # the write in flight fails, and says so
    assert store.admit([rec("c")])[0][1]  # the next one reconnects
    assert store.get("a").state is S.QUEUED  # reads reconnect too
    assert {r.job_id for r in store.unfinished()} == {"a", "c"}


def _together(calls: list[Callable[[], None]]) -> None:
    """Run calls on threads at once; re-raise the first error."""
    errors: list[BaseException] = []

    def guard(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_many_openers_at_once_migrate_once(store_url: str, request: pytest.FixtureRequest) -> None:
    # processes open one fresh store together (several actors, several heads on one
    # database); only one may create the tables. For SQLite the race (WAL's switch
    # answers "locked" without waiting) hit about one fresh database in ten before
    # it was handled, so try several
    postgres = store_url.startswith("postgresql://")
    for attempt in range(12 if not postgres else 4):
        if not postgres:
            url = f"{store_url}.{attempt}"
        elif attempt == 0:
            url = store_url
        else:
            url = request.getfixturevalue("postgres_server").new_database()
        stores: list[JobStore] = []
        _together([lambda u=url, out=stores: out.append(open_store(u)) for _ in range(6)])
        for s in stores:
            s.close()
        assert raw(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_an_urgent_write_goes_before_the_bulk_moves_waiting(store: JobStore) -> None:
    writer = store._writer  # type: ignore[attr-defined]
    order: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def noted(name: str) -> Callable[[object], None]:
        return lambda conn: order.append(name)

    def first_write(conn: object) -> None:
        entered.set()
        release.wait(10)
        order.append("first")

    first = writer.submit(first_write)
    assert entered.wait(10)  # the writer is inside its transaction now
    bulk = [writer.submit(noted(f"bulk{i}"), rows=100) for i in range(5)]
    urgent = writer.submit(noted("urgent"), urgent=True)
    commits = store.commit_count
    release.set()
    for f in [first, *bulk, urgent]:
        f.result(timeout=10)
    assert order[:2] == ["first", "urgent"]  # in the next transaction, alone
    assert order[2:] == [f"bulk{i}" for i in range(5)]  # in order
    # the first's, the urgent one's, then bulk writes of 100 rows three a transaction
    # (taken until 256 rows are reached)
    assert store.commit_count - commits == 1 + 1 + 2


def test_moves_of_one_call_are_one_transaction_in_order(store: JobStore) -> None:
    store.admit([rec(f"j{i}", t=float(i)) for i in range(40)])
    moves = [StateUpdate(f"j{i}", S.QUEUED, S.COMPILING, 50.0) for i in range(40)]
    moves.append(StateUpdate("j39", S.COMPILING, S.PLACED, 51.0, fields={"device": "d"}))
    moves.append(StateUpdate("j0", S.QUEUED, S.CANCELLED, 52.0))  # j0 has moved on
    commits = store.commit_count
    assert store.apply(moves) == [True] * 41 + [False]
    assert store.commit_count - commits == 1
    assert store.get("j39").state is S.PLACED and store.get("j39").device == "d"
    assert [(e.seq, e.to_state) for e in store.events("j39")] == [
        (0, S.QUEUED),
        (1, S.COMPILING),
        (2, S.PLACED),
    ]


def test_a_closed_store_answers_every_write_at_once(store_url: str) -> None:
    s = open_store(store_url)
    writer = s._writer  # type: ignore[attr-defined]
    s.close()
    late = writer.submit(lambda conn: None)  # after the stop: never left waiting
    with pytest.raises(RuntimeError, match="closed"):
        late.result(timeout=5)
