"""The Grafana dashboards: the committed JSON is what the generator makes, every panel
says what it shows and which runbook applies, every query keeps to the metric
contract, and the renderer draws canned Prometheus answers (and none) without Grafana."""

from __future__ import annotations

import html
import urllib.error
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pytest

from qrt_ray.dashboards import generate, render
from qrt_ray.dashboards.page import format_value
from qrt_ray.dashboards.queries import (
    instantiate,
    iter_panels,
    known_metric_names,
    label_names_in,
    metric_names_in,
    panel_queries,
)
from qrt_ray.dashboards.spec import Runbook

UIDS = {"qrt-executive", "qrt-oncall", "qrt-debug"}
UNITS = {"percentunit", "s", "short", "currencyUSD"}
BOARDS = render.load_dashboards(generate.OUT_DIR)
QUERIES = [q for board in BOARDS for q in panel_queries(board)]
WINDOWS = {"$__rate_interval", "$__range"}


def _ids(query: Any) -> str:
    return f"{query.dashboard}:{query.panel}"


# == generated files ===================================================================


def test_committed_dashboards_are_current() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    rendered = generate.render_all()
    assert sorted(rendered) == sorted(f"{uid}.json" for uid in UIDS)
    for name, text in rendered.items():
        committed = (generate.OUT_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is stale: run `{generate.REGENERATE}`"


def test_rendering_is_deterministic() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    assert generate.render_all() == generate.render_all()


def test_check_names_the_stale_file_and_the_fix(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("grafana_foundation_sdk")
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "qrt-oncall.json").write_text("{}", encoding="utf-8")
    capsys.readouterr()
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "qrt-oncall.json is stale" in err and "python -m qrt_ray.dashboards" in err


# == panels ============================================================================


def test_the_three_dashboards_exist() -> None:
    assert {board["uid"] for board in BOARDS} == UIDS


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b["uid"])
def test_every_dashboard_has_datasource_and_device_variables(board: Mapping[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    device = variables["device"]
    assert device["type"] == "query" and device["multi"] is True
    assert device["query"] == "label_values(qrt_device_status, device)"


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b["uid"])
def test_every_panel_is_described_sourced_and_queried(board: Mapping[str, Any]) -> None:
    panels = list(iter_panels(board))
    assert panels
    for panel in panels:
        title = panel.get("title")
        assert title, panel
        description = panel.get("description", "")
        assert any(f"M{i}:" in description for i in range(1, 11)) or "Not one of" in description
        assert "Runbook: docs/runbooks/" in description, title
        assert panel.get("datasource", {}).get("uid"), title
        assert panel.get("targets"), title
        if panel["type"] != "traces":
            assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, title


def test_runbooks_named_in_descriptions_are_known_pages() -> None:
    pages = {r.path for r in Runbook}
    for board in BOARDS:
        for panel in iter_panels(board):
            named = panel["description"].split("Runbook: ", 1)[1].rstrip(".").split(", ")
            assert set(named) <= pages, panel["title"]


def test_the_debug_trace_panel_reads_tempo_at_the_trace_id() -> None:
    (debug,) = [b for b in BOARDS if b["uid"] == "qrt-debug"]
    (traces,) = [p for p in iter_panels(debug) if p["type"] == "traces"]
    assert traces["datasource"] == {"type": "tempo", "uid": "${tempo}"}
    assert traces["targets"][0]["query"] == "${trace_id}"
    assert "trace backend" in traces["description"]


def test_the_oncall_dashboard_links_to_traces() -> None:
    (oncall,) = [b for b in BOARDS if b["uid"] == "qrt-oncall"]
    urls = [link["url"] for link in oncall["links"]]
    assert any(u.startswith("/explore?") and "${trace_id}" in u for u in urls)
    assert any(u == "${jaeger_url}/trace/${trace_id}" for u in urls)
    names = {v["name"]: v["type"] for v in oncall["templating"]["list"]}
    assert names["trace_id"] == "textbox" and names["tempo"] == "datasource"


# == queries ===========================================================================


def _balanced(expr: str) -> bool:
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quoted = False
    for ch in expr:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in closing and (not stack or stack.pop() != closing[ch]):
            return False
    return not stack and not quoted


def test_every_dashboard_has_queries() -> None:
    assert {q.dashboard for q in QUERIES} == UIDS


@pytest.mark.parametrize("query", QUERIES, ids=_ids)
def test_every_expr_keeps_to_the_metric_contract(query: Any) -> None:
    expr = query.expr
    assert _balanced(expr), expr
    names = metric_names_in(expr)
    assert names, expr
    assert names <= known_metric_names(), names - known_metric_names()
    assert not label_names_in(expr) & {"job", "job_id", "trace_id"}, expr
    assert "job_id" not in expr
    windows = {w for part in expr.split("[")[1:] for w in [part.split("]", 1)[0]]}
    assert windows <= WINDOWS, f"{expr}: use $__rate_interval or $__range, not {windows}"
    assert "$" not in instantiate(expr), expr


def test_panel_queries_walks_nested_row_panels() -> None:
    ds = {"type": "prometheus", "uid": "${datasource}"}
    board = {
        "uid": "x",
        "panels": [
            {"type": "row", "title": "r", "panels": [{"title": "inner", "datasource": ds}]},
            {"type": "stat", "title": "top", "datasource": ds, "targets": [{"expr": "up"}]},
        ],
    }
    board["panels"][0]["panels"][0]["targets"] = [{"expr": "a"}, {"expr": "b"}]
    tempo = {"type": "traces", "title": "t", "datasource": {"type": "tempo"}}
    board["panels"].append({**tempo, "targets": [{"query": "abc"}]})
    assert panel_queries(board) == [("x", "inner", "a"), ("x", "inner", "b"), ("x", "top", "up")]


def test_instantiate_fills_grafana_variables() -> None:
    expr = 'sum(rate(m{device=~"$device|none"}[$__rate_interval])) > $stuck_after_s'
    assert instantiate(expr, device="(a|b)") == 'sum(rate(m{device=~"(a|b)|none"}[1m])) > 900'
    assert instantiate("increase(m[${__range}])", range="1h") == "increase(m[1h])"
    assert instantiate("$__interval $datasource", interval="30s") == "30s prometheus"
    with pytest.raises(ValueError, match=r"\$nope"):
        instantiate("m > $nope")


def test_metric_names_leave_out_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, device) (rate(a_bucket{x="y"}[5m]))) '
        "/ ignoring (kind) qrt:slo_burn:rate1h > bool 1e3 and time() - b offset 5m"
    )
    assert metric_names_in(expr) == {"a_bucket", "qrt:slo_burn:rate1h", "b"}
    assert label_names_in(expr) == {"le", "device", "x", "kind"}


# == rendering =========================================================================


def _answer(url: str) -> dict[str, Any]:
    """A canned Prometheus answer: billing has no data, the rest one series each."""
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    expr = params["query"][0]
    metric = {"device": "dev-a", "slo": "job_success", "stage": "run", "tenant": "acme"}
    if "qrt_billing" in expr:
        return {"status": "success", "data": {"resultType": "vector", "result": []}}
    if url.split("?")[0].endswith("query_range"):
        start = float(params["start"][0])
        values = [[start + 60 * i, str(0.5 + i / 10)] for i in range(5)]
        result: Any = [{"metric": metric, "values": values}]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}
    result = [{"metric": metric, "value": [float(params["time"][0]), "0.97"]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []

    def fake(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
        asked.append(url)
        return _answer(url)

    monkeypatch.setattr(render, "fetch", fake)
    return asked


WINDOW = render.Window(end=1_700_000_000.0, span_s=600)


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b["uid"])
def test_html_has_one_section_per_panel(board: Mapping[str, Any], canned: list[str]) -> None:
    page = render.render_html("http://prom:9090", board, WINDOW)
    panels = list(iter_panels(board))
    assert page.count('<section class="panel"') == len(panels)
    for panel in panels:
        assert html.escape(instantiate(panel["title"])) in page
    assert "<script" not in page and "http" not in page.replace(board["description"], "")
    assert "<svg" in page
    assert len(canned) == len(panel_queries(board))
    ranged = [u for u in canned if "/api/v1/query_range?" in u]
    assert ranged and all("step=" in u for u in ranged)


def test_html_says_no_data_for_empty_results(canned: list[str]) -> None:
    (executive,) = [b for b in BOARDS if b["uid"] == "qrt-executive"]
    page = render.render_html("http://prom:9090", executive, WINDOW)
    spend = page.split("Total spend in range</h3>", 1)[1].split("</section>", 1)[0]
    assert "no data" in spend
    assert "97.0%" in page  # the success rate stat, in percent


def test_text_lists_each_panel_with_its_latest_value(canned: list[str]) -> None:
    text = render.render_text("http://prom:9090", BOARDS, WINDOW)
    for board in BOARDS:
        assert f"== {board['title']} ==" in text
    assert "Stuck queues (oldest wait over 900 s):" in text
    assert "Spend rate by tenant (USD/h):\n  no data" in text
    assert "Trace of one job ():\n  needs a trace backend" in text
    assert "SLO burn rate per SLO (1h):\n  job_success: 0.9" in text


def test_render_survives_errors_and_an_unreachable_prometheus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
        if "qrt_jobs_finished_total" in url:
            return {"status": "error", "error": "parse error at char 3"}
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(render, "fetch", refuse)
    (executive,) = [b for b in BOARDS if b["uid"] == "qrt-executive"]
    page = render.render_html("http://prom:9090", executive, WINDOW)
    assert "parse error at char 3" in page and "connection refused" in page
    text = render.render_text("http://prom:9090", [executive], WINDOW)
    assert "error: A: parse error at char 3" in text and "no data" in text


def test_fetch_returns_prometheus_error_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    body = b'{"status":"error","errorType":"bad_data","error":"bad query"}'

    def fail(url: str, timeout: float) -> Any:
        raise urllib.error.HTTPError(url, 400, "Bad Request", {}, io.BytesIO(body))  # type: ignore[arg-type]

    monkeypatch.setattr(render.urllib.request, "urlopen", fail)
    assert render.fetch("http://prom:9090/api/v1/query?query=x")["error"] == "bad query"


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.973, "percentunit", "97.3%"),
        (1234.5, "currencyUSD", "$1,234.50"),
        (90.0, "s", "1.5 min"),
        (0.25, "s", "250 ms"),
        (1500.0, "short", "1.50k"),
        (None, "short", "no data"),
        (float("nan"), "s", "NaN"),
    ],
)
def test_values_show_in_their_unit(value: float | None, unit: str, shown: str) -> None:
    assert format_value(value, unit) == shown
