"""Read the Prometheus queries back out of dashboard JSON, and make them runnable.

:func:`panel_queries` walks a dashboard (rows and nested panels included) and lists
every PromQL expression; :func:`instantiate` fills in the Grafana variables so a test
or :mod:`qrt_ray.dashboards.render` can send the expression to a real Prometheus.
:func:`metric_names_in` and :func:`known_metric_names` let a test hold every query to
the metric contract of ``qrt_ray/metrics.py`` and the SLO recording rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from qrt_ray.dashboards.spec import PROMETHEUS_VAR, TEXT_VARS

# windows of the SLO recording rules qrt:slo_errors:ratio_rate<W> and qrt:slo_burn:rate<W>
RULE_WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*+)(?!\s*\()")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


class PanelQuery(NamedTuple):
    """One Prometheus target of a panel."""

    dashboard: str
    panel: str
    expr: str


def iter_panels(dashboard_json: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows' nested panels included, rows left out."""
    stack = list(reversed(dashboard_json.get("panels") or []))
    while stack:
        panel = stack.pop()
        stack.extend(reversed(panel.get("panels") or []))
        if panel.get("type") != "row":
            yield panel


def is_prometheus(panel: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether ``target`` of ``panel`` is a Prometheus query (its own datasource first)."""
    source = target.get("datasource") or panel.get("datasource") or {}
    return source.get("type") == "prometheus" and bool(target.get("expr"))


def panel_queries(dashboard_json: Mapping[str, Any]) -> list[PanelQuery]:
    """Every Prometheus query of a dashboard as (dashboard uid, panel title, expr)."""
    uid = str(dashboard_json.get("uid") or dashboard_json.get("title", ""))
    return [
        PanelQuery(uid, str(panel.get("title", "")), str(target["expr"]))
        for panel in iter_panels(dashboard_json)
        for target in panel.get("targets") or []
        if is_prometheus(panel, target)
    ]


def instantiate(
    expr: str,
    rate_interval: str = "1m",
    range: str = "5m",
    device: str = ".*",
    *,
    interval: str = "1m",
    variables: Mapping[str, str] | None = None,
) -> str:
    """``expr`` with its Grafana variables filled in, ready for the Prometheus API.

    Args:
        expr: a panel's PromQL (or a title) with ``$name`` / ``${name}`` variables.
        rate_interval: for ``$__rate_interval``.
        range: for ``$__range`` (the dashboard's time range).
        device: a regex for ``$device`` (``.*``: every device).
        interval: for ``$__interval``.
        variables: other values by variable name; the text variables default to the
            dashboards' defaults (``$stuck_after_s`` is 900).

    Raises:
        ValueError: ``expr`` uses a variable no dashboard defines.
    """
    values = {var.name: var.default for var in TEXT_VARS}
    values |= {
        "__rate_interval": rate_interval,
        "__range": range,
        "__interval": interval,
        "device": device,
        PROMETHEUS_VAR: "prometheus",
    }
    values |= dict(variables or {})

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(
                f"variable ${name} in {expr!r} is not defined: pass it in "
                f"variables={{{name!r}: ...}} (known: {', '.join(sorted(values))})"
            )
        return values[name]

    return _VARIABLE.sub(fill, expr)


def rule_names() -> frozenset[str]:
    """The SLO recording rules the dashboards may read, every window."""
    return frozenset(
        name
        for window in RULE_WINDOWS
        for name in (f"qrt:slo_errors:ratio_rate{window}", f"qrt:slo_burn:rate{window}")
    )


def known_metric_names() -> frozenset[str]:
    """Every series name the runtime exports (``qrt_ray.metrics``) plus the rule names."""
    from qrt_ray.metrics import RuntimeMetrics

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    names = {
        family.name + suffix
        for family in RuntimeMetrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    return frozenset(names) | rule_names()


def metric_names_in(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions and keywords left out)."""
    text = _strip(expr)
    return {m.group(1) for m in _IDENT.finditer(text) if m.group(1).lower() not in _KEYWORDS}


def label_names_in(expr: str) -> set[str]:
    """The label names an expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    names = {m.group(1) for m in _MATCHER.finditer(text)}
    for m in _GROUPING.finditer(text):
        names.update(n.strip() for n in m.group(2).split(",") if n.strip())
    return names


def _strip(expr: str) -> str:
    """``expr`` without strings, label matchers, ranges and grouping label lists."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    return _GROUPING.sub(" ", text)
