"""Farm alerts that are not about an SLO's error budget: failures by class, devices
down, auth refusals, checksum failures, cost, forged reports, stale canaries, old jobs.

Each alert links the runbook of what it detects; thresholds come from the ``alerts``
section of ``configs/slos.yaml``.
"""

from __future__ import annotations

from typing import Any

from qrt_ray.lifecycle import ErrorClass
from qrt_ray.slo.config import RunbookPage, SloConfig
from qrt_ray.slo.promql import SUPPRESSION, TimeScale, alert_rule, number

# the runbook that explains each class of failed job (a test keeps every class here)
ERROR_CLASS_RUNBOOKS: dict[ErrorClass, RunbookPage] = {
    ErrorClass.PARTIAL_RUN: "partial-run",
    ErrorClass.POSTPROCESS: "postprocess-failure",
    ErrorClass.COMPILE: "compiler-mismatch",
    ErrorClass.INTEGRITY: "storage-corruption",
    # a stored job that cannot be resumed is a store that lost or garbled its state
    ErrorClass.UNRECOVERABLE: "storage-corruption",
    ErrorClass.DEVICE: "network-partition",
    ErrorClass.DEVICE_LOST: "network-partition",
    # a job whose circuits crash its device: device restarts that follow one job
    ErrorClass.POISON: "network-partition",
    ErrorClass.DEADLINE: "high-queue-latency",
    ErrorClass.PLACEMENT: "high-queue-latency",
}
_DEVICE = "{{ $labels.device }}"
# how alert texts show the value: a plain number, a share, a duration
_VALUE = '{{ printf "%.3g" $value }}'
_SHARE = "{{ $value | humanizePercentage }}"
_AGE = "{{ $value | humanizeDuration }}"


def farm_alert_rules(config: SloConfig, scale: TimeScale) -> list[dict[str, Any]]:
    """The farm alerts, in a fixed order."""
    return [
        *_failures_by_class(config, scale),
        _device_down(config, scale),
        _auth_error_spike(config, scale),
        _checksum_failures(config, scale),
        *_cost_runaway(config, scale),
        _forged_reports(config, scale),
        _calibration_stale(config, scale),
        _queue_old_job(config, scale),
    ]


def _failures_by_class(config: SloConfig, scale: TimeScale) -> list[dict[str, Any]]:
    """One rule per runbook page, so each alert links the page for its classes."""
    pages: dict[str, list[str]] = {}
    for error_class, page in ERROR_CLASS_RUNBOOKS.items():
        pages.setdefault(page, []).append(error_class.value)
    rules = []
    for page, classes in pages.items():
        match = f'="{classes[0]}"' if len(classes) == 1 else f'=~"{"|".join(classes)}"'
        rate = (
            f'rate(qrt_jobs_finished_total{{outcome="failed",error_class{match}}}'
            f"[{scale.window('10m')}])"
        )
        expr = (
            f"sum by (device, error_class) ({rate}) > {number(config.alerts.failures_per_s)}\n"
            f"{SUPPRESSION}"
        )
        rules.append(
            alert_rule(
                "QrtJobFailuresByClass",
                expr,
                severity="ticket",
                runbook_url=config.runbook_url(page),
                summary=f"Jobs failing with {{{{ $labels.error_class }}}} on {_DEVICE}",
                description=(
                    f"{_VALUE} jobs a second failed with error class "
                    "{{ $labels.error_class }} on " + _DEVICE + " over the last 10m."
                ),
                hold=scale.hold("5m"),
                # rules of one alert need a label apart (promtool's duplicate check)
                labels={"runbook": page},
            )
        )
    return rules


def _device_down(config: SloConfig, scale: TimeScale) -> dict[str, Any]:
    return alert_rule(
        "QrtDeviceDown",
        'max by (device, status) (qrt_device_status{status=~"OFFLINE|UNREACHABLE"}) == 1',
        severity="page",
        runbook_url=config.runbook_url("network-partition"),
        summary=f"Device {_DEVICE} is {{{{ $labels.status }}}}",
        description=(
            f"Device {_DEVICE} has been {{{{ $labels.status }}}} for 5m: it takes no work, "
            "and jobs waiting for it move elsewhere or wait."
        ),
        hold=scale.hold("5m"),
    )


def _auth_error_spike(config: SloConfig, scale: TimeScale) -> dict[str, Any]:
    w = scale.window("5m")
    requests = f"sum(rate(qrt_auth_requests_total[{w}]))"
    a = config.alerts
    # a handful of refusals out of a handful of calls is a typo, not an incident
    expr = (
        f"(\n  sum(rate(qrt_auth_refused_total[{w}])) / {requests}"
        f" > {number(a.auth_refused_ratio)}\n)\n"
        f"and\n  {requests} > {number(a.auth_min_requests_per_s)}"
    )
    return alert_rule(
        "QrtAuthErrorSpike",
        expr,
        severity="ticket",
        runbook_url=config.runbook_url("auth-failure"),
        summary=f"The gateway refuses {_SHARE} of calls",
        description=(
            f"Over 5m the gateway refused {_SHARE} of its calls (alert above "
            f"{number(a.auth_refused_ratio * 100)}%): expired or revoked tokens, a misconfigured "
            "client, or someone guessing."
        ),
        hold=scale.hold("5m"),
    )


def _checksum_failures(config: SloConfig, scale: TimeScale) -> dict[str, Any]:
    rate = f"rate(qrt_result_checksum_failures_total[{scale.window('10m')}])"
    return alert_rule(
        "QrtChecksumFailures",
        f"sum by (device) ({rate}) > 0",
        severity="page",
        runbook_url=config.runbook_url("storage-corruption"),
        summary=f"Payloads from {_DEVICE} fail their checksum",
        description=(
            f"Result payloads from {_DEVICE} failed their checksum in the last 10m "
            f"({_VALUE} a second): data is corrupted in transit or at rest."
        ),
    )


def _cost_runaway(config: SloConfig, scale: TimeScale) -> list[dict[str, Any]]:
    """Two rules of one alert: a budget spent, or spending far above its usual pace."""
    a, url = config.alerts, config.runbook_url("cost-runaway")
    # the access layer labels the threshold as a fraction of the budget: 1 is 100 %
    budget = (
        'sum by (tenant) (increase(qrt_budget_alerts_total{threshold="1"}'
        f"[{scale.window('1h')}])) > 0"
    )
    hour = f"sum by (tenant) (rate(qrt_billing_usd_total[{scale.window('1h')}]))"
    day = f"sum by (tenant) (rate(qrt_billing_usd_total[{scale.window('1d')}]))"
    pace = (
        f"(\n  {hour} > {number(a.cost_factor)} * {day}\n)\n"
        f"and\n  {hour} > {number(a.cost_min_usd_per_hour)} / 3600"
    )
    tenant = "{{ $labels.tenant }}"
    return [
        alert_rule(
            "QrtCostRunaway",
            budget,
            severity="ticket",
            runbook_url=url,
            summary=f"Tenant {tenant} spent its month's budget",
            description=f"Tenant {tenant} reached 100 % of its monthly budget in the last 1h.",
            labels={"reason": "budget"},
        ),
        alert_rule(
            "QrtCostRunaway",
            pace,
            severity="ticket",
            runbook_url=url,
            summary=f"Tenant {tenant} spends far faster than usual",
            description=(
                f"Tenant {tenant} spent {_VALUE} USD a second over the last 1h, more than "
                f"{number(a.cost_factor)} times its average over 1d."
            ),
            hold=scale.hold("15m"),
            labels={"reason": "pace"},
        ),
    ]


def _forged_reports(config: SloConfig, scale: TimeScale) -> dict[str, Any]:
    increase = f"increase(qrt_forged_reports_total[{scale.window('10m')}])"
    return alert_rule(
        "QrtForgedReports",
        f"sum by (device, reason) ({increase}) > 0",
        severity="page",
        runbook_url=config.runbook_url("security-breach"),
        summary=f"Forged run reports for {_DEVICE}",
        description=(
            f"The scheduler refused {_VALUE} run reports for {_DEVICE} in the last 10m "
            "({{ $labels.reason }}): something that is not the device speaks for it."
        ),
    )


def _calibration_stale(config: SloConfig, scale: TimeScale) -> dict[str, Any]:
    stale_s = config.alerts.canary_stale_s
    last = "max by (device) (qrt_device_canary_last_success_timestamp_seconds)"
    return alert_rule(
        "QrtCalibrationStale",
        f"time() - {last} > {number(stale_s)}\n{SUPPRESSION}",
        severity="ticket",
        runbook_url=config.runbook_url("calibration-drift"),
        summary=f"No passing canary on {_DEVICE} for {_AGE}",
        description=(
            f"Device {_DEVICE} last passed a canary round {_AGE} ago (alert above "
            f"{number(stale_s)} s): its calibration may have drifted."
        ),
        hold=scale.hold("10m"),
    )


def _queue_old_job(config: SloConfig, scale: TimeScale) -> dict[str, Any]:
    wait_s = config.alerts.queue_oldest_wait_s
    return alert_rule(
        "QrtQueueOldJob",
        f"max by (device) (qrt_queue_oldest_wait_seconds) > {number(wait_s)}",
        severity="ticket",
        runbook_url=config.runbook_url("high-queue-latency"),
        summary=f"A job has waited {_AGE} for {_DEVICE}",
        description=(
            f"The oldest job waiting for {_DEVICE} has waited {_AGE} (alert above "
            f"{number(wait_s)} s) and has not started."
        ),
        hold=scale.hold("10m"),
    )
