"""Preemption in shot slices, re-placement, the tenant cap and deadlines, without Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from qrt_ray.actors.device import Device, WorkItem
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.calibration import with_recomputed_id
from qrt_ray.config import SchedulingConfig
from qrt_ray.errors import DeviceUnavailableError
from qrt_ray.lifecycle import JobState
from qrt_ray.models import DeviceStatus
from qrt_ray.results import decode_result, slice_seed
from qrt_ray.store import SQLiteJobStore
from qrt_ray.store.migrations import MIGRATIONS
from tests.local_farm import FARM, drive, make, spec, step
from tests.metrics_text import sample
from tests.waiting import wait_until_async

S = JobState


def item(device: Device, job: str, shots: int = 10, priority: int = 5, **kw: object) -> WorkItem:
    cal_id = device.calibration.calibration_id
    return WorkItem(job, 1, cal_id, (b"",), shots, priority, None, 1, **kw)


def assert_ledger_exact(store: SQLiteJobStore, job_id: str, shots: int) -> None:
    """Every shot of the job counted once: runs tile [0, shots) without overlap."""
    ledger = store.shot_ledger(job_id)
    keys = [(r.attempt, r.first_shot) for r in ledger]
    assert len(set(keys)) == len(keys), ledger
    assert sum(r.shots for r in ledger) == shots, ledger
    assert len({r.calibration_id for r in ledger}) == 1, ledger


# == the device's queue ==================================================================


def test_a_big_job_runs_in_slices_and_higher_priority_work_goes_between_them() -> None:
    now = [0.0]
    device = Device(
        FARM.devices[0],
        max_parallel_threads=1,
        clock=lambda: now[0],
        scheduling=SchedulingConfig(slice_shots=400),
    )
    device.config = device.config.model_copy(update={"max_batch_circuits": 1})
    device.enqueue([item(device, "big", shots=1000, priority=1)])
    first = device.take_batch()
    assert [(i.job_id, i.shots, i.first_shot, i.remaining) for i in first] == [("big", 400, 0, 600)]
    now[0] += 1
    device.enqueue([item(device, "urgent", shots=100, priority=9)])
    # The batch boundary: the urgent job goes before the rest of the big one.
    assert [i.job_id for i in device.take_batch()] == ["urgent"]
    rest = [device.take_batch()[0] for _ in range(2)]
    assert [(i.shots, i.first_shot, i.remaining) for i in rest] == [(400, 400, 200), (200, 800, 0)]
    assert device.queue_depth == 0 and device.snapshot().queued_shots == 0


def test_slices_and_reruns_never_reuse_a_kept_runs_seed() -> None:
    assert slice_seed(7, 0) == 7 and slice_seed(None, 400) is None
    assert slice_seed(7, 0, attempt=3) == 7  # a whole rerun: nothing kept to repeat
    seeds = {slice_seed(7, k) for k in range(0, 10_000, 400)}
    seeds |= {slice_seed(7, k, attempt=2) for k in range(400, 10_000, 400)}
    assert len(seeds) == 25 + 24 and all(0 <= s < 2**30 for s in seeds)


def test_a_tenant_fills_at_most_its_share_of_a_batch_while_others_wait() -> None:
    device = Device(
        FARM.devices[0],
        max_parallel_threads=1,
        clock=lambda: 0.0,
        scheduling=SchedulingConfig(max_device_share=0.5, fair_share=False),
    )
    device.config = device.config.model_copy(update={"max_batch_circuits": 4})
    device.enqueue([item(device, f"flood{i}", tenant="big") for i in range(6)])
    device.enqueue([item(device, "rare", tenant="small")])
    batch = Counter(i.tenant for i in device.take_batch())
    assert batch == {"big": 2, "small": 1}
    # Alone on the device, a tenant may fill the whole batch.
    assert Counter(i.tenant for i in device.take_batch()) == {"big": 4}


def test_a_device_that_is_not_online_keeps_its_queue_but_runs_nothing() -> None:
    device = Device(FARM.devices[0], max_parallel_threads=1)
    device.enqueue([item(device, "a"), item(device, "b")])
    device.set_status(DeviceStatus.MAINTENANCE)
    assert device.take_batch() == [] and device.queue_depth == 2
    assert not device.has_runnable_work()  # the worker sleeps instead of spinning
    device.set_status(DeviceStatus.ONLINE)
    assert device.has_runnable_work()
    assert len(device.take_batch()) == 2


def test_dropping_one_attempt_leaves_a_newer_one_queued() -> None:
    device = Device(FARM.devices[0], max_parallel_threads=1)
    device.enqueue([item(device, "a"), dataclasses.replace(item(device, "a"), attempt=2)])
    assert device.drop(["a"], {"a": 1}) == ["a"]
    assert [i.attempt for i in device.take_batch()] == [2]


# == the scheduler over in-process devices ===============================================


def test_a_sliced_job_counts_every_shot_once_and_stays_reproducible(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, int], int]:
        store, devices, sched = make(tmp_path, SchedulingConfig(slice_shots=300))
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=1000, seed=11, device="manila")])
        await drive(sched, devices)
        await sched.stop()
        done = store.get(rec.job_id)
        assert done.state is S.DONE and done.attempts == 1
        assert [r.first_shot for r in store.shot_ledger(rec.job_id)] == [0, 300, 600, 900]
        assert_ledger_exact(store, rec.job_id, 1000)
        result = decode_result(store.get_blob(done.result_sha256))
        assert result.metadata.runs == 4 and result.metadata.attempts == 1
        assert sum(result.counts().values()) == 1000
        assert sched.metrics.slices.labels(device="manila")._value.get() == 3
        store.close()
        return result.counts(), len(set(result.metadata.seeds))

    counts, seeds = asyncio.run(main())
    assert seeds == 4  # every slice drew its own samples
    (tmp_path / "again").mkdir()
    again, _ = asyncio.run(_rerun(tmp_path / "again"))
    assert again == counts  # same seed, same slices: the same answer


async def _rerun(path: Path) -> tuple[dict[str, int], int]:
    store, devices, sched = make(path, SchedulingConfig(slice_shots=300))
    await sched.start()
    ((rec, _),) = await sched.submit([spec(shots=1000, seed=11, device="manila")])
    await drive(sched, devices)
    await sched.stop()
    result = decode_result(store.get_blob(store.get(rec.job_id).result_sha256))
    store.close()
    return result.counts(), 0


def test_preempted_work_resumes_with_only_its_missing_shots(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path, SchedulingConfig(slice_shots=250))
        manila = next(d for d in devices if d.name == "manila")
        manila.config = manila.config.model_copy(update={"max_batch_circuits": 1})
        await sched.start()
        ((low, _),) = await sched.submit([spec(shots=1000, priority=1, device="manila")])
        await wait_until_async(  # placed, compiled and queued
            lambda: manila.queue_depth, what="the low job in manila's queue"
        )
        await step(sched, devices)  # the first slice runs
        ((high, _),) = await sched.submit([spec(4, shots=100, priority=9, device="manila")])
        # PLACED is stored before the work reaches the device's queue: wait for the queue
        # (the rest of the low job's slices and the urgent job)
        await wait_until_async(
            lambda: manila.queue_depth >= 2, what="the rest of the low job and the urgent job"
        )
        assert store.get(high.job_id).state is S.PLACED
        await step(sched, devices)  # the batch boundary: the urgent job runs first
        assert store.get(high.job_id).state is S.DONE
        assert store.get(low.job_id).state is S.RUNNING  # preempted, not requeued
        await drive(sched, devices)
        await sched.stop()
        assert store.get(low.job_id).state is S.DONE
        assert_ledger_exact(store, low.job_id, 1000)
        high_done = max(e.at for e in store.events(high.job_id))
        assert [r.at > high_done for r in store.shot_ledger(low.job_id)] == [
            False,
            True,
            True,
            True,
        ]
        store.close()

    asyncio.run(main())


def test_a_faulty_slice_reruns_only_what_is_missing(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path, SchedulingConfig(slice_shots=400))
        manila = next(d for d in devices if d.name == "manila")
        manila.faults.partial_fractions = [1.0, 0.5]  # the second slice loses half
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=1000, device="manila")])
        await drive(sched, devices)
        done = store.get(rec.job_id)
        assert done.state is S.DONE and done.attempts == 2
        ledger = store.shot_ledger(rec.job_id)
        assert [(r.attempt, r.first_shot, r.shots) for r in ledger] == [
            (1, 0, 400),
            (1, 400, 200),
            (1, 800, 200),
            (2, 800, 200),
        ]
        assert_ledger_exact(store, rec.job_id, 1000)
        # A corrupt slice is not counted; its attempt's queued rest is taken back.
        ((bad, _),) = await sched.submit([spec(shots=1000, device="manila")])
        manila.faults.corrupt = 1
        await drive(sched, devices)
        await sched.stop()
        assert store.get(bad.job_id).state is S.DONE
        assert [(r.attempt, r.first_shot) for r in store.shot_ledger(bad.job_id)] == [
            (2, 0),
            (2, 400),
            (2, 800),
        ]
        assert_ledger_exact(store, bad.job_id, 1000)
        store.close()

    asyncio.run(main())


def _placed_on(store: SQLiteJobStore, ids: list[str], device: str | None) -> bool:
    return all((r := store.get(j)).state is S.PLACED and r.device == device for j in ids)


async def _placed_together(
    sched: Scheduler, store: SQLiteJobStore, devices: list[Device], n: int
) -> tuple[list[str], str]:
    """Submit ``n`` best-fidelity jobs; wait until all wait in one device's queue.

    PLACED is persisted before the work reaches the device, so the queue is what
    tells that the device holds it (a change before that is met at enqueue instead).
    """
    admitted = await sched.submit([spec(shots=200, policy="best_fidelity") for _ in range(n)])
    ids = [rec.job_id for rec, _ in admitted]

    def all_queued() -> str | None:
        first = store.get(ids[0]).device
        if first is None or not _placed_on(store, ids, first):
            return None
        return first if next(d for d in devices if d.name == first).queue_depth >= n else None

    first = await wait_until_async(all_queued, what=f"{n} jobs queued on one device")
    return ids, first


def test_waiting_jobs_move_when_their_device_stops(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ids, first = await _placed_together(sched, store, devices, 3)
        gone = next(d for d in devices if d.name == first)
        gone.set_status(DeviceStatus.MAINTENANCE)
        await drive(sched, devices)
        await sched.stop()
        other = "manila" if first == "nairobi" else "nairobi"
        for job_id in ids:
            rec = store.get(job_id)
            assert rec.state is S.DONE and rec.device == other, rec
            assert any(
                f"re-placed: {first} went MAINTENANCE" in (e.reason or "")
                for e in store.events(job_id)
            )
            assert_ledger_exact(store, job_id, 200)
        assert gone.queue_depth == 0  # taken back, not left to run later
        store.close()

    asyncio.run(main())


def test_waiting_jobs_are_placed_again_when_their_device_recalibrates(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ids, first = await _placed_together(sched, store, devices, 2)
        device = next(d for d in devices if d.name == first)
        old = device.calibration
        worse = with_recomputed_id(
            dataclasses.replace(old, readout_error=tuple(0.3 for _ in old.readout_error))
        )
        device.set_calibration(worse)
        # Nothing runs until the scheduler has seen the change and moved the jobs.
        other = "manila" if first == "nairobi" else "nairobi"
        await wait_until_async(
            lambda: _placed_on(store, ids, other), what=f"the jobs moved to {other}"
        )
        await drive(sched, devices)
        await sched.stop()
        for job_id in ids:
            rec = store.get(job_id)
            assert rec.state is S.DONE
            assert rec.calibration_id != old.calibration_id
            # 30 % readout error everywhere: the other device is now the better one.
            assert rec.device != first
            assert any("recalibrated" in (e.reason or "") for e in store.events(job_id))
            assert_ledger_exact(store, job_id, 200)
        store.close()

    asyncio.run(main())


def test_a_job_with_a_deadline_goes_before_others_of_its_level() -> None:
    device = Device(FARM.devices[0], max_parallel_threads=1, clock=lambda: 0.0)
    device.config = device.config.model_copy(update={"max_batch_circuits": 1})
    device.enqueue([item(device, "relaxed"), item(device, "later", deadline=500.0)])
    device.enqueue([item(device, "sooner", deadline=100.0)])
    assert [device.take_batch()[0].job_id for _ in range(3)] == ["sooner", "later", "relaxed"]


def test_an_old_store_gains_the_sliced_ledger_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO shot_ledger VALUES ('job-a', 1, 'cal', 400, 1.0, NULL)")
    conn.commit()
    conn.close()
    store = SQLiteJobStore(path)
    (old,) = store.shot_ledger("job-a")
    assert (old.attempt, old.first_shot, old.shots) == (1, 0, 400)
    fresh = dataclasses.replace(old, first_shot=400, at=2.0)
    assert store.record_shots([fresh, old]) == [True, False]
    assert [r.first_shot for r in store.shot_ledger("job-a")] == [0, 400]
    store.close()


def test_work_refused_for_a_left_calibration_is_recompiled_without_using_an_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scheduler compiles from a target it kept for the calibration it last saw; a
    # device that recalibrated meanwhile refuses the work. That lag is the scheduler's,
    # so even a job on its last attempt is recompiled, not failed.
    import qrt_ray.actors.scheduler as scheduler_module
    from qrt_ray.actors.ports import LocalPorts
    from qrt_ray.config import PolicyConfig

    monkeypatch.setattr(scheduler_module, "MAX_ATTEMPTS", 1)
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    devices = [Device(d, max_parallel_threads=1) for d in FARM.devices]
    # snapshots are not polled on their own here: the refusal is what sends it looking
    sched = Scheduler(
        store, LocalPorts(devices), policy_config=PolicyConfig(), snapshot_interval_s=3600
    )

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=200, device="manila")])
        device = next(d for d in devices if d.name == "manila")
        await wait_until_async(lambda: device.queue_depth, what="the job in manila's queue")
        old = device.calibration
        device.set_calibration(
            with_recomputed_id(dataclasses.replace(old, readout_error=old.readout_error[::-1]))
        )
        await drive(sched, devices)
        await sched.stop()
        done = store.get(rec.job_id)
        assert done.state is S.DONE, store.events(rec.job_id)
        assert done.calibration_id == device.calibration.calibration_id != old.calibration_id
        assert any("recompile" in (e.reason or "") for e in store.events(rec.job_id))
        assert_ledger_exact(store, rec.job_id, 200)
        store.close()

    asyncio.run(main())


def test_tenants_share_a_device_through_the_scheduler(tmp_path: Path) -> None:
    """Two tenants on one device, end to end: the flood's later jobs wait while the
    small tenant is served, no batch holds more than the flood's cap while the other
    waits, and every job keeps its tenant and tags in the store."""
    store, devices, sched = make(tmp_path, SchedulingConfig(max_device_share=0.5))
    manila = next(d for d in devices if d.name == "manila")
    manila.config = manila.config.model_copy(update={"max_batch_circuits": 4})
    batches: list[Counter[str]] = []

    async def main() -> tuple[list[str], list[str]]:
        await sched.start()
        big = await sched.submit(
            [spec(2, shots=50, device="manila", tenant="big", tags=("flood",)) for _ in range(8)]
        )
        small = await sched.submit(
            [spec(2, shots=50, device="manila", tenant="small", tags=("rare", "x"))] * 2
        )
        await wait_until_async(lambda: manila.queue_depth >= 10, what="all ten jobs queued")
        while manila.queue_depth:
            batch = manila.take_batch()
            batches.append(Counter(i.tenant for i in batch))
            keep = set(await sched.batch_started("manila", *manila.claim(batch)))
            await sched.batch_finished(
                "manila", manila.execute([i for i in batch if i.job_id in keep])
            )
        await drive(sched, devices)
        await sched.stop()
        return [r.job_id for r, _ in big], [r.job_id for r, _ in small]

    big_ids, small_ids = asyncio.run(main())
    # the small tenant was served in the first batch, beside at most half a batch of flood
    assert batches[0]["small"] >= 1 and batches[0]["big"] <= 2, batches
    assert sum(b["small"] for b in batches[:2]) == 2, batches  # both by the second batch
    assert all(store.get(j).state is JobState.DONE for j in big_ids + small_ids)
    small_rows = store.list_jobs(tenant="small")
    assert {r.job_id for r in small_rows} == set(small_ids)
    assert all(r.spec.tags == ("rare", "x") for r in small_rows)
    assert {r.job_id for r in store.list_jobs(tenant="big")} == set(big_ids)
    text = sched.metrics.exposition().decode()
    assert sample(text, "qrt_jobs_submitted_total", tenant="small") == 2
    assert sample(text, "qrt_jobs_submitted_total", tenant="big") == 8


def test_a_full_device_queue_holds_work_back_and_loses_none(tmp_path: Path) -> None:
    """A device takes at most ``queue_limit`` jobs; the rest wait (QUEUED) and all of
    them run, each counted once."""
    store, devices, sched = make(tmp_path)
    manila = next(d for d in devices if d.name == "manila")
    manila.config = manila.config.model_copy(update={"queue_limit": 2, "max_batch_circuits": 1})
    with pytest.raises(DeviceUnavailableError, match="queue full"):
        manila.enqueue([item(manila, f"x{i}") for i in range(3)])
    deepest = 0

    async def main() -> list[str]:
        nonlocal deepest
        await sched.start()
        admitted = await sched.submit([spec(2, shots=40, device="manila") for _ in range(6)])
        ids = [r.job_id for r, _ in admitted]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not all(store.get(j).state.is_final for j in ids):
            assert loop.time() < deadline, "timed out running six jobs through a full queue"
            deepest = max(deepest, manila.queue_depth)
            if not await step(sched, [manila]):
                await asyncio.sleep(0.02)
        await sched.stop()
        return ids

    ids = asyncio.run(main())
    assert deepest <= 2
    for job_id in ids:
        assert store.get(job_id).state is JobState.DONE
        assert [r.shots for r in store.shot_ledger(job_id)] == [40]
