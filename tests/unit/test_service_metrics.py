"""The service metrics (M1-M8) agree with the store, which is their ground truth."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from prometheus_client import CollectorRegistry

from qrt_ray.actors.canary_metrics import last_passes, observe_round, reductions
from qrt_ray.actors.job_telemetry import NO_DEVICE, JobTelemetry
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.models import priority_class
from qrt_ray.store import CanaryRecord, JobRecord, StateUpdate
from tests.local_farm import drive, make, spec

S = JobState


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_priority_classes_cover_every_priority() -> None:
    assert [priority_class(p) for p in range(11)] == ["low"] * 3 + ["normal"] * 4 + ["high"] * 4


def test_finished_jobs_and_stage_times_match_the_store(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        done = await sched.submit([spec(shots=300, seed=i, priority=8) for i in range(3)])
        await drive(sched, devices)
        ((cancel, _),) = await sched.submit([spec(shots=300)])
        await sched.cancel(cancel.job_id)
        await sched.stop()
        reg = sched.metrics.registry
        records = [store.get(r.job_id) for r, _ in done]
        assert all(r.state is S.DONE for r in records)
        for device in {r.device for r in records}:
            n = sum(1 for r in records if r.device == device)
            got = value(
                reg,
                "qrt_jobs_finished_total",
                device=device,
                priority="high",
                outcome="done",
                error_class="none",
            )
            assert got == n
            assert (
                value(
                    reg,
                    "qrt_job_stage_duration_seconds_count",
                    stage="end_to_end",
                    device=device,
                    priority="high",
                )
                == n
            )
        # every stage the jobs went through was observed once per visit, with the
        # store's own times: the sums agree to the microsecond
        for stage, state in (("queue_wait", S.QUEUED), ("run", S.RUNNING)):
            want = 0.0
            for r in records:
                events = store.events(r.job_id)
                for a, b in itertools.pairwise(events):
                    if a.to_state is state:
                        want += b.at - a.at
            got = sum(
                value(
                    reg,
                    "qrt_job_stage_duration_seconds_sum",
                    stage=stage,
                    device=d,
                    priority="high",
                )
                for d in {r.device for r in records}
            )
            assert abs(got - want) < 1e-6, stage
        assert (
            value(
                reg,
                "qrt_jobs_finished_total",
                device=NO_DEVICE,
                priority="normal",
                outcome="cancelled",
                error_class="none",
            )
            == 1
        )
        store.close()

    asyncio.run(main())


def _record(job_id: str, state: JobState, at: float, priority: int = 5, **kw: object) -> JobRecord:
    return JobRecord(job_id, state, spec(priority=priority), 100.0, at, **kw)  # type: ignore[arg-type]


def test_a_failed_job_counts_with_its_error_class() -> None:
    metrics = RuntimeMetrics()
    jm = JobTelemetry(metrics)
    jm.known_devices(["a"])
    before = _record("j1", S.RUNNING, 110.0, device="a")
    fields = {"error": "gave up", "error_class": ErrorClass.PARTIAL_RUN.value}
    jm.moved(before, StateUpdate("j1", S.RUNNING, S.FAILED, 112.5, fields=fields))
    reg = metrics.registry
    assert (
        value(
            reg,
            "qrt_jobs_finished_total",
            device="a",
            priority="normal",
            outcome="failed",
            error_class="partial_run",
        )
        == 1
    )
    # the known device's good series exists at 0 before any job: rate() sees the first
    assert registry_has(
        reg,
        "qrt_jobs_finished_total",
        device="a",
        priority="high",
        outcome="done",
        error_class="none",
    )
    assert (
        value(reg, "qrt_job_stage_duration_seconds_sum", stage="run", device="a", priority="normal")
        == 2.5
    )
    # a failed job has no end-to-end latency (the latency objective is about results)
    assert (
        value(
            reg,
            "qrt_job_stage_duration_seconds_count",
            stage="end_to_end",
            device="a",
            priority="normal",
        )
        == 0
    )


def registry_has(reg: CollectorRegistry, name: str, **labels: str) -> bool:
    return reg.get_sample_value(name, labels) is not None


def test_queue_gauges_count_waiting_jobs_and_zero_emptied_queues() -> None:
    metrics = RuntimeMetrics()
    jm = JobTelemetry(metrics)
    live = [
        _record("q1", S.QUEUED, 100.0, priority=9, device="stale"),
        _record("q2", S.PLACED, 100.0, priority=1, device="a"),
        _record("q3", S.RUNNING, 100.0, device="a"),
    ]
    jm.queues(live, now=160.0)
    reg = metrics.registry
    assert value(reg, "qrt_queue_waiting_jobs", device=NO_DEVICE, priority="high") == 1
    assert value(reg, "qrt_queue_waiting_jobs", device="a", priority="low") == 1
    assert value(reg, "qrt_queue_oldest_wait_seconds", device="a") == 60.0
    jm.queues([], now=170.0)
    assert registry_has(reg, "qrt_queue_waiting_jobs", device="a", priority="low")
    assert value(reg, "qrt_queue_waiting_jobs", device="a", priority="low") == 0
    assert value(reg, "qrt_queue_oldest_wait_seconds", device="a") == 0


def test_mitigation_reduction_is_relative_to_the_raw_error() -> None:
    canaries = [
        {"measured": 0.8, "mitigated": {"readout": 0.95}},  # error 0.2 -> 0.05: 0.75
        {"measured": 0.9, "mitigated": {"readout": 0.85}},  # error 0.1 -> 0.15: -0.5
        {"measured": 0.999, "mitigated": {"readout": 1.0}},  # nothing to reduce: left out
        {"measured": 0.7, "mitigated": {"readout": None}},  # the method failed
    ]
    (r,) = reductions(canaries)
    assert (r.method, r.level) == ("readout", "1")
    assert abs(r.mean - 0.125) < 1e-12
    assert (r.improved, r.worse, r.failed) == (1, 1, 1)


def test_canary_rounds_set_freshness_and_mitigation_gauges() -> None:
    metrics = RuntimeMetrics()
    reg = metrics.registry
    detail = {"canaries": [{"measured": 0.8, "mitigated": {"readout": 0.9}}]}
    observe_round(metrics, CanaryRecord("a", 50.0, "c1", 0.9, 0.8, False, detail))
    observe_round(metrics, CanaryRecord("a", 60.0, "c1", 0.9, 0.5, True, detail))
    assert value(reg, "qrt_device_canary_last_success_timestamp_seconds", device="a") == 50.0
    assert value(reg, "qrt_device_canary_rounds_total", device="a", outcome="drift") == 1
    assert value(reg, "qrt_device_canary_rounds_total", device="a", outcome="pass") == 1
    assert (
        abs(
            value(
                reg, "qrt_mitigation_error_reduction_ratio", device="a", method="readout", level="1"
            )
            - 0.5
        )
        < 1e-12
    )
    fresh = RuntimeMetrics()
    last_passes(
        fresh,
        {
            "a": [
                CanaryRecord("a", 70.0, "c", 1, 0.1, True),
                CanaryRecord("a", 40.0, "c", 1, 1, False),
            ]
        },
    )
    assert (
        value(fresh.registry, "qrt_device_canary_last_success_timestamp_seconds", device="a")
        == 40.0
    )
