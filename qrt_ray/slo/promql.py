"""Small pieces shared by the generated Prometheus rules: durations, time scaling, and
the shape of one alerting rule.

Rules name their windows by the nominal duration (``qrt:slo_burn:rate1h``) whatever the
time scale; only the range selectors and ``for:`` durations inside them shrink. A test
or a drill with ``time_scale=3600`` then fires in seconds an alert that would take an
hour, with the same rule and series names as production.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qrt_ray.errors import ValidationError
from qrt_ray.slo.config import duration_s

# SLO alerts say nothing while a device is serviced or recalibrated: its errors then are
# planned, and the SLO's budget is the wrong alarm for them
SUPPRESSION = 'unless on(device) (qrt_device_status{status=~"MAINTENANCE|CALIBRATING"} == 1)'
_UNITS = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(seconds: float) -> str:
    """A Prometheus duration of one unit, to the whole second (at least ``1s``)."""
    whole = max(1, round(seconds))
    for unit, size in _UNITS:
        if whole % size == 0:
            return f"{whole // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds has a unit")


def number(value: float) -> str:
    """A PromQL number literal without float noise (``0.01``, not ``0.010000000000000009``)."""
    return f"{value:.12g}"


@dataclass(frozen=True, slots=True)
class TimeScale:
    """How much faster than real time the rules run.

    Every range window and ``for:`` duration is divided by ``factor``. A range window
    stays at least two scrape intervals long (and 1s): ``rate()`` needs two samples.

    Attributes:
        factor: 1 for production; 60 makes an hour's window a minute.
        scrape_interval_s: the scrape interval of the Prometheus that runs the rules.
    """

    factor: float = 1.0
    scrape_interval_s: float = 15.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValidationError(
                f"time_scale={self.factor!r} must be a finite number > 0 (1: real time)"
            )
        if not (math.isfinite(self.scrape_interval_s) and self.scrape_interval_s > 0):
            raise ValidationError(
                f"scrape_interval_s={self.scrape_interval_s!r} must be a finite number > 0"
            )

    def seconds(self, nominal: str) -> float:
        """A range window in seconds, scaled and kept at least two scrapes long."""
        scaled = duration_s(nominal) / self.factor
        return max(scaled, 2 * self.scrape_interval_s, 1.0)

    def window(self, nominal: str) -> str:
        """A range window (``[5m]``'s ``5m``), scaled."""
        return format_duration(self.seconds(nominal))

    def step(self, nominal: str) -> str:
        """The resolution of a subquery over ``nominal``: about 120 points, never finer
        than the scrape interval (more points would only repeat samples)."""
        return format_duration(max(self.seconds(nominal) / 120, self.scrape_interval_s))

    def hold(self, nominal: str) -> str:
        """A ``for:`` duration, scaled."""
        return format_duration(duration_s(nominal) / self.factor)


def alert_rule(
    name: str,
    expr: str,
    *,
    severity: str,
    runbook_url: str,
    summary: str,
    description: str,
    hold: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alerting rule as the rules file holds it, keys in a fixed order.

    Args:
        hold: the ``for:`` duration (None: fire on the first evaluation).
        labels: labels added besides ``severity``.
    """
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if hold is not None:
        rule["for"] = hold
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": runbook_url,
    }
    return rule
