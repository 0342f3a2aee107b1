"""Prometheus metrics of the runtime (``qrt_<component>_<quantity>_<unit>``).

Each scheduler owns a registry, so two runtimes in one process (tests) never share
counters. The farm serves it on 127.0.0.1 (:data:`DEFAULT_METRICS_PORT` unless told
otherwise). Labels are bounded: device, tenant, priority class, state, outcome, error
class, stage; never a job id. ``docs/observability.md`` maps each series to the ten
service metrics (M1-M10), the dashboards and the alerts.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server

logger = logging.getLogger("qrt.metrics")
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# job and stage durations: milliseconds (a cached compile) to an hour (a deep queue)
STAGE_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
_RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
# where the farm serves /metrics unless told otherwise
DEFAULT_METRICS_PORT = 9464
# the stages of a job, as the stage histogram names them: the state a job leaves
# names the stage it spent there; end_to_end is submission to DONE
STAGES = {
    "QUEUED": "queue_wait",
    "COMPILING": "compile",
    "PLACED": "device_wait",
    "RUNNING": "run",
    "POSTPROCESSING": "postprocess",
}
END_TO_END = "end_to_end"


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
        self.busy_refusals = Counter(
            "qrt_busy_refusals_total",
            "Submit calls refused because the farm held scheduling.max_live_jobs jobs",
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
            "Calls through the gateway, by whether their token was accepted: "
            "outcome=accepted|refused|unavailable (the token records could not be read)",
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

        # == the ten service metrics ====================================================
        # M1: done / (done + failed); error_class says why a job failed ("none" else)
        self.jobs_finished = Counter(
            "qrt_jobs_finished_total",
            "Jobs that reached a final state: outcome=done|failed|cancelled, "
            "error_class of failed ones (partial_run, postprocess, device, ...)",
            ["device", "priority", "outcome", "error_class"],
            registry=r,
        )
        # M2, M3: latency with its stage breakdown
        self.stage_seconds = Histogram(
            "qrt_job_stage_duration_seconds",
            "Time jobs spent in each stage (queue_wait, compile, device_wait, run, "
            "postprocess: one observation per visit) and end_to_end (submission to DONE)",
            ["stage", "device", "priority"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        # M4: calibration freshness (calibration_age above) and canary recency
        self.calibration_time = Gauge(
            "qrt_device_calibration_timestamp_seconds",
            "When each device's current calibration was taken (unix seconds)",
            ["device"],
            registry=r,
        )
        self.canary_last_pass = Gauge(
            "qrt_device_canary_last_success_timestamp_seconds",
            "When each device last passed a canary round (unix seconds)",
            ["device"],
            registry=r,
        )
        self.canary_rounds = Counter(
            "qrt_device_canary_rounds_total",
            "Canary rounds recorded: outcome=pass or drift",
            ["device", "outcome"],
            registry=r,
        )
        # M5: fidelity; canary predicted vs measured is canary_success above
        self.placed_esp = Histogram(
            "qrt_job_estimated_success_ratio",
            "Estimated success probability of placed jobs on their device (the placement "
            "score's fidelity term)",
            ["device"],
            buckets=_RATIO_BUCKETS,
            registry=r,
        )
        # M7: queue depth by device and priority class, and the oldest waiting job
        self.waiting_jobs = Gauge(
            "qrt_queue_waiting_jobs",
            "Live jobs not yet running, by the device they wait for (none: not placed "
            "yet) and priority class",
            ["device", "priority"],
            registry=r,
        )
        self.oldest_wait = Gauge(
            "qrt_queue_oldest_wait_seconds",
            "Age of the oldest live job not yet running, by the device it waits for",
            ["device"],
            registry=r,
        )
        # M8: error mitigation success on canaries with known answers
        self.mitigation_reduction = Gauge(
            "qrt_mitigation_error_reduction_ratio",
            "Relative error reduction of the last canary round: 1 - mitigated error / "
            "raw error (1 = every error removed, 0 = no help, < 0 = worse)",
            ["device", "method", "level"],
            registry=r,
        )
        self.mitigation_runs = Counter(
            "qrt_mitigation_canary_runs_total",
            "Canaries mitigated: outcome=improved|worse|failed",
            ["device", "method", "level", "outcome"],
            registry=r,
        )
        # F10: which post-processing version serves user jobs, which runs in shadow
        self.pipeline_version = Gauge(
            "qrt_postprocess_version",
            "1 for each post-processing method's served version (role=served) and the "
            "candidate of its rollout (role=shadow, promoted or rolled_back)",
            ["method", "version", "role"],
            registry=r,
        )
        self.rollout_changes = Counter(
            "qrt_postprocess_rollout_changes_total",
            "Rollout moves of post-processing versions: to=shadow|promoted|rolled_back",
            ["method", "to"],
            registry=r,
        )
        # device state, for panels and alert suppression (1 for the current status)
        self.device_status = Gauge(
            "qrt_device_status",
            "1 for each device's current status (ONLINE, DRAINING, CALIBRATING, "
            "MAINTENANCE, UNREACHABLE, OFFLINE), 0 for the others",
            ["device", "status"],
            registry=r,
        )
        self.compile_warnings = Counter(
            "qrt_compile_warnings_total",
            "Circuits compiled with a warning: kind=swaps (routing added SWAP gates) or "
            "low_esp (estimated success probability under 0.1: mostly noise)",
            ["device", "kind"],
            registry=r,
        )
        self.build_info = Gauge(
            "qrt_build_info", "The running qrt-ray version", ["version"], registry=r
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (loopback unless told otherwise).

        Returns:
            The port served (the one the system picked for ``port=0``).

        Raises:
            OSError: the port is taken.
        """
        server, _ = _start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)


def serve_farm_metrics(metrics: RuntimeMetrics, port: int | None) -> int | None:
    """Serve a farm's metrics on 127.0.0.1: at ``port``, or at
    :data:`DEFAULT_METRICS_PORT` for None; 0 turns the endpoint off.

    A farm must not fail to start over its metrics: when the port is taken (another
    farm on this machine has the default), the endpoint moves to a free port and a
    warning names it (``qrt up`` and ``QuantumRuntime.metrics_url`` show it too).

    Returns:
        The port served, or None when off.
    """
    if port == 0:
        return None
    wanted = DEFAULT_METRICS_PORT if port is None else port
    try:
        return metrics.serve(wanted)
    except OSError as exc:
        got = metrics.serve(0)
        logger.warning(
            "metrics: 127.0.0.1:%d is not free (%s); serving on 127.0.0.1:%d instead "
            "(choose one with --metrics-port)",
            wanted,
            exc.strerror or exc,
            got,
        )
        return got
