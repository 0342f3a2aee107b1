"""A restarted farm starts even when the store holds a bad record: that job fails, the
rest recover. The damage is done from outside, on the database file, as a disk would."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from actors.device import Device
from actors.ports import LocalPorts
from actors.scheduler import Scheduler
from qrt_ray.lifecycle import JobState as S
from qrt_ray.store import JobRecord, SQLiteJobStore
from tests.local_farm import FARM, drive, drive_until_crash, make, spec


def _crash_after_counting(tmp_path: Path) -> str:
    """A job left POSTPROCESSING with its run in the ledger, as a crash leaves it."""

    async def main() -> str:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=200)])
        await drive_until_crash(sched, devices, "_finish")
        await sched.stop()
        store.close()
        return rec.job_id

    return asyncio.run(main())


def test_one_bad_record_fails_its_job_and_the_farm_starts(tmp_path: Path) -> None:
    counted = _crash_after_counting(tmp_path)
    db = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore(db)
    assert store.get(counted).state is S.POSTPROCESSING
    run_sha = store.shot_ledger(counted)[0].run_sha256
    store.admit(
        [
            JobRecord("job-garbled", S.QUEUED, spec(2), 2.0, 2.0),
            JobRecord("job-healthy", S.QUEUED, spec(3), 3.0, 3.0),
        ]
    )
    store.close()
    with sqlite3.connect(db) as raw:  # damage from outside the product
        raw.execute("UPDATE blobs SET data = X'7b7d' WHERE sha256 = ?", (run_sha,))
        raw.execute("UPDATE jobs SET spec_json = '{not json' WHERE job_id = 'job-garbled'")

    async def restart() -> None:
        store2 = SQLiteJobStore(db)
        devices = [Device(d, max_parallel_threads=1) for d in FARM.devices]
        sched = Scheduler(store2, LocalPorts(devices))
        assert await sched.start() == 3  # it starts, and counts every unfinished job
        await drive(sched, devices, until_s=60)
        await sched.stop()
        bad_run = store2.get(counted)
        assert bad_run.state is S.FAILED
        assert "could not recover" in (bad_run.error or "")
        assert "failed its checksum" in (bad_run.error or "")
        assert store2.get("job-healthy").state is S.DONE
        assert store2.unreadable() == []  # failed at start, so no longer unfinished
        states = dict(_states(db))
        assert states["job-garbled"] == "FAILED"
        store2.close()

    asyncio.run(restart())
    with sqlite3.connect(db) as raw:
        (error,) = raw.execute("SELECT error FROM jobs WHERE job_id='job-garbled'").fetchone()
    assert "does not decode" in error and "submit it again" in error


def test_a_listing_skips_a_row_that_does_not_decode(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore(db)
    store.admit([JobRecord(f"job-{i}", S.QUEUED, spec(2), float(i), float(i)) for i in range(3)])
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE jobs SET spec_json = '[]' WHERE job_id = 'job-1'")
    assert [r.job_id for r in store.list_jobs()] == ["job-2", "job-0"]
    assert [u[0] for u in store.unreadable()] == ["job-1"]
    store.close()


def _states(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT job_id, state FROM jobs").fetchall()
