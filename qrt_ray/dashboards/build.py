"""Turn a :class:`~qrt_ray.dashboards.spec.DashboardSpec` into Grafana dashboard JSON
with grafana-foundation-sdk (needed to generate the dashboards, not to use them)."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    prometheus,
    stat,
    table,
    tempo,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from qrt_ray.dashboards.spec import (
    PROMETHEUS_VAR,
    TEMPO_VAR,
    DashboardSpec,
    Kind,
    Link,
    PanelSpec,
    Query,
    TextVar,
    runbook_links,
)

PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid=f"${{{PROMETHEUS_VAR}}}")
TEMPO = models.DataSourceRef(type_val="tempo", uid=f"${{{TEMPO_VAR}}}")
_SDK_PANELS = {
    Kind.TIMESERIES: timeseries.Panel,
    Kind.STAT: stat.Panel,
    Kind.TABLE: table.Panel,
    Kind.BARGAUGE: bargauge.Panel,
}


def dashboard_json(spec: DashboardSpec) -> dict[str, Any]:
    """The Grafana JSON model of ``spec`` as plain dicts and lists."""
    board = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .editable()
    )
    for variable in _variables(spec):
        board = board.with_variable(variable)
    for link in spec.links:
        board = board.link(_link(link))
    next_id = 1
    for row in spec.rows:
        board = board.with_row(dashboard.Row(row.title).id(next_id))
        next_id += 1
        for panel in row.panels:
            board = board.with_panel(_panel(panel, next_id))
            next_id += 1
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def _variables(spec: DashboardSpec) -> list[Any]:
    """$datasource, $device, then $tempo where needed and the spec's text variables."""
    out: list[Any] = [
        dashboard.DatasourceVariable(PROMETHEUS_VAR).label("Prometheus").type("prometheus"),
        dashboard.QueryVariable("device")
        .label("Device")
        .description("Devices of the farm, from qrt_device_status")
        .datasource(PROMETHEUS)
        .query("label_values(qrt_device_status, device)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC),
    ]
    if spec.needs_tempo:
        out.append(
            dashboard.DatasourceVariable(TEMPO_VAR)
            .label("Tempo")
            .description("Trace backend (Tempo) for the trace panel and links")
            .type("tempo")
        )
    out.extend(_text_variable(v) for v in spec.text_vars)
    return out


def _text_variable(var: TextVar) -> Any:
    return (
        dashboard.TextBoxVariable(var.name)
        .label(var.label)
        .description(var.description)
        .default_value(var.default)
        .current(models.VariableOption(selected=True, text=var.default, value=var.default))
    )


def _link(link: Link) -> Any:
    return (
        dashboard.DashboardLink(link.title)
        .type(models.DashboardLinkType.LINK)
        .url(link.url)
        .include_vars(False)
        .keep_time(True)
        .target_blank(True)
    )


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    """One panel of any kind; the Prometheus ones share units, thresholds and links."""
    if spec.kind is Kind.TRACES:
        panel = dashboard.Panel().type("traces").datasource(TEMPO)
        for ref, query in _ref_ids(spec.queries):
            panel = panel.with_target(
                tempo.TempoQuery().ref_id(ref).query_type("traceql").query(query.expr)
            )
    else:
        panel = _prometheus_panel(spec)
    links = [_link(link) for link in (*spec.links, *runbook_links(spec.runbooks))]
    return (
        panel.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .span(spec.width)
        .height(spec.height)
        .links(links)
    )


def _prometheus_panel(spec: PanelSpec) -> Any:
    panel = _SDK_PANELS[spec.kind]().datasource(PROMETHEUS).unit(spec.unit.value)
    for ref, query in _ref_ids(spec.queries):
        panel = panel.with_target(_target(spec.kind, ref, query))
    if spec.thresholds:
        steps = [models.Threshold(value=s.value, color=s.color) for s in spec.thresholds]
        panel = panel.thresholds(
            dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps)
        )
    return _style(spec, panel)


def _style(spec: PanelSpec, panel: Any) -> Any:
    """Kind-specific options: stacking, reductions, orientation."""
    last = common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    if spec.kind is Kind.TIMESERIES:
        mode = (
            common_models.StackingMode.NORMAL if spec.stacked else common_models.StackingMode.NONE
        )
        panel = panel.stacking(common.StackingConfig().mode(mode)).fill_opacity(
            30 if spec.stacked else 10
        )
    elif spec.kind is Kind.STAT:
        panel = panel.reduce_options(last).graph_mode(common_models.BigValueGraphMode.AREA)
    elif spec.kind is Kind.BARGAUGE:
        panel = (
            panel.reduce_options(last)
            .orientation(common_models.VizOrientation.HORIZONTAL)
            .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        )
    return panel


def _target(kind: Kind, ref: str, query: Query) -> Any:
    target = (
        prometheus.Dataquery()
        .ref_id(ref)
        .datasource(PROMETHEUS)
        .expr(query.expr)
        .legend_format(query.legend or "__auto")
    )
    if kind is Kind.TABLE:
        return target.instant().format(PromQueryFormat.TABLE)
    return target.instant() if kind.instant else target.range()


def _ref_ids(queries: tuple[Query, ...]) -> list[tuple[str, Query]]:
    return [(chr(ord("A") + i), q) for i, q in enumerate(queries)]
