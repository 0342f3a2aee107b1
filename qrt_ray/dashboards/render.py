"""Draw the dashboards straight from a Prometheus, no Grafana: one HTML page each, or
a text summary of every panel's latest values for notes and terminals.

``python -m qrt_ray.dashboards.render --prometheus http://127.0.0.1:9090 --out DIR``
(``--text`` prints the summary instead). Stdlib only: :func:`fetch` is the one place
that talks HTTP, so tests replace it with canned answers.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrt_ray.dashboards.page import NO_DATA, PanelData, Series, format_value, html_page
from qrt_ray.dashboards.queries import instantiate, is_prometheus

DASHBOARDS_DIR = Path(__file__).resolve().parents[1] / "configs" / "dashboards"
_SCRAPE_S = 15.0  # the scrape interval $__rate_interval assumes, as Grafana's default
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_TRACE_NOTE = "needs a trace backend (Tempo): not drawn here; use `qrt trace JOB`"


@dataclass(frozen=True, slots=True)
class Window:
    """The time range panels are drawn over: ``span_s`` seconds up to ``end``."""

    end: float
    span_s: float = 3600.0
    # the Prometheus' scrape interval (Grafana assumes 15 s unless told)
    scrape_s: float = _SCRAPE_S

    @property
    def step_s(self) -> float:
        """Seconds between points of a range query (about 240 points)."""
        return max(self.scrape_s, round(self.span_s / 240))

    def variables(self, device: str) -> dict[str, str]:
        """Grafana's time variables for this window, as :func:`instantiate` takes them."""
        return {
            "rate_interval": f"{int(max(4 * self.scrape_s, self.step_s + self.scrape_s))}s",
            "range": f"{int(self.span_s)}s",
            "interval": f"{int(self.step_s)}s",
            "device": device,
        }


def fetch(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET ``url`` and parse its JSON; a Prometheus error answer (4xx/5xx) is returned too.

    Raises:
        OSError: the server could not be reached (``urllib.error.URLError`` included).
        ValueError: the answer is not JSON.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return json.loads(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        body = err.read().decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "error": f"HTTP {err.code}: {body[:200]}"}


def query(base_url: str, expr: str, *, instant: bool, window: Window) -> dict[str, Any]:
    """One Prometheus API call: ``/api/v1/query`` at the window's end, or ``query_range``."""
    params: dict[str, str | float] = {"query": expr}
    if instant:
        path, params["time"] = "query", window.end
    else:
        path = "query_range"
        params |= {"start": window.end - window.span_s, "end": window.end, "step": window.step_s}
    return fetch(f"{base_url.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}")


def series_of(answer: Mapping[str, Any], legend: str) -> list[Series]:
    """The series of an API answer (matrix, vector or scalar), named by ``legend``."""
    data = answer.get("data") or {}
    kind, result = data.get("resultType"), data.get("result") or []
    if kind == "scalar":
        return [Series(legend or "value", ((float(result[0]), float(result[1])),))]
    out = []
    for item in result:
        raw = item.get("values") or ([item["value"]] if "value" in item else [])
        points = tuple((float(t), float(v)) for t, v in raw)
        out.append(Series(legend_name(legend, item.get("metric") or {}), points))
    return out


def legend_name(legend: str, labels: Mapping[str, str]) -> str:
    """A Grafana legend format (``{{device}} {{kind}}``) filled from ``labels``."""
    if legend and legend != "__auto":
        name = _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), legend)
        return " ".join(name.split()) or "value"
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"


def panel_data(
    base_url: str, panel: Mapping[str, Any], row: str, window: Window, device: str = ".*"
) -> PanelData:
    """Ask Prometheus for every target of ``panel``; errors become messages, not raises."""
    kind = str(panel.get("type", ""))
    unit = str(((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "short"))
    values = window.variables(device)
    series: list[Series] = []
    errors: list[str] = []
    targets = [t for t in panel.get("targets") or [] if is_prometheus(panel, t)]
    for target in targets:
        expr = instantiate(target["expr"], **values)
        try:
            answer = query(base_url, expr, instant=bool(target.get("instant")), window=window)
        except (OSError, ValueError) as err:
            errors.append(f"{target.get('refId', '?')}: {err}")
            continue
        if answer.get("status") != "success":
            errors.append(f"{target.get('refId', '?')}: {answer.get('error', 'query failed')}")
            continue
        series.extend(series_of(answer, str(target.get("legendFormat", ""))))
    return PanelData(
        row=row,
        title=_title(str(panel.get("title", "")), values),
        kind=kind,
        unit=unit,
        description=str(panel.get("description", "")),
        series=tuple(series),
        errors=tuple(errors),
        note="" if targets else _TRACE_NOTE,
    )


def _title(title: str, values: Mapping[str, str]) -> str:
    try:
        return instantiate(title, **values)
    except ValueError:
        return title


def _rows(dashboard_json: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """(row title, panel) for every panel, nested row panels included."""
    row = ""
    for panel in dashboard_json.get("panels") or []:
        if panel.get("type") == "row":
            row = str(panel.get("title", ""))
            yield from ((row, p) for p in panel.get("panels") or [])
        else:
            yield row, panel


def collect(
    base_url: str,
    dashboard_json: Mapping[str, Any],
    window: Window | None = None,
    device: str = ".*",
) -> list[PanelData]:
    """Every panel of a dashboard with its data, in dashboard order."""
    window = window or Window(end=time.time())
    return [panel_data(base_url, p, row, window, device) for row, p in _rows(dashboard_json)]


def render_html(
    base_url: str, dashboard_json: Mapping[str, Any], window: Window | None = None
) -> str:
    """One dashboard as a self-contained HTML page drawn from Prometheus at ``base_url``."""
    window = window or Window(end=time.time())
    panels = collect(base_url, dashboard_json, window)
    title = str(dashboard_json.get("title", dashboard_json.get("uid", "dashboard")))
    return html_page(title, str(dashboard_json.get("description", "")), panels, window.end)


def render_text(
    base_url: str, dashboards: Sequence[Mapping[str, Any]], window: Window | None = None
) -> str:
    """Every panel of ``dashboards`` with its latest values, as plain text."""
    window = window or Window(end=time.time())
    lines: list[str] = []
    for board in dashboards:
        lines.append(f"== {board.get('title', board.get('uid', 'dashboard'))} ==")
        for panel in collect(base_url, board, window):
            lines.append(f"{panel.title}:")
            lines.extend(f"  error: {e}" for e in panel.errors)
            if panel.note:
                lines.append(f"  {panel.note}")
            elif panel.empty:
                lines.append(f"  {NO_DATA}")
            lines.extend(f"  {s.name}: {format_value(s.latest, panel.unit)}" for s in panel.series)
        lines.append("")
    return "\n".join(lines)


def load_dashboards(folder: Path = DASHBOARDS_DIR) -> list[dict[str, Any]]:
    """The dashboard JSON files of ``folder``, by file name."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def write_html(
    base_url: str, dashboards: Sequence[Mapping[str, Any]], out_dir: Path, window: Window
) -> list[Path]:
    """Write ``<uid>.html`` per dashboard into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for board in dashboards:
        path = out_dir / f"{board.get('uid', 'dashboard')}.html"
        path.write_text(render_html(base_url, board, window), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: HTML pages into ``--out``, or the text summary with ``--text``."""
    parser = argparse.ArgumentParser(prog="python -m qrt_ray.dashboards.render")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="base URL")
    parser.add_argument("--dashboards", type=Path, default=DASHBOARDS_DIR, help="JSON folder")
    parser.add_argument("--out", type=Path, default=Path("dashboards-html"), help="HTML folder")
    parser.add_argument("--span-s", type=float, default=3600.0, help="time range (seconds)")
    parser.add_argument("--scrape-s", type=float, default=_SCRAPE_S, help="scrape interval")
    parser.add_argument("--text", action="store_true", help="print latest values instead")
    args = parser.parse_args(argv)
    for name in ("span_s", "scrape_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} {value:g}: use a number of seconds above 0")
    window = Window(end=time.time(), span_s=args.span_s, scrape_s=args.scrape_s)
    boards = load_dashboards(args.dashboards)
    if args.text:
        print(render_text(args.prometheus, boards, window))
    else:
        for path in write_html(args.prometheus, boards, args.out, window):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
