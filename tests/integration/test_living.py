"""A real local farm whose device drifts fast: canaries find it, the device pauses,
recalibrates and comes back, and no job mixes calibrations or loses a shot. The same
farm, with canaries every few seconds, takes post-processing rollouts and a game day."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray import JobState, QuantumRuntime, StaleCalibrationWarning
from qrt_ray.config import (
    CalibrationConfig,
    LinkConfig,
    PolicyConfig,
    RolloutConfig,
    SchedulingConfig,
    load_farm_config_text,
)
from qrt_ray.gameday import render
from qrt_ray.gameday.runner import GameDay
from qrt_ray.gameday.scenario import Scenario
from tests.circuits import DRIFTING_FARM, ghz
from tests.integration.ledger import check_ledger, wait_for
from tests.metrics_text import sample

pytestmark = pytest.mark.integration

FARM = load_farm_config_text(DRIFTING_FARM)  # manila drifts; canaries catch it
POLICIES = PolicyConfig(
    scheduling=SchedulingConfig(slice_shots=1000),
    calibration=CalibrationConfig(canary_period_s=3, canary_shots=2000, max_chains=2),
    rollout=RolloutConfig(promote_after_rounds=2, min_canaries=4),
    # a device whose link failed is tried again after 5 s (the game day's outage)
    link=LinkConfig(breaker_cooldown_s=5),
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
    # device has been recalibrated, and a few jobs after that. At most three jobs of
    # the stream wait at a time, so a slow machine (canaries slower to find the drift)
    # does not pile up more work than a fast one
    deadline = time.monotonic() + 240
    while not recalibrated():
        assert time.monotonic() < deadline, "manila's drift was not caught within 240 s"
        states = rt.wait(jobs, timeout_s=0) if jobs else {}
        if sum(not s.is_final for s in states.values()) < 3:
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


def _rollout(rt: QuantumRuntime) -> dict[str, object]:
    return next(r for r in rt.administer("rollouts") if r["method"] == "readout")


def test_post_processing_releases_go_through_canaries_first(rt: QuantumRuntime) -> None:
    """F10: a broken mitigation release is caught on canaries and rolled back before
    any user job gets it; a sound one is promoted; an operator can undo that."""
    assert rt.mitigation_versions() == {"readout": "1"}
    started = rt.administer("rollout_start", method="readout", version="drill-overcorrect")
    assert started["phase"] == "shadow"
    wait_for(lambda: _rollout(rt)["phase"] == "rolled_back", 90, what="the drill rolled back")
    caught = _rollout(rt)
    assert caught["served"] == "1" and "gap" in str(caught["reason"]), caught
    assert rt.mitigation_versions() == {"readout": "1"}  # users never got it
    audit = rt.administer("audit_tail", limit=50)
    assert any(a["action"] == "rollout.rolled_back" and a["outcome"] == "alert" for a in audit), (
        audit
    )
    text = rt.metrics_text()
    assert sample(text, "qrt_postprocess_rollout_changes_total", to="rolled_back") >= 1

    rt.administer("rollout_start", method="readout", version="2")
    wait_for(lambda: _rollout(rt)["phase"] != "shadow", 120, what="version 2 judged")
    judged = _rollout(rt)
    assert judged["phase"] == "promoted", judged["reason"]
    assert rt.mitigation_versions() == {"readout": "2"}
    back = rt.administer("rollout_rollback", method="readout", reason="integration test")
    assert back["served"] == "1" and rt.mitigation_versions() == {"readout": "1"}


SHORT_DAY = {
    "name": "short-day",
    "description": "every fault kind once, in half a minute",
    "seed": 3,
    "duration_s": 20,
    "drain_s": 180,
    "workload": {"rate_per_s": 2, "qubits": 3, "shots": 500},
    "steps": [
        {"at_s": 1, "fault": "drift", "devices": ["nairobi"], "factor": 8},
        {"at_s": 2, "fault": "auth-outage", "for_s": 8},
        {"at_s": 6, "fault": "outage", "devices": ["nairobi"], "for_s": 3},
        {"at_s": 10, "fault": "kill", "actor": "device", "devices": ["manila"]},
        {"at_s": 13, "fault": "burst", "jobs": 30},
        {"at_s": 16, "fault": "kill", "actor": "scheduler"},
    ],
    "expect": {"max_failed_share": 0.0, "max_recovery_s": 120},
}


def test_a_game_day_of_every_fault_loses_nothing_and_reports_recovery(
    rt: QuantumRuntime,
) -> None:
    report = GameDay(rt, Scenario.model_validate(SHORT_DAY)).run()
    text = render(report)
    assert report.jobs["lost"] == 0, text
    # the burst's 30 and a steady stream beside it (2 a second for 20 s; fewer on a
    # busy machine, as submits wait out the scheduler's restart)
    assert report.jobs["submitted"] >= 30 + 10, text
    assert [f.fault for f in report.faults] == [
        "drift", "auth-outage", "outage", "kill", "burst", "kill"
    ]  # fmt: skip
    drift, auth = report.faults[:2]
    assert drift.detected_s is not None and drift.recovered_s is not None, text
    # the tenant beside the workload was told to retry while its token could not be
    # checked, never refused, and was accepted again once it could
    assert report.tenant["retry"] >= 1 and report.tenant["accepted"] >= 5, text
    assert report.tenant["refused"] == 0 and report.tenant["error"] == 0, text
    assert auth.detected_s is not None and auth.recovered_s is not None, text
    assert 8 <= auth.recovered_s <= 60, text
    assert all(f.recovered_s is not None for f in report.faults), text
    kinds = {e.kind for e in report.timeline}
    assert {"fault", "reaction", "recovered"} <= kinds
    assert any(s["name"] == "job_success" for s in report.slos)
    assert report.passed, text
