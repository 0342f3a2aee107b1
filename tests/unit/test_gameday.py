"""Game-day scenarios (validation, the packaged ones) and the report's judgement, without
a farm; ``tests/integration/test_living.py`` runs one against a real farm."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrt_ray.cli import main
from qrt_ray.config import ConfigError
from qrt_ray.gameday import load_scenario, packaged, render
from qrt_ray.gameday.report import (
    Event,
    FaultOutcome,
    JobFacts,
    Report,
    job_summary,
    judge,
    latency_by_phase,
    slo_impact,
)
from qrt_ray.gameday.scenario import Scenario


def test_every_packaged_scenario_loads_and_is_listed() -> None:
    names = packaged()
    assert {
        "drift-storm", "device-outage", "partition", "actor-kills", "burst", "auth-outage"
    } <= set(names)  # fmt: skip
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name and scenario.steps


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "day.yaml"
    path.write_text(text)
    return str(path)


BASE = "name: mine\ndescription: d\nduration_s: 60\n"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("steps: [{at_s: 60, fault: drift}]", r"steps\[0\] at_s=60 is not before duration_s=60"),
        ("steps: [{at_s: 1, fault: burst, factor: 2}]", "burst does not read factor"),
        ("steps: [{at_s: 1, fault: flood}]", "fault"),
        ("steps: [{at_s: 1, fault: kill, actor: scheduler, devices: 2}]", "takes no devices"),
        ("steps: [{at_s: 1, fault: drift, factor: 1000}]", "factor"),
        ("steps: [{at_s: 1, fault: auth-outage, devices: 2}]", "auth-outage does not read"),
        ("steps: [{at_s: 30, fault: auth-outage, for_s: 30}]", "ends at 60 s, not before"),
        ("steps: []", "steps"),
    ],
)
def test_bad_scenarios_are_refused_with_the_field(tmp_path: Path, steps: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scenario(_write(tmp_path, BASE + steps))


def test_scenario_errors_never_echo_the_file(tmp_path: Path) -> None:
    secret = "s3cr3t" * 10_000
    with pytest.raises(ConfigError) as caught:
        load_scenario(_write(tmp_path, f"name: {secret}\ndescription: d\nduration_s: 9\nsteps: []"))
    assert len(str(caught.value)) < 2_000


def test_unknown_names_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a packaged game day"):
        load_scenario("no-such-day")
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(str(tmp_path / "missing.yaml"))


def test_the_cli_lists_scenarios_and_refuses_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gameday", "--list"]) == 0
    assert "drift-storm" in capsys.readouterr().out
    assert main(["gameday", "no-such-day"]) == 2
    assert "not a packaged game day" in capsys.readouterr().err


# == the report ========================================================================


def _job(k: int, state: str, created: float, took: float, cls: str | None = None) -> JobFacts:
    return JobFacts(f"j{k}", state, 5, created, created + took, cls)


def test_jobs_not_final_count_as_lost_and_failures_by_class() -> None:
    jobs = [
        _job(0, "DONE", 0, 1),
        _job(1, "FAILED", 0, 1, "link"),
        _job(2, "RUNNING", 0, 1),
    ]
    summary = job_summary(jobs, submitted=4)  # one the farm does not even show
    assert summary["lost"] == 2
    assert summary["failed_by_class"] == {"link": 1}
    assert summary["failed_share"] == 0.5


def test_latency_is_split_at_the_first_fault_and_the_last_recovery() -> None:
    jobs = [_job(k, "DONE", 100 + k, 1 + (k >= 10) * 9) for k in range(30)]
    phases = latency_by_phase(jobs, started_at=100, first_fault_s=10, recovered_s=20)
    assert [phases[p]["jobs"] for p in ("before", "during", "after")] == [10, 10, 10]
    assert phases["before"]["p95_s"] == 1 and phases["during"]["p95_s"] == 10


def test_slo_impact_reads_budget_spent_and_the_game_days_own_sli() -> None:
    before = [
        {"name": "ok", "kind": "job_success", "objective": 0.99, "budget_left": 0.9},
        {
            "name": "fast",
            "kind": "latency",
            "objective": 0.95,
            "budget_left": None,
            "threshold_s": 5,
            "priority": "normal",
        },
    ]
    after = [{**before[0], "budget_left": 0.7}, {**before[1], "budget_left": 0.5}]
    jobs = [_job(k, "DONE", 0, 10 if k < 2 else 1) for k in range(9)] + [
        _job(9, "FAILED", 0, 1, "link")
    ]
    rows = {r["name"]: r for r in slo_impact(before, after, jobs)}
    assert rows["ok"]["budget_spent"] == pytest.approx(0.2)
    assert rows["ok"]["gameday_sli"] == pytest.approx(0.9)
    assert rows["ok"]["gameday_burn"] == pytest.approx(10.0)
    assert rows["fast"]["gameday_sli"] == pytest.approx(7 / 9)
    assert rows["fast"]["budget_spent"] is None  # no data before: nothing to compare


def _scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "t",
            "description": "d",
            "duration_s": 60,
            "steps": [{"at_s": 1, "fault": "outage"}],
            "expect": {"max_recovery_s": 30, "max_failed_share": 0.1},
        }
    )


def test_the_judgement_fails_on_a_fault_never_recovered_or_too_slow() -> None:
    jobs = job_summary([_job(0, "DONE", 0, 1)], 1)
    latency = latency_by_phase([], 0, 1, 2)
    ok = judge(_scenario(), jobs, [FaultOutcome(0, "outage", "a", 1, 2, 20)], latency)
    assert all(c["ok"] for c in ok)
    slow = judge(_scenario(), jobs, [FaultOutcome(0, "outage", "a", 1, 2, 31)], latency)
    never = judge(_scenario(), jobs, [FaultOutcome(0, "outage", "a", 1, None, None)], latency)
    assert not all(c["ok"] for c in slow)
    assert "not recovered: outage a" in str(never)


def test_the_report_renders_every_section() -> None:
    jobs = job_summary([_job(0, "DONE", 0, 1)], 1)
    faults = [FaultOutcome(0, "outage", "manila", 1.0, 2.0, 20.0, "60 s down")]
    latency = latency_by_phase([_job(0, "DONE", 0, 1)], 0, 1, 21)
    report = Report(
        "t",
        "a day",
        0.0,
        30.0,
        [Event(1.0, "fault", "manila", "outage: 60 s down")],
        faults,
        jobs,
        latency,
        [],
        judge(_scenario(), jobs, faults, latency),
    )
    text = render(report)
    for heading in ("Expectations", "Faults and recovery", "Jobs", "SLI impact", "Timeline"):
        assert f"## {heading}" in text
    assert "**PASSED**" in text and report.to_json()["passed"] is True


class _Snap:
    """What the watcher reads of a device snapshot."""

    def __init__(self, status: str, taken_at: float) -> None:
        from types import SimpleNamespace

        self.status = SimpleNamespace(value=status)
        self.calibration = SimpleNamespace(taken_at=taken_at)


def test_an_outage_no_work_met_is_reported_as_never_noticed() -> None:
    import time

    from qrt_ray.gameday.runner import GameDay

    day = GameDay(None, _scenario())
    day._t0 = time.time() - 100.0  # 100 s into the game day
    outage = FaultOutcome(0, "outage", "manila", 10.0, detail="60 s down")
    drift = FaultOutcome(1, "drift", "nairobi", 20.0, detail="errors x4 until recalibrated")
    day._open += [(outage, 70.0), (drift, 0.0)]
    day._track("manila", _Snap("ONLINE", day._t0))  # up all along, outage over
    day._track("nairobi", _Snap("ONLINE", day._t0 + 50.0))  # retuned after the drift
    assert outage.recovered_s is not None and outage.detected_s is None
    assert "never noticed" in outage.detail
    assert drift.detected_s == drift.recovered_s and "paused and back" in drift.detail


def test_a_tenant_refused_or_erring_fails_the_judgement() -> None:
    jobs = job_summary([_job(0, "DONE", 0, 1)], 1)
    latency = latency_by_phase([], 0, 1, 2)
    fault = [FaultOutcome(0, "auth-outage", "tenants", 1, 2, 20)]
    told_to_retry = {"accepted": 50, "retry": 12, "refused": 0, "throttled": 0, "error": 0}
    ok = judge(_scenario(), jobs, fault, latency, told_to_retry)
    assert all(c["ok"] for c in ok) and "tenant told to retry" in str(ok)
    for bad in ("refused", "error"):
        checks = judge(_scenario(), jobs, fault, latency, {**told_to_retry, bad: 1})
        (tenant,) = [c for c in checks if c["check"].startswith("tenant")]
        assert not tenant["ok"] and f"1 {bad}" in tenant["seen"]
    # no tenant ran: no such check
    assert not any(c["check"].startswith("tenant") for c in judge(_scenario(), jobs, [], latency))


def test_a_tenant_reads_an_outage_as_retry_and_a_bad_token_as_refused() -> None:
    from qrt_ray.errors import (
        AuthenticationError,
        FarmBusyError,
        PermissionDeniedError,
        QuotaExceededError,
        StoreUnavailableError,
        ValidationError,
    )
    from qrt_ray.gameday.tenant import outcome_of

    assert outcome_of(StoreUnavailableError("authentication is unavailable")) == "retry"
    assert outcome_of(FarmBusyError("busy", limit="max_live_jobs", retry_after_s=3)) == "retry"
    assert outcome_of(AuthenticationError("unknown token")) == "refused"
    assert outcome_of(PermissionDeniedError("scope")) == "refused"
    locked = QuotaExceededError("too many refused tokens", limit="auth_failures", retry_after_s=9)
    assert outcome_of(locked) == "refused"
    assert outcome_of(QuotaExceededError("jobs", limit="jobs_per_s", retry_after_s=1)) == (
        "throttled"
    )
    assert outcome_of(ValidationError("bad spec")) == "error"


def test_an_auth_outage_is_noticed_by_a_retry_and_over_at_the_next_acceptance() -> None:
    import time

    from qrt_ray.gameday.runner import GameDay

    day = GameDay(None, _scenario())
    day._t0 = time.time() - 100.0
    outage = FaultOutcome(0, "auth-outage", "tenants", 10.0, detail="40 s token records unread")
    day._auth_open.append((outage, 50.0))
    day._track_auth("accepted", 12.0)  # a token still trusted from before
    assert outage.detected_s is None and outage.recovered_s is None
    day._track_auth("retry", 16.0)
    assert outage.detected_s == pytest.approx(6.0)
    day._track_auth("accepted", 49.0)  # not over yet: it ends at 50 s
    assert outage.recovered_s is None
    day._track_auth("accepted", 51.0)
    assert outage.recovered_s == pytest.approx(41.0)
