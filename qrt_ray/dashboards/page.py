"""Self-contained HTML for rendered dashboards: inline SVG line charts, big numbers,
bars and tables. No scripts, no styles or fonts from the network."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# colour-blind-safe palette (Okabe-Ito), cycled over series
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000")
NO_DATA = "no data"
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{margin:0 0 .2rem}.meta{color:#666;margin:0 0 1rem}
h2.row{border-bottom:1px solid #ccc;margin:1.5rem 0 .5rem;font-size:1.1rem;color:#444}
section.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8rem;margin:.6rem 0}
section.panel h3{margin:0 0 .3rem;font-size:1rem}.desc{color:#555;font-size:.85rem;margin:0 0 .5rem}
.big{display:inline-block;margin-right:2rem}.big .v{font-size:2rem;font-weight:600}
.big .n,.legend{font-size:.8rem;color:#555}.nodata{color:#999;font-style:italic}
.error{color:#b00020}.note{color:#7a5b00}table{border-collapse:collapse;font-size:.85rem}
td,th{border-bottom:1px solid #eee;padding:.2rem .6rem;text-align:left}td.num{text-align:right}
.bar{background:#0072B2;height:.8rem;display:inline-block;vertical-align:middle}
.legend span{display:inline-block;margin-right:1rem}
.sw{width:.7rem;height:.7rem;display:inline-block}
"""


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a panel: its legend name and (unix time, value) points."""

    name: str
    points: tuple[tuple[float, float], ...]

    @property
    def latest(self) -> float | None:
        """The last point's value, or None for a series with no points."""
        return self.points[-1][1] if self.points else None


@dataclass(frozen=True, slots=True)
class PanelData:
    """A panel with what Prometheus answered for it."""

    row: str
    title: str
    kind: str
    unit: str
    description: str
    series: tuple[Series, ...] = ()
    errors: tuple[str, ...] = ()
    note: str = ""

    @property
    def empty(self) -> bool:
        """Whether no series has a point."""
        return not any(s.points for s in self.series)


def format_value(value: float | None, unit: str) -> str:
    """A value in the panel's Grafana unit: 97.3%, 2.5 min, $12.30, 1.2k."""
    if value is None or math.isnan(value):
        return NO_DATA if value is None else "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "currencyUSD":
        return f"${value:,.2f}"
    if unit == "s":
        return _duration(value)
    return _short(value)


def _duration(seconds: float) -> str:
    for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {name}"
    if abs(seconds) >= 1 or seconds == 0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms"


def _short(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.2f}{suffix}"
    return f"{value:.3g}"


def html_page(title: str, description: str, panels: Sequence[PanelData], at: float) -> str:
    """One dashboard as a standalone HTML page, one ``<section>`` per panel."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    body: list[str] = []
    row = None
    for panel in panels:
        if panel.row != row:
            row = panel.row
            body.append(f'<h2 class="row">{escape(row)}</h2>')
        body.append(section(panel))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="meta">{escape(description)} Rendered {stamp}.</p>'
        + "\n".join(body)
        + "</body></html>\n"
    )


def section(panel: PanelData) -> str:
    """One panel's ``<section>``: title, description, then its drawing or why none."""
    return (
        f'<section class="panel" data-kind="{escape(panel.kind)}"><h3>{escape(panel.title)}</h3>'
        f'<p class="desc">{escape(panel.description)}</p>{_body(panel)}</section>'
    )


def _body(panel: PanelData) -> str:
    parts = [f'<p class="error">{escape(e)}</p>' for e in panel.errors]
    if panel.note:
        parts.append(f'<p class="note">{escape(panel.note)}</p>')
    if panel.empty:
        if not panel.note:
            parts.append(f'<p class="nodata">{NO_DATA}</p>')
    elif panel.kind == "timeseries":
        parts.append(svg_chart(panel.series, panel.unit))
    elif panel.kind == "stat":
        parts.append(_big_numbers(panel.series, panel.unit))
    elif panel.kind == "bargauge":
        parts.append(_bars(panel.series, panel.unit))
    else:
        parts.append(_table(panel.series, panel.unit))
    return "".join(parts)


def _big_numbers(series: Sequence[Series], unit: str) -> str:
    return "".join(
        f'<div class="big"><div class="v">{escape(format_value(s.latest, unit))}</div>'
        f'<div class="n">{escape(s.name)}</div></div>'
        for s in series
    )


def _bars(series: Sequence[Series], unit: str) -> str:
    values = [s.latest for s in series if s.latest is not None and math.isfinite(s.latest)]
    top = max((abs(v) for v in values), default=0.0) or 1.0
    rows = []
    for s in series:
        v = s.latest
        width = 0.0 if v is None or not math.isfinite(v) else 100 * abs(v) / top
        rows.append(
            f'<tr><td>{escape(s.name)}</td><td style="width:16rem">'
            f'<span class="bar" style="width:{width:.1f}%"></span></td>'
            f'<td class="num">{escape(format_value(v, unit))}</td></tr>'
        )
    return "<table>" + "".join(rows) + "</table>"


def _table(series: Sequence[Series], unit: str) -> str:
    rows = "".join(
        f'<tr><td>{escape(s.name)}</td><td class="num">{escape(format_value(s.latest, unit))}'
        "</td></tr>"
        for s in series
    )
    return f"<table><tr><th>series</th><th>value</th></tr>{rows}</table>"


def svg_chart(series: Sequence[Series], unit: str, width: int = 720, height: int = 220) -> str:
    """An inline SVG line chart of ``series`` with y range, time range and a legend."""
    finite = [(t, v) for s in series for t, v in s.points if math.isfinite(v)]
    if not finite:
        return f'<p class="nodata">{NO_DATA}</p>'
    t0, t1 = min(t for t, _ in finite), max(t for t, _ in finite)
    lo, hi = min(0.0, *(v for _, v in finite)), max(v for _, v in finite)
    hi = hi if hi > lo else lo + 1.0
    left, pad = 70, 10
    plot_w, plot_h = width - left - pad, height - 2 * pad - 16

    def xy(t: float, v: float) -> str:
        x = left + (plot_w * (t - t0) / (t1 - t0) if t1 > t0 else plot_w / 2)
        return f"{x:.1f},{pad + plot_h * (hi - v) / (hi - lo):.1f}"

    lines = []
    for i, s in enumerate(series):
        pts = " ".join(xy(t, v) for t, v in s.points if math.isfinite(v))
        color = PALETTE[i % len(PALETTE)]
        lines.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    clock = "%H:%M:%S" if t1 - t0 < 3600 else "%m-%d %H:%M"
    axes = (
        f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{pad + plot_h}" stroke="#999"/>'
        f'<line x1="{left}" y1="{pad + plot_h}" x2="{left + plot_w}" y2="{pad + plot_h}" '
        'stroke="#999"/>'
        f'<text x="{left - 4}" y="{pad + 10}" text-anchor="end">{escape(format_value(hi, unit))}'
        f'</text><text x="{left - 4}" y="{pad + plot_h}" text-anchor="end">'
        f"{escape(format_value(lo, unit))}</text>"
        f'<text x="{left}" y="{height - 2}">{time.strftime(clock, time.gmtime(t0))} UTC</text>'
        f'<text x="{left + plot_w}" y="{height - 2}" text-anchor="end">'
        f"{time.strftime(clock, time.gmtime(t1))} UTC</text>"
    )
    svg = (
        f'<svg width="{width}" height="{height}" '
        f'font-size="11" role="img">{axes}{"".join(lines)}</svg>'
    )
    return svg + _legend(series, unit)


def _legend(series: Sequence[Series], unit: str) -> str:
    items = "".join(
        f'<span><i class="sw" style="background:{PALETTE[i % len(PALETTE)]}"></i> '
        f"{escape(s.name)}: {escape(format_value(s.latest, unit))}</span>"
        for i, s in enumerate(series)
    )
    return f'<div class="legend">{items}</div>'
