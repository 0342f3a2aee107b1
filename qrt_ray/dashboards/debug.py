"""The debug dashboard (uid ``qrt-debug``): where a job's time goes, how each device's
calibration moves, and what the compiler, mitigation and post-processing report."""

from __future__ import annotations

from qrt_ray.dashboards.spec import (
    DEVICE,
    DOCS_URL,
    JAEGER_URL,
    TRACE_ID,
    TRACE_LINKS,
    DashboardSpec,
    Kind,
    Metric,
    PanelSpec,
    Query,
    RowSpec,
    Runbook,
    Unit,
    increase_by,
)

UID = "qrt-debug"

_STAGE = "qrt_job_stage_duration_seconds"
_STAGES = f'stage!="end_to_end",{DEVICE}'
_POSTPROCESS = f'qrt_jobs_finished_total{{outcome="failed",error_class="postprocess",{DEVICE}}}'


def _quantile(q: float, series: str, by: str, window: str = "$__rate_interval") -> str:
    """``histogram_quantile`` of ``series`` (a ``_bucket`` selector) grouped by ``by``."""
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({series}[{window}])))"


_STAGES_ROW = RowSpec(
    "Job stages",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Stage duration mean (stacked)",
            "Mean time per visit of each stage (queue_wait, compile, device_wait, run, "
            "postprocess), stacked: the farm-wide waterfall of a job.",
            (
                Query(
                    f"sum by (stage) (rate({_STAGE}_sum{{{_STAGES}}}[$__rate_interval])) / "
                    f"sum by (stage) (rate({_STAGE}_count{{{_STAGES}}}[$__rate_interval]))",
                    "{{stage}}",
                ),
            ),
            metric=Metric.M3,
            runbooks=(Runbook.HIGH_QUEUE_LATENCY,),
            unit=Unit.SECONDS,
            stacked=True,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Stage duration p95 (stacked)",
            "95th percentile per stage, stacked (quantiles do not add up: read each band "
            "on its own, the top is an upper bound of a slow job's path).",
            (Query(_quantile(0.95, f"{_STAGE}_bucket{{{_STAGES}}}", "stage"), "{{stage}}"),),
            metric=Metric.M3,
            runbooks=(Runbook.HIGH_QUEUE_LATENCY,),
            unit=Unit.SECONDS,
            stacked=True,
        ),
        PanelSpec(
            Kind.BARGAUGE,
            "Stage p95 in range",
            "95th percentile of each stage over the time range.",
            (
                Query(
                    _quantile(0.95, f"{_STAGE}_bucket{{{_STAGES}}}", "stage", "$__range"),
                    "{{stage}}",
                ),
            ),
            metric=Metric.M3,
            runbooks=(Runbook.HIGH_QUEUE_LATENCY,),
            unit=Unit.SECONDS,
        ),
        PanelSpec(
            Kind.TRACES,
            "Trace of one job ($trace_id)",
            "The spans of trace $trace_id from Tempo. Needs a trace backend: without "
            "one, `qrt trace JOB` prints the same stages from the job store.",
            (Query("${trace_id}"),),
            metric=Metric.M3,
            runbooks=(Runbook.HIGH_QUEUE_LATENCY,),
            links=TRACE_LINKS,
        ),
    ),
)

_CALIBRATION = RowSpec(
    "Calibration telemetry",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Calibration age over time",
            "Age of each device's current calibration: a saw-tooth, reset at each recalibration.",
            (
                Query(
                    f"max by (device) (qrt_device_calibration_age_seconds{{{DEVICE}}})",
                    "{{device}}",
                ),
            ),
            metric=Metric.M4,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            unit=Unit.SECONDS,
            width=8,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Canary success: predicted vs measured",
            "Worst canary of each round: success probability the calibration predicted "
            "and the one measured.",
            (
                Query(
                    f"max by (device, kind) (qrt_device_canary_success{{{DEVICE}}})",
                    "{{device}} {{kind}}",
                ),
            ),
            metric=Metric.M5,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            unit=Unit.RATIO,
            width=8,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Recalibrations and canary rounds",
            "New calibrations, and canary rounds by outcome (pass, drift), per interval.",
            (
                increase_by(
                    f"qrt_device_recalibrations_total{{{DEVICE}}}", "device", "recalibration"
                ),
                increase_by(
                    f"qrt_device_canary_rounds_total{{{DEVICE}}}", "device, outcome", "canary"
                ),
            ),
            metric=Metric.M4,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            width=8,
        ),
    ),
)

_COMPILE = RowSpec(
    "Compile",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Compile warnings by kind and device",
            "Circuits compiled with a warning per interval: swaps (routing added SWAPs) "
            "or low_esp (estimated success under 0.1).",
            (increase_by(f"qrt_compile_warnings_total{{{DEVICE}}}", "kind, device"),),
            runbooks=(Runbook.COMPILER_MISMATCH,),
            width=8,
            stacked=True,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Compile duration p95 by device",
            "95th percentile of compile time per chunk.",
            (
                Query(
                    _quantile(0.95, f"qrt_compile_duration_seconds_bucket{{{DEVICE}}}", "device"),
                    "{{device}}",
                ),
            ),
            runbooks=(Runbook.COMPILER_MISMATCH,),
            unit=Unit.SECONDS,
            width=8,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Compile cache hit ratio",
            "Compile cache lookups that hit, over all lookups (farm-wide).",
            (
                Query(
                    'sum(rate(qrt_compile_cache_total{outcome="hit"}[$__rate_interval])) / '
                    "sum(rate(qrt_compile_cache_total[$__rate_interval]))",
                    "hit ratio",
                ),
            ),
            runbooks=(Runbook.COMPILER_MISMATCH,),
            unit=Unit.RATIO,
            width=8,
        ),
    ),
)

_MITIGATION = RowSpec(
    "Mitigation and post-processing",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Mitigation error reduction by method and level",
            "1 - mitigated error / raw error on the last canary round (1: every error "
            "removed, 0: no help, below 0: worse), averaged over devices.",
            (
                Query(
                    f"avg by (method, level) (qrt_mitigation_error_reduction_ratio{{{DEVICE}}})",
                    "{{method}} {{level}}",
                ),
            ),
            metric=Metric.M8,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            unit=Unit.RATIO,
            width=8,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Mitigated canaries failed or worse",
            "Mitigated canaries per interval whose mitigation failed or made the error worse.",
            (
                increase_by(
                    f'qrt_mitigation_canary_runs_total{{outcome=~"failed|worse",{DEVICE}}}',
                    "method, level, outcome",
                ),
            ),
            metric=Metric.M8,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            width=8,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Post-processing failures",
            'Jobs failed with error_class="postprocess": the result could not be built or stored.',
            (increase_by(_POSTPROCESS, "device"),),
            metric=Metric.M1,
            runbooks=(Runbook.POSTPROCESS_FAILURE, Runbook.STORAGE_CORRUPTION),
            width=8,
            links=TRACE_LINKS,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Post-processing stage p95",
            "95th percentile of the postprocess stage per device.",
            (
                Query(
                    _quantile(0.95, f'{_STAGE}_bucket{{stage="postprocess",{DEVICE}}}', "device"),
                    "{{device}}",
                ),
            ),
            metric=Metric.M3,
            runbooks=(Runbook.POSTPROCESS_FAILURE,),
            unit=Unit.SECONDS,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Control loop errors by step",
            "Errors the scheduler's control loop caught and went on from, per interval.",
            (increase_by("qrt_scheduler_loop_errors_total", "step"),),
            runbooks=(Runbook.STORAGE_CORRUPTION, Runbook.NETWORK_PARTITION),
        ),
    ),
)


def spec() -> DashboardSpec:
    """The debug dashboard."""
    return DashboardSpec(
        uid=UID,
        title="qrt-ray: debug",
        description="Job stage waterfall and trace, calibration telemetry, compile "
        "warnings, mitigation and post-processing.",
        rows=(_STAGES_ROW, _CALIBRATION, _COMPILE, _MITIGATION),
        text_vars=(TRACE_ID, DOCS_URL, JAEGER_URL),
        links=TRACE_LINKS,
        tags=("qrt", "debug"),
    )
