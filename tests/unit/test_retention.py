"""Retention: finished jobs past their window go, with what only they refer to; nothing
else does, and what remains says where they went. Each test runs on both databases."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray.errors import JobNotFoundError, ValidationError
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.store import JobRecord, JobStore, ShotRecord, StateUpdate, open_store
from qrt_ray.store.base import Charge
from qrt_ray.store.retention import collect_garbage

S = JobState
DAY = 86_400.0
NOW = 100 * DAY


def _job(store: JobStore, job_id: str, *, key: str | None = None, at: float = 0.0) -> None:
    spec = JobSpec(circuits=("OPENQASM 2.0;",), shots=100, idempotency_key=key)
    store.admit([JobRecord(job_id, S.QUEUED, spec, at, at)])


def _finish(
    store: JobStore, job_id: str, *, at: float, result: bytes | None = None, run: bytes = b""
) -> None:
    fields = {}
    if result is not None:
        fields["result_sha256"] = store.put_blob(result)
    if run:
        store.record_shots([ShotRecord(job_id, 1, "cal", 100, at, store.put_blob(run))])
    charge = Charge(job_id, 0, "default", "manila", "fee", 0, 0.0, 0.5, at)
    to = S.DONE if result is not None else S.FAILED
    assert store.apply([StateUpdate(job_id, S.QUEUED, to, at, fields=fields, charges=(charge,))])


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    s = open_store(store_url)
    yield s
    s.close()


def _gc(store: JobStore, **kw: object) -> object:
    args = {"keep_fetched_s": 7 * DAY, "keep_unfetched_s": 30 * DAY, "now": NOW, **kw}
    return collect_garbage(store, **args)  # type: ignore[arg-type]


def test_only_finished_jobs_past_their_window_go(store: JobStore) -> None:
    _job(store, "live")  # 100 days old, still QUEUED: never removed
    _job(store, "old-fetched")
    _finish(store, "old-fetched", at=NOW - 8 * DAY, result=b"r1", run=b"run1")
    store.mark_fetched(["old-fetched"], NOW - 8 * DAY)
    _job(store, "old-unfetched")  # past the fetched window, not the unfetched one
    _finish(store, "old-unfetched", at=NOW - 8 * DAY, result=b"r2")
    _job(store, "ancient-unfetched")
    _finish(store, "ancient-unfetched", at=NOW - 31 * DAY, result=b"r3")
    _job(store, "failed")
    _finish(store, "failed", at=NOW - 31 * DAY)
    _job(store, "recent")
    _finish(store, "recent", at=NOW - DAY, result=b"r4")
    store.mark_fetched(["recent"], NOW - DAY)

    dry = _gc(store, dry_run=True)
    assert dry.jobs == 3 and dry.dry_run  # type: ignore[attr-defined]
    assert store.get("old-fetched").state is S.DONE  # a dry run removes nothing

    report = _gc(store)
    assert report.jobs == 3  # type: ignore[attr-defined]
    assert report.by_state == {"DONE": 2, "FAILED": 1}  # type: ignore[attr-defined]
    assert report.blobs == 3 and report.shot_rows == 1  # type: ignore[attr-defined]
    for kept in ("live", "old-unfetched", "recent"):
        store.get(kept)
    assert store.get_blob(store.get("recent").result_sha256 or "") == b"r4"
    with pytest.raises(JobNotFoundError, match=r"ended DONE at .* removed by retention"):
        store.get("old-fetched")
    assert store.events("old-fetched") == [] and store.shot_ledger("old-fetched") == []
    # the bill stays: money is never collected as garbage
    assert [c.usd for c in store.charges() if c.job_id == "old-fetched"] == [0.5]
    assert _gc(store).jobs == 0  # type: ignore[attr-defined]


def test_a_blob_another_job_still_uses_stays(store: JobStore) -> None:
    for name, at in (("a", NOW - 40 * DAY), ("b", NOW - DAY)):
        _job(store, name)
        _finish(store, name, at=at, result=b"the same counts")
    assert _gc(store).jobs == 1  # type: ignore[attr-defined]
    assert store.get_blob(store.get("b").result_sha256 or "") == b"the same counts"


def test_a_removed_jobs_idempotency_key_still_names_it(store: JobStore) -> None:
    _job(store, "first", key="nightly-1")
    _finish(store, "first", at=NOW - 40 * DAY, result=b"r")
    _gc(store)
    with pytest.raises(ValidationError, match=r"idempotency_key='nightly-1' was used by job first"):
        _job(store, "second", key="nightly-1", at=NOW)
    with pytest.raises(JobNotFoundError):
        store.get("second")
    # a year on, the tombstone goes: the id is unknown and the key free again
    report = _gc(store, keep_tombstones_s=365 * DAY, now=NOW + 366 * DAY)
    assert report.tombstones == 1  # type: ignore[attr-defined]
    with pytest.raises(JobNotFoundError, match="no such job"):
        store.get("first")
    _job(store, "third", key="nightly-1", at=NOW + 366 * DAY)


def test_a_job_that_moved_on_is_not_removed(store: JobStore) -> None:
    """The state is read in the transaction that removes: a caller's stale list of ids
    cannot take a job that is not finished."""
    _job(store, "x")
    assert store.purge_jobs(["x"], NOW).jobs == 0
    store.get("x")


def test_first_fetch_is_what_counts(store: JobStore) -> None:
    _job(store, "x")
    _finish(store, "x", at=1.0, result=b"r")
    assert store.mark_fetched(["x", "x"], 5.0) == 1
    assert store.mark_fetched(["x"], 9.0) == 0


def test_qrt_gc_reports_and_shrinks_the_store(tmp_path: Path) -> None:
    url = str(tmp_path / "jobs.sqlite3")
    store = open_store(url)
    payload = bytes(range(256)) * 400  # 100 kB results
    for i in range(20):
        _job(store, f"j{i}")
        _finish(store, f"j{i}", at=1.0, result=payload + bytes([i]))
    store.close()
    out = subprocess.run(
        [sys.executable, "-m", "qrt_ray.cli", "gc", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["jobs"] == 20 and data["blobs"] == 20
    assert data["store_bytes_after"] < data["store_bytes_before"] - 1_500_000
    bad = subprocess.run(
        [sys.executable, "-m", "qrt_ray.cli", "gc", "--store", url, "--keep-fetched", "soon"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "duration 'soon'" in bad.stderr


def test_the_scheduler_collects_on_its_schedule_and_counts_fetches(tmp_path: Path) -> None:
    """A fetched result's shorter window applies once a client fetched it; the
    scheduler's own collection then removes the job, and leaves an unfetched one."""
    import asyncio

    from qrt_ray.config import RetentionConfig
    from tests.local_farm import drive, make, spec

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        sched.retention = RetentionConfig(keep_fetched_s=1.0, keep_unfetched_s=3600.0)
        await sched.start()
        admitted = await sched.submit([spec(3, shots=100), spec(3, shots=100)])
        await drive(sched, devices)
        fetched, unread = (rec.job_id for rec, _ in admitted)
        await sched.result_blobs([fetched])
        await asyncio.sleep(1.2)
        sched._gc_at = -1e9  # the interval has passed
        await sched._retention_step()
        assert sched._gc_task is not None
        report = await sched._gc_task
        await sched.stop()
        assert report.jobs == 1
        with pytest.raises(JobNotFoundError, match="removed by retention"):
            store.get(fetched)
        assert store.get(unread).state is S.DONE
        store.close()

    asyncio.run(main())
