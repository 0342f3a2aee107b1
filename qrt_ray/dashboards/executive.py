"""The executive dashboard (uid ``qrt-executive``): is the service good, affordable,
accurate and busy? Success, SLO budgets, spend, fidelity and throughput."""

from __future__ import annotations

from qrt_ray.dashboards.spec import (
    DEVICE,
    DOCS_URL,
    DashboardSpec,
    Kind,
    Metric,
    PanelSpec,
    Query,
    RowSpec,
    Runbook,
    Step,
    Unit,
)

UID = "qrt-executive"

_DONE = f'qrt_jobs_finished_total{{outcome="done",{DEVICE}}}'
_COUNTED = f'qrt_jobs_finished_total{{outcome!="cancelled",{DEVICE}}}'
_SUCCESS_STEPS = (Step(None, "red"), Step(0.95, "orange"), Step(0.99, "green"))
_BUDGET_STEPS = (Step(None, "red"), Step(0.25, "orange"), Step(0.5, "green"))
_FAILURE_RUNBOOKS = (Runbook.PARTIAL_RUN, Runbook.POSTPROCESS_FAILURE)

_SERVICE = RowSpec(
    "Service level",
    (
        PanelSpec(
            Kind.STAT,
            "Job success rate",
            "Jobs done over jobs done or failed in the time range (cancellations left out).",
            (Query(f"sum(increase({_DONE}[$__range])) / sum(increase({_COUNTED}[$__range]))"),),
            metric=Metric.M1,
            runbooks=_FAILURE_RUNBOOKS,
            unit=Unit.RATIO,
            width=6,
            thresholds=_SUCCESS_STEPS,
        ),
        PanelSpec(
            Kind.STAT,
            "End-to-end latency p50 / p95",
            "Submission to DONE over the time range, from the end_to_end stage histogram.",
            tuple(
                Query(
                    f"histogram_quantile({q}, sum by (le) (rate(qrt_job_stage_duration_seconds"
                    f'_bucket{{stage="end_to_end",{DEVICE}}}[$__range])))',
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ),
            metric=Metric.M2,
            runbooks=(Runbook.HIGH_QUEUE_LATENCY,),
            unit=Unit.SECONDS,
            width=6,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Job success rate by priority",
            "Done over done or failed, per priority class (high 7-10, normal 3-6, low 0-2).",
            (
                Query(
                    f"sum by (priority) (rate({_DONE}[$__rate_interval])) / "
                    f"sum by (priority) (rate({_COUNTED}[$__rate_interval]))",
                    "{{priority}}",
                ),
            ),
            metric=Metric.M1,
            runbooks=_FAILURE_RUNBOOKS,
            unit=Unit.RATIO,
        ),
        PanelSpec(
            Kind.BARGAUGE,
            "SLO error budget left (30d)",
            "One minus the 30-day burn rate (qrt:slo_burn:rate30d) per SLO, worst device: "
            "1 is untouched, 0 is spent, below 0 is overspent. From the recording rules.",
            (Query(f"1 - max by (slo) (qrt:slo_burn:rate30d{{{DEVICE}}})", "{{slo}}"),),
            runbooks=(Runbook.HIGH_QUEUE_LATENCY, Runbook.CALIBRATION_DRIFT),
            unit=Unit.RATIO,
            thresholds=_BUDGET_STEPS,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "SLO burn rate per SLO (1h)",
            "Error share over the last hour divided by the error budget "
            "(qrt:slo_burn:rate1h), worst device per SLO; 1 spends the budget exactly "
            "in the SLO window, 14.4 pages.",
            (Query(f"max by (slo) (qrt:slo_burn:rate1h{{{DEVICE}}})", "{{slo}}"),),
            runbooks=(Runbook.HIGH_QUEUE_LATENCY, Runbook.CALIBRATION_DRIFT),
            thresholds=(Step(None, "green"), Step(1, "orange"), Step(14.4, "red")),
        ),
    ),
)

_COST = RowSpec(
    "Cost",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Spend rate by tenant (USD/h)",
            "USD written to the billing ledger per hour; budgets live in the tenancy "
            "config, and crossing 50/80/100 % of one raises qrt_budget_alerts_total.",
            (
                Query(
                    "sum by (tenant) (rate(qrt_billing_usd_total[$__rate_interval])) * 3600",
                    "{{tenant}}",
                ),
            ),
            metric=Metric.M9,
            runbooks=(Runbook.COST_RUNAWAY,),
            unit=Unit.USD,
        ),
        PanelSpec(
            Kind.BARGAUGE,
            "Spend in range by tenant",
            "USD billed to each tenant over the time range.",
            (Query("sum by (tenant) (increase(qrt_billing_usd_total[$__range]))", "{{tenant}}"),),
            metric=Metric.M9,
            runbooks=(Runbook.COST_RUNAWAY,),
            unit=Unit.USD,
            width=8,
        ),
        PanelSpec(
            Kind.STAT,
            "Total spend in range",
            "USD billed to all tenants over the time range.",
            (Query("sum(increase(qrt_billing_usd_total[$__range]))"),),
            metric=Metric.M9,
            runbooks=(Runbook.COST_RUNAWAY,),
            unit=Unit.USD,
            width=4,
        ),
        PanelSpec(
            Kind.TABLE,
            "Budget alerts in range",
            "Budget alerts raised per tenant and threshold (percent of the month's budget).",
            (
                Query(
                    "sum by (tenant, threshold) (increase(qrt_budget_alerts_total[$__range])) > 0"
                ),
            ),
            runbooks=(Runbook.COST_RUNAWAY,),
        ),
    ),
)

_FIDELITY = RowSpec(
    "Fidelity",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Canary fidelity: measured / predicted",
            "Worst canary of the last round: measured success probability over the one "
            "the calibration predicted. Well under 1 means the calibration has drifted.",
            (
                Query(
                    f'qrt_device_canary_success{{kind="measured",{DEVICE}}} / ignoring (kind) '
                    f'qrt_device_canary_success{{kind="predicted",{DEVICE}}}',
                    "{{device}}",
                ),
            ),
            metric=Metric.M5,
            runbooks=(Runbook.CALIBRATION_DRIFT,),
            unit=Unit.RATIO,
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Estimated success ratio p50 by device",
            "Median estimated success probability of the jobs placed on each device.",
            (
                Query(
                    "histogram_quantile(0.5, sum by (device, le) "
                    f"(rate(qrt_job_estimated_success_ratio_bucket{{{DEVICE}}}"
                    "[$__rate_interval])))",
                    "{{device}}",
                ),
            ),
            metric=Metric.M5,
            runbooks=(Runbook.CALIBRATION_DRIFT, Runbook.COMPILER_MISMATCH),
            unit=Unit.RATIO,
        ),
    ),
)

_THROUGHPUT = RowSpec(
    "Throughput",
    (
        PanelSpec(
            Kind.TIMESERIES,
            "Shots per second by device",
            "Shots executed and counted per second.",
            (
                Query(
                    f"sum by (device) (rate(qrt_device_shots_total{{{DEVICE}}}[$__rate_interval]))",
                    "{{device}}",
                ),
            ),
            metric=Metric.M6,
            runbooks=(Runbook.HIGH_QUEUE_LATENCY,),
        ),
        PanelSpec(
            Kind.TIMESERIES,
            "Jobs finished per second by outcome",
            "Jobs reaching a final state per second: done, failed, cancelled.",
            (
                Query(
                    f"sum by (outcome) (rate(qrt_jobs_finished_total{{{DEVICE}}}"
                    "[$__rate_interval]))",
                    "{{outcome}}",
                ),
            ),
            metric=Metric.M1,
            runbooks=_FAILURE_RUNBOOKS,
            stacked=True,
        ),
    ),
)


def spec() -> DashboardSpec:
    """The executive dashboard."""
    return DashboardSpec(
        uid=UID,
        title="qrt-ray: executive",
        description="Service level, SLO budgets, spend, fidelity and throughput of the farm.",
        rows=(_SERVICE, _COST, _FIDELITY, _THROUGHPUT),
        text_vars=(DOCS_URL,),
        tags=("qrt", "executive"),
    )
