"""A real local farm whose device drifts fast: canaries find it, the device pauses,
recalibrates and comes back, and no job mixes calibrations or loses a shot."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray import JobState, QuantumRuntime, StaleCalibrationWarning
from qrt_ray.config import (
    CalibrationConfig,
    PolicyConfig,
    SchedulingConfig,
    load_farm_config_text,
)
from tests.circuits import DRIFTING_FARM, ghz
from tests.integration.ledger import check_ledger, wait_for
from tests.metrics_text import sample

pytestmark = pytest.mark.integration

FARM = load_farm_config_text(DRIFTING_FARM)  # manila drifts; canaries catch it
POLICIES = PolicyConfig(
    scheduling=SchedulingConfig(slice_shots=1000),
    calibration=CalibrationConfig(canary_period_s=3, canary_shots=2000, max_chains=2),
)


@pytest.fixture(scope="module")
def rt(ray_head: object, store_path: Path) -> Iterator[QuantumRuntime]:
    assert FARM.devices[0].drift is not None
    runtime = QuantumRuntime.local(FARM, store=store_path, policies=POLICIES)
    yield runtime
    runtime.shutdown()


def test_drift_is_caught_and_no_result_mixes_calibrations(
    rt: QuantumRuntime, store_path: Path
) -> None:
    jobs = []

    def recalibrated() -> bool:
        report = rt.calibration_report()["manila"]
        return report["detections"] >= 1 and report["recalibrations"] >= 1

    # a steady stream of work across the drift, until canaries have caught it and the
    # device has been recalibrated, and a few jobs after that
    deadline = time.monotonic() + 240
    while not recalibrated():
        assert time.monotonic() < deadline, "manila's drift was not caught within 240 s"
        jobs.append(rt.submit(ghz(3), shots=3_000, seed=len(jobs), device="manila"))
        time.sleep(1.0)
    for _ in range(3):
        jobs.append(rt.submit(ghz(3), shots=3_000, seed=len(jobs), device="manila"))
        time.sleep(1.0)
    states = rt.wait(jobs, timeout_s=240)
    failed = {j.job_id: j.info()["error"] for j in jobs if states[j.job_id] is not JobState.DONE}
    assert not failed, failed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = rt.results(jobs)
    for job, result in zip(jobs, results, strict=True):
        assert sum(result.counts().values()) == 3_000
        check_ledger(store_path, job.job_id, 3_000)
    # a result run while canaries had found drift says so, and only such a result
    warned = {str(w.message).split()[1] for w in caught if w.category is StaleCalibrationWarning}
    marked = {j.job_id for j, r in zip(jobs, results, strict=True) if r.metadata.warnings}
    assert warned == marked
    history = rt.calibrations("manila", limit=50)
    drift = [h for h in history if h["reason"].startswith("drift: canary")]
    assert drift, [h["reason"] for h in history]
    assert len({r.metadata.calibration_id for r in results}) >= 2  # before and after
    report = rt.calibration_report()["manila"]
    assert report["detections"] >= 1 and report["recalibrations"] >= 1
    wait_for(
        lambda: next(d for d in rt.devices() if d.name == "manila").canary_at,
        30,
        what="a canary round on manila",
    )
    seen = sample(rt.metrics_text(), "qrt_device_recalibrations_total", device="manila")
    assert seen >= 1
