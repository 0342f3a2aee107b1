"""A restarted farm starts even when the store holds a bad record: that job fails, the
rest recover. The damage is done from outside, on the database, as a disk would; each
test runs on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.lifecycle import JobState as S
from qrt_ray.store import JobRecord, open_store
from tests.local_farm import FARM, drive, drive_until_postprocessing, make, spec
from tests.postgres import raw_sql


def _crash_after_counting(tmp_path: Path, store_url: str) -> str:
    """A job left POSTPROCESSING with its run in the ledger, as a crash leaves it."""

    async def main() -> str:
        store, devices, sched = make(tmp_path, store_url=store_url)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=200)])
        await drive_until_postprocessing(sched, devices)
        await sched.stop()
        store.close()
        return rec.job_id

    return asyncio.run(main())


def test_one_bad_record_fails_its_job_and_the_farm_starts(tmp_path: Path, store_url: str) -> None:
    counted = _crash_after_counting(tmp_path, store_url)
    store = open_store(store_url)
    assert store.get(counted).state is S.POSTPROCESSING
    run_sha = store.shot_ledger(counted)[0].run_sha256
    store.admit(
        [
            JobRecord("job-garbled", S.QUEUED, spec(2), 2.0, 2.0),
            JobRecord("job-healthy", S.QUEUED, spec(3), 3.0, 3.0),
        ]
    )
    store.close()
    # damage from outside the product
    raw_sql(store_url, "UPDATE blobs SET data = ? WHERE sha256 = ?", (b"{}", run_sha))
    raw_sql(store_url, "UPDATE jobs SET spec_json = '{not json' WHERE job_id = 'job-garbled'")

    async def restart() -> None:
        store2 = open_store(store_url)
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
        states = dict(_states(store_url))
        assert states["job-garbled"] == "FAILED"
        store2.close()

    asyncio.run(restart())
    ((error,),) = raw_sql(store_url, "SELECT error FROM jobs WHERE job_id='job-garbled'")
    assert "does not decode" in error and "submit it again" in error


def test_a_listing_skips_a_row_that_does_not_decode(store_url: str) -> None:
    store = open_store(store_url)
    store.admit([JobRecord(f"job-{i}", S.QUEUED, spec(2), float(i), float(i)) for i in range(3)])
    raw_sql(store_url, "UPDATE jobs SET spec_json = '[]' WHERE job_id = 'job-1'")
    assert [r.job_id for r in store.list_jobs()] == ["job-2", "job-0"]
    assert [u[0] for u in store.unreadable()] == ["job-1"]
    store.close()


def _states(store_url: str) -> list[tuple[str, str]]:
    return raw_sql(store_url, "SELECT job_id, state FROM jobs")
