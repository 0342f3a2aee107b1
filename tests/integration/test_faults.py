"""Device faults on a real local farm, through the product's hooks and from outside: a
device actor killed or stopped mid-job (by Ray, or by an OS signal), a hung one, a client
killed while it waits.

Each test checks the invariants of every fault test: the job ends DONE with exactly
the shots it asked for, from one calibration, and the shot ledger counts every shot
once (a lost batch's late report, if any, is ignored).
"""

from __future__ import annotations

import contextlib
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
# batches take well under a second; a killed actor is back in about 10 s); one that
# answers nothing for 20 s with no batch in flight is restarted too.
FARM = load_farm_config_text(
    SMALL_FARM.replace("gpu: never}", "gpu: never, max_batch_circuits: 1}")
)
POLICIES = PolicyConfig(
    scheduling=SchedulingConfig(slice_shots=1000),
    faults=FaultConfig(
        hung_batch_min_s=12, hung_batch_factor=2, snapshot_timeout_s=5, silent_restart_s=10
    ),
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


def _stored_calibration(store_path: Path, device: str) -> tuple[str, float] | None:
    """(id, taken_at) of the device's newest calibration on record."""
    from qrt_ray.store import SQLiteJobStore

    store = SQLiteJobStore(store_path)
    try:
        history = store.calibrations(device, 1)
    finally:
        store.close()
    return (history[0].calibration_id, history[0].taken_at) if history else None


def test_a_device_actor_killed_mid_job_is_restarted_and_the_job_loses_nothing(
    rt: QuantumRuntime, store_path: Path
) -> None:
    handle = farm_mod.device_handle("manila", rt.namespace)
    snap = ray.get(handle.snapshot.remote())
    before, calibration = snap.incarnation, snap.calibration
    # the calibration manager records each device's calibration on its first pass; a
    # device killed before that (a farm seconds old on a busy machine) starts afresh,
    # as it should: there was nothing on record to restore
    wait_for(
        lambda: (
            _stored_calibration(store_path, "manila")
            == (calibration.calibration_id, calibration.taken_at)
        ),
        60,
        what=f"manila's calibration {calibration.calibration_id} on record",
    )
    job = rt.submit(ghz(3), shots=20_000, seed=7, device="manila")
    wait_for(lambda: _counted(store_path, job.job_id) >= 2, what="two slices counted")
    assert ray.get(handle.snapshot.remote()).calibration == calibration
    ray.kill(handle, no_restart=False)  # Ray starts it again (max_restarts)
    result = job.result(timeout_s=240)
    assert sum(result.counts().values()) == 20_000
    assert result.metadata.attempts == 2
    check_ledger(store_path, job.job_id, 20_000)
    reasons = " | ".join(e["reason"] or "" for e in job.events())
    # The scheduler learns of the fault one of three ways, by timing: a snapshot taken
    # while the actor is down times out (the device went UNREACHABLE), the first one
    # after it is back shows a new incarnation (restarted), or, on a machine so busy
    # that the new actor takes longer than the batch's limit to come back, the
    # hung-batch watchdog gives up on the batch first (hung). Each moves the work.
    assert any(
        f"re-placed: manila {how}" in reasons for how in ("restarted", "went UNREACHABLE", "hung")
    ), reasons
    assert ray.get(handle.snapshot.remote()).incarnation != before
    # it restored its calibration from the store (a fresh one would be timed now): the
    # actor asks the scheduler as it starts, else the calibration manager restores it
    # on a pass (both slow on a machine this busy)
    try:
        wait_for(
            lambda: ray.get(handle.snapshot.remote()).calibration == calibration,
            90,
            what=f"manila to restore calibration {calibration.calibration_id}",
        )
    except AssertionError as exc:
        now = ray.get(handle.snapshot.remote()).calibration
        raise AssertionError(
            f"{exc} (taken at {calibration.taken_at}); it has {now.calibration_id} taken "
            f"at {now.taken_at}; the newest on record: "
            f"{_stored_calibration(store_path, 'manila')}"
        ) from None


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


# -- the same faults caused from outside the product: an OS signal, a lost client -----


def _actor_pid(rt: QuantumRuntime, name: str) -> int:
    from ray.util.state import list_actors

    (actor,) = list_actors(
        filters=[
            ("name", "=", name),
            ("ray_namespace", "=", rt.namespace),
            ("state", "=", "ALIVE"),
        ]
    )
    return int(actor.pid)


def _device_pid(rt: QuantumRuntime, name: str) -> int:
    return _actor_pid(rt, f"device:{name}")


def test_a_device_process_killed_by_the_os_loses_nothing(
    rt: QuantumRuntime, store_path: Path
) -> None:
    import os
    import signal

    # the pid first: looking an actor up takes a while on a busy machine, and the
    # kill must land while the job still has slices to run
    pid = _device_pid(rt, "manila")
    job = rt.submit(ghz(3), shots=30_000, seed=8, device="manila")
    wait_for(lambda: _counted(store_path, job.job_id) >= 2, what="two slices counted")
    os.kill(pid, signal.SIGKILL)  # no hook: the process just dies
    at_kill = _counted(store_path, job.job_id)
    assert at_kill < 30, "the job finished before the kill landed; nothing was tested"
    result = job.result(timeout_s=240)
    assert sum(result.counts().values()) == 30_000
    assert result.metadata.attempts >= 2
    check_ledger(store_path, job.job_id, 30_000)


def test_a_device_process_stopped_by_the_os_is_replaced_and_loses_nothing(
    rt: QuantumRuntime, store_path: Path
) -> None:
    import os
    import signal

    pid = _device_pid(rt, "nairobi")  # first, as above
    job = rt.submit(ghz(4), shots=12_000, seed=9, device="nairobi")
    wait_for(lambda: _counted(store_path, job.job_id) >= 1, what="a slice counted")
    os.kill(pid, signal.SIGSTOP)  # frozen mid-batch: it answers nothing, forever
    try:
        result = job.result(timeout_s=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # if it is still there, let it go
    assert sum(result.counts().values()) == 12_000
    check_ledger(store_path, job.job_id, 12_000)
    reasons = " | ".join(e["reason"] or "" for e in job.events())
    assert "nairobi" in reasons and ("hung" in reasons or "UNREACHABLE" in reasons), reasons
    assert _device_pid(rt, "nairobi") != pid  # a new process took over


def test_a_client_killed_while_waiting_loses_no_job(rt: QuantumRuntime, tmp_path: Path) -> None:
    """A client process dies (its connection with it) right after submitting: another
    client finds the job by its idempotency key and gets the result."""
    import os
    import subprocess
    import sys

    script = tmp_path / "client.py"
    script.write_text(
        "import os, sys, time\n"
        "import qrt_ray\n"
        f"rt = qrt_ray.connect({os.environ['RAY_ADDRESS']!r}, namespace={rt.namespace!r})\n"
        "h = rt.submit(open(sys.argv[1]).read(), shots=3000, idempotency_key='lost-client')\n"
        "print(h.job_id, flush=True)\n"
        "h.result(timeout_s=600)\n"
    )
    qasm = tmp_path / "ghz.qasm"
    from qrt_ray.circuits import to_qasm

    qasm.write_text(to_qasm(ghz(3)))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(qasm)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    job_id = proc.stdout.readline().strip()
    proc.kill()  # the client and its connection die while it waits
    proc.wait(timeout=30)
    again = rt.submit(qasm.read_text(), shots=3000, idempotency_key="lost-client")
    assert again.job_id == job_id  # the same job, not a second one
    assert sum(again.result(timeout_s=240).counts().values()) == 3000


def test_pipelined_submits_survive_a_scheduler_killed_mid_stream(
    rt: QuantumRuntime, store_path: Path
) -> None:
    """kill -9 of the scheduler while a pipelined loop sends: submit() keeps returning
    at once, every job is acknowledged once the scheduler is back, and each runs once
    (a batch lost in the kill is sent again under the same keys)."""
    import os
    import signal
    import sqlite3
    import time

    from qrt_ray import connect
    from qrt_ray.names import SCHEDULER_NAME

    piped = connect(os.environ["RAY_ADDRESS"], namespace=rt.namespace, pipeline=True)
    try:
        handles, slowest = [], 0.0
        for i in range(40):
            started = time.perf_counter()
            handles.append(piped.submit(ghz(2), shots=200, seed=i, idempotency_key=f"piped-{i}"))
            slowest = max(slowest, time.perf_counter() - started)
            if i == 10:
                handles[0].accepted(timeout_s=60)  # the first jobs are stored
                killed = _actor_pid(rt, SCHEDULER_NAME)
                os.kill(killed, signal.SIGKILL)
        assert slowest < 2.0  # the loop did not wait out the restart
        job_ids = [h.accepted(timeout_s=180) for h in handles]
        assert len(set(job_ids)) == 40
        results = piped.results(handles, timeout_s=300)
        assert all(sum(r.counts().values()) == 200 for r in results)
        assert _actor_pid(rt, SCHEDULER_NAME) != killed  # a new scheduler served them
    finally:
        piped.shutdown()
    with sqlite3.connect(store_path) as conn:
        (stored,) = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE idempotency_key LIKE 'piped-%'"
        ).fetchone()
    assert stored == 40  # one job per key: nothing lost, nothing made twice
    for job_id in job_ids:
        check_ledger(store_path, job_id, 200)
