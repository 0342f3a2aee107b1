"""SLOs: the config's validation, the indicators computed from a real store, and the
Prometheus rules generated from the config (promtool runs them in
test_prometheus_rules.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qrt_ray.errors import ConfigError, ValidationError
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.metrics import STAGE_BUCKETS
from qrt_ray.models import JobSpec
from qrt_ray.slo.config import RUNBOOK_PAGES, load_slo_config, load_slo_config_text
from qrt_ray.slo.farm_alerts import ERROR_CLASS_RUNBOOKS
from qrt_ray.slo.indicators import (
    NO_DATA,
    SloReport,
    SloStatus,
    WindowSli,
    evaluate_slos,
    fresh_time,
    render_report,
    report_dict,
)
from qrt_ray.slo.promql import SUPPRESSION, TimeScale
from qrt_ray.slo.rules import alertmanager_route, render_rules, rule_groups, slo_windows
from qrt_ray.store import (
    CalibrationRecord,
    CanaryRecord,
    JobRecord,
    JobStore,
    StateUpdate,
    open_store,
)

S = JobState
NOW = 100_000_000.0
H = 3600.0
D = 86_400.0
# the forward path to each final state (FAILED and CANCELLED straight from the queue)
_PATHS = {
    S.DONE: (S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING, S.POSTPROCESSING, S.DONE),
    S.FAILED: (S.QUEUED, S.FAILED),
    S.CANCELLED: (S.QUEUED, S.CANCELLED),
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = open_store(tmp_path / "s.db")
    yield s
    s.close()


def finish(
    store: JobStore,
    jobs: list[tuple[S, float, float, int, ErrorClass | None]],
    prefix: str = "j",
) -> None:
    """Admit jobs and move each to its final state: (state, finished at, latency,
    priority, error class)."""
    records, updates = [], []
    for i, (state, at, latency_s, priority, error_class) in enumerate(jobs):
        job_id, created = f"{prefix}{i}", at - latency_s
        spec = JobSpec(circuits=("OPENQASM 2.0;",), shots=100, priority=priority)
        records.append(JobRecord(job_id, S.QUEUED, spec, created, created))
        path = _PATHS[state]
        for a, b in itertools.pairwise(path):
            fields = {"error_class": error_class.value} if b is S.FAILED and error_class else {}
            updates.append(StateUpdate(job_id, a, b, at if b is state else created, fields=fields))
    store.admit(records)
    assert all(store.apply(updates))


def jobs(n: int, state: S, at: float, latency_s: float = 10.0, priority: int = 5) -> list:
    error_class = ErrorClass.PARTIAL_RUN if state is S.FAILED else None
    return [(state, at, latency_s, priority, error_class)] * n


def by_name(report: SloReport) -> dict[str, SloStatus]:
    return {s.name: s for s in report.slos}


def window(status: SloStatus, name: str) -> WindowSli:
    return next(w for w in status.windows if w.window == name)


# == indicators ========================================================================


def test_job_success_counts_done_over_done_and_failed_per_window(store: JobStore) -> None:
    finish(
        store,
        jobs(9, S.DONE, NOW - 600)
        + jobs(1, S.FAILED, NOW - 600)
        + jobs(3, S.CANCELLED, NOW - 600)  # the user's choice: left out
        + jobs(90, S.DONE, NOW - 3 * H)
        + jobs(9, S.FAILED, NOW - 2 * D)
        + jobs(5, S.FAILED, NOW - 40 * D)  # before the 30d window
        + jobs(1, S.FAILED, NOW),  # finished at `now`: the next report's
    )
    report = evaluate_slos(load_slo_config(), store, now=NOW, devices=[])
    s = by_name(report)["job_success"]
    assert [w.window for w in s.windows] == ["1h", "6h", "24h", "30d"]
    hour, six, day, month = s.windows
    assert (hour.good, hour.total, hour.sli) == (9, 10, 0.9)
    assert hour.burn == pytest.approx(10.0)  # 10 % bad against a 1 % budget
    assert (six.good, six.total) == (99, 100) and six.burn == pytest.approx(1.0)
    assert (day.good, day.total) == (99, 100)
    assert (month.good, month.total) == (99, 109)
    assert s.sli == pytest.approx(99 / 109)
    # 10 bad of 109 against 1.09 allowed: the budget is overspent, and says by how much
    assert s.budget_left == pytest.approx(1 - (10 / 109) / 0.01)
    assert s.budget_left < 0


def test_a_window_without_events_has_no_sli_and_no_burn(store: JobStore) -> None:
    finish(store, jobs(4, S.CANCELLED, NOW - 600) + jobs(3, S.DONE, NOW - 2 * D))
    report = evaluate_slos(load_slo_config(), store, now=NOW, devices=["a"])
    success = by_name(report)["job_success"]
    hour = window(success, "1h")
    assert (hour.total, hour.sli, hour.burn) == (0, None, None)
    assert window(success, "30d").burn == pytest.approx(0.0)
    assert success.budget_left == pytest.approx(1.0)
    for name in ("latency_low", "calibration_freshness", "canary_fidelity"):
        status = by_name(report)[name]
        assert status.sli is None and status.budget_left is None
        assert all(w.sli is None and w.burn is None for w in status.windows)
    text = render_report(report)
    low_row = next(line for line in text.splitlines() if line.startswith("latency_low"))
    assert low_row.count(NO_DATA) == 6  # SLI, budget left, and the four burns
    data = json.loads(json.dumps(report_dict(report)))
    low = next(s for s in data["slos"] if s["name"] == "latency_low")
    assert low["sli"] is None and low["windows"]["1h"] == {
        "good": 0,
        "total": 0,
        "sli": None,
        "burn": None,
    }


def test_latency_counts_done_jobs_of_one_class_under_the_threshold(store: JobStore) -> None:
    finish(
        store,
        jobs(1, S.DONE, NOW - 60, latency_s=30, priority=8)
        + jobs(1, S.DONE, NOW - 60, latency_s=60, priority=7)  # at the threshold: good
        + jobs(1, S.DONE, NOW - 60, latency_s=61, priority=10)
        + jobs(1, S.DONE, NOW - 60, latency_s=3000, priority=9)
        + jobs(1, S.FAILED, NOW - 60, latency_s=5, priority=8)  # failures: job_success's
        + jobs(1, S.DONE, NOW - 60, latency_s=200, priority=5),
    )
    slos = by_name(evaluate_slos(load_slo_config(), store, now=NOW, devices=[]))
    high = window(slos["latency_high"], "1h")
    assert (high.good, high.total) == (2, 4)
    assert high.burn == pytest.approx(0.5 / 0.05)
    assert window(slos["latency_normal"], "1h").burn == pytest.approx(0.0)
    assert window(slos["latency_low"], "1h").sli is None


def test_fresh_time_counts_time_under_the_age_limit_after_the_first_calibration() -> None:
    # fresh [0, 60] and [100, 160]; the window starts at 50
    assert fresh_time([100.0, 0.0], 50.0, 250.0, 60.0) == (70.0, 200.0)
    # before the first calibration nothing is known, fresh or stale
    assert fresh_time([100.0], 0.0, 200.0, 50.0) == (50.0, 100.0)
    # overlapping freshness is counted once
    assert fresh_time([0.0, 10.0], 0.0, 100.0, 50.0) == (60.0, 100.0)
    # none yet, or only after the window
    assert fresh_time([], 0.0, 100.0, 50.0) == (0.0, 0.0)
    assert fresh_time([100.0], 0.0, 100.0, 50.0) == (0.0, 0.0)


def test_calibration_freshness_is_a_share_of_device_time(store: JobStore) -> None:
    def calibrate(device: str, at: float) -> None:
        record = CalibrationRecord(device, f"{device}-{at:.0f}", at, at, "scheduled", "{}")
        assert store.record_calibration(record)

    for k in range(1, 64):  # every 12 h for 31.5 days: always fresh
        calibrate("a", NOW - k * 12 * H)
    calibrate("b", NOW - 3 * D)  # fresh for a day, then two stale days
    slos = by_name(evaluate_slos(load_slo_config(), store, now=NOW, devices=["a", "b", "c"]))
    fresh = slos["calibration_freshness"]
    month = window(fresh, "30d")
    # c was never calibrated: no known time; b is known for its last 3 days only
    assert month.total == pytest.approx(33 * D)
    assert month.good == pytest.approx(31 * D)
    hour = window(fresh, "1h")
    assert (hour.good, hour.total) == (H, 2 * H)
    assert hour.burn == pytest.approx(0.5 / 0.01)


def test_canary_fidelity_counts_rounds_that_did_not_drift(store: JobStore) -> None:
    def canary(device: str, at: float, drifted: bool) -> None:
        store.record_canary(CanaryRecord(device, at, "cal", 0.9, 0.8, drifted))

    for k in range(6):
        canary("a", NOW - 60 - k * 600, drifted=k == 0)
    for k in range(4):
        canary("b", NOW - 60 - k * 600, drifted=False)
    canary("b", NOW - 40 * D, drifted=True)  # outside the window
    canary("b", NOW + 60, drifted=True)  # after `now`
    slos = by_name(evaluate_slos(load_slo_config(), store, now=NOW, devices=["a", "b"]))
    hour = window(slos["canary_fidelity"], "1h")
    assert (hour.good, hour.total) == (9, 10)
    assert hour.burn == pytest.approx(0.1 / 0.05)
    assert window(slos["canary_fidelity"], "30d").total == 10


def test_the_table_has_a_row_per_slo_and_says_what_burn_means(store: JobStore) -> None:
    finish(store, jobs(99, S.DONE, NOW - 600) + jobs(1, S.FAILED, NOW - 600))
    text = render_report(evaluate_slos(load_slo_config(), store, now=NOW, devices=[]))
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["SLO", "objective", "window", "SLI", "budget"]
    row = next(line for line in lines if line.startswith("job_success"))
    assert "99.00%" in row and "100 jobs" in row and "1.00" in row
    assert "burn:" in lines[-1]


# == config ============================================================================

BASE = """\
runbook_base_url: https://example.org/runbooks/
slos:
  - name: job_success
    kind: job_success
    description: jobs that end DONE
    objective: 0.99
    runbook: partial-run
  - name: latency_high
    kind: latency
    description: fast high-priority jobs
    priority: high
    threshold_s: 60
    objective: 0.95
    runbook: high-queue-latency
"""


def test_the_packaged_config_holds_the_six_slos() -> None:
    config = load_slo_config()
    assert [s.name for s in config.slos] == [
        "job_success",
        "latency_high",
        "latency_normal",
        "latency_low",
        "calibration_freshness",
        "canary_fidelity",
    ]
    thresholds = {s.name: getattr(s, "threshold_s", None) for s in config.slos}
    assert (thresholds["latency_high"], thresholds["latency_normal"]) == (60, 300)
    assert thresholds["latency_low"] == 1800
    assert all(s.window == "30d" and s.runbook in RUNBOOK_PAGES for s in config.slos)
    assert config.slo("calibration_freshness").max_age_s == 86_400  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="known SLOs: job_success"):
        config.slo("nope")


def test_a_minimal_config_takes_the_defaults() -> None:
    config = load_slo_config_text(BASE)
    assert config.slos[0].window == "30d" and config.slos[0].window_s == 30 * 86_400
    assert config.slos[0].alerting.page and config.slos[0].alerting.ticket
    assert config.runbook_url("partial-run") == "https://example.org/runbooks/partial-run.md"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "threshold_s: 60",
            "threshold_s: 45",
            ["slos[1].threshold_s (line 12)", "not a bucket bound", "nearest: 30 or 60"],
        ),
        ("objective: 0.99", "objective: 1.0", ["slos[0].objective (line 6)", "less than 1"]),
        ("objective: 0.99", "objective: 0", ["slos[0].objective (line 6)", "greater than 0"]),
        (
            "objective: 0.95",
            "objective: 0.95\n    objectve: 0.9",
            ["slos[1].objectve (line 14)", "Extra inputs are not permitted"],
        ),
        ("runbook_base_url", "runbook_base_urls", ["runbook_base_urls (line 1)", "Extra inputs"]),
        ("runbook: partial-run", "runbook: drift", ["slos[0].runbook (line 7)", "'drift'"]),
        ("priority: high", "priority: urgent", ["slos[1].priority (line 11)", "'urgent'"]),
        (
            "runbook: partial-run",
            "runbook: partial-run\n    window: 30 days",
            ["slos[0].window (line 8)", "window='30 days'"],
        ),
        ("runbook: partial-run", "runbook: partial-run\n    window: 6h", ["shorter than a day"]),
        ("name: latency_high", "name: job_success", ["slos[1].name (line 8)", "duplicate SLO"]),
        ("kind: latency", "kind: latncy", ["slos[1] (line 8)", "'latncy'"]),
        ("https://example.org/runbooks/", "https://example.org/r", ["ending in '/'"]),
    ],
)
def test_a_bad_config_names_the_field_the_value_and_the_line(
    old: str, new: str, expected: list[str]
) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as caught:
        load_slo_config_text(BASE.replace(old, new, 1), source="slos.yaml")
    message = str(caught.value)
    assert "invalid SLO config slos.yaml (1 error)" in message
    for part in expected:
        assert part in message, message


def test_every_stage_bucket_is_a_valid_latency_threshold() -> None:
    for bucket in STAGE_BUCKETS:
        config = load_slo_config_text(BASE.replace("threshold_s: 60", f"threshold_s: {bucket}"))
        assert config.slos[1].threshold_s == bucket  # type: ignore[union-attr]


def test_a_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_slo_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_slo_config(tmp_path / "empty.yaml")


# == rules =============================================================================


def _rules(text: str) -> list[dict]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def test_rules_are_deterministic() -> None:
    first = render_rules(load_slo_config())
    assert first == render_rules(load_slo_config())
    assert first.startswith("# Generated by `qrt slo rules`")
    assert "&id" not in first and "*id" not in first  # no YAML anchors


def test_every_slo_records_every_window_and_its_burn() -> None:
    config = load_slo_config()
    rules = _rules(render_rules(config))
    recorded = {(r["record"], r["labels"]["slo"]) for r in rules if "record" in r}
    windows = ("5m", "30m", "1h", "6h", "3d", "30d")
    for slo in config.slos:
        assert slo_windows(slo) == windows
        for w in windows:
            assert (f"qrt:slo_errors:ratio_rate{w}", slo.name) in recorded
            assert (f"qrt:slo_burn:rate{w}", slo.name) in recorded
    assert len(recorded) == len(config.slos) * len(windows) * 2
    burn = next(
        r
        for r in rules
        if r.get("record") == "qrt:slo_burn:rate1h" and r["labels"]["slo"] == "canary_fidelity"
    )
    assert burn["expr"] == 'qrt:slo_errors:ratio_rate1h{slo="canary_fidelity"} / 0.05'


def test_the_queries_follow_the_metric_contract() -> None:
    text = render_rules(load_slo_config())
    # the client writes bucket bounds as Go floats: le="60.0", never le="60"
    assert 'priority="high",le="60.0"}[1h]' in text
    assert 'priority="low",le="1800.0"}[30d]' in text
    assert 'qrt_jobs_finished_total{outcome!="cancelled"}[5m]' in text
    assert "(qrt_device_calibration_age_seconds <= bool 86400)[1h:30s]" in text
    assert 'qrt_device_canary_rounds_total{outcome="drift"}[6h]' in text


def test_burn_alerts_are_multi_window_suppressed_and_linked() -> None:
    config = load_slo_config()
    alerts = [r for r in _rules(render_rules(config)) if r.get("alert", "").startswith("QrtSlo")]
    got = {(a["alert"], a["labels"]["slo"]) for a in alerts}
    for slo in config.slos:
        for name, severity in (
            ("QrtSloBurnFast", "page"),
            ("QrtSloBurnSlow", "page"),
            ("QrtSloBurnTicket", "ticket"),
        ):
            wanted = getattr(slo.alerting, severity)
            assert ((name, slo.name) in got) == wanted, (name, slo.name)
    assert ("QrtSloBurnFast", "latency_low") not in got  # low priority never pages
    fast = next(a for a in alerts if a["alert"] == "QrtSloBurnFast")
    assert "qrt:slo_burn:rate1h" in fast["expr"] and "qrt:slo_burn:rate5m" in fast["expr"]
    assert fast["for"] == "2m" and fast["labels"]["severity"] == "page"
    for alert in alerts:
        assert alert["expr"].endswith(SUPPRESSION)
        page = config.slo(alert["labels"]["slo"]).runbook
        assert alert["annotations"]["runbook_url"] == config.runbook_url(page)
        assert "{{ $labels.device }}" in alert["annotations"]["summary"]


def test_every_alert_links_a_runbook_page_and_every_error_class_has_one() -> None:
    assert set(ERROR_CLASS_RUNBOOKS) == set(ErrorClass)
    config = load_slo_config()
    alerts = [r for r in _rules(render_rules(config)) if "alert" in r]
    names = {a["alert"] for a in alerts}
    assert {
        "QrtJobFailuresByClass",
        "QrtDeviceDown",
        "QrtAuthErrorSpike",
        "QrtChecksumFailures",
        "QrtCostRunaway",
        "QrtForgedReports",
        "QrtCalibrationStale",
        "QrtQueueOldJob",
    } <= names
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(config.runbook_base_url) and url.endswith(".md")
        assert url.removeprefix(config.runbook_base_url).removesuffix(".md") in RUNBOOK_PAGES
        assert alert["labels"]["severity"] in ("page", "ticket")
    by_class = [a for a in alerts if a["alert"] == "QrtJobFailuresByClass"]
    assert all("sum by (device, error_class)" in a["expr"] for a in by_class)
    assert len({a["labels"]["runbook"] for a in by_class}) == len(by_class)


def test_time_scale_shrinks_windows_and_holds_but_not_names() -> None:
    config = load_slo_config()
    fast = render_rules(config, time_scale=60, scrape_interval_s=1)
    assert "# time_scale=60" in fast
    rules = _rules(fast)
    errors_1h = next(r for r in rules if r.get("record") == "qrt:slo_errors:ratio_rate1h")
    assert "[1m]" in errors_1h["expr"]
    page = next(r for r in rules if r.get("alert") == "QrtSloBurnFast")
    assert page["for"] == "2s"
    # windows stay two scrapes long: rate() needs two samples
    slow_scrape = _rules(render_rules(config, time_scale=3600, scrape_interval_s=15))
    errors_5m = next(r for r in slow_scrape if r.get("record") == "qrt:slo_errors:ratio_rate5m")
    assert "[30s]" in errors_5m["expr"]
    assert TimeScale(86_400 * 30).window("5m") == "30s"
    assert TimeScale(1e9, scrape_interval_s=0.1).window("5m") == "1s"
    assert len(rule_groups(config)) == len(config.slos) + 2
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="time_scale"):
            rule_groups(config, time_scale=bad)


def test_alertmanager_route_groups_and_lets_a_page_silence_its_ticket() -> None:
    am = yaml.safe_load(alertmanager_route(page_receiver="oncall"))
    assert am["route"]["group_by"] == ["alertname", "slo", "device", "error_class"]
    routes = {r["matchers"][0]: r["receiver"] for r in am["route"]["routes"]}
    assert routes == {'severity="page"': "oncall", 'severity="ticket"': "qrt-ticket"}
    inhibit = am["inhibit_rules"][0]
    assert 'severity="page"' in inhibit["source_matchers"]
    assert 'severity="ticket"' in inhibit["target_matchers"]
    assert inhibit["equal"] == ["slo", "device"]
    assert {r["name"] for r in am["receivers"]} == {"oncall", "qrt-ticket"}
