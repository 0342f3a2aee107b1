"""Device faults without Ray: a device that restarts mid-batch, and one that hangs.

Each test checks the same invariants: every job ends DONE with exactly the shots it
asked for, on one calibration, and the shot ledger counts no shot twice (a late
report of the lost attempt is ignored).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import MAX_ATTEMPTS, Scheduler
from qrt_ray.config import FaultConfig, PolicyConfig, SchedulingConfig
from qrt_ray.errors import DeviceUnavailableError, StoreUnavailableError
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.models import DeviceStatus
from qrt_ray.results import decode_result
from qrt_ray.store import SQLiteJobStore, StateUpdate
from qrt_ray.store.faults import StoreFaults
from tests.local_farm import FARM, REPORT_KEY, drive, spec

S = JobState


def _farm(tmp_path: Path, clock=None, **faults: float):  # type: ignore[no-untyped-def]
    scheduling = SchedulingConfig(slice_shots=200)
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    devices = [
        Device(d, max_parallel_threads=1, scheduling=scheduling, report_key=REPORT_KEY)
        for d in FARM.devices
    ]
    policies = PolicyConfig(scheduling=scheduling, faults=FaultConfig(**faults))
    kw = {"clock": clock} if clock else {}
    sched = Scheduler(
        store, LocalPorts(devices), policy_config=policies, report_key=REPORT_KEY, **kw
    )
    return store, devices, sched


async def _until(pred, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


def _check_exact(store: SQLiteJobStore, job_id: str, shots: int) -> None:
    done = store.get(job_id)
    assert done.state is S.DONE, (done.state, done.error)
    result = decode_result(store.get_blob(done.result_sha256))
    assert sum(result.counts().values()) == shots
    ledger = store.shot_ledger(job_id)
    # every shot counted once: the counted runs tile 0..shots without gap or overlap
    spans = sorted((r.first_shot, r.first_shot + r.shots) for r in ledger)
    assert spans[0][0] == 0 and spans[-1][1] == shots
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert len({r.calibration_id for r in ledger}) == 1


def test_a_device_restart_mid_batch_loses_no_job_and_counts_no_shot_twice(
    tmp_path: Path,
) -> None:
    store, devices, sched = _farm(tmp_path)
    manila = devices[0]

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=600, seed=4, device="manila")])
        await _until(lambda: manila.queue_depth == 1)
        first = manila.take_batch()  # shots 0-199: run and counted
        keep = await sched.batch_started("manila", *manila.claim(first))
        await sched.batch_finished("manila", manila.execute(first))
        lost = manila.take_batch()  # shots 200-399: started, then the device dies
        assert await sched.batch_started("manila", *manila.claim(lost[:1])) == keep
        manila.restart()
        await sched._refresh_snapshots(force=True)
        assert store.get(rec.job_id).state in (S.QUEUED, S.COMPILING, S.PLACED)
        # the dead incarnation's batch reports late: it must not be counted
        await sched.batch_finished("manila", manila.execute(lost))
        await drive(sched, devices)
        await sched.stop()
        _check_exact(store, rec.job_id, 600)
        done = store.get(rec.job_id)
        assert done.attempts == 2
        ledger = store.shot_ledger(rec.job_id)
        assert [(r.attempt, r.first_shot, r.shots) for r in ledger] == [
            (1, 0, 200),
            (2, 200, 200),
            (2, 400, 200),
        ]
        assert any("manila restarted" in (e.reason or "") for e in store.events(rec.job_id))
        assert (
            sched.metrics.device_restarts.labels(device="manila", cause="restarted")._value.get()
            == 1
        )
        store.close()

    asyncio.run(main())


def test_a_hung_device_is_restarted_and_its_jobs_finish(tmp_path: Path) -> None:
    now = [1_000.0]
    store, devices, sched = _farm(
        tmp_path, clock=lambda: now[0], hung_batch_min_s=30, hung_batch_factor=2
    )
    manila, nairobi = devices

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=300, seed=2, device="manila")])
        ((free, _),) = await sched.submit([spec(shots=300, seed=3)])
        await _until(lambda: manila.queue_depth + nairobi.queue_depth == 2)
        where = store.get(free.job_id).device
        hung = manila.take_batch()
        await sched.batch_started("manila", *manila.claim(hung))
        old_incarnation = manila.incarnation
        now[0] += 29
        await sched._watchdog()
        assert store.get(rec.job_id).state is S.RUNNING  # not yet past the 30 s floor
        now[0] += 2
        await sched._watchdog()
        assert manila.incarnation != old_incarnation and manila.queue_depth == 0
        snap = next(s for s in sched.view.snapshots if s.name == "manila")
        assert snap.status is DeviceStatus.UNREACHABLE and "hung" in snap.status_reason
        back = [e for e in store.events(rec.job_id) if "manila hung" in (e.reason or "")]
        assert back and back[-1].to_state is S.QUEUED
        if where == "manila":  # the other job waited there: it was taken back too
            assert any("manila hung" in (e.reason or "") for e in store.events(free.job_id))
        await drive(sched, devices)
        await sched.stop()
        _check_exact(store, rec.job_id, 300)
        _check_exact(store, free.job_id, 300)
        assert store.get(rec.job_id).attempts == 2
        store.close()

    asyncio.run(main())


def test_a_job_that_keeps_losing_its_device_fails_with_the_reason(tmp_path: Path) -> None:
    """The device restarts each time the job runs (alone): after ``poison_after``
    such losses the job is dead-lettered as poison, with the device's reason."""
    store, devices, sched = _farm(tmp_path)
    manila = devices[0]
    limit = sched.quarantine.poison_after

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=100, seed=1, device="manila")])
        for _ in range(limit):
            await _until(lambda: manila.queue_depth == 1)
            batch = manila.take_batch()
            assert [i.solo for i in batch] == [bool(_)]  # a suspect after the first loss
            await sched.batch_started("manila", *manila.claim(batch))
            manila.restart()
            await sched._refresh_snapshots(force=True)
        await sched.stop()
        failed = store.get(rec.job_id)
        assert failed.state is S.FAILED and failed.error_class is ErrorClass.POISON
        assert f"failed {limit} times while it ran alone" in failed.error
        assert "manila restarted" in failed.error
        assert failed.attempts == limit < MAX_ATTEMPTS
        store.close()

    asyncio.run(main())


def test_a_draining_device_finishes_what_it_holds_and_takes_nothing_new(tmp_path: Path) -> None:
    store, devices, sched = _farm(tmp_path)
    manila = devices[0]

    async def main() -> None:
        await sched.start()
        ((held, _),) = await sched.submit([spec(shots=300, seed=1, device="manila")])
        await _until(lambda: manila.queue_depth == 1)
        manila.set_status(DeviceStatus.DRAINING)
        await sched._refresh_snapshots(force=True)
        assert store.get(held.job_id).state is S.PLACED  # not moved: it still runs here
        ((new, _),) = await sched.submit([spec(shots=300, seed=2)])
        await drive(sched, devices)
        assert store.get(held.job_id).device == "manila"
        assert store.get(new.job_id).device == "nairobi"
        _check_exact(store, held.job_id, 300)
        _check_exact(store, new.job_id, 300)
        with pytest.raises(DeviceUnavailableError, match="DRAINING"):
            manila.enqueue([])
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_hand_offs_made_before_a_scheduler_restart_lose_no_job(tmp_path: Path) -> None:
    # found by tests/unit/test_stateful_farm.py: a job queued on a device when its
    # scheduler restarted is handed off again by the new one. The device keeps only the
    # new hand-off, and a batch start carrying a stale one (taken before the restart)
    # refuses that entry alone, so the batch's other jobs start and none is left PLACED
    store, devices, sched = _farm(tmp_path)
    manila = devices[0]

    async def main() -> None:
        nonlocal sched
        await sched.start()
        first = await sched.submit([spec(shots=100, seed=s, device="manila") for s in (1, 2)])
        old_a, old_b = [r.job_id for r, _ in first]
        await _until(lambda: manila.queue_depth == 2)
        stale = manila.take_batch()  # taken by the device, not started yet
        await sched.stop()
        sched = _farm_scheduler(store, devices)
        await sched.start()  # recovers both PLACED jobs and hands them off again
        await _until(lambda: manila.queue_depth == 2)
        fresh = manila.take_batch()
        assert {i.job_id for i in fresh} == {old_a, old_b}
        assert {i.dispatch for i in fresh}.isdisjoint({i.dispatch for i in stale})
        mixed = [stale[0], *[i for i in fresh if i.job_id != stale[0].job_id]]
        started = await sched.batch_started("manila", *manila.claim(mixed))
        assert started == [mixed[1].job_id]  # the stale entry alone is refused
        refused = sched.metrics.forged_reports.labels(device="manila", reason="dispatch")
        assert refused._value.get() == 1
        await sched.batch_finished("manila", manila.execute_reporting(mixed[1:]))
        manila.queue.add([i for i in fresh if i.job_id == stale[0].job_id], 0.0)
        await drive(sched, devices, until_s=60)
        await sched.stop()
        for job_id in (old_a, old_b):
            _check_exact(store, job_id, 100)
        store.close()

    asyncio.run(main())


def _farm_scheduler(store: SQLiteJobStore, devices: list[Device]) -> Scheduler:
    """A new scheduler over the same store and devices (one restarted)."""
    policies = PolicyConfig(scheduling=SchedulingConfig(slice_shots=200))
    return Scheduler(store, LocalPorts(devices), policy_config=policies, report_key=REPORT_KEY)


@pytest.mark.parametrize("after", [False, True], ids=["before-commit", "after-commit"])
def test_jobs_whose_store_writes_fail_are_read_back_and_finish(tmp_path: Path, after: bool) -> None:
    # a placement pass, a compile's move and a device's report each meet a failing
    # write: nothing is lost, the device's retried report counts once
    store, devices, sched = _farm(tmp_path)
    faults = StoreFaults()
    faults.wrap(store)

    async def main() -> None:
        await sched.start()
        admitted = await sched.submit([spec(shots=100, seed=s) for s in range(4)])
        faults.after, faults.left = after, 2  # the placement pass and what follows
        await asyncio.sleep(0.3)
        await _until(lambda: any(d.queue_depth for d in devices), timeout_s=30)
        retried = 0
        for dev in devices:
            batch = dev.take_batch()
            if not batch:
                continue
            retried += 1
            claim = dev.claim(batch)
            keep = await sched.batch_started(dev.name, *claim)
            runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
            faults.left = 1  # the report's first try fails; the device tries again
            with pytest.raises(StoreUnavailableError, match="refused a write"):
                await sched.batch_finished(dev.name, runs)
            await sched.batch_finished(dev.name, runs)
        assert retried >= 1
        await drive(sched, devices, until_s=60)
        assert not store.unfinished()
        for rec, _ in admitted:
            _check_exact(store, rec.job_id, 100)
        assert sched.metrics.loop_errors.labels(step="store")._value.get() >= 2
        await sched.stop()
        store.close()

    asyncio.run(main())


@pytest.mark.parametrize("after", [False, True], ids=["before-commit", "after-commit"])
def test_a_submit_the_store_failed_is_not_acknowledged_and_runs_if_stored(
    tmp_path: Path, after: bool
) -> None:
    store, devices, sched = _farm(tmp_path)
    faults = StoreFaults()
    faults.wrap(store)

    async def main() -> None:
        await sched.start()
        faults.after, faults.left = after, 1
        with pytest.raises(StoreUnavailableError, match="nothing was acknowledged"):
            await sched.submit([spec(shots=100, seed=7)])
        await drive(sched, devices, until_s=5)
        for _ in range(100):  # the loop reads the failed write back
            await asyncio.sleep(0.02)
            if not store.unfinished() and not sched.live_count():
                break
        await drive(sched, devices, until_s=60)
        rows = store.read_sql("SELECT job_id, state FROM jobs")
        if after:  # the write landed: the job is found and run
            assert [r[1] for r in rows] == ["DONE"]
            _check_exact(store, rows[0][0], 100)
        else:
            assert rows == []
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_injected_store_faults_slow_or_fail_writes_as_asked(tmp_path: Path) -> None:
    """The drills' store faults: slowed writes still land; a failure before the commit
    writes nothing, one after it writes and still raises; then writes go through."""
    faults = StoreFaults()
    store = faults.wrap(SQLiteJobStore(tmp_path / "jobs.sqlite3"))
    try:
        faults.slow(0.2, for_s=5.0)
        started = time.monotonic()
        assert store.put_blobs([b"slow"])
        assert time.monotonic() - started >= 0.2
        faults.slow(0.2, for_s=-1.0)  # over
        faults.fail(1)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.put_blobs([b"before"])
        faults.fail(1, after=True)
        with pytest.raises(sqlite3.OperationalError, match="after the commit"):
            store.put_blobs([b"after"])
        (digest,) = store.put_blobs([b"fine"])
        assert store.get_blob(digest) == b"fine"
        stored = {bytes(r[0]) for r in store.read_sql("SELECT data FROM blobs")}
        assert b"after" in stored and b"before" not in stored and b"slow" in stored
    finally:
        store.close()


def test_a_job_being_decided_on_is_not_rebuilt_until_the_call_is_done(tmp_path: Path) -> None:
    """A failed write's read-back leaves alone a job a call is deciding on (a report
    being counted): the call's decision would land on the rebuilt job, which may hold
    that run already from the ledger. It is looked at on the next pass instead."""

    async def main() -> None:
        store, devices, sched = _farm(tmp_path)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=100, device="manila")])
        job = sched._jobs.get(rec.job_id)
        with sched._deciding([rec.job_id]):
            assert not sched._unmoved(rec.job_id, (job, job.state))
            assert rec.job_id in sched._resync  # looked at again next pass
        sched._resync.clear()
        assert sched._unmoved(rec.job_id, (job, job.state))
        await drive(sched, devices)
        assert store.get(rec.job_id).state is JobState.DONE
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_a_cancel_of_a_job_whose_move_landed_unseen_ends(tmp_path: Path) -> None:
    """A write that failed after its commit left the store a move ahead of the
    scheduler. A cancel's compare-and-set then fails on the stale state; it reads the
    job back and cancels it, rather than trying the stale state again for ever (seen
    in the stateful test as a cancel that never returned)."""

    async def main() -> None:
        store, _, sched = _farm(tmp_path)  # the loop is not started: nothing else moves
        ((rec, _),) = await sched.submit([spec(shots=100, device="manila")])
        landed = StateUpdate(rec.job_id, JobState.QUEUED, JobState.COMPILING, time.time())
        assert store.apply([landed]) == [True]  # in the store, not in the scheduler
        state, changed = await asyncio.wait_for(sched.cancel(rec.job_id), timeout=30)
        assert (state, changed) == (JobState.CANCELLED, True)
        assert store.get(rec.job_id).state is JobState.CANCELLED
        store.close()

    asyncio.run(main())


def test_a_result_is_served_when_its_fetch_mark_cannot_be_written(tmp_path: Path) -> None:
    """Fetching a result marks it fetched (retention counts from then). A store that
    refuses that write does not fail the fetch (a chaos drill saw the raw sqlite error
    reach the client); the next fetch marks it."""

    async def main() -> None:
        faults = StoreFaults()
        store = faults.wrap(SQLiteJobStore(tmp_path / "jobs.sqlite3"))
        devices = [Device(d, max_parallel_threads=1, report_key=REPORT_KEY) for d in FARM.devices]
        sched = Scheduler(store, LocalPorts(devices), report_key=REPORT_KEY)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=100, device="manila")])
        await drive(sched, devices)
        faults.fail(1)
        ((sha, blob),) = await sched.result_blobs([rec.job_id])
        assert sum(decode_result(blob).counts().values()) == 100
        assert store.get(rec.job_id).result_sha256 == sha
        assert rec.job_id not in sched._fetched  # not marked: tried again next time
        await sched.result_blobs([rec.job_id])
        assert rec.job_id in sched._fetched
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_clearing_store_faults_heals_writes_slowness_and_auth_reads(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    faults = StoreFaults()
    faults.wrap(store)
    faults.fail(5)
    faults.slow(2.0, for_s=600)
    faults.cut_auth(600)
    with pytest.raises(sqlite3.OperationalError):
        store.token("tok_1")  # the identity source is down
    faults.clear()
    started = time.monotonic()
    store.put_blob(b"after the drill")  # neither failed nor slowed
    assert time.monotonic() - started < 1.0
    assert store.token("tok_1") is None  # read again: no such token
    store.close()


def test_a_job_that_finishes_while_the_store_is_swept_is_not_taken_up_again(
    tmp_path: Path,
) -> None:
    """After a failed write the scheduler sweeps the store for unfinished jobs it does
    not track. A job that finishes and leaves while that read runs is unfinished in
    what the read returns; taken up again from it, it waited RUNNING forever (its
    move was refused: the store holds it DONE). Found by `store-faults-60`."""
    store, devices, sched = _farm(tmp_path)

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=100, seed=9)])
        await _until(lambda: any(d.queue_depth for d in devices), timeout_s=30)
        dev = next(d for d in devices if d.queue_depth)
        batch = dev.take_batch()
        keep = await sched.batch_started(dev.name, *dev.claim(batch))
        runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
        stale = store.unfinished()  # the job still RUNNING in the store
        assert [r.job_id for r in stale] == [rec.job_id]
        reading, answer = threading.Event(), threading.Event()

        def slow_read() -> list:
            reading.set()
            answer.wait(10)
            return stale

        store.unfinished = slow_read  # type: ignore[method-assign]
        swept: list[bool] = []
        step = sched._resync_step

        async def counted() -> None:  # the loop's read-back step, noting each sweep
            sweeping = sched._store_trouble
            await step()
            swept.append(sweeping)

        sched._resync_step = counted  # type: ignore[method-assign]
        sched._store_trouble = True  # as a failed write leaves it: the loop sweeps
        await _until(reading.is_set, timeout_s=10)
        await sched.batch_finished(dev.name, runs)  # finishes while the read runs
        assert sched._record(rec.job_id) is None
        answer.set()
        await _until(lambda: any(swept), timeout_s=10)
        assert sched._record(rec.job_id) is None, "taken up again from a stale read"
        assert (await sched.wait([rec.job_id], 5))[rec.job_id] is S.DONE
        await sched.stop()
        store.close()

    asyncio.run(main())
