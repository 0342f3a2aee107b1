"""Control-link errors (retried with backoff, or permanent), the circuit breaker, jobs
that want a fresh calibration, and partial runs whose device will not come back.

Invariants as elsewhere: every job ends DONE or FAILED with a reason, results hold
exactly the shots asked for on one calibration, and the ledger counts no shot twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from pathlib import Path

import pytest

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.config import FaultConfig, LinkConfig, PolicyConfig, SchedulingConfig
from qrt_ray.lifecycle import JobState
from qrt_ray.models import DeviceStatus
from qrt_ray.results import decode_result
from qrt_ray.store import SQLiteJobStore
from tests.local_farm import FARM, drive, spec, step
from tests.waiting import wait_until_async

S = JobState


def _farm(tmp_path: Path, clock=time.time, **link: float):  # type: ignore[no-untyped-def]
    scheduling = SchedulingConfig()
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    naps: list[float] = []
    devices = [
        Device(
            d,
            max_parallel_threads=1,
            scheduling=scheduling,
            link=LinkConfig(**link),
            sleep=naps.append,
        )
        for d in FARM.devices
    ]
    policies = PolicyConfig(
        scheduling=scheduling, link=LinkConfig(**link), faults=FaultConfig(partial_wait_s=0)
    )
    sched = Scheduler(store, LocalPorts(devices), policy_config=policies, clock=clock)
    return store, devices, sched, naps


def _run_one(sched: Scheduler, devices: list[Device], job: object) -> str:
    """Submit one job, drive the farm until it is final; returns its id."""

    async def main() -> str:
        await sched.start()
        ((rec, _),) = await sched.submit([job])  # type: ignore[list-item]
        await drive(sched, devices)
        await sched.stop()
        return rec.job_id

    return asyncio.run(main())


def _result(store: SQLiteJobStore, job_id: str, shots: int):  # type: ignore[no-untyped-def]
    rec = store.get(job_id)
    assert rec.state is S.DONE, (rec.state, rec.error)
    result = decode_result(store.get_blob(rec.result_sha256))
    assert sum(result.counts().values()) == shots
    spans = sorted((r.first_shot, r.first_shot + r.shots) for r in store.shot_ledger(job_id))
    return result, spans


def test_transient_link_errors_are_retried_with_jittered_backoff(tmp_path: Path) -> None:
    store, devices, sched, naps = _farm(tmp_path, retries=3, backoff_s=0.1, backoff_max_s=1.0)
    manila = devices[0]
    manila.faults.link_errors = ["transient"] * 3  # the 4th try gets through
    job_id = _run_one(sched, devices, spec(shots=300, seed=1, device="manila"))
    result, _ = _result(store, job_id, 300)
    assert result.metadata.attempts == 1 and result.metadata.recovery is None
    assert len(naps) == 3 and all(0 <= n <= min(1.0, 0.1 * 2**k) for k, n in enumerate(naps))


def test_a_lost_link_reruns_the_batch_and_a_flapping_device_trips_its_breaker(
    tmp_path: Path,
) -> None:
    later = [0.0]  # the farm's clock runs ahead of the wall by this much
    store, devices, sched, _ = _farm(
        tmp_path, clock=lambda: time.time() + later[0], retries=0, breaker_failures=2
    )
    manila = devices[0]
    manila.faults.link_errors = ["transient"] * 2  # two batches in a row are lost

    async def main() -> tuple[str, list[str]]:
        await sched.start()
        ((pinned, _),) = await sched.submit([spec(shots=200, seed=2, device="manila")])
        for _ in range(2):
            await wait_until_async(lambda: manila.queue_depth, what="work in manila's queue")
            await step(sched, [manila])
        await sched._refresh_snapshots(force=True)
        snap = next(s for s in sched.view.snapshots if s.name == "manila")
        assert snap.status is DeviceStatus.UNREACHABLE
        assert "circuit breaker open" in snap.status_reason
        # new work goes elsewhere while it is open
        ((other, _),) = await sched.submit([spec(shots=100, seed=3)])
        await drive(sched, [devices[1]], done=lambda: store.get(other.job_id).state.is_final)
        assert store.get(other.job_id).state is S.DONE
        assert store.get(other.job_id).device == "nairobi"
        # the pinned job waits while the breaker is open ...
        assert store.get(pinned.job_id).state is S.QUEUED
        # ... and runs once the cooldown (30 s) has passed and a probe gets through
        later[0] = 31.0
        await drive(sched, devices)
        await sched._refresh_snapshots(force=True)
        snap = next(s for s in sched.view.snapshots if s.name == "manila")
        assert snap.status is DeviceStatus.ONLINE  # the probe ran: the breaker closed
        await sched.stop()
        return pinned.job_id, [e.reason or "" for e in store.events(pinned.job_id)]

    job_id, reasons = asyncio.run(main())
    result, spans = _result(store, job_id, 200)
    assert result.metadata.device == "manila" and spans == [(0, 200)]
    assert sum("control link" in r for r in reasons) == 2


def test_a_permanent_device_error_fails_the_job_at_once(tmp_path: Path) -> None:
    store, devices, sched, _ = _farm(tmp_path)
    devices[0].faults.link_errors = ["permanent"]
    rec = store.get(_run_one(sched, devices, spec(shots=100, device="manila")))
    assert rec.state is S.FAILED and rec.attempts == 1
    assert "rejected the program" in (rec.error or "")


def test_a_job_waits_for_or_moves_to_a_calibration_fresh_enough(tmp_path: Path) -> None:
    store, devices, sched, _ = _farm(tmp_path)
    manila = devices[0]
    old = dataclasses.replace(manila.calibration, taken_at=time.time() - 7200)
    manila.set_calibration(old)

    async def main() -> tuple[str, str]:
        await sched.start()
        (moved, _), (pinned, _) = await sched.submit(
            [
                spec(shots=100, seed=5, max_calibration_age_s=3600, policy="best_fidelity"),
                spec(shots=100, seed=6, max_calibration_age_s=3600, device="manila"),
            ]
        )
        # the pinned job waits, and asks for manila to be recalibrated
        await drive(sched, devices)
        await sched.stop()
        return moved.job_id, pinned.job_id

    moved, pinned = asyncio.run(main())
    assert _result(store, moved, 100)[0].metadata.device == "nairobi"
    result, _ = _result(store, pinned, 100)
    assert result.metadata.device == "manila" and result.metadata.calibration_age_s < 60
    assert manila.calibration.taken_at > old.taken_at + 3600


def test_missing_shots_rerun_on_the_same_calibration_and_the_result_says_so(
    tmp_path: Path,
) -> None:
    store, devices, sched, _ = _farm(tmp_path)
    for d in devices:
        d.faults.partial_fractions = [0.4]
    result, spans = _result(store, _run_one(sched, devices, spec(shots=500, seed=7)), 500)
    assert spans == [(0, 200), (200, 500)]
    assert result.metadata.recovery == (
        f"300 missing shots rerun on the same calibration {result.metadata.calibration_id}"
    )


def test_a_partial_job_whose_device_drains_reruns_whole_elsewhere(tmp_path: Path) -> None:
    store, devices, sched, _ = _farm(tmp_path)
    for d in devices:
        d.faults.partial_fractions = [0.4]

    async def main() -> tuple[str, str]:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=500, seed=8)])
        await wait_until_async(
            lambda: any(d.queue_depth for d in devices), what="the job in a device's queue"
        )
        first = next(d for d in devices if d.queue_depth)
        await step(sched, [first])  # 200 of 500 shots, then the device drains
        first.set_status(DeviceStatus.DRAINING, "operator")
        first.faults.partial_fractions = []
        await sched._refresh_snapshots(force=True)
        await drive(sched, devices)
        await sched.stop()
        return rec.job_id, first.name

    job_id, drained = asyncio.run(main())
    result, spans = _result(store, job_id, 500)
    assert result.metadata.device != drained
    assert result.metadata.recovery is not None
    assert result.metadata.recovery.startswith("rerun whole on calibration")
    assert "200 shots from an earlier calibration were discarded" in result.metadata.recovery
    ledger = store.shot_ledger(job_id)
    assert len({r.calibration_id for r in ledger}) == 2  # kept apart, never merged
    kept = [r for r in ledger if r.calibration_id == result.metadata.calibration_id]
    assert sum(r.shots for r in kept) == 500
    assert len({(r.attempt, r.first_shot) for r in ledger}) == len(ledger)
    assert spans[0] == (0, 200) and all(a <= b for a, b in itertools.pairwise(spans))


def test_results_from_a_degraded_device_carry_the_warning(tmp_path: Path) -> None:
    store, devices, sched, _ = _farm(tmp_path)
    devices[0].set_health(0.9, 0.7, time.time(), "canary ghz[0-1-2] measured 0.700")
    result, _ = _result(store, _run_one(sched, devices, spec(shots=100, device="manila")), 100)
    assert result.metadata.warnings == ("canary ghz[0-1-2] measured 0.700",)


def test_slices_left_on_a_paused_device_go_back_and_a_restart_keeps_them_apart(
    tmp_path: Path,
) -> None:
    scheduling = SchedulingConfig(slice_shots=200)
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    devices = [Device(d, max_parallel_threads=1, scheduling=scheduling) for d in FARM.devices]
    policies = PolicyConfig(scheduling=scheduling, faults=FaultConfig(partial_wait_s=0))
    sched = Scheduler(store, LocalPorts(devices), policy_config=policies)

    async def main() -> tuple[str, str]:
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=600, seed=9)])
        await wait_until_async(
            lambda: any(d.queue_depth for d in devices), what="the job in a device's queue"
        )
        first = next(d for d in devices if d.queue_depth)
        await step(sched, [first])  # one 200-shot slice counted; 400 still queued there
        first.set_status(DeviceStatus.MAINTENANCE, "maintenance window mw-1: cabling")
        await sched._refresh_snapshots(force=True)
        assert first.queue_depth == 0  # its slices left the paused device
        # the scheduler restarts before the whole rerun finishes
        other = next(d for d in devices if d is not first)
        await wait_until_async(lambda: other.queue_depth, what="the rerun queued elsewhere")
        await sched.stop()
        # ... and the paused device is back: the dropped slice must stay dropped
        first.set_status(DeviceStatus.ONLINE)
        again = Scheduler(store, LocalPorts(devices), policy_config=policies)
        await again.start()
        await drive(again, devices)
        await again.stop()
        return rec.job_id, first.name

    job_id, _ = asyncio.run(main())
    result, _ = _result(store, job_id, 600)
    assert result.metadata.recovery is not None
    assert result.metadata.recovery.startswith("rerun whole")
    assert "200 shots" in result.metadata.recovery
    dropped = [r for r in store.shot_ledger(job_id) if r.attempt == 1]
    assert sum(r.shots for r in dropped) == 200
    events = " | ".join(e.reason or "" for e in store.events(job_id))
    assert "went MAINTENANCE" in events


def _silencing_farm(tmp_path: Path, partial_wait_s: float):  # type: ignore[no-untyped-def]
    """Devices that run 40 % of the first batch, a farm clock to move by hand, and a set
    of devices whose status polls go unanswered (as a dead link would)."""
    later = [0.0]
    scheduling = SchedulingConfig()
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    devices = [Device(d, max_parallel_threads=1, scheduling=scheduling) for d in FARM.devices]
    for d in devices:
        d.faults.partial_fractions = [0.4]
    policies = PolicyConfig(
        scheduling=scheduling, faults=FaultConfig(partial_wait_s=partial_wait_s)
    )
    ports = LocalPorts(devices)
    silent: set[str] = set()
    real = ports.snapshots

    async def answering() -> list:  # type: ignore[type-arg]
        return [s for s in await real() if s.name not in silent]

    ports.snapshots = answering  # type: ignore[method-assign]
    sched = Scheduler(store, ports, policy_config=policies, clock=lambda: time.time() + later[0])
    return store, devices, sched, silent, later


class _ByHand:
    """A scheduler without its control loop: the test runs each pass itself, so nothing
    is placed between the moments the test arranges."""

    def __init__(self, sched: Scheduler, devices: list[Device], store: SQLiteJobStore) -> None:
        self.sched, self.devices, self.store = sched, devices, store

    async def tick(self) -> None:
        await self.sched._refresh_snapshots(force=True)
        await self.sched._place_pending()
        await asyncio.sleep(0.05)  # compile tasks run

    async def until_final(self, job_id: str, devices: list[Device]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not self.store.get(job_id).state.is_final:
            assert loop.time() < deadline, f"timed out waiting for {job_id} to end"
            await self.tick()
            await step(self.sched, devices)


async def _partial_then_silent(hand: _ByHand, silent: set[str]) -> tuple[str, Device]:
    """A job runs 200 of its 500 shots on a device, which then stops answering."""
    await hand.sched._recover()  # started without the control loop
    ((rec, _),) = await hand.sched.submit([spec(shots=500, seed=10)])
    await hand.tick()
    await wait_until_async(
        lambda: any(d.queue_depth for d in hand.devices), what="the job in a device's queue"
    )
    first = next(d for d in hand.devices if d.queue_depth)
    await step(hand.sched, [first])  # 200 of 500; the rest must run on this calibration
    silent.add(first.name)
    await hand.tick()
    assert hand.store.get(rec.job_id).state is S.QUEUED
    return rec.job_id, first


def test_missing_shots_wait_for_their_device_within_partial_wait(tmp_path: Path) -> None:
    store, devices, sched, silent, later = _silencing_farm(tmp_path, partial_wait_s=60)
    hand = _ByHand(sched, devices, store)

    async def main() -> tuple[str, str]:
        job_id, first = await _partial_then_silent(hand, silent)
        later[0] = 30.0  # half the wait: the missing shots stay for their device
        for _ in range(3):
            await hand.tick()
        assert store.get(job_id).state is S.QUEUED
        assert not any(d.queue_depth for d in devices)  # not moved anywhere
        silent.clear()  # it answers again, within the wait
        first.faults.partial_fractions = []
        await hand.until_final(job_id, devices)
        await sched.stop()
        return job_id, first.name

    job_id, first = asyncio.run(main())
    result, spans = _result(store, job_id, 500)
    assert result.metadata.device == first and spans == [(0, 200), (200, 500)]
    assert result.metadata.recovery is not None
    assert result.metadata.recovery.startswith("300 missing shots rerun on the same calibration")


def test_missing_shots_move_when_their_device_stays_away_past_partial_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qrt.scheduler")
    store, devices, sched, silent, later = _silencing_farm(tmp_path, partial_wait_s=60)
    hand = _ByHand(sched, devices, store)

    async def main() -> tuple[str, str]:
        job_id, first = await _partial_then_silent(hand, silent)
        for d in devices:
            d.faults.partial_fractions = []
        later[0] = 61.0  # past the wait: the job reruns whole elsewhere
        await hand.until_final(job_id, [d for d in devices if d is not first])
        await sched.stop()
        return job_id, first.name

    job_id, first = asyncio.run(main())
    result, _ = _result(store, job_id, 500)
    assert result.metadata.device != first
    assert result.metadata.recovery is not None
    assert result.metadata.recovery.startswith("rerun whole on calibration")
    assert f"{first} unreachable for 61 s; its 200 shots so far are dropped" in caplog.text


def test_work_pinned_to_an_offline_device_fails_with_the_reason(tmp_path: Path) -> None:
    store, devices, sched, _ = _farm(tmp_path)
    devices[0].set_status(DeviceStatus.OFFLINE, "failed 3 recalibrations in a row")
    rec = store.get(_run_one(sched, devices, spec(shots=100, device="manila")))
    assert rec.state is S.FAILED
    assert "OFFLINE" in (rec.error or "") and "manila" in (rec.error or "")


def test_a_device_silent_with_no_batch_in_flight_is_restarted(tmp_path: Path) -> None:
    """A frozen device process answers nothing and runs nothing: after silent_restart_s
    it is restarted, and the work pinned to it runs."""
    store, devices, sched, silent, later = _silencing_farm(tmp_path, partial_wait_s=60)
    sched.view.faults = sched.view.faults.model_copy(update={"silent_restart_s": 20.0})
    for d in devices:
        d.faults.partial_fractions = []
    manila = next(d for d in devices if d.name == "manila")
    hand = _ByHand(sched, devices, store)

    async def main() -> str:
        await sched._recover()
        await hand.tick()  # seen once, answering
        silent.add("manila")
        await hand.tick()  # then silent, with nothing in flight
        ((rec, _),) = await sched.submit([spec(shots=100, device="manila")])
        later[0] = 10.0
        await sched._watchdog()
        await hand.tick()
        assert manila.incarnation == before and store.get(rec.job_id).state is S.QUEUED
        later[0] = 21.0  # past silent_restart_s
        await sched._watchdog()
        assert manila.incarnation != before  # restarted
        silent.clear()  # the new process answers
        await hand.until_final(rec.job_id, devices)
        return rec.job_id

    before = manila.incarnation
    job_id = asyncio.run(main())
    assert store.get(job_id).state is S.DONE
    text = sched.metrics.exposition().decode()
    assert 'qrt_device_restarts_total{cause="silent",device="manila"} 1.0' in text
