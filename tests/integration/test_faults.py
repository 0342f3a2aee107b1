"""Device faults on a real local farm: a device actor killed mid-job, and a hung one.

Each test checks the invariants of every fault test: the job ends DONE with exactly
the shots it asked for, from one calibration, and the shot ledger counts every shot
once (a lost batch's late report, if any, is ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from qrt_ray import JobState, QuantumRuntime
from qrt_ray import farm as farm_mod
from qrt_ray.config import FaultConfig, PolicyConfig, SchedulingConfig, load_farm_config_text
from tests.circuits import SMALL_FARM, ghz
from tests.integration.ledger import check_ledger, wait_for

pytestmark = pytest.mark.integration

# One circuit per batch and 1,000-shot slices: a long job spans many batches, so a
# fault lands between counted slices. A batch still running after 25 s is hung (these
# batches take well under a second; a killed actor is back in about 10 s).
FARM = load_farm_config_text(
    SMALL_FARM.replace("gpu: never}", "gpu: never, max_batch_circuits: 1}")
)
POLICIES = PolicyConfig(
    scheduling=SchedulingConfig(slice_shots=1000),
    faults=FaultConfig(hung_batch_min_s=25, hung_batch_factor=2, snapshot_timeout_s=5),
)


@pytest.fixture(scope="module")
def rt(ray_head: object, store_path: Path) -> Iterator[QuantumRuntime]:
    runtime = QuantumRuntime.local(FARM, store=store_path, policies=POLICIES)
    yield runtime
    runtime.shutdown()


def _counted(store_path: Path, job_id: str) -> int:
    from qrt_ray.store import SQLiteJobStore

    store = SQLiteJobStore(store_path)
    try:
        return len(store.shot_ledger(job_id))
    finally:
        store.close()


def test_a_device_actor_killed_mid_job_is_restarted_and_the_job_loses_nothing(
    rt: QuantumRuntime, store_path: Path
) -> None:
    job = rt.submit(ghz(3), shots=20_000, seed=7, device="manila")
    wait_for(lambda: _counted(store_path, job.job_id) >= 2)
    handle = farm_mod.device_handle("manila", rt.namespace)
    snap = ray.get(handle.snapshot.remote())
    before, calibration = snap.incarnation, snap.calibration
    ray.kill(handle, no_restart=False)  # Ray starts it again (max_restarts)
    result = job.result(timeout_s=240)
    assert sum(result.counts().values()) == 20_000
    assert result.metadata.attempts == 2
    check_ledger(store_path, job.job_id, 20_000)
    reasons = " | ".join(e["reason"] or "" for e in job.events())
    # The scheduler learns of the fault one of two ways, by timing: a snapshot taken
    # while the actor is down times out (the device went UNREACHABLE), or the first
    # one after it is back shows a new incarnation (restarted). Either moves the work.
    assert "re-placed: manila restarted" in reasons or (
        "re-placed: manila went UNREACHABLE" in reasons
    ), reasons
    assert ray.get(handle.snapshot.remote()).incarnation != before
    # it restored its calibration from the store (a fresh one would be timed now)
    wait_for(lambda: ray.get(handle.snapshot.remote()).calibration == calibration, 30)


def test_a_hung_device_is_restarted_and_its_job_finishes_there(
    rt: QuantumRuntime, store_path: Path
) -> None:
    handle = farm_mod.device_handle("nairobi", rt.namespace)
    before = ray.get(handle.snapshot.remote()).incarnation
    ray.get(handle.inject_faults.remote(hang_s=600))  # the next batch never ends in time
    job = rt.submit(ghz(4), shots=2_000, seed=5, device="nairobi")
    result = job.result(timeout_s=240)
    assert job.status() is JobState.DONE
    assert sum(result.counts().values()) == 2_000
    assert job.info()["attempts"] == 2  # the hung attempt counted no shot
    check_ledger(store_path, job.job_id, 2_000)
    reasons = " | ".join(e["reason"] or "" for e in job.events())
    assert "nairobi hung" in reasons, reasons
    assert ray.get(handle.snapshot.remote()).incarnation != before


def test_control_link_errors_rerun_the_batch_or_fail_the_job(
    rt: QuantumRuntime, store_path: Path
) -> None:
    handle = farm_mod.device_handle("manila", rt.namespace)
    # four timeouts in a row outlast the device's three retries: the batch is lost
    ray.get(handle.inject_faults.remote(link_errors=["transient"] * 4))
    job = rt.submit(ghz(3), shots=1_500, seed=3, device="manila")
    result = job.result(timeout_s=240)
    assert sum(result.counts().values()) == 1_500
    check_ledger(store_path, job.job_id, 1_500)
    reasons = " | ".join(e["reason"] or "" for e in job.events())
    assert "timed out 4 times in a row" in reasons, reasons
    ray.get(handle.inject_faults.remote(link_errors=["permanent"]))
    doomed = rt.submit(ghz(3), shots=100, device="manila")
    assert rt.wait([doomed], timeout_s=120)[doomed.job_id] is JobState.FAILED
    assert "rejected the program" in doomed.info()["error"]
    metrics = rt.metrics_text()
    assert 'qrt_device_link_errors_total{device="manila",kind="permanent"} 1.0' in metrics
