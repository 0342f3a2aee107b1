"""Forged device reports: a run only counts when a device the work was dispatched to
signed it with the farm's key. Refused runs are counted by reason and change nothing;
the job still ends with its real counts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import ray

from qrt_ray import JobState, QuantumRuntime
from qrt_ray.config import load_farm_config_text
from qrt_ray.farm import device_handle
from qrt_ray.lifecycle import JobState as S
from qrt_ray.models import JobSpec
from qrt_ray.reports import new_dispatch, sign_run, verify_run
from qrt_ray.results import RawRun, counts_checksum
from tests.circuits import SMALL_FARM, ghz
from tests.local_farm import REPORT_KEY, drive, make
from tests.local_farm import ghz as ghz_text


def forged(job_id: str, attempt: int, device: str, calibration_id: str, shots: int) -> RawRun:
    """The report an attacker would send: every shot on '101'."""
    counts = ({"101": shots},)
    return RawRun(
        job_id=job_id,
        attempt=attempt,
        device=device,
        calibration_id=calibration_id,
        calibration_taken_at=time.time(),
        shots_requested=shots,
        counts=counts,
        seeds=(1,),
        run_s=0.1,
        simulator_method="density_matrix",
        gpu=False,
        checksum=counts_checksum(list(counts)),
    )


def test_signatures_cover_what_the_scheduler_counts() -> None:
    run = sign_run(REPORT_KEY, dataclasses.replace(forged("j", 1, "manila", "c", 10), dispatch="d"))
    assert verify_run(REPORT_KEY, run)
    assert not verify_run(b"x" * 32, run)
    for change in (
        {"checksum": "0" * 64},
        {"attempt": 2},
        {"device": "nairobi"},
        {"first_shot": 5},
        {"dispatch": "other"},
        {"job_id": "k"},
    ):
        assert not verify_run(REPORT_KEY, dataclasses.replace(run, **change)), change
    assert new_dispatch() != new_dispatch() and len(new_dispatch()) == 32


def test_forged_runs_are_refused_counted_and_change_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        sched.audit_key = b"a" * 32  # as a farm's: refused reports are sealed too
        await sched.start()
        ((rec, _),) = await sched.submit(
            [JobSpec(circuits=(ghz_text(3),), shots=400, device="manila")]
        )
        manila = devices[0]
        batch: list = []
        for _ in range(200):  # placed and queued on manila, not run yet
            batch = manila.take_batch()
            if batch:
                break
            await asyncio.sleep(0.02)
        (item,) = batch
        await sched.batch_started("manila", *manila.claim(batch))
        assert sched._jobs[rec.job_id].state is S.RUNNING
        fake = forged(rec.job_id, item.attempt, "manila", item.calibration_id, 400)
        attempts = [
            ("signature", fake),  # unsigned
            ("signature", sign_run(b"x" * 32, fake)),  # another key
            ("signature", sign_run(REPORT_KEY, dataclasses.replace(fake, device="nairobi"))),
            ("dispatch", sign_run(REPORT_KEY, dataclasses.replace(fake, dispatch=new_dispatch()))),
        ]
        for _, run in attempts:
            await sched.batch_finished("manila", [run])
        # a start that the device did not sign starts nothing
        assert await sched.batch_started("manila", [(item.job_id, item.attempt, "")]) == []
        entries, _ = manila.claim(batch)
        assert await sched.batch_started("manila", entries, "0" * 64) == []
        metric = sched.metrics.forged_reports
        assert metric.labels(device="manila", reason="signature")._value.get() == 5
        assert metric.labels(device="manila", reason="dispatch")._value.get() == 1
        assert sched._jobs[rec.job_id].state is S.RUNNING and store.shot_ledger(rec.job_id) == []
        await asyncio.sleep(0.2)  # the audit writes run beside the loop
        sealed = [r.entry for r in store.audit_records() if r.entry.action == "report.refused"]
        assert len(sealed) == 6 and {e.actor for e in sealed} == {"device:manila"}
        assert sorted(e.detail["reason"] for e in sealed) == ["dispatch"] + ["signature"] * 5
        # the real run, signed by the device for the hand-off it got, counts
        await sched.batch_finished("manila", manila.execute(batch))
        await drive(sched, devices)
        await sched.stop()
        done = store.get(rec.job_id)
        assert done.state is S.DONE
        (row,) = store.shot_ledger(rec.job_id)
        assert row.shots == 400
        store.close()

    asyncio.run(main())


@pytest.mark.integration
def test_a_ray_client_cannot_make_a_job_done_with_forged_counts(ray_head, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the attack of issue 22: call the scheduler's device callbacks from any client
    farm = load_farm_config_text(SMALL_FARM)
    with QuantumRuntime.local(farm, store=tmp_path / "jobs.sqlite3") as rt:
        handle = rt.submit(ghz(3), shots=20_000, device="manila")
        deadline = time.monotonic() + 120
        while handle.status() is not JobState.RUNNING:
            assert time.monotonic() < deadline, handle.status()
            time.sleep(0.05)
        cal = ray.get(device_handle("manila", rt.namespace).snapshot.remote()).calibration
        scheduler = rt._scheduler
        info = handle.info()
        fake = forged(handle.job_id, info["attempts"], "manila", cal.calibration_id, 20_000)
        ray.get(scheduler.batch_finished.remote("manila", [fake]))
        result = handle.result(timeout_s=300)
        counts = result.counts()
        assert sum(counts.values()) == 20_000
        assert counts.get("101", 0) < 1_000  # the GHZ's own counts, not the forged ones
        assert counts.get("000", 0) + counts.get("111", 0) > 15_000
        refused = [e for e in handle.events() if "101" in (e["reason"] or "")]
        assert refused == []
