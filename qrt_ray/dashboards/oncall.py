"""The on-call dashboard (uid ``qrt-oncall``): what is stuck, failing or burning now,
and the way from a failing job to its trace."""

from __future__ import annotations

from qrt_ray.dashboards.spec import (
    DEVICE,
    DEVICE_OR_NONE,
    DOCS_URL,
    JAEGER_URL,
    STUCK_AFTER_S,
    TRACE_ID,
    TRACE_LINKS,
    DashboardSpec,
    Kind,
    Metric,
    PanelSpec,
    Query,
    RowSpec,
    Runbook,
    Step,
    Unit,
    increase_by,
)

UID = "qrt-oncall"

_QUEUE = (Runbook.HIGH_QUEUE_LATENCY,)
_FAILED = f'qrt_jobs_finished_total{{outcome="failed",{DEVICE}}}'
# error classes map to runbooks; the panel lists every page a class can lead to
_FAILURE_RUNBOOKS = (
    Runbook.PARTIAL_RUN,
    Runbook.POSTPROCESS_FAILURE,
    Runbook.COMPILER_MISMATCH,
    Runbook.NETWORK_PARTITION,
    Runbook.STORAGE_CORRUPTION,
    Runbook.HIGH_QUEUE_LATENCY,
)
_BURN_STEPS = (Step(None, "green"), Step(6, "orange"), Step(14.4, "red"))


_QUEUES = RowSpec(
    "Queues",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Waiting jobs by device and priority",
            'Live jobs not yet running, by the device they wait for (device "none": not '
            "placed yet) and priority class.",
            (
                Query(
                    f"sum by (device, priority) (qrt_queue_waiting_jobs{{{DEVICE_OR_NONE}}})",
                    "{{device}} {{priority}}",
                ),
            ),
            metric=Metric.M7,
            runbooks=_QUEUE,
            stacked=True,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Oldest waiting job by device",
            "Age of the oldest live job not yet running, per device it waits for.",
            (
                Query(
                    f"max by (device) (qrt_queue_oldest_wait_seconds{{{DEVICE_OR_NONE}}})",
                    "{{device}}",
                ),
            ),
            metric=Metric.M7,
            runbooks=_QUEUE,
            unit=Unit.SECONDS,
        ),
        PanelSpec(
            Kind.TABLE,
            "Stuck queues (oldest wait over $stuck_after_s s)",
            "Devices whose oldest waiting job has waited longer than the stuck_after_s "
            "variable; find the job with `qrt jobs` and follow it with `qrt trace JOB`.",
            (
                Query(
                    f"max by (device) (qrt_queue_oldest_wait_seconds{{{DEVICE_OR_NONE}}}) "
                    f"> ${STUCK_AFTER_S.name}"
                ),
            ),
            metric=Metric.M7,
            runbooks=_QUEUE,
            unit=Unit.SECONDS,
            width=8,
            links=TRACE_LINKS,
        ),
        PanelSpec(
            Kind.STAT,
            "Jobs waiting with no device",
            'Live jobs waiting for placement (device "none"): no device could take them yet.',
            (Query('sum(qrt_queue_waiting_jobs{device="none"})'),),
            metric=Metric.M7,
            runbooks=_QUEUE,
            width=4,
            thresholds=(Step(None, "green"), Step(1, "orange")),
        ),
        PanelSpec(
            Kind.BARGAUGE,
            "Queue depth by device",
            "Jobs waiting on each device's own queue.",
            (Query(f"sum by (device) (qrt_device_queue_depth_jobs{{{DEVICE}}})", "{{device}}"),),
            metric=Metric.M7,
            runbooks=_QUEUE,
        ),
    ),
)

_FAILURES = RowSpec(
    "Failures",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Failed jobs per second by error class",
            "Jobs that ended FAILED, by error class and device. Classes: partial_run -> "
            "partial-run, postprocess -> postprocess-failure, compile -> compiler-mismatch, "
            "device_lost -> network-partition, integrity -> storage-corruption, placement "
            "and deadline -> high-queue-latency.",
            (
                Query(
                    f"sum by (error_class, device) (rate({_FAILED}[$__rate_interval]))",
                    "{{error_class}} {{device}}",
                ),
            ),
            metric=Metric.M1,
            runbooks=_FAILURE_RUNBOOKS,
            stacked=True,
            links=TRACE_LINKS,
        ),
        PanelSpec(
            Kind.TABLE,
            "Failed jobs in range by error class",
            "Failed jobs over the time range, by error class and device.",
            (Query(f"sum by (error_class, device) (increase({_FAILED}[$__range])) > 0"),),
            metric=Metric.M1,
            runbooks=_FAILURE_RUNBOOKS,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Partial runs and checksum failures",
            "Runs with missing shots and payloads failing their checksum, per interval.",
            (
                increase_by(f"qrt_result_partial_runs_total{{{DEVICE}}}", "device", "partial run"),
                increase_by(
                    f"qrt_result_checksum_failures_total{{{DEVICE}}}", "device", "checksum"
                ),
            ),
            runbooks=(Runbook.PARTIAL_RUN, Runbook.STORAGE_CORRUPTION),
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Link errors, breaker trips and restarts",
            "Control-link errors, circuit-breaker trips and device restarts per interval.",
            (
                increase_by(
                    f"qrt_device_link_errors_total{{{DEVICE}}}", "device, kind", "link error"
                ),
                increase_by(
                    f"qrt_device_breaker_trips_total{{{DEVICE}}}", "device", "breaker trip"
                ),
                increase_by(f"qrt_device_restarts_total{{{DEVICE}}}", "device, cause", "restart"),
            ),
            runbooks=(Runbook.NETWORK_PARTITION,),
        ),
    ),
)

_CALIBRATION = RowSpec(
    "Calibration and devices",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Canary drift rounds and recalibrations",
            "Canary rounds that found drift, and new calibrations, per interval.",
            (
                increase_by(
                    f'qrt_device_canary_rounds_total{{outcome="drift",{DEVICE}}}', "device", "drift"
                ),
                increase_by(
                    f"qrt_device_recalibrations_total{{{DEVICE}}}", "device", "recalibration"
                ),
            ),
            metric=Metric.M4,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Calibration age by device",
            "Age of each device's current calibration.",
            (
                Query(
                    f"max by (device) (qrt_device_calibration_age_seconds{{{DEVICE}}})",
                    "{{device}}",
                ),
            ),
            metric=Metric.M4,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            unit=Unit.SECONDS,
        ),
        PanelSpec(
            Kind.BARGAUGE,
            "Time since last passing canary",
            "Seconds since each device last passed a canary round.",
            (
                Query(
                    "time() - max by (device) "
                    f"(qrt_device_canary_last_success_timestamp_seconds{{{DEVICE}}})",
                    "{{device}}",
                ),
            ),
            metric=Metric.M4,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            unit=Unit.SECONDS,
        ),
        PanelSpec(
            Kind.TABLE,
            "Device status",
            "Each device's current status (ONLINE, DRAINING, CALIBRATING, MAINTENANCE, "
            "UNREACHABLE, OFFLINE).",
            (Query(f"max by (device, status) (qrt_device_status{{{DEVICE}}}) == 1"),),
            runbooks=(Runbook.NETWORK_PARTITION, Runbook.CALIBRATION_DRIFT),
        ),
    ),
)

_BURN = RowSpec(
    "SLO burn",
    tuple(
        PanelSpec(
            Kind.TIMESERIES,
            f"SLO burn rate per SLO ({window})",
            f"Error share over {window} divided by the error budget "
            f"(qrt:slo_burn:rate{window}), worst device per SLO. The fast page fires at "
            "14.4 (1h with 5m), the slow one at 6 (6h with 30m).",
            (Query(f"max by (slo) (qrt:slo_burn:rate{window}{{{DEVICE}}})", "{{slo}}"),),
            runbooks=(Runbook.HIGH_QUEUE_LATENCY, Runbook.CALIBRATION_DRIFT),
            thresholds=_BURN_STEPS,
        )
        for window in ("1h", "6h")
    ),
)

_AUTH = RowSpec(
    "Security",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Auth error ratio",
            "Gateway calls refused over all gateway calls.",
            (
                Query(
                    "sum(rate(qrt_auth_refused_total[$__rate_interval])) / "
                    "sum(rate(qrt_auth_requests_total[$__rate_interval]))",
                    "refused",
                ),
            ),
            metric=Metric.M10,
            runbooks=(Runbook.AUTH_FAILURE,),
            unit=Unit.RATIO,
            width=8,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Auth refusals per second by reason",
            "Refused gateway calls by reason (missing, malformed, unknown, expired, "
            "revoked, scope, locked_out, tenant_disabled).",
            (
                Query(
                    "sum by (reason) (rate(qrt_auth_refused_total[$__rate_interval]))",
                    "{{reason}}",
                ),
            ),
            metric=Metric.M10,
            runbooks=(Runbook.AUTH_FAILURE, Runbook.SECURITY_BREACH),
            width=8,
            stacked=True,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Forged run reports",
            "Run reports refused as not from a device the scheduler dispatched to.",
            (increase_by(f"qrt_forged_reports_total{{{DEVICE}}}", "device, reason"),),
            runbooks=(Runbook.SECURITY_BREACH,),
            width=8,
        ),
    ),
)


def spec() -> DashboardSpec:
    """The on-call dashboard."""
    return DashboardSpec(
        uid=UID,
        title="qrt-ray: on-call",
        description="Queues, failures, calibration, device status, SLO burn and auth, "
        "with links from a job to its trace.",
        rows=(_QUEUES, _FAILURES, _CALIBRATION, _BURN, _AUTH),
        text_vars=(STUCK_AFTER_S, TRACE_ID, DOCS_URL, JAEGER_URL),
        links=TRACE_LINKS,
        tags=("qrt", "oncall"),
    )
