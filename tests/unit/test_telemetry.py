"""Traces, JSON logs, the waterfall and the top view, without Ray."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray import logs, tracing, waterfall
from qrt_ray.actors.job_telemetry import JobTelemetry
from qrt_ray.cli_ops import frame, shots_by_device
from qrt_ray.lifecycle import JobState
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.store import JobRecord, StateUpdate
from tests.local_farm import spec

S = JobState


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    assert tracing.configure(tracing.TracingConfig(trace_file=str(path)))
    yield path
    tracing.shutdown()


def read(path: Path) -> list[dict]:
    tracing.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_job_has_one_trace_id_everywhere() -> None:
    a, b = tracing.job_ids("job-1"), tracing.job_ids("job-2")
    assert a == tracing.job_ids("job-1") and a != b
    parent = tracing.job_traceparent("job-1")
    assert parent == f"00-{a[0]:032x}-{a[1]:016x}-01"
    assert tracing.job_trace_id("job-1") == f"{a[0]:032x}"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "00-zz-11-01",
        "00-" + "a" * 32 + "-" + "b" * 15 + "-01",
        "x" * 500,
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
    ],
)
def test_a_bad_traceparent_is_refused(bad: str) -> None:
    assert tracing.parse_traceparent(bad) is None
    assert tracing.parse_traceparent(tracing.job_traceparent("job-1")) == tracing.job_ids("job-1")


def test_tracing_is_off_and_free_without_an_exporter() -> None:
    assert not tracing.configure(tracing.TracingConfig())
    assert not tracing.enabled()
    tracing.stage_span("job-1", "queue_wait", 1.0, 2.0, {})  # nothing to do, no error
    with tracing.live_span(tracing.job_traceparent("job-1"), "x") as extra:
        extra["more"] = 1  # taken, then dropped: nothing is exported


def test_stage_and_root_spans_join_the_jobs_trace(spans: Path) -> None:
    metrics = RuntimeMetrics()
    telemetry = JobTelemetry(metrics)
    rec = JobRecord("job-7", S.QUEUED, spec(), 100.0, 100.0)
    telemetry.moved(
        rec, StateUpdate("job-7", S.QUEUED, S.COMPILING, 100.25, fields={"device": "a"})
    )
    done = JobRecord("job-7", S.POSTPROCESSING, spec(), 100.0, 101.0, device="a")
    telemetry.moved(done, StateUpdate("job-7", S.POSTPROCESSING, S.DONE, 101.5, "result stored"))
    with tracing.live_span(tracing.job_traceparent("job-7"), "device.run", {"qrt.shots": 5}):
        pass
    got = {s["name"]: s for s in read(spans)}
    trace_id, root_id = tracing.job_ids("job-7")
    # queue wait is a histogram stage, not a span (the gap before placement's span)
    assert set(got) == {"result_collection", "qrt.job", "device.run"}
    assert {s["trace_id"] for s in got.values()} == {f"{trace_id:032x}"}
    assert got["qrt.job"]["span_id"] == f"{root_id:016x}" and got["qrt.job"]["parent_id"] is None
    stay = got["result_collection"]
    assert stay["parent_id"] == f"{root_id:016x}"
    assert (stay["start_ns"], stay["end_ns"]) == (101_000_000_000, 101_500_000_000)
    assert stay["attributes"]["qrt.device"] == "a" and stay["attributes"]["qrt.reason"]
    assert got["qrt.job"]["attributes"]["qrt.state"] == "DONE"


def test_a_traced_call_runs_inside_a_span(spans: Path) -> None:
    got = tracing.traced_call(tracing.job_traceparent("job-9"), "mitigation.quasi", None, max, 3, 4)
    assert got == 4
    (span,) = read(spans)
    assert span["name"] == "mitigation.quasi"
    assert span["parent_id"] == f"{tracing.job_ids('job-9')[1]:016x}"


def test_json_log_lines_about_a_job_carry_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = JobTelemetry(RuntimeMetrics())
    rec = JobRecord(
        "job-3", S.RUNNING, spec(tenant="acme"), 10.0, 11.0, device="a", calibration_id="cal-1"
    )
    fields = {"error": "gave up", "error_class": "partial_run"}
    with caplog.at_level(logging.WARNING, logger="qrt.jobs"):
        telemetry.moved(rec, StateUpdate("job-3", S.RUNNING, S.FAILED, 12.0, fields=fields))
    (record,) = caplog.records
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "qrt.jobs"
    assert (line["job_id"], line["tenant"], line["device"], line["calibration_id"]) == (
        "job-3",
        "acme",
        "a",
        "cal-1",
    )
    assert "partial_run" in line["message"] and line["ts"].endswith("Z")
    # a line about no job has no job fields, and an exception travels as text
    try:
        raise ValueError("boom")
    except ValueError:
        other = logging.LogRecord("qrt.x", logging.ERROR, "f", 1, "oops", (), None)
        import sys

        other.exc_info = sys.exc_info()
    plain = json.loads(logs.JsonFormatter().format(other))
    assert "job_id" not in plain and "ValueError: boom" in plain["exception"]


def test_an_unknown_log_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'xml' is not one of: text, json"):
        logs.check_format("xml")


def test_the_cli_writes_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    from qrt_ray.cli import main

    assert main(["--log-format", "json", "slo", "rules", "--time-scale", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--time-scale -1: use a number above 0" in err
    logging.getLogger("qrt.test").warning("hello %s", "there")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "hello there"
    logs.setup("text")


def test_waterfall_stages_follow_the_transitions_with_every_visit() -> None:
    events = [
        {"at": 10.0, "to": "QUEUED", "reason": "submitted"},
        {"at": 10.5, "to": "COMPILING", "reason": "placed on a"},
        {"at": 11.0, "to": "PLACED", "reason": "compiled"},
        {"at": 12.0, "to": "QUEUED", "reason": "re-placed: a went OFFLINE"},
        {"at": 12.5, "to": "COMPILING", "reason": "placed on b"},
        {"at": 13.0, "to": "PLACED", "reason": "compiled"},
        {"at": 13.5, "to": "RUNNING", "reason": "running on b"},
        {"at": 15.0, "to": "POSTPROCESSING", "reason": "all shots in"},
        {"at": 15.25, "to": "DONE", "reason": "result stored"},
    ]
    found = waterfall.stages(events)
    assert [s.name for s in found] == [
        "queue_wait",
        "compile",
        "device_wait",
        "queue_wait",
        "compile",
        "device_wait",
        "run",
        "postprocess",
        "end_to_end",
    ]
    assert found[2].detail == "re-placed: a went OFFLINE" and found[2].duration_s == 1.0
    assert found[-1].duration_s == 5.25
    text = waterfall.render("job-1", "DONE", found, "ab" * 16)
    assert "re-placed" in text and text.count("|") == 2 * len(found)
    assert waterfall.stages([]) == []
    assert "no stage finished yet" in waterfall.render("job-2", "QUEUED", [], "cd" * 16)


def test_top_rates_come_from_successive_shot_counts() -> None:
    from qrt_ray.actors.device import Device
    from qrt_ray.models import DeviceStatus
    from tests.local_farm import FARM

    snap = Device(FARM.devices[0], max_parallel_threads=1).snapshot()
    text = f'qrt_device_shots_total{{device="{snap.name}"}} 1500.0\n'
    shots = shots_by_device("# TYPE qrt_device_shots_total counter\n" + text)
    assert shots == {snap.name: 1500.0}
    f = frame([snap], shots, (100.0, {snap.name: 500.0}), None, now=102.0)
    (row,) = f.devices
    assert row["shots_per_s"] == 500.0 and row["status"] == DeviceStatus.ONLINE.value
    assert frame([snap], shots, None, None, now=102.0).devices[0]["shots_per_s"] is None


def test_spans_reach_an_otlp_collector_over_http() -> None:
    # a minimal OTLP/HTTP receiver on loopback: what a collector would be sent
    import http.server
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    got: list[ExportTraceServiceRequest] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            got.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        assert tracing.configure(tracing.TracingConfig(otlp_endpoint=endpoint))
        tracing.job_span("job-otlp", 10.0, 12.0, {"qrt.tenant": "acme"})
        tracing.flush()
    finally:
        tracing.shutdown()
        server.shutdown()
    spans = [
        span
        for request in got
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    (root,) = spans
    trace_id, root_id = tracing.job_ids("job-otlp")
    assert root.name == "qrt.job" and root.trace_id == trace_id.to_bytes(16, "big")
    assert root.span_id == root_id.to_bytes(8, "big")
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (10 * 10**9, 12 * 10**9)
    resource = {a.key: a.value.string_value for a in got[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "qrt-ray"
