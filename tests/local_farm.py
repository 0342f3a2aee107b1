"""An in-process farm for unit tests: plain devices driven the way device actors are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts, run_ready_batches
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.circuits import to_qasm
from qrt_ray.config import PolicyConfig, SchedulingConfig, load_farm_config_text
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.store import JobStore, StateUpdate, open_store
from tests.circuits import SMALL_FARM
from tests.circuits import ghz as ghz_circuit

FARM = load_farm_config_text(SMALL_FARM)
REPORT_KEY = b"k" * 32  # the in-process farms' report key (tests/unit/test_reports.py)


def ghz(n: int) -> str:
    """An n-qubit GHZ circuit as OpenQASM text."""
    return to_qasm(ghz_circuit(n))


def spec(n: int = 3, shots: int = 500, **kw: object) -> JobSpec:
    """A one-circuit GHZ job."""
    return JobSpec(circuits=(ghz(n),), shots=shots, **kw)


async def drive(
    sched: Scheduler,
    devices: list[Device],
    until_s: float = 240,
    done: Callable[[], bool] | None = None,
) -> None:
    """Run devices the way device actors do, until no job is live (or ``done()``).

    ``until_s`` only bounds a broken run; a healthy one returns in seconds, but a shared
    machine has stalled these tests for minutes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + until_s
    while sched.live_count() and loop.time() < deadline and not (done and done()):
        progressed = await step(sched, devices)
        if not progressed:
            await asyncio.sleep(0.02)


async def step(sched: Scheduler, devices: list[Device]) -> bool:
    """Each device runs one batch if it has one; returns whether any ran."""
    return await run_ready_batches(sched, devices)


def make(
    tmp_path: Path,
    scheduling: SchedulingConfig | None = None,
    store_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[JobStore, list[Device], Scheduler]:
    """A store (``store_url``, else a SQLite file in ``tmp_path``), the two small devices
    and a scheduler over them (not started), on ``clock``."""
    store = open_store(store_url or tmp_path / "jobs.sqlite3")
    scheduling = scheduling or SchedulingConfig()
    key = REPORT_KEY  # as a farm has one: every run is signed and checked
    devices = [
        Device(d, max_parallel_threads=1, scheduling=scheduling, report_key=key)
        for d in FARM.devices
    ]
    policies = PolicyConfig(scheduling=scheduling)
    ports = LocalPorts(devices)
    return (
        store,
        devices,
        Scheduler(store, ports, policy_config=policies, report_key=key, clock=clock),
    )


async def drive_until_crash(sched: Scheduler, devices: list[Device], step_name: str) -> None:
    """Drive the farm until the scheduler reaches ``step_name`` (``_settle``: shots
    counted, still RUNNING) and dies there, as a process killed at that moment would."""

    async def crash(arg: object) -> None:
        raise asyncio.CancelledError

    original = getattr(sched, step_name)
    setattr(sched, step_name, crash)
    try:
        await drive(sched, devices, until_s=30)
    except asyncio.CancelledError:
        return
    finally:
        setattr(sched, step_name, original)
    raise AssertionError(f"the scheduler never reached {step_name}")


async def drive_until_postprocessing(sched: Scheduler, devices: list[Device]) -> None:
    """Drive the farm until the scheduler has counted a job's last shots, and die there,
    the job left POSTPROCESSING. The scheduler stores a finished run's moves to
    POSTPROCESSING and DONE in one transaction, so this stores the first by hand: a
    store holds such a job when a runtime that stored them apart died between them."""
    await drive_until_crash(sched, devices, "_settle")
    S = JobState
    for rec in sched.store.unfinished():
        counted = sum(r.shots for r in sched.store.shot_ledger(rec.job_id))
        if rec.state is S.RUNNING and counted >= rec.spec.shots:
            at = rec.updated_at + 0.001
            update = StateUpdate(rec.job_id, S.RUNNING, S.POSTPROCESSING, at, "all shots in")
            assert sched.store.apply([update]) == [True]


def run_and_record(
    tmp_path: Path, specs: list[JobSpec], calibrations: int = 1, reason: str = "startup"
) -> tuple[list[str], list[Device]]:
    """Run ``specs`` to the end on the small farm with its store in ``tmp_path``, and
    record ``calibrations`` calibrations of manila, an hour apart, as the calibration
    manager would; returns the job ids and the devices (the store is closed)."""
    import time

    from qrt_ray.calibration import calibration_to_json
    from qrt_ray.store.base import CalibrationRecord

    async def run() -> tuple[list[str], list[Device]]:
        store, devices, sched = make(tmp_path)
        await sched.start()
        admitted = await sched.submit(specs)
        await drive(sched, devices)
        await sched.stop()
        manila = next(d for d in devices if d.name == "manila")
        for k in range(calibrations):
            cal = manila.recalibrate() if k else manila.calibration
            store.record_calibration(
                CalibrationRecord(
                    cal.device, f"{cal.calibration_id}-{k}", cal.taken_at + 3600 * k,
                    time.time(), reason, calibration_to_json(cal),
                )
            )  # fmt: skip
        store.close()
        return [rec.job_id for rec, _ in admitted], devices

    return asyncio.run(run())
