"""What a game day found: the timeline, the jobs, recovery per fault, SLI impact and
error budget spent, and whether the scenario's expectations held. Pure: the runner
gathers the facts, this module judges and writes them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from qrt_ray.gameday.scenario import Scenario

FINAL = ("DONE", "FAILED", "CANCELLED")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the timeline, ``t`` seconds into the game day."""

    t: float
    kind: str  # fault | reaction | recovered | note
    subject: str
    what: str


@dataclass(slots=True)
class FaultOutcome:
    """One injected fault and how the farm coped with it, per target.

    ``detected_s``: from injection to the farm's first reaction (None: none seen);
    ``recovered_s``: from injection to service restored (None: not within the run).
    """

    step: int
    fault: str
    target: str
    at_s: float
    detected_s: float | None = None
    recovered_s: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class JobFacts:
    """A game-day job as the farm stored it."""

    job_id: str
    state: str
    priority: int
    created_at: float
    updated_at: float
    error_class: str | None = None


@dataclass(slots=True)
class Report:
    """A finished game day."""

    scenario: str
    description: str
    started_at: float
    seconds: float
    timeline: list[Event]
    faults: list[FaultOutcome]
    jobs: dict[str, Any]
    latency: dict[str, Any]
    slos: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    refused: int = 0
    notes: list[str] = field(default_factory=list)
    # the tenant's calls by outcome (see qrt_ray.gameday.tenant; empty: none ran)
    tenant: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every expectation held."""
        return all(c["ok"] for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """Plain data (``qrt gameday --json``, the report file)."""
        out = asdict(self)
        out["passed"] = self.passed
        return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def job_summary(jobs: Sequence[JobFacts], submitted: int) -> dict[str, Any]:
    """Counts by state and failure class; ``lost`` is every job the client was told was
    accepted and the farm cannot show as final."""
    states: dict[str, int] = {}
    classes: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
        if j.state == "FAILED":
            key = j.error_class or "unknown"
            classes[key] = classes.get(key, 0) + 1
    final = sum(states.get(s, 0) for s in FINAL)
    judged = states.get("DONE", 0) + states.get("FAILED", 0)
    return {
        "submitted": submitted,
        "found": len(jobs),
        "states": dict(sorted(states.items())),
        "failed_by_class": dict(sorted(classes.items())),
        "lost": submitted - final,
        "failed_share": states.get("FAILED", 0) / judged if judged else 0.0,
    }


def latency_by_phase(
    jobs: Sequence[JobFacts], started_at: float, first_fault_s: float, recovered_s: float
) -> dict[str, Any]:
    """p50/p95 of submit-to-final for DONE jobs submitted before the first fault,
    between it and the last recovery, and after."""
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    for j in jobs:
        if j.state != "DONE":
            continue
        at = j.created_at - started_at
        phase = "before" if at < first_fault_s else "during" if at < recovered_s else "after"
        phases[phase].append(j.updated_at - j.created_at)
    return {
        name: {
            "jobs": len(v),
            "p50_s": percentile(v, 0.50),
            "p95_s": percentile(v, 0.95),
        }
        for name, v in phases.items()
    }


def slo_impact(
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    jobs: Sequence[JobFacts],
) -> list[dict[str, Any]]:
    """Per SLO: the farm's budget left before and after (its own window) and the share
    spent during the game day; for job SLOs, the SLI over the game day's jobs alone.

    ``before``/``after``: the SLO report's ``slos`` entries (``name``, ``kind``,
    ``objective``, ``budget_left``, and for latency ``threshold_s``, ``priority``).
    """
    done = [j for j in jobs if j.state == "DONE"]
    judged = [j for j in jobs if j.state in ("DONE", "FAILED")]
    later = {s["name"]: s for s in after}
    out = []
    for s in before:
        a = later.get(s["name"], {})
        b0, b1 = s.get("budget_left"), a.get("budget_left")
        row: dict[str, Any] = {
            "name": s["name"],
            "objective": s["objective"],
            "budget_left_before": b0,
            "budget_left_after": b1,
            "budget_spent": None if b0 is None or b1 is None else b0 - b1,
            "gameday_sli": None,
        }
        if s["kind"] == "job_success" and judged:
            row["gameday_sli"] = len(done) / len(judged)
        elif s["kind"] == "latency" and s.get("threshold_s") is not None:
            lo, hi = _PRIORITY.get(str(s.get("priority")), (0, 10))
            mine = [j for j in done if lo <= j.priority <= hi]
            if mine:
                fast = sum(1 for j in mine if j.updated_at - j.created_at <= s["threshold_s"])
                row["gameday_sli"] = fast / len(mine)
        if row["gameday_sli"] is not None:
            row["gameday_burn"] = (1 - row["gameday_sli"]) / (1 - s["objective"])
        out.append(row)
    return out


_PRIORITY = {"high": (7, 10), "normal": (3, 6), "low": (0, 2)}


def judge(
    scenario: Scenario,
    jobs: dict[str, Any],
    faults: Sequence[FaultOutcome],
    latency: Mapping[str, Any],
    tenant: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The expectations, each with what was seen; with the tenant's calls, also that
    it was never refused nor met an error (an outage must say "retry")."""
    exp = scenario.expect
    checks = [
        {"check": "nothing lost", "want": 0, "seen": jobs["lost"], "ok": jobs["lost"] == 0},
        {
            "check": "failed share",
            "want": f"<= {exp.max_failed_share:g}",
            "seen": round(jobs["failed_share"], 4),
            "ok": jobs["failed_share"] <= exp.max_failed_share,
        },
    ]
    worst = [f.recovered_s for f in faults]
    unrecovered = [f"{f.fault} {f.target}" for f in faults if f.recovered_s is None]
    slowest = max((w for w in worst if w is not None), default=0.0)
    checks.append(
        {
            "check": "every fault recovered",
            "want": f"<= {exp.max_recovery_s:g} s",
            "seen": f"not recovered: {', '.join(unrecovered)}"
            if unrecovered
            else f"{slowest:.1f} s",
            "ok": not unrecovered and slowest <= exp.max_recovery_s,
        }
    )
    if tenant:
        bad = tenant.get("refused", 0) + tenant.get("error", 0)
        checks.append(
            {
                "check": "tenant told to retry, never refused",
                "want": "0 refused, 0 errors",
                "seen": f"{tenant.get('refused', 0)} refused, {tenant.get('error', 0)} errors "
                f"of {sum(tenant.values())} calls",
                "ok": bad == 0,
            }
        )
    if exp.max_p95_latency_s is not None:
        p95 = max((p["p95_s"] or 0.0) for p in latency.values())
        checks.append(
            {
                "check": "p95 latency in every phase",
                "want": f"<= {exp.max_p95_latency_s:g} s",
                "seen": f"{p95:.2f} s",
                "ok": p95 <= exp.max_p95_latency_s,
            }
        )
    return checks


def render(report: Report) -> str:
    """The report as Markdown."""
    lines = [
        f"# Game day: {report.scenario}",
        "",
        report.description.strip(),
        "",
        f"**{'PASSED' if report.passed else 'FAILED'}** in {report.seconds:.0f} s.",
        "",
        "## Expectations",
        "",
        "| check | wanted | seen | ok |",
        "| --- | --- | --- | --- |",
    ]
    for c in report.checks:
        lines.append(f"| {c['check']} | {c['want']} | {c['seen']} | {'yes' if c['ok'] else 'NO'} |")
    lines += ["", "## Faults and recovery", ""]
    lines += ["| step | fault | target | at s | detected after s | recovered after s | detail |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    for f in report.faults:
        lines.append(
            f"| {f.step} | {f.fault} | {f.target} | {f.at_s:.1f} | {_s(f.detected_s)} | "
            f"{_s(f.recovered_s)} | {f.detail} |"
        )
    j = report.jobs
    lines += [
        "",
        "## Jobs",
        "",
        f"Submitted {j['submitted']}, lost {j['lost']}, states {j['states']}, failed by "
        f"class {j['failed_by_class'] or '{}'}; refused as busy: {report.refused}.",
        "",
        "| phase | DONE jobs | p50 s | p95 s |",
        "| --- | --- | --- | --- |",
    ]
    for name, p in report.latency.items():
        lines.append(f"| {name} | {p['jobs']} | {_s(p['p50_s'])} | {_s(p['p95_s'])} |")
    if report.tenant:
        said = ", ".join(f"{k} {v}" for k, v in report.tenant.items())
        lines += ["", f"The tenant's submits through the gateway door: {said}."]
    lines += [
        "",
        "## SLI impact and error budget",
        "",
        "| SLO | objective | game-day SLI | burn | budget left before | after | spent |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in report.slos:
        lines.append(
            f"| {s['name']} | {s['objective']:g} | {_pct(s['gameday_sli'])} | "
            f"{_s(s.get('gameday_burn'))} | {_pct(s['budget_left_before'])} | "
            f"{_pct(s['budget_left_after'])} | {_pct(s['budget_spent'])} |"
        )
    lines += ["", "## Timeline", "", "| t s | kind | subject | what |", "| --- | --- | --- | --- |"]
    for e in report.timeline:
        lines.append(f"| {e.t:.1f} | {e.kind} | {e.subject} | {e.what} |")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"
