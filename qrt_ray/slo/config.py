"""The SLO config: which objectives the farm is held to, and how their alerts page.

SLOs are data (``configs/slos.yaml``), validated by pydantic at load like the farm and
policy configs: every error names the file, the field path (``slos[1].threshold_s``),
the bad value and the YAML line. Each SLO has a ``kind`` that says what it counts:

- ``job_success``: jobs that end DONE, of those that end DONE or FAILED;
- ``latency``: DONE jobs of one priority class whose end-to-end time is at most
  ``threshold_s`` (a bucket bound of the stage histogram, so Prometheus can count it);
- ``calibration_freshness``: device time with a calibration at most ``max_age_s`` old;
- ``canary_fidelity``: canary rounds that pass (did not drift).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qrt_ray.config import check_unique_names, config_text, validated_yaml
from qrt_ray.errors import ValidationError
from qrt_ray.metrics import STAGE_BUCKETS
from qrt_ray.models import PRIORITY_CLASSES

DEFAULT_RUNBOOK_BASE_URL = "https://github.com/qrt-ray/qrt-ray/blob/main/docs/runbooks/"
# the pages of docs/runbooks/ (without .md) an alert may link to
RunbookPage = Literal[
    "calibration-drift",
    "network-partition",
    "partial-run",
    "auth-failure",
    "compiler-mismatch",
    "storage-corruption",
    "high-queue-latency",
    "cost-runaway",
    "security-breach",
    "postprocess-failure",
]
RUNBOOK_PAGES: tuple[str, ...] = get_args(RunbookPage)
SloKind = Literal["job_success", "latency", "calibration_freshness", "canary_fidelity"]
SLO_KINDS: tuple[str, ...] = get_args(SloKind)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# an error budget over less than a day is spent by one incident: nothing to plan with
_MIN_WINDOW_S = 86_400


def duration_s(text: str, name: str = "duration") -> int:
    """Seconds in a one-unit Prometheus duration (``5m``, ``6h``, ``30d``); ``name``
    names the argument in the error.

    Raises:
        ValidationError: ``text`` is not a whole number followed by s, m, h, d or w.
    """
    if not text[:-1].isdigit() or text[-1:] not in _UNIT_S or int(text[:-1]) <= 0:
        raise ValidationError(
            f"{name}={text!r} is not a Prometheus duration of one unit; write a whole "
            "number and one of s, m, h, d, w, e.g. '30d' or '6h'"
        )
    return int(text[:-1]) * _UNIT_S[text[-1]]


class Alerting(BaseModel):
    """Which burn-rate alerts an SLO raises: pages (fast and slow burn) and tickets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    page: bool = True
    ticket: bool = True


class _Slo(BaseModel):
    """What every SLO has, whatever it counts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # a label value in every recording rule and alert: a plain, bounded alphabet
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    description: str = Field(min_length=1, max_length=300)
    objective: float = Field(gt=0, lt=1, allow_inf_nan=False)
    window: str = "30d"
    runbook: RunbookPage
    alerting: Alerting = Alerting()

    @field_validator("window")
    @classmethod
    def _a_window(cls, window: str) -> str:
        try:
            seconds = duration_s(window, "window")
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        if seconds < _MIN_WINDOW_S:
            raise ValueError(
                f"window={window!r} is shorter than a day; an error budget needs a window "
                "of days (the default is '30d')"
            )
        return window

    @property
    def window_s(self) -> int:
        """The SLO window in seconds."""
        return duration_s(self.window)

    @property
    def error_budget(self) -> float:
        """The bad share the objective allows (1 - objective)."""
        return 1.0 - self.objective


class JobSuccessSlo(_Slo):
    """Jobs that end DONE, of those that end DONE or FAILED (cancelled ones left out)."""

    kind: Literal["job_success"]


class LatencySlo(_Slo):
    """DONE jobs of one priority class finished within ``threshold_s`` of submission."""

    kind: Literal["latency"]
    priority: str
    threshold_s: float

    @field_validator("priority")
    @classmethod
    def _known_class(cls, priority: str) -> str:
        names = [name for name, _ in PRIORITY_CLASSES]
        if priority not in names:
            raise ValueError(f"{priority!r} is not a priority class; use one of {names}")
        return priority

    @field_validator("threshold_s")
    @classmethod
    def _a_bucket_bound(cls, threshold_s: float) -> float:
        # Prometheus can only count "at most X seconds" at a histogram bucket's `le`
        if threshold_s in STAGE_BUCKETS:
            return float(threshold_s)
        below = [b for b in STAGE_BUCKETS if b < threshold_s][-1:]
        above = [b for b in STAGE_BUCKETS if b > threshold_s][:1]
        nearest = " or ".join(f"{b:g}" for b in below + above)
        raise ValueError(
            f"threshold_s={threshold_s:g} is not a bucket bound of "
            "qrt_job_stage_duration_seconds, so Prometheus cannot count jobs under it; "
            f"use one of {', '.join(f'{b:g}' for b in STAGE_BUCKETS)} (nearest: {nearest})"
        )


class CalibrationFreshnessSlo(_Slo):
    """Device time spent with a calibration at most ``max_age_s`` old."""

    kind: Literal["calibration_freshness"]
    max_age_s: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)


class CanaryFidelitySlo(_Slo):
    """Canary rounds that pass: the measured success matches the prediction."""

    kind: Literal["canary_fidelity"]


Slo = Annotated[
    JobSuccessSlo | LatencySlo | CalibrationFreshnessSlo | CanaryFidelitySlo,
    Field(discriminator="kind"),
]


class FarmAlerts(BaseModel):
    """Thresholds of the farm alerts that are not about an SLO's error budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failures_per_s: float = Field(default=0.01, gt=0, allow_inf_nan=False)
    auth_refused_ratio: float = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    auth_min_requests_per_s: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    canary_stale_s: float = Field(default=7200.0, gt=0, allow_inf_nan=False)
    queue_oldest_wait_s: float = Field(default=1800.0, gt=0, allow_inf_nan=False)
    cost_factor: float = Field(default=5.0, gt=1, allow_inf_nan=False)
    cost_min_usd_per_hour: float = Field(default=1.0, ge=0, allow_inf_nan=False)


class SloConfig(BaseModel):
    """``configs/slos.yaml``: the SLOs, where their runbooks live, farm alert thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
    slos: tuple[Slo, ...] = Field(min_length=1)
    alerts: FarmAlerts = FarmAlerts()

    @field_validator("runbook_base_url")
    @classmethod
    def _a_folder_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")) or not url.endswith("/"):
            raise ValueError(
                f"{url!r} must be an http(s) URL of the runbook folder ending in '/', "
                f"e.g. {DEFAULT_RUNBOOK_BASE_URL!r}"
            )
        return url

    @field_validator("slos")
    @classmethod
    def _unique_names(cls, slos: tuple[_Slo, ...]) -> tuple[_Slo, ...]:
        check_unique_names([slo.name for slo in slos], "SLO", "slos")
        return slos

    def runbook_url(self, page: str) -> str:
        """The URL of a runbook page, as alerts link to it."""
        return f"{self.runbook_base_url}{page}.md"

    def slo(self, name: str) -> Slo:
        """The SLO called ``name``.

        Raises:
            ValidationError: no SLO has that name; the message lists the known ones.
        """
        for slo in self.slos:
            if slo.name == name:
                return slo
        known = ", ".join(s.name for s in self.slos)
        raise ValidationError(f"slo={name!r} is not in the SLO config; known SLOs: {known}")


def load_slo_config(path: str | Path | None = None) -> SloConfig:
    """Load and validate an SLO config file (None: the one packaged with qrt-ray).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or invalid; the
            message names the file, the field path, the bad value and the line.
    """
    text, source = config_text(path, "slos.yaml", "SLO config")
    return load_slo_config_text(text, source=source)


def load_slo_config_text(text: str, source: str = "<string>") -> SloConfig:
    """Validate SLO config YAML given as text; ``source`` names it in errors.

    Raises:
        ConfigError: as :func:`load_slo_config`.
    """
    return validated_yaml(text, source, SloConfig, "SLO config", "`slos:`", fix_error=_without_kind)


def _without_kind(err: Any) -> Any:
    """Drop the union tag pydantic puts in a path (``slos[1].latency.threshold_s``):
    it is not a key of the file, so the path would not match the YAML or its line."""
    loc = list(err["loc"])
    for i in range(2, len(loc)):
        if loc[i - 2] == "slos" and isinstance(loc[i - 1], int) and loc[i] in SLO_KINDS:
            del loc[i]
            break
    return {**err, "loc": tuple(loc)}
