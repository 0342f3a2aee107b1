"""Service level indicators from the job store: what ``qrt slo`` reports.

Pure over store reads: the caller passes ``now`` (no clock in here), so the same
history always gives the same report. Each SLO gets its SLI over the look-back windows
of the burn-rate alerts (1h, 6h, 24h) and over its own window, the burn rate of each
(``(1 - SLI) / (1 - objective)``: 1 spends the error budget exactly by the window's
end) and the budget left over its window (``1 - burn``; negative once overspent). A
window with no events has no SLI and no burn: "no data", never a division by zero.

The store is the ground truth the Prometheus rules estimate: job outcomes and
latencies from the finished jobs, freshness from the calibration history, fidelity
from the canary rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qrt_ray.lifecycle import JobState
from qrt_ray.models import priority_class
from qrt_ray.render import table
from qrt_ray.slo.config import (
    CalibrationFreshnessSlo,
    CanaryFidelitySlo,
    JobSuccessSlo,
    LatencySlo,
    Slo,
    SloConfig,
    duration_s,
)
from qrt_ray.store import FinishedJob, JobStore

# the look-back windows reported next to the SLO's own (those of the burn-rate alerts)
BURN_WINDOWS: tuple[str, ...] = ("1h", "6h", "24h")
# enough rounds for 30 days of canaries every 10 minutes, many times over
DEFAULT_HISTORY_LIMIT = 100_000
_UNITS = {
    "job_success": "jobs",
    "latency": "jobs",
    "calibration_freshness": "device-seconds",
    "canary_fidelity": "rounds",
}
# (good, total) over the look-back window of this many seconds ending at now
_Count = Callable[[float], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class WindowSli:
    """An SLI over one look-back window ending at the report's ``now``.

    Attributes:
        good: good events (jobs, rounds; device-seconds for calibration freshness).
        total: all events counted; 0 means no data.
        sli: good / total, None with no data.
        burn: (1 - sli) / (1 - objective), None with no data.
    """

    window: str
    window_s: int
    good: float
    total: float
    sli: float | None
    burn: float | None


@dataclass(frozen=True, slots=True)
class SloStatus:
    """Where one SLO stands: its SLI per window and the error budget left.

    Attributes:
        windows: the burn windows (1h, 6h, 24h), then the SLO's own window.
        budget_left: share of the window's error budget not yet spent (1 - the
            window's burn): 1 untouched, 0 spent, below 0 overspent; None with no data.
    """

    name: str
    kind: str
    description: str
    objective: float
    window: str
    unit: str
    runbook_url: str
    windows: tuple[WindowSli, ...]
    budget_left: float | None

    @property
    def sli(self) -> float | None:
        """The SLI over the SLO's own window."""
        return self.windows[-1].sli


@dataclass(frozen=True, slots=True)
class SloReport:
    """Every SLO of a config, as of ``now`` (unix seconds)."""

    now: float
    devices: tuple[str, ...]
    slos: tuple[SloStatus, ...]


def burn_rate(sli: float | None, objective: float) -> float | None:
    """How many times faster than the objective allows the budget is spent (None: no data)."""
    return None if sli is None else (1.0 - sli) / (1.0 - objective)


def count_events(
    events: Iterable[tuple[float, bool]], since: float, until: float
) -> tuple[int, int]:
    """(good, total) of the (time, good) events with ``since <= time < until``."""
    good = total = 0
    for at, ok in events:
        if since <= at < until:
            total += 1
            good += ok
    return good, total


def fresh_time(
    taken_at: Iterable[float], since: float, until: float, max_age_s: float
) -> tuple[float, float]:
    """(fresh seconds, known seconds) of one device in ``[since, until)``.

    A moment is fresh when the last calibration taken at or before it is at most
    ``max_age_s`` old, i.e. it lies in some ``[t, t + max_age_s]``. Only time after
    the device's first known calibration is known: before it there is no age to judge.
    """
    times = sorted(t for t in taken_at if t < until)
    if not times:
        return 0.0, 0.0
    start = max(since, times[0])
    fresh, covered = 0.0, start  # covered: fresh time is counted up to here
    for t in times:
        end = min(t + max_age_s, until)
        lo = max(t, covered)
        if end > lo:
            fresh += end - lo
            covered = end
    return fresh, max(0.0, until - start)


def evaluate_slos(
    config: SloConfig,
    store: JobStore,
    *,
    now: float,
    devices: Sequence[str],
    history_limit: int = DEFAULT_HISTORY_LIMIT,
) -> SloReport:
    """Every SLO of ``config`` as of ``now``, from the store's history.

    Args:
        devices: the farm's devices, for calibration freshness and canary fidelity.
        history_limit: the most calibrations and canary rounds read per device.
    """
    longest = max(duration_s(w) for w in (*BURN_WINDOWS, *(s.window for s in config.slos)))
    # one read serves every job SLO and window: each then filters by time
    jobs = store.finished_jobs(now - longest, now)
    kinds = {s.kind for s in config.slos}
    taken = {
        d: [c.taken_at for c in store.calibrations(d, history_limit)]
        for d in (devices if "calibration_freshness" in kinds else ())
    }
    rounds = [
        (r.at, not r.drifted)
        for d in (devices if "canary_fidelity" in kinds else ())
        for r in store.canaries(d, history_limit)
    ]
    statuses = tuple(
        _status(config, slo, _counter(slo, now, jobs, taken, rounds)) for slo in config.slos
    )
    return SloReport(now, tuple(devices), statuses)


def _counter(
    slo: Slo,
    now: float,
    jobs: Sequence[FinishedJob],
    taken: Mapping[str, Sequence[float]],
    rounds: Sequence[tuple[float, bool]],
) -> _Count:
    """How to count (good, total) over a look-back window, for this kind of SLO."""
    if isinstance(slo, CalibrationFreshnessSlo):
        return lambda w: _fresh_totals(taken, now - w, now, slo.max_age_s)
    if isinstance(slo, JobSuccessSlo):
        # cancellations are the user's choice: neither good nor bad
        events = [
            (j.finished_at, j.state is JobState.DONE)
            for j in jobs
            if j.state is not JobState.CANCELLED
        ]
    elif isinstance(slo, LatencySlo):
        events = [
            (j.finished_at, j.latency_s <= slo.threshold_s)
            for j in jobs
            if j.state is JobState.DONE and priority_class(j.priority) == slo.priority
        ]
    elif isinstance(slo, CanaryFidelitySlo):
        events = list(rounds)
    else:  # pragma: no cover - the config's union is closed
        raise TypeError(f"no indicator for SLO kind {slo.kind!r}")
    return lambda w: count_events(events, now - w, now)


def _fresh_totals(
    taken: Mapping[str, Sequence[float]], since: float, until: float, max_age_s: float
) -> tuple[float, float]:
    """Fresh and known device-seconds, summed over the devices."""
    pairs = [fresh_time(times, since, until, max_age_s) for times in taken.values()]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def _status(config: SloConfig, slo: Slo, count: _Count) -> SloStatus:
    windows = []
    # the SLO's own window comes last, under its own name, even if it spans 24h
    names = [w for w in BURN_WINDOWS if duration_s(w) != slo.window_s] + [slo.window]
    for window in names:
        seconds = duration_s(window)
        good, total = count(seconds)
        sli = good / total if total > 0 else None
        windows.append(WindowSli(window, seconds, good, total, sli, burn_rate(sli, slo.objective)))
    burn = windows[-1].burn
    return SloStatus(
        name=slo.name,
        kind=slo.kind,
        description=slo.description,
        objective=slo.objective,
        window=slo.window,
        unit=_UNITS[slo.kind],
        runbook_url=config.runbook_url(slo.runbook),
        windows=tuple(windows),
        budget_left=None if burn is None else 1.0 - burn,
    )


# == output: a table for `qrt slo`, a dict for `qrt slo --json` ========================

NO_DATA = "no data"


def render_report(report: SloReport) -> str:
    """The report as a plain-text table, one SLO a row."""
    headers = ["SLO", "objective", "window", "SLI", "budget left"]
    headers += [f"burn {w}" for w in BURN_WINDOWS] + ["burn window", "events"]
    rows = []
    for s in report.slos:
        own = s.windows[-1]
        burns = {w.window: w.burn for w in s.windows}
        rows.append(
            [
                s.name,
                _percent(s.objective),
                s.window,
                _percent(s.sli),
                _percent(s.budget_left, digits=1),
                *(_burn(burns.get(w)) for w in BURN_WINDOWS),
                _burn(own.burn),
                f"{own.total:,.0f} {s.unit}",
            ]
        )
    legend = (
        "burn: error budget spent per unit of time, relative to the objective "
        "(1: spent exactly by the end of the window; above 1: spent early)"
    )
    return f"{table(headers, rows)}\n\n{legend}"


def _percent(value: float | None, digits: int = 2) -> str:
    return NO_DATA if value is None else f"{value * 100:.{digits}f}%"


def _burn(value: float | None) -> str:
    return NO_DATA if value is None else f"{value:.2f}"


def report_dict(report: SloReport) -> dict[str, Any]:
    """The report as JSON-ready data: None stays None (null: no data)."""
    return {
        "now": report.now,
        "devices": list(report.devices),
        "slos": [
            {
                "name": s.name,
                "kind": s.kind,
                "description": s.description,
                "objective": s.objective,
                "window": s.window,
                "unit": s.unit,
                "sli": s.sli,
                "budget_left": s.budget_left,
                "runbook_url": s.runbook_url,
                "windows": {
                    w.window: {"good": w.good, "total": w.total, "sli": w.sli, "burn": w.burn}
                    for w in s.windows
                },
            }
            for s in report.slos
        ],
    }
