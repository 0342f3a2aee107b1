"""What the scheduler's job moves say about the service: outcomes (M1), stage and
end-to-end durations (M2, M3), what waits in the queues (M7), and each job's trace.

Plain Python over :class:`~qrt_ray.metrics.RuntimeMetrics` and
:mod:`qrt_ray.tracing`: the scheduler hands it each move the store applied, with the
job as it was before the move (its ``updated_at`` is when it entered the state it
leaves), and calls :meth:`queues` from its control loop. A stage's span and its
histogram observation come from the same two stored times.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from qrt_ray import tracing
from qrt_ray.lifecycle import JobState
from qrt_ray.logs import job_fields
from qrt_ray.metrics import END_TO_END, STAGES, RuntimeMetrics
from qrt_ray.models import PRIORITY_CLASSES, priority_class
from qrt_ray.store import JobRecord, StateUpdate

logger = logging.getLogger("qrt.jobs")
NO_DEVICE = "none"  # a job not placed yet, or one that failed before placement
# The stages the scheduler records as spans, by their span names. Queue wait is the
# gap before the placement span; compiling and running have spans of their own from
# the processes that do them (compile.task, device.run), so the scheduler's view of
# those stays in the histogram: spans cost the scheduler's loop (benchmarks/
# observability.py).
SPAN_STAGES = {"device_wait": "device_wait", "postprocess": "result_collection"}
_WAITING = frozenset({JobState.QUEUED, JobState.COMPILING, JobState.PLACED})


class JobTelemetry:
    """Feeds the outcome, stage and queue series from the scheduler's moves."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self.metrics = metrics
        self._queue_keys: set[tuple[str, str]] = set()
        self._oldest_keys: set[str] = set()

    def known_devices(self, devices: Iterable[str]) -> None:
        """Start each device's outcome and duration series at 0, so rates over them are
        right from the first job (a series first seen at 1 hides that increment from
        rate() and increase())."""
        for device in devices:
            self.metrics.placed_esp.labels(device)
            for cls, _ in PRIORITY_CLASSES:
                for outcome in ("done", "failed"):
                    error_class = "none" if outcome == "done" else "device"
                    self.metrics.jobs_finished.labels(device, cls, outcome, error_class)
                for stage in (*STAGES.values(), END_TO_END):
                    self.metrics.stage_seconds.labels(stage, device, cls)

    def moved(self, before: JobRecord, u: StateUpdate) -> None:
        """Observe one applied move of a job that was ``before``."""
        device = u.fields.get("device") or before.device or NO_DEVICE
        cls = priority_class(before.spec.priority)
        stage = STAGES.get(u.from_state.value)
        if stage is not None:
            self.metrics.stage_seconds.labels(stage, device, cls).observe(
                max(0.0, u.at - before.updated_at)
            )
            name = SPAN_STAGES.get(stage)
            if name is not None and tracing.enabled():
                attrs = span_attributes(before, device)
                attrs["qrt.next_state"] = u.to_state.value
                attrs["qrt.reason"] = u.reason
                tracing.stage_span(before.job_id, name, before.updated_at, u.at, attrs)
        if not u.to_state.is_final:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "job %s %s -> %s: %s",
                    before.job_id,
                    u.from_state.value,
                    u.to_state.value,
                    u.reason,
                    extra=job_fields(before.job_id, before.tenant, device, before.calibration_id),
                )
            return
        self._final_line(before, u, device)
        if tracing.enabled():
            attrs = span_attributes(before, device)
            attrs["qrt.state"] = u.to_state.value
            attrs["qrt.error_class"] = u.fields.get("error_class")
            tracing.job_span(before.job_id, before.created_at, u.at, attrs)
        if u.to_state is JobState.DONE:
            outcome, error_class = "done", "none"
            self.metrics.stage_seconds.labels(END_TO_END, device, cls).observe(
                max(0.0, u.at - before.created_at)
            )
        elif u.to_state is JobState.FAILED:
            outcome, error_class = "failed", str(u.fields.get("error_class") or "device")
        else:
            outcome, error_class = "cancelled", "none"
        self.metrics.jobs_finished.labels(device, cls, outcome, error_class).inc()

    def _final_line(self, before: JobRecord, u: StateUpdate, device: str) -> None:
        """One log line per finished job: a warning for a failure, with its class."""
        cal = u.fields.get("calibration_id", before.calibration_id)
        extra = job_fields(before.job_id, before.tenant, device, cal)
        took = u.at - before.created_at
        if u.to_state is JobState.FAILED:
            logger.warning(
                "job %s FAILED (%s) after %.1f s: %s",
                before.job_id,
                u.fields.get("error_class"),
                took,
                str(u.fields.get("error") or u.reason)[:300],
                extra=extra,
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job %s %s after %.1f s", before.job_id, u.to_state.value, took, extra=extra
            )

    def queues(self, jobs: Sequence[JobRecord], now: float) -> None:
        """Set the waiting-jobs and oldest-wait gauges from the live jobs.

        Series of a device or class that has nothing waiting go to 0 (not away):
        a panel then shows an empty queue, not a gap.
        """
        counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        for rec in jobs:
            if rec.state not in _WAITING:
                continue
            placed = rec.state is not JobState.QUEUED and rec.device
            device = rec.device if placed and rec.device else NO_DEVICE
            key = (device, priority_class(rec.spec.priority))
            counts[key] = counts.get(key, 0) + 1
            oldest[device] = max(oldest.get(device, 0.0), now - rec.created_at)
        for key in self._queue_keys - counts.keys():
            self.metrics.waiting_jobs.labels(*key).set(0)
        for key, n in counts.items():
            self.metrics.waiting_jobs.labels(*key).set(n)
        for device in self._oldest_keys - oldest.keys():
            self.metrics.oldest_wait.labels(device).set(0)
        for device, age in oldest.items():
            self.metrics.oldest_wait.labels(device).set(age)
        self._queue_keys |= counts.keys()
        self._oldest_keys |= oldest.keys()


def span_attributes(rec: JobRecord, device: str | None = None) -> dict[str, object]:
    """What every span of a job carries: job id, tenant, device, calibration id."""
    return {
        "qrt.job_id": rec.job_id,
        "qrt.tenant": rec.tenant,
        "qrt.device": device or rec.device or NO_DEVICE,
        "qrt.calibration_id": rec.calibration_id,
        "qrt.attempt": rec.attempts,
        "qrt.priority": rec.spec.priority,
    }
