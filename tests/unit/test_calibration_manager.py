"""The calibration manager on in-process devices with an injected clock: canaries find
drift, the device pauses, recalibrates and comes back; old calibrations, maintenance
windows, failed recalibrations and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from qrt_ray.actors.calibration import CalibrationManager, LocalCalibrationPorts
from qrt_ray.actors.device import Device
from qrt_ray.calibration import calibration_from_json
from qrt_ray.config import CalibrationConfig, DeviceConfig, DriftConfig
from qrt_ray.errors import ValidationError
from qrt_ray.models import DeviceStatus
from qrt_ray.policies.canary import Phase
from qrt_ray.store import JobStore, open_store

HOUR = 3600.0
PERIOD = 1800.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _device(clock: Clock, trend: float = 0.0, coherence: float = 0.0) -> Device:
    drift = DriftConfig(
        seed=2,
        error_trend_per_hour=trend,
        error_sd_per_hour=0.0,
        coherence_sd_per_hour=coherence,
        tls_per_qubit_hour=0.0,
        coupler_per_edge_hour=0.0,
    )
    cfg = DeviceConfig(
        name="nairobi",
        backend="FakeNairobiV2",
        price_per_shot_usd=0.0,
        price_per_job_usd=0.0,
        drift=drift,
    )
    return Device(cfg, clock=clock)


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    """The calibration history, canaries and maintenance windows, on each backend."""
    s = open_store(store_url)
    yield s
    s.close()


def _manager(store: JobStore, device: Device, clock: Clock, **kw: float) -> CalibrationManager:
    config = CalibrationConfig(canary_period_s=PERIOD, **kw)
    return CalibrationManager(store, LocalCalibrationPorts([device]), config, clock=clock, seed=5)


def test_drift_is_found_by_canaries_and_the_device_recalibrates(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock, trend=0.3)
    manager = _manager(store, device, clock)
    first_id = device.calibration.calibration_id
    first_taken = device.calibration.taken_at

    async def run() -> list[tuple[float, DeviceStatus]]:
        seen = []
        for _ in range(24):  # 12 hours in half-hour steps
            await manager.step()
            seen.append((clock.t, device.status))
            clock.t += PERIOD
        return seen

    seen = asyncio.run(run())
    account = manager.accounts["nairobi"]
    assert account.detections >= 1
    assert account.recalibrations == account.detections  # each detection, one retune
    # retuned: errors back to their base values (this drift has no coherence part)
    assert device.calibration.taken_at > first_taken
    assert device.status is DeviceStatus.ONLINE  # verified and back
    assert DeviceStatus.CALIBRATING in [s for _, s in seen]
    history = store.calibrations("nairobi", limit=50)
    assert len(history) == 1 + account.recalibrations
    assert history[-1].calibration_id == first_id and history[-1].reason == "observed"
    assert history[0].reason.startswith("drift: canary")
    assert calibration_from_json(history[0].snapshot_json) == device.calibration
    rounds = store.canaries("nairobi", limit=100)
    assert any(r.drifted for r in rounds) and not rounds[0].drifted


def test_no_drift_no_recalibration_and_canaries_stay_on_schedule(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock, trend=0.0)
    manager = _manager(store, device, clock)

    async def run() -> None:
        for _ in range(8):
            await manager.step()
            clock.t += PERIOD

    asyncio.run(run())
    account = manager.accounts["nairobi"]
    assert account.recalibrations == 0
    assert account.canary_rounds == 7  # the first is one period after start
    assert device.status is DeviceStatus.ONLINE and device.degraded == ""


def test_an_old_calibration_is_replaced(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock)
    manager = _manager(store, device, clock, max_age_s=2 * HOUR)
    old_taken = device.calibration.taken_at

    async def run() -> None:
        await manager.step()
        clock.t += 3 * HOUR
        await manager.step()  # too old: pause
        assert device.status is DeviceStatus.CALIBRATING
        assert "h old" in device.status_reason
        await manager.step()  # idle: recalibrate, verify, back online

    asyncio.run(run())
    assert device.status is DeviceStatus.ONLINE
    assert device.calibration.taken_at == clock.t > old_taken
    assert "h old" in store.calibrations("nairobi")[0].reason


def test_a_maintenance_window_takes_the_device_out_and_back(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock)
    manager = _manager(store, device, clock)

    async def run() -> None:
        await manager.step()
        with pytest.raises(ValidationError, match="must be after start"):
            await manager.schedule_maintenance("nairobi", clock.t + 10, clock.t + 5, "x")
        with pytest.raises(ValidationError, match="not a device"):
            await manager.schedule_maintenance("nowhere", clock.t, clock.t + 5, "x")
        await manager.schedule_maintenance("nairobi", clock.t + 100, clock.t + 200, "new fridge")
        clock.t += 150
        await manager.step()
        assert device.status is DeviceStatus.MAINTENANCE
        assert "new fridge" in device.status_reason
        assert not device.snapshot().accepting
        clock.t += 100
        await manager.step()  # window over: recalibrate first
        await manager.step()

    asyncio.run(run())
    assert device.status is DeviceStatus.ONLINE
    assert store.calibrations("nairobi")[0].reason == "maintenance window ended"


def test_a_device_whose_canaries_keep_failing_goes_offline_with_the_reason(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock)
    manager = _manager(store, device, clock, offline_after=2)
    device.faults.hidden_error = 3.0  # worse than any calibration will ever say

    async def run() -> None:
        for _ in range(6):
            clock.t += PERIOD
            await manager.step()

    asyncio.run(run())
    assert device.status is DeviceStatus.OFFLINE
    assert "after 2 recalibrations" in device.status_reason
    assert manager.states["nairobi"].phase is Phase.OFFLINE
    # an operator fixes it and resumes: monitored again
    device.faults.hidden_error = 1.0
    device.set_status(DeviceStatus.ONLINE)
    asyncio.run(manager.step())
    assert manager.states["nairobi"].phase is Phase.MONITOR


def test_a_restarted_device_gets_its_calibration_back_and_its_drift_goes_on(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock, trend=0.3, coherence=0.2)
    manager = _manager(store, device, clock)

    async def run() -> None:
        await manager.step()
        clock.t += 5 * HOUR
        await manager.calibrate("nairobi", "requested by operator")

    asyncio.run(run())
    kept = device.calibration
    truth_before = device.true_calibration()
    # the actor restarts: a fresh Device on the same farm clock and drift start
    fresh = Device(device.config, clock=clock, drift_start=device._drift.start)  # type: ignore[union-attr]
    assert fresh.calibration.calibration_id != kept.calibration_id
    manager.ports.devices["nairobi"] = fresh  # type: ignore[attr-defined]
    asyncio.run(manager.step())
    assert fresh.calibration == kept
    assert fresh.true_calibration() == truth_before


def test_a_restarted_manager_finishes_what_it_started_and_holds_its_statuses(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock)
    device.set_status(DeviceStatus.CALIBRATING, "drift: canary ghz[0-1-2] ...")
    fresh = _manager(store, device, clock)  # a new manager finds the device paused

    async def run() -> None:
        await fresh.step()  # rebuilt as recalibrating; the device is idle: retune, verify
        assert device.status is DeviceStatus.ONLINE
        await fresh.schedule_maintenance("nairobi", clock.t, clock.t + 600, "cabling")
        await fresh.step()
        assert device.status is DeviceStatus.MAINTENANCE
        device.restart()  # comes back ONLINE inside the window: put back at once
        await fresh.step()
        assert device.status is DeviceStatus.MAINTENANCE

    asyncio.run(run())
    assert fresh.accounts["nairobi"].recalibrations == 1


def test_a_failing_recalibration_counts_as_a_failed_verification(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock)
    manager = _manager(store, device, clock, offline_after=2)

    def broken() -> None:
        raise RuntimeError("control electronics do not answer")

    device.recalibrate = broken  # type: ignore[method-assign]

    async def run() -> None:
        await manager.step()
        with pytest.raises(ValidationError, match="not a device"):
            await manager.calibrate("nowhere", "x")
        phase = await manager.calibrate("nairobi", "operator", timeout_s=30)
        assert phase == "recalibrating"  # the first failure: it will try again
        await manager.step()

    asyncio.run(run())
    assert device.status is DeviceStatus.OFFLINE
    assert "recalibration failed" in device.status_reason


def test_the_report_lists_a_farm_device_before_the_first_pass_reaches_it(store) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(1_000_000.0)
    device = _device(clock)
    config = CalibrationConfig(canary_period_s=PERIOD)
    manager = CalibrationManager(
        store, LocalCalibrationPorts([device]), config, clock=clock, devices=["nairobi"]
    )
    before = manager.report()
    assert before["nairobi"]["phase"] == "unseen" and before["nairobi"]["detections"] == 0
    asyncio.run(manager.step())
    after = manager.report()["nairobi"]
    assert after["phase"] != "unseen" and set(after) == set(before["nairobi"])
