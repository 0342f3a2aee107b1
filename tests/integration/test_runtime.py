"""Submit, result, cancel, faults and restart on a real local farm (one shared Ray)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from qiskit import QuantumCircuit

from qrt_ray import (
    JobCancelledError,
    JobFailedError,
    JobState,
    PlacementError,
    QuantumRuntime,
    ValidationError,
)
from qrt_ray import farm as farm_mod
from qrt_ray.config import FarmConfig
from qrt_ray.errors import RuntimeNotRunningError
from qrt_ray.store import SQLiteJobStore
from tests.circuits import ghz
from tests.metrics_text import sample
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "jobs.sqlite3"


@pytest.fixture(scope="module")
def rt(ray_head: object, small_farm: FarmConfig, store_path: Path) -> Iterator[QuantumRuntime]:
    runtime = QuantumRuntime.local(small_farm, store=store_path)
    yield runtime
    runtime.shutdown()


def ledger(store_path: Path, job_id: str) -> list[int]:
    s = SQLiteJobStore(store_path)
    try:
        return [r.shots for r in s.shot_ledger(job_id)]
    finally:
        s.close()


def test_runtime_does_not_own_the_shared_ray(rt: QuantumRuntime) -> None:
    assert ray.is_initialized() and not rt._owns_ray


def test_submit_and_result(rt: QuantumRuntime) -> None:
    handle = rt.submit(ghz(3), shots=1000, tags=["t"])
    result = handle.result(timeout_s=120)
    assert sum(result.counts().values()) == 1000
    assert result.counts().get("000", 0) + result.counts().get("111", 0) > 800
    meta = result.metadata
    assert meta.device in {"manila", "nairobi"} and meta.calibration_id.startswith(meta.device)
    assert meta.shots_executed == 1000 and len(meta.seeds) == 1
    assert {"qiskit", "qiskit-aer", "ray"} <= set(meta.versions)
    assert meta.compile[0].layout and meta.compile[0].depth > 0
    assert handle.status() is JobState.DONE
    assert [e["to"] for e in handle.events()] == [
        "QUEUED",
        "COMPILING",
        "PLACED",
        "RUNNING",
        "POSTPROCESSING",
        "DONE",
    ]
    assert handle.placement()["policy"] == "composite"
    assert handle.placement()["chosen"]["device"] == handle.info()["device"]


def test_seed_reproduces_counts_exactly(rt: QuantumRuntime) -> None:
    a = rt.submit(ghz(4), shots=500, seed=1234, device="nairobi").result(timeout_s=120)
    b = rt.submit(ghz(4), shots=500, seed=1234, device="nairobi").result(timeout_s=120)
    assert a.counts() == b.counts()
    assert a.metadata.seeds == b.metadata.seeds == (1234,)


def test_many_jobs_each_durable(rt: QuantumRuntime) -> None:
    handles = rt.submit_many([ghz(2 + i % 4) for i in range(40)], shots=200)
    assert len({h.job_id for h in handles}) == 40
    results = rt.results(handles, timeout_s=180)
    assert all(sum(r.counts().values()) == 200 for r in results)
    # results come back in the order asked, though fetched many per call
    assert [len(next(iter(r.counts()))) for r in results] == [2 + i % 4 for i in range(40)]


def test_small_jobs_for_one_device_and_calibration_share_simulator_calls(
    rt: QuantumRuntime,
) -> None:
    stats = farm_mod.device_handle("nairobi", rt.namespace).stats
    before = ray.get(stats.remote())["batches"]
    rt.drain("nairobi")  # the jobs wait together, so their arrival order cannot matter
    try:
        handles = rt.submit_many([ghz(3) for _ in range(12)], shots=300, device="nairobi")
        wait_until(
            lambda: all(h.status() is JobState.QUEUED for h in handles),
            what="twelve jobs admitted and waiting",
        )
    finally:
        rt.resume("nairobi")
    results = rt.results(handles, timeout_s=120)
    assert all(sum(r.counts().values()) == 300 for r in results)
    assert len({r.metadata.calibration_id for r in results}) == 1
    # Twelve jobs, one or two simulator batches (a placement pass may stop at its time
    # budget and leave the rest to the next): they queued together and ran together.
    assert ray.get(stats.remote())["batches"] - before <= 2


def test_devices_simulate_on_every_core(rt: QuantumRuntime) -> None:
    # Ray caps OpenMP at one thread in CPU-less actors unless the farm says otherwise
    for dev in rt.devices():
        assert f"{os.cpu_count()} threads" in dev.simulator_method, dev.simulator_method


def test_idempotency_key_returns_same_job(rt: QuantumRuntime) -> None:
    a = rt.submit(ghz(2), shots=100, idempotency_key="same-key")
    b = rt.submit(ghz(2), shots=100, idempotency_key="same-key")
    assert a.job_id == b.job_id
    with pytest.raises(ValidationError, match="already used"):
        rt.submit(ghz(2), shots=101, idempotency_key="same-key")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"circuits": "OPENQASM 2.0;\nqreg q[1];\nbogus q[0];\n"}, ValidationError, "malformed"),
        ({"circuits": ghz(9)}, PlacementError, "widest device of this farm, 'nairobi', has 7"),
        ({"shots": 0}, ValidationError, "shots"),
        ({"shots": 10**9}, ValidationError, "shots"),
        ({"device": "nowhere"}, PlacementError, "no such device"),
        ({"priority": 99}, ValidationError, "priority"),
    ],
)
def test_bad_input_gets_a_clear_error_and_stores_nothing(
    rt: QuantumRuntime, store_path: Path, kwargs: dict, error: type, match: str
) -> None:
    before = len(rt.jobs(limit=10_000))
    args = {"circuits": ghz(2), "shots": 100, **kwargs}
    with pytest.raises(error, match=match):
        rt.submit(args.pop("circuits"), **args)
    assert len(rt.jobs(limit=10_000)) == before


def heavy_job() -> list[QuantumCircuit]:
    """Non-Clifford circuits enough to keep a device busy for about a second."""
    from qiskit.circuit.random import random_circuit

    return [random_circuit(5, 6, measure=True, seed=i) for i in range(150)]


def wait_for(handle: object, state: JobState, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while handle.status() is not state:
        assert time.monotonic() < deadline, f"{handle} never reached {state}"
        time.sleep(0.01)


def test_cancel_queued_job(rt: QuantumRuntime, store_path: Path) -> None:
    blocker = rt.submit(heavy_job(), shots=2000, device="manila", priority=10)
    wait_for(blocker, JobState.RUNNING)  # the device is busy with a batch
    target = rt.submit(ghz(2), shots=100, device="manila", priority=0)
    assert target.cancel() is True
    assert target.status() is JobState.CANCELLED
    with pytest.raises(JobCancelledError):
        target.result(timeout_s=5)
    assert target.cancel() is False  # final already
    blocker.result(timeout_s=300)
    assert ledger(store_path, target.job_id) == []


def test_a_loop_of_result_reads_ahead_and_each_handle_gets_its_own(
    rt: QuantumRuntime, store_path: Path
) -> None:
    import sqlite3

    blocker = rt.submit(heavy_job(), shots=2000, device="nairobi", priority=10)
    handles = [rt.submit(ghz(2), shots=100 + i, device="manila", seed=i) for i in range(8)]
    cancelled = rt.submit(ghz(2), shots=100, device="nairobi", priority=0)
    assert cancelled.cancel() is True  # queued behind the blocker
    rt.wait(handles, timeout_s=300)
    first = handles[0].result(timeout_s=60)
    # the other seven came with the first call; each is served to its own handle
    assert {h.job_id for h in handles[1:]} <= set(rt._ahead)
    assert cancelled.job_id not in rt._ahead
    results = [first] + [h.result(timeout_s=60) for h in handles[1:]]
    assert [sum(r.counts().values()) for r in results] == [100 + i for i in range(8)]
    assert not {h.job_id for h in handles} & set(rt._ahead)  # nothing kept once read

    def fetched() -> int:
        ids = [h.job_id for h in handles]
        with sqlite3.connect(store_path) as conn:
            (n,) = conn.execute(
                f"SELECT COUNT(*) FROM jobs WHERE fetched_at IS NOT NULL "
                f"AND job_id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchone()
        return n

    assert fetched() == 1  # the seven read ahead are not fetched until handed out...
    with pytest.raises(JobCancelledError):
        cancelled.result(timeout_s=5)
    assert fetched() == 8  # ... and the next call says they were
    assert [r.metadata.seeds for r in results] == [h.result().metadata.seeds for h in handles]
    blocker.result(timeout_s=300)


def test_pipelined_submits_return_at_once_and_refusals_land_on_their_handle(
    rt: QuantumRuntime,
) -> None:
    assert rt.pipelined  # the default
    good = [rt.submit(ghz(2), shots=200, seed=i) for i in range(12)]
    with pytest.raises(PlacementError, match="12"):  # no device has 12 qubits: said at once
        rt.submit(ghz(12), shots=200)
    picky = rt.submit(ghz(2), shots=200, min_fidelity=0.9999)  # only the farm can judge it
    late = rt.submit(ghz(3), shots=300)
    # a poll right after the submits gets every job's state, acknowledged or not yet
    polled = rt.wait([*good, late], timeout_s=0)
    assert sorted(polled) == sorted(h.job_id for h in [*good, late])
    with pytest.raises(PlacementError, match=r"min_fidelity=0\.9999"):
        picky.accepted(timeout_s=60)
    with pytest.raises(PlacementError):
        picky.result(timeout_s=60)
    rt.flush(timeout_s=60)
    assert all(h.accepted(timeout_s=0).startswith("job-") for h in [*good, late])
    results = [h.result(timeout_s=300) for h in [*good, late]]
    assert [sum(r.counts().values()) for r in results] == [200] * 12 + [300]

    def runtime(pipeline: bool) -> QuantumRuntime:
        return QuantumRuntime(
            farm_mod.find_scheduler(rt.namespace),
            rt.namespace,
            owns_ray=False,
            owns_farm=False,
            devices=[],
            pipeline=pipeline,
        )

    synced = runtime(False)
    try:
        # a synchronous runtime's handle is acknowledged when submit() returns, and
        # submit() raises every refusal itself
        assert synced.submit(ghz(2), shots=10).accepted(timeout_s=0).startswith("job-")
        with pytest.raises(PlacementError, match=r"min_fidelity=0\.9999"):
            synced.submit(ghz(2), shots=10, min_fidelity=0.9999)
    finally:
        synced.shutdown()
    piped = runtime(True)
    piped.shutdown()
    with pytest.raises(RuntimeNotRunningError, match="shut down"):
        piped.submit(ghz(2), shots=10)


def test_max_execution_time_fails_with_reason(rt: QuantumRuntime) -> None:
    handle = rt.submit(heavy_job(), shots=2000, device="manila", max_execution_time_s=0.2)
    with pytest.raises(JobFailedError, match=r"max_execution_time_s=0\.2 exceeded"):
        handle.result(timeout_s=120)


def idle_device(rt: QuantumRuntime, name: str, timeout_s: float = 120) -> object:
    """The device's handle once nothing is queued, running or unreported on it, so a
    fault injected next hits the next job rather than what earlier tests left."""
    dev = farm_mod.device_handle(name, rt.namespace)
    deadline = time.monotonic() + timeout_s
    while (stats := ray.get(dev.stats.remote()))["queued"] or stats["in_flight"]:
        assert time.monotonic() < deadline, f"{name} never went idle: {stats}"
        time.sleep(0.02)
    return dev


def test_partial_run_retries_only_missing_shots(rt: QuantumRuntime, store_path: Path) -> None:
    dev = idle_device(rt, "manila")
    ray.get(dev.inject_faults.remote(partial_fractions=[0.25]))
    handle = rt.submit(ghz(3), shots=2000, device="manila")
    result = handle.result(timeout_s=120)
    assert sum(result.counts().values()) == 2000
    assert result.metadata.attempts == 2
    assert ledger(store_path, handle.job_id) == [500, 1500]
    assert any("partial run" in (e["reason"] or "") for e in handle.events())


def test_corrupt_payload_is_rerun_not_counted(rt: QuantumRuntime, store_path: Path) -> None:
    dev = idle_device(rt, "manila")
    failures = sample(rt.metrics_text(), "qrt_result_checksum_failures_total")
    ray.get(dev.inject_faults.remote(corrupt=1))
    handle = rt.submit(ghz(3), shots=800, device="manila")
    result = handle.result(timeout_s=120)
    assert sum(result.counts().values()) == 800
    assert ledger(store_path, handle.job_id) == [800]  # only the good attempt counted
    assert any("checksum" in (e["reason"] or "") for e in handle.events())
    assert sample(rt.metrics_text(), "qrt_result_checksum_failures_total") == failures + 1


def test_restart_mid_flight_loses_nothing(
    ray_head: object, small_farm: FarmConfig, tmp_path: Path
) -> None:
    store = tmp_path / "restart.sqlite3"
    first = QuantumRuntime.local(small_farm, store=store)
    # enough work that some is still placed or running when the farm is shut down: on
    # a fast run of the machine 30 such jobs all finished while it shut down
    handles = first.submit_many([ghz(2 + i % 5) for i in range(90)], shots=3000)
    ids = {h.job_id for h in handles}

    def states() -> set[str]:
        return {j["state"] for j in first.jobs(limit=200) if j["job_id"] in ids}

    def mid_flight() -> bool:
        seen = states()
        return "DONE" in seen and bool(seen & {"PLACED", "RUNNING"})

    wait_until(mid_flight, what="some jobs done while others are placed or running")
    first.shutdown()  # the farm dies with work in every state
    s = SQLiteJobStore(store)
    try:  # what the next life finds: work provably mid-flight
        at_restart = {k.value: v for k, v in s.counts_by_state().items()}
    finally:
        s.close()
    assert at_restart.get("DONE", 0) >= 1, at_restart
    assert at_restart.get("PLACED", 0) + at_restart.get("RUNNING", 0) >= 1, at_restart
    second = QuantumRuntime.local(small_farm, store=store)
    try:
        results = second.results([second.job(h.job_id) for h in handles], timeout_s=300)
    finally:
        second.shutdown()
    assert all(sum(r.counts().values()) == 3000 for r in results)
    s = SQLiteJobStore(store)
    try:
        for h in handles:
            shots = [r.shots for r in s.shot_ledger(h.job_id)]
            assert sum(shots) == 3000, (h.job_id, shots)
            assert s.get(h.job_id).state is JobState.DONE
    finally:
        s.close()


def test_demo_runs_a_mixed_workload_and_reports_it(rt: QuantumRuntime) -> None:
    from qrt_ray.demo import format_report, run_demo
    from qrt_ray.workloads import FAMILIES

    report = run_demo(rt, num_jobs=10, shots=500, max_qubits=5)
    rows = report["rows"]
    assert report["done"] == 10 and report["failed"] == 0
    assert {r.family for r in rows} == set(FAMILIES)
    assert all(r.device in {"manila", "nairobi"} for r in rows)
    # The noisiest job here, a 4-qubit Grover on manila, measured 0.32-0.33 over six
    # runs (500 shots); answers with the gates lost (the Aer method-mixing bug) measured
    # 0.00-0.08 for every family whose ideal is not half 0...0.
    assert all(r.fidelity is not None and r.fidelity > 0.2 for r in rows), rows
    text = format_report(report)
    assert "10/10 jobs done, 0 failed" in text
    assert all(family in text for family in FAMILIES)


def test_estimate_runs_nothing_and_placement_follows_the_jobs_goal(rt: QuantumRuntime) -> None:
    before = len(rt.jobs(limit=1000))
    rows = rt.estimate(ghz(4), shots=1000)
    assert {r["device"] for r in rows} == {"manila", "nairobi"}
    assert all(0 < r["fidelity"] <= 1 and r["cost_usd"] > 0 and r["run_s"] > 0 for r in rows)
    assert len(rt.jobs(limit=1000)) == before  # nothing was submitted
    cheapest = min(rows, key=lambda r: r["cost_usd"])["device"]
    handle = rt.submit(ghz(4), shots=1000, optimize="cost")
    assert handle.result(timeout_s=120).metadata.device == cheapest
    assert handle.placement()["chosen"]["device"] == cheapest
    with pytest.raises(PlacementError, match=r"min_fidelity=0\.9999"):  # from the handle
        rt.submit(ghz(4), shots=1000, min_fidelity=0.9999).accepted(timeout_s=60)


def test_a_result_from_a_drifted_device_warns_and_says_so(rt: QuantumRuntime) -> None:
    """While canaries say a device drifted, its results carry the finding and the client
    raises StaleCalibrationWarning for each of them, and only for them."""
    import warnings

    from qrt_ray import StaleCalibrationWarning

    nairobi = farm_mod.device_handle("nairobi", rt.namespace)
    finding = "canary ghz-4 measured 0.61, calibration predicts 0.83"
    now = time.time()
    ray.get(nairobi.set_health.remote(0.83, 0.61, now, finding))
    try:
        stale = rt.submit(ghz(3), shots=200, device="nairobi")
        fresh = rt.submit(ghz(3), shots=200, device="manila")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = rt.results([stale, fresh], timeout_s=120)
    finally:
        ray.get(nairobi.set_health.remote(0.83, 0.83, time.time(), ""))
    warned = [w for w in caught if w.category is StaleCalibrationWarning]
    assert len(warned) == 1 and stale.job_id in str(warned[0].message)
    assert finding in str(warned[0].message)
    assert results[0].metadata.warnings and not results[1].metadata.warnings


def test_waiting_past_the_timeout_raises_job_timeout_error(rt: QuantumRuntime) -> None:
    from qrt_ray import JobTimeoutError

    handle = rt.submit(ghz(3), shots=1_000_000, device="manila")
    try:
        with pytest.raises(JobTimeoutError, match=rf"job {handle.job_id} is still"):
            handle.result(timeout_s=0.3)
        assert handle.status() is not JobState.DONE
    finally:
        handle.cancel()


@ray.remote
class _Tampering:
    """A scheduler whose answers are altered on the way: DONE, with one byte changed."""

    def __init__(self, sha: str, data: bytes) -> None:
        self.sha, self.data = sha, data

    def wait(self, job_ids: list[str], timeout_s: float | None) -> dict[str, str]:
        return {j: "DONE" for j in job_ids}

    def results(self, job_ids: list[str]) -> list[tuple[str, bytes]]:
        flipped = bytes([self.data[0] ^ 1]) + self.data[1:]
        return [(self.sha, flipped) for _ in job_ids]

    def collect(self, job_ids: list[str], timeout_s: float | None) -> list[tuple]:
        return [("DONE", blob, None) for blob in self.results(job_ids)]


def test_collect_answers_each_outcome_in_one_call_and_bounds_its_size(
    rt: QuantumRuntime,
) -> None:
    from qrt_ray import ValidationError
    from qrt_ray.client import _unwrap

    done = rt.submit(ghz(2), shots=100)
    done.result(timeout_s=120)
    late = rt.submit(heavy_job(), shots=2000, device="manila", max_execution_time_s=0.2)
    got = _unwrap(rt._scheduler.collect, [done.job_id, late.job_id], 120)
    # a call that will raise fetches nothing: only the failed job's error comes back
    assert got == [("DONE", None, None), ("FAILED", None, got[1][2])]
    assert "max_execution_time_s" in got[1][2]
    ((state, (sha, data), error),) = _unwrap(rt._scheduler.collect, [done.job_id], 0)
    assert state == "DONE" and error is None and data and len(sha) == 64
    with pytest.raises(ValidationError, match="collect at most 256"):
        _unwrap(rt._scheduler.collect, [done.job_id] * 257, 0)


def test_the_client_checks_each_result_after_transport(rt: QuantumRuntime) -> None:
    from qrt_ray import IntegrityError
    from qrt_ray.client import JobHandle

    handle = rt.submit(ghz(2), shots=100)
    handle.result(timeout_s=120)
    ((sha, data),) = ray.get(rt._scheduler.results.remote([handle.job_id]))
    tampering = _Tampering.remote(sha, data)
    client = QuantumRuntime(tampering, rt.namespace, owns_ray=False, owns_farm=False, devices=[])
    with pytest.raises(IntegrityError, match=rf"job {handle.job_id}: .*checksum in transit"):
        JobHandle(client, handle.job_id).result(timeout_s=30)


def test_a_job_that_wants_a_fresh_calibration_gets_one_through_the_manager(
    rt: QuantumRuntime,
) -> None:
    """The scheduler asks the calibration manager (an actor) to recalibrate the device a
    job needs; the job runs on a calibration younger than its limit."""
    # the manager records each device's calibration on its first pass
    wait_until(lambda: rt.calibrations("nairobi", limit=1), what="nairobi's calibration")
    before = rt.calibrations("nairobi", limit=1)[0]
    time.sleep(3.0)  # every calibration of the farm is now older than the limit
    submitted_at = time.time()
    handle = rt.submit(ghz(3), shots=200, device="nairobi", max_calibration_age_s=2.0)
    result = handle.result(timeout_s=240)
    # the limit holds when the job starts running; the result's age is the one its last
    # shot ran on, later by the run (on a slow machine, past the limit)
    taken_at = result.metadata.calibration_taken_at
    assert taken_at >= submitted_at  # made for this job
    started = [e["at"] for e in handle.events() if e["to"] == "RUNNING"]
    assert started and started[-1] - taken_at <= 2.0
    newest = rt.calibrations("nairobi", limit=1)[0]
    assert newest["taken_at"] > before["taken_at"]
    assert "at most 2 s old" in newest["reason"], newest["reason"]


def test_the_calibration_manager_comes_back_after_a_crash_with_its_history(
    rt: QuantumRuntime,
) -> None:
    manager = farm_mod.calibration_handle(rt.namespace)
    history = rt.calibrations("manila", limit=50)
    ray.kill(manager, no_restart=False)  # Ray starts it again (max_restarts=-1)
    report = wait_until(lambda: _report_or_none(rt), what="the calibration manager answering again")
    assert set(report) == {"manila", "nairobi"}
    assert rt.calibrations("manila", limit=50)[: len(history)] == history


def _report_or_none(rt: QuantumRuntime) -> dict | None:
    try:
        return rt.calibration_report()
    except ray.exceptions.RayError:
        return None


def test_openqasm_3_text_runs_end_to_end(rt: QuantumRuntime) -> None:
    text = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\n'
        "h q[0];\ncx q[0], q[1];\ncx q[1], q[2];\nc = measure q;\n"
    )
    counts = rt.submit(text, shots=500, seed=3).result(timeout_s=120).counts()
    assert sum(counts.values()) == 500
    assert counts.get("000", 0) + counts.get("111", 0) > 400
