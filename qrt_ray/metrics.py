"""Prometheus metrics of the runtime (``qrt_<component>_<quantity>_<unit>``).

Each scheduler owns a registry, so two runtimes in one process (tests) never share
counters; ``qrt up --metrics-port`` serves it on 127.0.0.1.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class RuntimeMetrics:
    """The counters, gauges and histograms one scheduler reports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter(
            "qrt_jobs_submitted_total", "Jobs admitted", ["tenant"], registry=r
        )
        self.transitions = Counter(
            "qrt_job_transitions_total", "Job state changes persisted", ["to_state"], registry=r
        )
        self.job_latency = Histogram(
            "qrt_job_latency_seconds",
            "Submission to final state",
            ["final_state"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "qrt_device_queue_depth_jobs", "Jobs waiting on a device", ["device"], registry=r
        )
        self.pending = Gauge("qrt_scheduler_pending_jobs", "Jobs waiting for placement", registry=r)
        self.shots = Counter(
            "qrt_device_shots_total", "Shots executed and counted", ["device"], registry=r
        )
        self.compile_seconds = Histogram(
            "qrt_compile_duration_seconds", "Compile time per chunk", ["device"], registry=r
        )
        self.compile_cache = Counter(
            "qrt_compile_cache_total", "Compile cache lookups", ["outcome"], registry=r
        )
        self.partial_runs = Counter(
            "qrt_result_partial_runs_total", "Runs with missing shots", ["device"], registry=r
        )
        self.integrity_failures = Counter(
            "qrt_result_checksum_failures_total",
            "Payloads failing checksum",
            ["device"],
            registry=r,
        )
        self.replacements = Counter(
            "qrt_job_replacements_total",
            "Jobs moved back to placement because their device stopped, recalibrated, "
            "restarted or hung",
            ["device"],
            registry=r,
        )
        self.device_restarts = Counter(
            "qrt_device_restarts_total",
            "Device restarts seen by the scheduler: cause=restarted (found with a new "
            "incarnation) or hung (restarted by the scheduler's watchdog)",
            ["device", "cause"],
            registry=r,
        )
        self.forged_reports = Counter(
            "qrt_forged_reports_total",
            "Run reports the scheduler refused as not from a device it dispatched to: "
            "reason=signature (no valid signature under the farm's key) or dispatch "
            "(signed, but for a hand-off it never made)",
            ["device", "reason"],
            registry=r,
        )
        self.slices = Counter(
            "qrt_run_slices_total",
            "Slices of jobs run in several batches (preemptible at each boundary)",
            ["device"],
            registry=r,
        )
        self.calibration_age = Gauge(
            "qrt_device_calibration_age_seconds",
            "Age of each device's current calibration",
            ["device"],
            registry=r,
        )
        self.canary_success = Gauge(
            "qrt_device_canary_success",
            "Worst canary of the last round: success probability the calibration "
            "predicted (kind=predicted) and the one measured (kind=measured)",
            ["device", "kind"],
            registry=r,
        )
        self.recalibrations = Counter(
            "qrt_device_recalibrations_total",
            "New calibrations seen on each device",
            ["device"],
            registry=r,
        )
        self.link_errors = Counter(
            "qrt_device_link_errors_total",
            "Runs lost to control-link errors: kind=link (transient, retried as a new "
            "attempt) or permanent (the job failed)",
            ["device", "kind"],
            registry=r,
        )
        self.breaker_trips = Counter(
            "qrt_device_breaker_trips_total",
            "Times a device's circuit breaker opened (no new work for a cooldown)",
            ["device"],
            registry=r,
        )
        self.loop_errors = Counter(
            "qrt_scheduler_loop_errors_total",
            "Errors caught by the control loop",
            ["step"],
            registry=r,
        )
        # the trust boundary: M10 is auth_refused / auth_requests
        self.auth_requests = Counter(
            "qrt_auth_requests_total",
            "Calls through the gateway, by whether their token was accepted",
            ["outcome"],
            registry=r,
        )
        self.auth_refused = Counter(
            "qrt_auth_refused_total",
            "Calls refused at the gateway, by reason (missing, malformed, unknown, "
            "expired, revoked, scope, locked_out, tenant_disabled)",
            ["reason"],
            registry=r,
        )
        self.quota_refused = Counter(
            "qrt_quota_refused_total",
            "Submits refused by a tenant limit or budget",
            ["tenant", "limit"],
            registry=r,
        )
        self.billed_usd = Counter(
            "qrt_billing_usd_total",
            "USD written to the billing ledger (M9: billing units)",
            ["tenant"],
            registry=r,
        )
        self.billed_shots = Counter(
            "qrt_billing_shots_total",
            "Shots (x circuits) written to the billing ledger",
            ["tenant"],
            registry=r,
        )
        self.budget_alerts = Counter(
            "qrt_budget_alerts_total",
            "Budget alerts raised (50, 80, 100 % of a month's budget)",
            ["tenant", "threshold"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``addr:port`` (loopback unless told otherwise)."""
        _start_http_server(port, addr=addr, registry=self.registry)
