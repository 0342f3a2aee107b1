from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from qrt_ray.errors import IntegrityError, JobNotFoundError, ValidationError
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.store import JobRecord, ShotRecord, SQLiteJobStore, StateUpdate, open_store
from qrt_ray.store.migrations import SCHEMA_VERSION

S = JobState


def rec(job_id: str, key: str | None = None, tenant: str = "default", t: float = 1.0) -> JobRecord:
    spec = JobSpec(circuits=("OPENQASM 2.0;",), shots=100, idempotency_key=key, tenant=tenant)
    return JobRecord(job_id, S.QUEUED, spec, t, t)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteJobStore:
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_wal_and_full_sync(store: SQLiteJobStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: check the store's own writer connection
    assert store._write_conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_reopen_keeps_data_and_schema(tmp_path: Path) -> None:
    s = SQLiteJobStore(tmp_path / "j.db")
    s.admit([rec("a")])
    s.close()
    s2 = SQLiteJobStore(tmp_path / "j.db")
    assert s2.get("a").state is S.QUEUED
    s2.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = SQLiteJobStore(tmp_path / "j.db")
    s.close()
    conn = sqlite3.connect(tmp_path / "j.db")
    conn.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    conn.commit()
    with pytest.raises(RuntimeError, match="newer than this qrt-ray supports"):
        SQLiteJobStore(tmp_path / "j.db")


def test_idempotency_key_returns_the_same_job(store: SQLiteJobStore) -> None:
    ((_first, created1),) = store.admit([rec("a", key="k")])
    ((second, created2),) = store.admit([rec("b", key="k")])
    assert created1 and not created2
    assert second.job_id == "a"
    with pytest.raises(JobNotFoundError):
        store.get("b")
    # the same key under another tenant is another job
    ((other, created3),) = store.admit([rec("c", key="k", tenant="t2")])
    assert created3 and other.job_id == "c"


def test_transition_is_compare_and_set(store: SQLiteJobStore) -> None:
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


def test_unknown_field_fails_only_its_own_write(store: SQLiteJobStore) -> None:
    store.admit([rec("a"), rec("b", t=2.0)])
    with pytest.raises(ValueError, match="not settable"):
        store.apply([StateUpdate("a", S.QUEUED, S.COMPILING, 2.0, fields={"bogus": 1})])
    assert store.get("a").state is S.QUEUED  # rolled back, nothing half-written
    assert store.apply([StateUpdate("b", S.QUEUED, S.COMPILING, 2.0)]) == [True]


def test_blob_round_trip_and_corruption_detected(store: SQLiteJobStore) -> None:
    digest = store.put_blob(b'{"counts": 1}')
    assert store.get_blob(digest) == b'{"counts": 1}'
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE blobs SET data=? WHERE sha256=?", (b'{"counts": 2}', digest))
    conn.commit()
    with pytest.raises(IntegrityError, match="failed its checksum"):
        store.get_blob(digest)
    with pytest.raises(IntegrityError, match="missing"):
        store.get_blob("0" * 64)


def test_shot_ledger_counts_each_attempt_once(store: SQLiteJobStore) -> None:
    r = ShotRecord("a", 1, "cal-1", 400, 1.0)
    assert store.record_shots([r]) == [True]
    assert store.record_shots([r, ShotRecord("a", 2, "cal-1", 600, 2.0)]) == [False, True]
    assert sum(x.shots for x in store.shot_ledger("a")) == 1000


def test_group_commit_batches_concurrent_writers(store: SQLiteJobStore) -> None:
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
    assert store.commit_count < store.write_count  # several writes shared one fsync


def test_unfinished_and_listing(store: SQLiteJobStore) -> None:
    store.admit([rec("a", t=1.0), rec("b", t=2.0), rec("c", t=3.0)])
    store.apply([StateUpdate("b", S.QUEUED, S.CANCELLED, 4.0)])
    assert [r.job_id for r in store.unfinished()] == ["a", "c"]
    assert [r.job_id for r in store.list_jobs(states=[S.CANCELLED])] == ["b"]
    assert [r.job_id for r in store.list_jobs(limit=2)] == ["c", "b"]


def test_open_store_rejects_unknown_urls(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unsupported database URL"):
        open_store("mysql://x")
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(s, SQLiteJobStore)
    s.close()


def _open_together(path: Path, n: int) -> tuple[list[SQLiteJobStore], list[BaseException]]:
    """Open ``path`` from ``n`` threads released at the same instant."""
    import threading

    stores: list[SQLiteJobStore] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(n)

    def open_one() -> None:
        try:
            gate.wait()
            stores.append(SQLiteJobStore(path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stores, errors


def test_many_openers_at_once_migrate_once(tmp_path: Path) -> None:
    # the scheduler, the calibration manager and every device actor open the store
    # together when a farm starts; only one may create the tables

    # the race (WAL's switch answers "locked" without waiting) hit about one fresh
    # database in ten before it was handled, so try several
    for attempt in range(12):
        path = tmp_path / f"fresh{attempt}.sqlite3"
        stores, errors = _open_together(path, 6)
        for s in stores:
            s.close()
        assert not errors, (attempt, errors)
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()
