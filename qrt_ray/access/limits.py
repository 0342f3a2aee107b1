"""Per-tenant limits, the submit-rate bucket and the calendar they count in.

Days and months are UTC calendar days and months: a tenant's shots come back at
00:00 UTC, device-seconds and budget on the 1st. Pure: the time comes in.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

BUDGET_ALERTS = (0.5, 0.8, 1.0)


class TenantLimits(BaseModel):
    """What one tenant may use. None means no limit.

    Attributes:
        max_concurrent_jobs: jobs not yet final at once.
        shots_per_day: shots (shots x circuits) submitted per UTC day; a job that
            ends FAILED or CANCELLED counts only the shots it ran.
        device_s_per_month: device run seconds billed per UTC month (checked when a
            job is submitted: jobs running then may finish past it).
        submit_rate_per_s: jobs per second, refilled steadily...
        submit_burst: ...into a bucket this deep (a burst of this many at once).
        budget_usd_per_month: spend per UTC month; submits stop at 100 %.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_jobs: int | None = Field(default=None, ge=0)
    shots_per_day: int | None = Field(default=None, ge=0)
    device_s_per_month: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    submit_rate_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    submit_burst: int = Field(default=20, ge=1)
    budget_usd_per_month: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    def merged(self, override: dict[str, object]) -> TenantLimits:
        """These limits with a tenant's own values over them."""
        return TenantLimits.model_validate({**self.model_dump(), **override})


class TenancyConfig(BaseModel):
    """``configs/policies.yaml``, section ``tenancy``.

    Attributes:
        default_limits: limits of a tenant that sets none of its own.
        auth_failures_per_min: refused tokens one source may present a minute
            before it is locked out for the rest of that minute.
        wait_cap_s: the longest a gateway wait call holds (clients call again).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_limits: TenantLimits = TenantLimits(
        max_concurrent_jobs=1000, submit_rate_per_s=50.0, submit_burst=200
    )
    auth_failures_per_min: int = Field(default=20, ge=1)
    wait_cap_s: float = Field(default=20.0, gt=0, le=300)


@dataclass(slots=True)
class TokenBucket:
    """A token bucket: ``rate`` tokens a second into ``burst`` places."""

    rate: float
    burst: int
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> TokenBucket:
        return cls(rate, burst, float(burst), now)

    def _fill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
            self.at = now

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens: 0.0 when taken, else the seconds until there are ``n``
        (nothing is taken then). More than the bucket holds can never be taken: the
        wait returned is then infinite."""
        self._fill(now)
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        if n > self.burst:
            return math.inf
        return (n - self.tokens) / self.rate


def day_start(now: float) -> float:
    """00:00 UTC of ``now``'s day."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()


def month_start(now: float) -> float:
    """00:00 UTC on the 1st of ``now``'s month."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC).timestamp()


def next_month(now: float) -> float:
    """00:00 UTC on the 1st of the month after ``now``'s."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return dt.datetime(y, m, 1, tzinfo=dt.UTC).timestamp()


def month_of(now: float) -> str:
    """``YYYY-MM`` of ``now`` (UTC)."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[float, float]:
    """[start, end) of a ``YYYY-MM`` month in unix seconds.

    Raises:
        ValueError: not a ``YYYY-MM`` month.
    """
    try:
        d = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        raise ValueError(f"month={str(month)[:20]!r}: expected YYYY-MM, e.g. 2026-12") from None
    start = d.timestamp()
    return start, next_month(start)


def crossed(
    before: float, after: float, thresholds: tuple[float, ...] = BUDGET_ALERTS
) -> list[float]:
    """Alert thresholds (fractions of a budget) passed going from ``before`` to ``after``."""
    return [t for t in thresholds if before < t <= after]
