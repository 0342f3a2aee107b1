"""The dashboards as data: panels, rows and variables, with no Grafana SDK in sight.

Each dashboard module (:mod:`.executive`, :mod:`.oncall`, :mod:`.debug`) returns a
:class:`DashboardSpec`; :mod:`.build` turns it into Grafana JSON. Keeping the specs
plain lets tests and the renderer reason about panels without the SDK installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

# Every Prometheus panel filters on the $device variable through this matcher.
DEVICE = 'device=~"$device"'
# Queues also show jobs that wait for no device yet (device="none": not placed).
DEVICE_OR_NONE = 'device=~"$device|none"'
# The Prometheus and Tempo datasources, as Grafana variables.
PROMETHEUS_VAR = "datasource"
TEMPO_VAR = "tempo"


class Metric(StrEnum):
    """The ten service metrics of docs/observability.md, by id."""

    M1 = "job success rate"
    M2 = "latency p50 / p95"
    M3 = "latency by stage"
    M4 = "calibration freshness"
    M5 = "fidelity"
    M6 = "shot throughput"
    M7 = "queue depth"
    M8 = "mitigation success"
    M9 = "billing units"
    M10 = "auth error rate"


class Runbook(StrEnum):
    """The runbook pages under docs/runbooks/."""

    CALIBRATION_DRIFT = "calibration-drift"
    NETWORK_PARTITION = "network-partition"
    PARTIAL_RUN = "partial-run"
    AUTH_FAILURE = "auth-failure"
    COMPILER_MISMATCH = "compiler-mismatch"
    STORAGE_CORRUPTION = "storage-corruption"
    HIGH_QUEUE_LATENCY = "high-queue-latency"
    COST_RUNAWAY = "cost-runaway"
    SECURITY_BREACH = "security-breach"
    POSTPROCESS_FAILURE = "postprocess-failure"

    @property
    def path(self) -> str:
        """The page's path from the repository root."""
        return f"docs/runbooks/{self.value}.md"


class Kind(StrEnum):
    """A panel's Grafana visualisation (its JSON ``type``)."""

    TIMESERIES = "timeseries"
    STAT = "stat"
    TABLE = "table"
    BARGAUGE = "bargauge"
    TRACES = "traces"

    @property
    def instant(self) -> bool:
        """Whether the panel's queries are instant (one value per series)."""
        return self in (Kind.STAT, Kind.TABLE, Kind.BARGAUGE)


class Unit(StrEnum):
    """Grafana unit ids the dashboards use."""

    RATIO = "percentunit"
    SECONDS = "s"
    COUNT = "short"
    USD = "currencyUSD"


@dataclass(frozen=True, slots=True)
class Query:
    """One target: a PromQL expression (TraceQL for a traces panel) and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Link:
    """A link on a dashboard or panel; the URL may use Grafana variables."""

    title: str
    url: str


@dataclass(frozen=True, slots=True)
class Step:
    """A threshold step: from ``value`` up (None: from minus infinity) use ``color``."""

    value: float | None
    color: str


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """One panel: what it shows, where it comes from and what to do about it."""

    kind: Kind
    title: str
    about: str
    queries: tuple[Query, ...]
    metric: Metric | None = None
    runbooks: tuple[Runbook, ...] = ()
    unit: Unit = Unit.COUNT
    width: int = 12
    height: int = 8
    stacked: bool = False
    thresholds: tuple[Step, ...] = ()
    links: tuple[Link, ...] = ()

    @property
    def description(self) -> str:
        """The panel's description: metric id, what it shows, which runbooks apply."""
        if self.metric is None:
            head = "Not one of M1-M10 (see qrt_ray/metrics.py for the series' help)."
        else:
            head = f"{self.metric.name}: {self.metric.value}."
        pages = ", ".join(r.path for r in self.runbooks) or "none; follow the alert's page"
        return f"{head} {self.about} Runbook: {pages}."


@dataclass(frozen=True, slots=True)
class RowSpec:
    """A titled row of panels."""

    title: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True, slots=True)
class TextVar:
    """A free-text dashboard variable with its default."""

    name: str
    label: str
    default: str
    description: str


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    """A whole dashboard: identity, extra variables, links and rows."""

    uid: str
    title: str
    description: str
    rows: tuple[RowSpec, ...]
    text_vars: tuple[TextVar, ...] = ()
    links: tuple[Link, ...] = ()
    tags: tuple[str, ...] = ("qrt",)

    @property
    def panels(self) -> tuple[PanelSpec, ...]:
        """Every panel, row by row."""
        return tuple(p for row in self.rows for p in row.panels)

    @property
    def needs_tempo(self) -> bool:
        """Whether a panel or link reads the Tempo datasource variable."""
        uses = [p.kind is Kind.TRACES for p in self.panels]
        uses += [f"${{{TEMPO_VAR}}}" in link.url for link in self.links]
        return any(uses)


# Text variables shared by the dashboards; their defaults also serve instantiate().
DOCS_URL = TextVar(
    "docs_url",
    "Docs URL",
    "https://github.com/qrt-ray/qrt-ray/blob/main/docs",
    "Where this repository's docs/ folder is served (as slos.yaml's runbook_base_url): "
    "runbook and trace links start here",
)
TRACE_ID = TextVar(
    "trace_id",
    "Trace id",
    "",
    "A job's trace id (derived from its job id; `qrt trace JOB` shows it): the trace "
    "links and panel read it",
)
JAEGER_URL = TextVar(
    "jaeger_url", "Jaeger URL", "http://127.0.0.1:16686", "Jaeger's UI, for the trace link"
)
STUCK_AFTER_S = TextVar(
    "stuck_after_s",
    "Stuck after (s)",
    "900",
    "A queue whose oldest job has waited longer than this many seconds counts as stuck",
)
TEXT_VARS = (DOCS_URL, TRACE_ID, JAEGER_URL, STUCK_AFTER_S)


def increase_by(series: str, by: str, name: str = "") -> Query:
    """Events per rate interval of counter ``series``, summed by ``by`` (comma separated).

    ``name`` starts the legend, so two counters on one panel tell apart.
    """
    labels = [f"{{{{{label.strip()}}}}}" for label in by.split(",")]
    legend = " ".join([name, *labels] if name else labels)
    return Query(f"sum by ({by}) (increase({series}[$__rate_interval]))", legend)


def runbook_links(runbooks: tuple[Runbook, ...]) -> tuple[Link, ...]:
    """Panel links to each runbook page, under the ``$docs_url`` variable."""
    return tuple(
        Link(f"Runbook: {r.value}", f"${{{DOCS_URL.name}}}/runbooks/{r.value}.md") for r in runbooks
    )


def _tempo_explore_url() -> str:
    """Grafana Explore on the Tempo datasource, opened at trace ``$trace_id``."""
    tempo = f"${{{TEMPO_VAR}}}"
    pane = {
        "datasource": tempo,
        "queries": [
            {
                "datasource": {"type": "tempo", "uid": tempo},
                "query": f"${{{TRACE_ID.name}}}",
                "queryType": "traceql",
                "refId": "A",
            }
        ],
        "range": {"from": "now-6h", "to": "now"},
    }
    panes = json.dumps({"trace": pane}, separators=(",", ":"), sort_keys=True)
    # the ${...} placeholders stay readable: Grafana fills them in before opening
    return "/explore?schemaVersion=1&orgId=1&panes=" + quote(panes, safe="${}")


TRACE_LINKS = (
    Link("qrt trace JOB (how to read a job's trace)", f"${{{DOCS_URL.name}}}/observability.md"),
    Link("Trace $trace_id in Tempo (Explore)", _tempo_explore_url()),
    Link("Trace $trace_id in Jaeger", f"${{{JAEGER_URL.name}}}/trace/${{{TRACE_ID.name}}}"),
)
